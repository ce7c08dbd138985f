//! The data directory's lock: one server at a time on one `--data-dir`.
//!
//! Two servers appending to the same `messages.csv` would each count ids
//! from their own counter and write the same id twice. So the store holds an
//! exclusive `flock` on `server.lock` in the data directory for as long as it
//! runs; the file holds the owner's process id, so that a second server can
//! say whose lock it met. The kernel drops the lock when the process ends,
//! however it ends (`kill -9` included): a stale file never blocks a start.
//! The `server` subcommands (accounts, bans) do not take it: they work
//! beside a running server.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use rustix::fs::{FlockOperation, flock};

use crate::server::store::StoreError;

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "server.lock";

/// The held lock; dropped, it is released.
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir`, or says which server holds it.
    pub fn take(dir: &Path) -> Result<DirLock, StoreError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
            if e == rustix::io::Errno::WOULDBLOCK {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StoreError::Locked {
                    dir: dir.to_path_buf(),
                    pid: text
                        .split_whitespace()
                        .find_map(|word| word.parse::<u32>().ok()),
                });
            }
            return Err(io(e.into()));
        }
        // Ours now: say who holds it.
        let pid = format!("{}\n", std::process::id());
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()));
        if let Err(e) = written {
            log::warn!("cannot write the process id into {}: {e}", path.display());
        }
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_names_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::take(dir.path()).unwrap();
        let Err(err) = DirLock::take(dir.path()) else {
            panic!("a second lock was given");
        };
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        DirLock::take(dir.path()).unwrap();
    }

    #[test]
    fn a_garbled_lock_file_does_not_stop_a_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), b"\xff\xfe garbage").unwrap();
        DirLock::take(dir.path()).unwrap();
    }
}
