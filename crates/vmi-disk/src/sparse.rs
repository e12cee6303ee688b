//! A file writer that turns zero blocks into holes.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

/// Block size for hole detection: zero runs shorter than this are written.
pub const BLOCK: usize = 64 * 1024;

/// Writes a byte stream at increasing offsets; blocks of zeros are skipped (left as holes), so
/// the file takes the space of its data only. [`SparseWriter::finish`] sets the length.
#[derive(Debug)]
pub struct SparseWriter {
    file: File,
    /// Next offset to write at.
    pos: u64,
    /// The OS file position (avoids a seek before every write).
    file_pos: u64,
    /// Bytes actually written to the file (not skipped).
    written: u64,
}

impl SparseWriter {
    /// Writes from `start` on (existing bytes before it are kept).
    pub fn new(mut file: File, start: u64) -> std::io::Result<Self> {
        file.seek(SeekFrom::Start(start))?;
        Ok(Self {
            file,
            pos: start,
            file_pos: start,
            written: 0,
        })
    }

    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Bytes that went to the file (zero blocks excluded).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Writes `data` at `offset`, which must not be before the current position (the gap stays
    /// a hole).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if offset < self.pos {
            return Err(std::io::Error::other(format!(
                "write at {offset} before the current position {}",
                self.pos
            )));
        }
        self.pos = offset;
        self.write(data)
    }

    pub fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            // Align blocks to the file offset so holes fall on block boundaries.
            let into_block = usize::try_from(self.pos % BLOCK as u64).unwrap_or(0);
            let n = (BLOCK - into_block).min(data.len());
            let (chunk, rest) = data.split_at(n);
            if is_zero(chunk) {
                self.pos += n as u64;
            } else {
                if self.file_pos != self.pos {
                    self.file.seek(SeekFrom::Start(self.pos))?;
                }
                self.file.write_all(chunk)?;
                self.pos += n as u64;
                self.file_pos = self.pos;
                self.written += n as u64;
            }
            data = rest;
        }
        Ok(())
    }

    /// Makes everything written so far durable, and the file at least as long as the position.
    pub fn sync(&mut self) -> std::io::Result<()> {
        let len = self.file.metadata()?.len();
        if len < self.pos {
            self.file.set_len(self.pos)?;
        }
        self.file.sync_data()
    }

    /// Sets the final length (trailing zero blocks become a hole) and syncs.
    pub fn finish(self) -> std::io::Result<u64> {
        self.file.set_len(self.pos)?;
        self.file.sync_all()?;
        Ok(self.written)
    }
}

fn is_zero(b: &[u8]) -> bool {
    // 16 bytes at a time: fast without `unsafe`.
    let mut chunks = b.chunks_exact(16);
    let words_zero = chunks
        .by_ref()
        .all(|c| u128::from_ne_bytes(c.try_into().unwrap_or([1; 16])) == 0);
    words_zero && chunks.remainder().iter().all(|x| *x == 0)
}

/// Bytes the file occupies on disk (`st_blocks * 512`).
pub fn allocated_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_become_holes_and_data_survives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let mut w = SparseWriter::new(File::create(&path).unwrap(), 0).unwrap();
        let mut data = vec![0u8; 16 * BLOCK];
        data[3] = 1;
        data[10 * BLOCK + 5] = 2;
        // Uneven chunks, like a network stream.
        for chunk in data.chunks(7_777) {
            w.write(chunk).unwrap();
        }
        w.write(&vec![0u8; 64 * BLOCK]).unwrap();
        let written = w.finish().unwrap();
        assert!(written > 0 && written <= 2 * BLOCK as u64, "{written}");
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), 80 * BLOCK);
        assert_eq!(&back[..data.len()], &data[..]);
        assert!(back[data.len()..].iter().all(|b| *b == 0));
        assert!(
            allocated_bytes(&path).unwrap() <= 4 * BLOCK as u64,
            "{}",
            allocated_bytes(&path).unwrap()
        );
    }

    #[test]
    fn writing_resumes_at_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let mut w = SparseWriter::new(File::create(&path).unwrap(), 0).unwrap();
        w.write(b"hello").unwrap();
        w.finish().unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut w = SparseWriter::new(f, 5).unwrap();
        w.write(b" world").unwrap();
        w.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
    }
}
