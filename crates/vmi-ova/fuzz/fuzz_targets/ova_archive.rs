//! Any bytes as an OVA stream, extracted into a scratch directory, and read for its descriptor
//! only. Nothing may panic; after a failed extraction the scratch directory must be empty, and
//! after a successful one it must hold exactly the files reported, all inside it.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vmi_ova::archive::{self, ExtractOptions};

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vmi-ova-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        dir
    })
}

fn entries(dir: &PathBuf) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the scratch directory")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    let options = ExtractOptions {
        max_file_bytes: 1 << 20,
    };
    match archive::extract(data, dir, &options) {
        Ok(ova) => {
            let mut reported: Vec<PathBuf> = ova.files.iter().map(|f| f.path.clone()).collect();
            reported.sort();
            assert_eq!(
                entries(dir),
                reported,
                "scratch holds other files than reported"
            );
            for f in &ova.files {
                assert_eq!(
                    f.path.parent(),
                    Some(dir.as_path()),
                    "written outside scratch"
                );
                assert_eq!(
                    std::fs::metadata(&f.path).expect("extracted file").len(),
                    f.size
                );
                std::fs::remove_file(&f.path).expect("remove extracted file");
            }
        }
        Err(_) => assert!(entries(dir).is_empty(), "a failed extraction left files"),
    }
    let _ = archive::read_descriptor(data);
});
