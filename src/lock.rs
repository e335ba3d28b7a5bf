//! Run locks: runs holding the same `lock:` key never overlap on this machine.
//!
//! A lock is an exclusive `flock` on `<state dir>/locks/<key>.lock`, held for
//! the life of the process: the kernel releases it when the holder exits or
//! dies, so a crashed run never leaves a stale lock. The holder writes its run
//! id into the file so a second run can say who holds it. A shared backend
//! (PostgreSQL advisory locks, for teams on several machines) would implement
//! the same acquire/release shape.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;

pub struct Lock {
    _file: File,
}

#[derive(Debug)]
pub enum LockError {
    Held { holder: String },
    Io(std::io::Error),
}

impl Lock {
    pub fn acquire(state_dir: &Path, key: &str, run_id: &str) -> Result<Lock, LockError> {
        let dir = state_dir.join("locks");
        std::fs::create_dir_all(&dir).map_err(LockError::Io)?;
        // The key may carry a param or a secret: the file is named by its
        // hash, so a directory listing shows neither.
        let name = key_file_name(key);
        Lock::acquire_file(&dir.join(format!("{name}.lock")), run_id)
    }

    /// Takes an exclusive lock on `path`, writing `holder` into it.
    pub fn acquire_file(path: &Path, holder_name: &str) -> Result<Lock, LockError> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(LockError::Io)?;
        // Released when the file closes or the process dies.
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim().to_string();
                return Err(LockError::Held {
                    holder: if holder.is_empty() {
                        "unknown".into()
                    } else {
                        holder
                    },
                });
            }
            Err(e) => return Err(LockError::Io(e.into())),
        }
        file.set_len(0).map_err(LockError::Io)?;
        file.seek(SeekFrom::Start(0)).map_err(LockError::Io)?;
        // Not synced: the name only says who holds the lock, and a power
        // loss that could drop it releases the lock too.
        file.write_all(holder_name.as_bytes())
            .map_err(LockError::Io)?;
        Ok(Lock { _file: file })
    }
}

/// Whether someone holds the lock on `path` right now (without taking it).
pub fn is_held(path: &Path) -> bool {
    let Ok(file) = OpenOptions::new().read(true).write(true).open(path) else {
        return false;
    };
    // A lock we get is released when `file` closes.
    flock(&file, FlockOperation::NonBlockingLockExclusive).is_err()
}

/// A lock key's file name: the first 32 hex digits of its SHA-256.
pub(crate) fn key_file_name(key: &str) -> String {
    let mut hex = crate::journal::hash(key);
    hex.truncate(32);
    hex
}
