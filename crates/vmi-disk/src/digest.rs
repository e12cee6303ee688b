//! Digests computed while bytes stream by.

use md5::Digest as _;
use serde::{Deserialize, Serialize};

/// A digest algorithm the pipeline computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    /// Reads Glance's `os_hash_algo` and OVF manifest names (`SHA256`, `sha512`, …).
    pub fn parse(s: &str) -> Option<Algorithm> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "md5" => Some(Algorithm::Md5),
            "sha1" => Some(Algorithm::Sha1),
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
}

/// Hex digests by algorithm.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digests {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
}

impl Digests {
    pub fn get(&self, a: Algorithm) -> Option<&str> {
        match a {
            Algorithm::Md5 => self.md5.as_deref(),
            Algorithm::Sha1 => self.sha1.as_deref(),
            Algorithm::Sha256 => self.sha256.as_deref(),
            Algorithm::Sha512 => self.sha512.as_deref(),
        }
    }
}

/// Several hashers fed with the same bytes.
#[derive(Clone, Default)]
pub struct MultiHasher {
    md5: Option<md5::Md5>,
    sha1: Option<sha1::Sha1>,
    sha256: Option<sha2::Sha256>,
    sha512: Option<sha2::Sha512>,
}

impl std::fmt::Debug for MultiHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiHasher").finish_non_exhaustive()
    }
}

impl MultiHasher {
    pub fn new(algorithms: &[Algorithm]) -> Self {
        let mut h = MultiHasher::default();
        for a in algorithms {
            match a {
                Algorithm::Md5 => h.md5 = Some(md5::Md5::new()),
                Algorithm::Sha1 => h.sha1 = Some(sha1::Sha1::new()),
                Algorithm::Sha256 => h.sha256 = Some(sha2::Sha256::new()),
                Algorithm::Sha512 => h.sha512 = Some(sha2::Sha512::new()),
            }
        }
        h
    }

    pub fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.md5 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha1 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha512 {
            h.update(data);
        }
    }

    pub fn finish(self) -> Digests {
        Digests {
            md5: self.md5.map(|h| hex::encode(h.finalize())),
            sha1: self.sha1.map(|h| hex::encode(h.finalize())),
            sha256: self.sha256.map(|h| hex::encode(h.finalize())),
            sha512: self.sha512.map(|h| hex::encode(h.finalize())),
        }
    }
}

/// Digests of a whole file, read once in 1 MiB blocks (blocking: call from a blocking thread).
/// With several algorithms each runs on its own thread, so that SHA-256 and SHA-512 of a
/// large disk take the time of the slower one, not of both.
pub fn file_digests(path: &std::path::Path, algorithms: &[Algorithm]) -> std::io::Result<Digests> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    if algorithms.len() < 2 {
        let mut h = MultiHasher::new(algorithms);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        return Ok(h.finish());
    }
    std::thread::scope(|scope| {
        let mut senders = Vec::new();
        let mut workers = Vec::new();
        for a in algorithms {
            let (tx, rx) = std::sync::mpsc::sync_channel::<std::sync::Arc<Vec<u8>>>(4);
            senders.push(tx);
            let algorithm = *a;
            workers.push(scope.spawn(move || {
                let mut h = MultiHasher::new(&[algorithm]);
                for chunk in rx {
                    h.update(&chunk);
                }
                h.finish()
            }));
        }
        let mut read_error = None;
        loop {
            let mut buf = vec![0u8; 1 << 20];
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    let chunk = std::sync::Arc::new(buf);
                    for tx in &senders {
                        // A worker only stops when its channel closes.
                        let _ = tx.send(chunk.clone());
                    }
                }
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            }
        }
        drop(senders);
        let mut out = Digests::default();
        for w in workers {
            let d = w
                .join()
                .map_err(|_| std::io::Error::other("a digest thread panicked"))?;
            out.md5 = out.md5.or(d.md5);
            out.sha1 = out.sha1.or(d.sha1);
            out.sha256 = out.sha256.or(d.sha256);
            out.sha512 = out.sha512.or(d.sha512);
        }
        match read_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_digests_on_threads_match_one_pass() {
        let dir = std::env::temp_dir().join(format!("vmi-digest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let data: Vec<u8> = (0..(3 << 20) + 12345)
            .map(|i: u32| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let all = [
            Algorithm::Md5,
            Algorithm::Sha1,
            Algorithm::Sha256,
            Algorithm::Sha512,
        ];
        let threaded = file_digests(&path, &all).unwrap();
        let mut one = MultiHasher::new(&all);
        one.update(&data);
        assert_eq!(threaded, one.finish());
        let single = file_digests(&path, &[Algorithm::Sha256]).unwrap();
        assert_eq!(single.sha256, threaded.sha256);
        assert_eq!(single.sha512, None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn known_digests_of_abc() {
        let mut h = MultiHasher::new(&[
            Algorithm::Md5,
            Algorithm::Sha1,
            Algorithm::Sha256,
            Algorithm::Sha512,
        ]);
        h.update(b"a");
        h.update(b"bc");
        let d = h.finish();
        assert_eq!(d.md5.as_deref(), Some("900150983cd24fb0d6963f7d28e17f72"));
        assert_eq!(
            d.sha1.as_deref(),
            Some("a9993e364706816aba3e25717850c26c9cd0d89d")
        );
        assert_eq!(
            d.sha256.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert!(d.sha512.as_deref().unwrap().starts_with("ddaf35a193617aba"));
    }

    #[test]
    fn algorithm_names() {
        assert_eq!(Algorithm::parse("SHA256"), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::parse("sha-512"), Some(Algorithm::Sha512));
        assert_eq!(Algorithm::parse("crc32"), None);
    }
}
