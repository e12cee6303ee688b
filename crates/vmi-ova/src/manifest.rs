//! OVF manifests (`.mf`): one digest per line, `SHA256(disk1.vmdk)= 3f5a…`.
//!
//! Exporters differ in spacing and case (`SHA1(x)=`, `SHA256 (x) = `, `sha256(x)=`, upper-case
//! hex, CRLF line ends, a byte-order mark), all of which are accepted. `SHA1`, `SHA256` and
//! `SHA512` are what the OVF specification and exporters use; `MD5` is read too.

use serde::Serialize;
use vmi_disk::Algorithm;

/// Largest manifest accepted, in bytes (one line per file of the package: a few hundred bytes).
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// Most lines with a digest accepted.
pub const MAX_MANIFEST_ENTRIES: usize = 4096;

/// A parsed manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Manifest {
    /// Entries in file order.
    pub entries: Vec<ManifestEntry>,
}

/// One line of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ManifestEntry {
    /// The file name as written between the parentheses.
    pub file_name: String,
    pub algorithm: Algorithm,
    /// Lower-case hex.
    pub digest: String,
}

/// Why a manifest cannot be read; each names the line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("the manifest is {size} bytes, more than the {limit} bytes accepted")]
    TooLarge { size: usize, limit: usize },
    #[error("the manifest is not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("line {line}: {reason}: {text:?} (expected `SHA256(file)= hex`)")]
    Malformed {
        line: usize,
        text: String,
        reason: String,
    },
    #[error("line {line}: unsupported digest algorithm {algorithm:?} (SHA1, SHA256, SHA512 are)")]
    UnsupportedAlgorithm { line: usize, algorithm: String },
    #[error(
        "line {line}: {algorithm} digest of {file_name:?} has {got} hex digits, expected {want}"
    )]
    BadDigestLength {
        line: usize,
        file_name: String,
        algorithm: String,
        got: usize,
        want: usize,
    },
    #[error("more than {limit} digests; this is not an OVF manifest vm-import accepts")]
    TooManyEntries { limit: usize },
    #[error("line {line}: a second, different {algorithm} digest for {file_name:?}")]
    Conflict {
        line: usize,
        file_name: String,
        algorithm: String,
    },
}

fn hex_len(a: Algorithm) -> usize {
    match a {
        Algorithm::Md5 => 32,
        Algorithm::Sha1 => 40,
        Algorithm::Sha256 => 64,
        Algorithm::Sha512 => 128,
    }
}

/// Parses a manifest.
pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge {
            size: bytes.len(),
            limit: MAX_MANIFEST_BYTES,
        });
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| ManifestError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let mut entries: Vec<ManifestEntry> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let l = raw.trim();
        if l.is_empty() {
            continue;
        }
        let malformed = |reason: &str| ManifestError::Malformed {
            line,
            text: l.chars().take(200).collect(),
            reason: reason.into(),
        };
        // The digest is after the last '=' (hex has none); the name is between the first '('
        // and the last ')' before it (names may contain parentheses).
        let (left, digest) = l.rsplit_once('=').ok_or_else(|| malformed("no '='"))?;
        let left = left.trim_end();
        let (algorithm, rest) = left.split_once('(').ok_or_else(|| malformed("no '('"))?;
        let file_name = rest
            .strip_suffix(')')
            .ok_or_else(|| malformed("no ')' before '='"))?;
        if file_name.is_empty() {
            return Err(malformed("empty file name"));
        }
        let algorithm_name = algorithm.trim();
        let algorithm = Algorithm::parse(algorithm_name).ok_or_else(|| {
            ManifestError::UnsupportedAlgorithm {
                line,
                algorithm: algorithm_name.to_owned(),
            }
        })?;
        let digest = digest.trim().to_ascii_lowercase();
        if !digest.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(malformed("the digest is not hexadecimal"));
        }
        if digest.len() != hex_len(algorithm) {
            return Err(ManifestError::BadDigestLength {
                line,
                file_name: file_name.to_owned(),
                algorithm: algorithm_name.to_owned(),
                got: digest.len(),
                want: hex_len(algorithm),
            });
        }
        if let Some(prev) = entries
            .iter()
            .find(|e| e.file_name == file_name && e.algorithm == algorithm)
        {
            if prev.digest != digest {
                return Err(ManifestError::Conflict {
                    line,
                    file_name: file_name.to_owned(),
                    algorithm: algorithm_name.to_owned(),
                });
            }
            continue;
        }
        if entries.len() >= MAX_MANIFEST_ENTRIES {
            return Err(ManifestError::TooManyEntries {
                limit: MAX_MANIFEST_ENTRIES,
            });
        }
        entries.push(ManifestEntry {
            file_name: file_name.to_owned(),
            algorithm,
            digest,
        });
    }
    Ok(Manifest { entries })
}

impl Manifest {
    /// The entries for this file (one per algorithm).
    pub fn for_file<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ManifestEntry> + 'a {
        self.entries.iter().filter(move |e| e.file_name == name)
    }

    /// The algorithms the manifest gives for this file.
    pub fn algorithms_for(&self, name: &str) -> Vec<Algorithm> {
        self.for_file(name).map(|e| e.algorithm).collect()
    }

    /// The distinct file names, in manifest order.
    pub fn file_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for e in &self.entries {
            if !names.contains(&e.file_name.as_str()) {
                names.push(&e.file_name);
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const H1: &str = "a9993e364706816aba3e25717850c26c9cd0d89d";
    const H256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[rstest]
    #[case::vmware(format!("SHA256(vm.ovf)= {H256}\n"), "vm.ovf", Algorithm::Sha256)]
    #[case::no_space(format!("SHA1(vm-disk1.vmdk)={H1}"), "vm-disk1.vmdk", Algorithm::Sha1)]
    #[case::spaces(format!("SHA256 (vm.ovf) = {H256}\r\n"), "vm.ovf", Algorithm::Sha256)]
    #[case::lower_upper(format!("sha256(vm.ovf)= {}", H256.to_uppercase()), "vm.ovf", Algorithm::Sha256)]
    #[case::bom(format!("\u{feff}SHA1(a b (1).vmdk)= {H1}"), "a b (1).vmdk", Algorithm::Sha1)]
    #[case::name_with_equals(format!("SHA1(a=b.vmdk)= {H1}"), "a=b.vmdk", Algorithm::Sha1)]
    fn manifest_lines_as_exporters_write_them(
        #[case] text: String,
        #[case] name: &str,
        #[case] algorithm: Algorithm,
    ) {
        let m = parse(text.as_bytes()).unwrap();
        assert_eq!(m.entries.len(), 1);
        assert_eq!(m.entries[0].file_name, name);
        assert_eq!(m.entries[0].algorithm, algorithm);
        assert_eq!(
            m.entries[0].digest,
            if algorithm == Algorithm::Sha1 {
                H1
            } else {
                H256
            }
        );
    }

    #[rstest]
    #[case::no_equals("SHA1(vm.ovf) abc", "line 1: no '='")]
    #[case::no_paren("SHA1 vm.ovf= abc", "no '('")]
    #[case::crc("CRC32(vm.ovf)= abcd", "unsupported digest algorithm \"CRC32\"")]
    #[case::short("SHA256(vm.ovf)= abcd", "has 4 hex digits, expected 64")]
    #[case::not_hex("SHA1(vm.ovf)= zz", "not hexadecimal")]
    #[case::empty_name("SHA1()= abcd", "empty file name")]
    fn malformed_lines_are_named(#[case] text: &str, #[case] message: &str) {
        let e = parse(text.as_bytes()).unwrap_err().to_string();
        assert!(e.contains(message), "{e}");
    }

    #[test]
    fn two_different_digests_for_one_file_conflict() {
        let text = format!("SHA1(a)= {H1}\nSHA1(a)= {}\n", "0".repeat(40));
        let e = parse(text.as_bytes()).unwrap_err();
        assert!(matches!(e, ManifestError::Conflict { line: 2, .. }), "{e}");
    }

    #[test]
    fn several_algorithms_per_file_and_blank_lines() {
        let text = format!("\nSHA1(a)= {H1}\n\nSHA256(a)= {H256}\nSHA1(a)= {H1}\n");
        let m = parse(text.as_bytes()).unwrap();
        assert_eq!(
            m.algorithms_for("a"),
            vec![Algorithm::Sha1, Algorithm::Sha256]
        );
        assert_eq!(m.file_names(), vec!["a"]);
    }
}
