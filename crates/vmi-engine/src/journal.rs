//! Persistence of the import state: a JSON file written atomically (temporary file, fsync,
//! rename, fsync of the directory), so that a crash leaves either the old or the new state.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::state::{ImportState, STATE_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("state file {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "state file {path} is not a vm-import state ({error}); move it away or use another --out directory"
    )]
    Corrupt { path: PathBuf, error: String },
    #[error("state file {path} has version {found}, this vm-import writes {STATE_VERSION}")]
    Version { path: PathBuf, found: u32 },
}

/// The state of one import and where it is persisted. Cloning shares the state.
///
/// The CLI persists it to a file ([`Journal::create`], [`Journal::load`]); the controller keeps
/// it in memory ([`Journal::in_memory`]) and writes it to the import's status after every step,
/// using [`Journal::revision`] to see whether anything changed.
#[derive(Clone, Debug)]
pub struct Journal {
    path: Option<PathBuf>,
    state: Arc<Mutex<ImportState>>,
    revision: Arc<AtomicU64>,
}

impl Journal {
    /// Loads `path` if it exists.
    pub fn load(path: &Path) -> Result<Option<Journal>, JournalError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(JournalError::Io {
                    path: path.to_owned(),
                    error,
                });
            }
        };
        let state: ImportState =
            serde_json::from_str(&text).map_err(|e| JournalError::Corrupt {
                path: path.to_owned(),
                error: e.to_string(),
            })?;
        if state.version != STATE_VERSION {
            return Err(JournalError::Version {
                path: path.to_owned(),
                found: state.version,
            });
        }
        Ok(Some(Journal {
            path: Some(path.to_owned()),
            state: Arc::new(Mutex::new(state)),
            revision: Arc::default(),
        }))
    }

    /// A new state at `path` (written at once).
    pub fn create(path: &Path, state: ImportState) -> Result<Journal, JournalError> {
        let j = Journal {
            path: Some(path.to_owned()),
            state: Arc::new(Mutex::new(state)),
            revision: Arc::default(),
        };
        j.save()?;
        Ok(j)
    }

    /// A state kept in memory only; its owner persists snapshots elsewhere.
    pub fn in_memory(state: ImportState) -> Journal {
        Journal {
            path: None,
            state: Arc::new(Mutex::new(state)),
            revision: Arc::default(),
        }
    }

    /// The state file, when there is one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Counts the updates: a changed revision means a changed (or at least re-written) state.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::SeqCst)
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> ImportState {
        self.lock().clone()
    }

    /// Changes the state and persists it before returning.
    pub fn update<R>(&self, f: impl FnOnce(&mut ImportState) -> R) -> Result<R, JournalError> {
        // The lock is held across the write: writes are serialised and the file always holds
        // the latest state.
        let mut s = self.lock();
        let r = f(&mut s);
        if let Some(path) = &self.path {
            let text = serde_json::to_string_pretty(&*s).unwrap_or_default();
            write_atomic(path, text.as_bytes()).map_err(|error| JournalError::Io {
                path: path.clone(),
                error,
            })?;
        }
        self.revision.fetch_add(1, Ordering::SeqCst);
        Ok(r)
    }

    pub fn save(&self) -> Result<(), JournalError> {
        self.update(|_| ())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ImportState> {
        // A panic while holding the lock cannot leave the state half-written: every change is a
        // plain assignment. Recover the data rather than propagate the poison.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_persisted_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let j = Journal::create(&path, ImportState::new("default/x".into())).unwrap();
        j.update(|s| s.server_id = Some("abc".into())).unwrap();
        let back = Journal::load(&path).unwrap().unwrap();
        assert_eq!(back.snapshot().server_id.as_deref(), Some("abc"));
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    #[test]
    fn a_garbage_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{").unwrap();
        let err = Journal::load(&path).unwrap_err().to_string();
        assert!(err.contains("not a vm-import state"), "{err}");
    }
}
