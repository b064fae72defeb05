//! One `mlcanary local` per work directory: an exclusive advisory lock (`flock`, through
//! [`std::fs::File::try_lock`]) on `DIR/mlcanary.lock`, taken before anything in the directory is
//! read or written and held for the life of the process.
//!
//! The kernel drops the lock when the process ends however it ends — SIGKILL and power loss
//! included — so a stale lock file never blocks a restart; only a live holder does. The file holds
//! the holder's pid and start time, for the refusal message. Envoy, started as a child, does not
//! inherit the lock: Rust opens files close-on-exec, so an Envoy left behind by a killed mlcanary
//! holds no lock (the next mlcanary replaces it, see [`super::envoy::stop_orphan`]).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use thiserror::Error;

/// The lock file's name in the work directory.
pub const LOCK_FILE: &str = "mlcanary.lock";

/// Why the work directory could not be locked.
#[derive(Debug, Error)]
pub enum LockError {
    /// Another live process holds the lock.
    #[error(
        "{path} is locked by another mlcanary local ({holder}); stop it first or use another \
         --workdir"
    )]
    Held { path: String, holder: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct WorkdirLock {
    _file: File,
    pub path: PathBuf,
}

impl WorkdirLock {
    /// Take the lock on `dir/mlcanary.lock` without waiting, and write this process' pid into it.
    pub fn acquire(dir: &Path) -> Result<WorkdirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        // Not truncated on open: the holder's pid must survive a refused attempt.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim() {
                    "" => "pid unknown".to_owned(),
                    t => t.to_owned(),
                };
                return Err(LockError::Held {
                    path: path.display().to_string(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let since = humantime::format_rfc3339_seconds(SystemTime::now());
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "pid {} since {since}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(WorkdirLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mlcanary-lock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_free_after_release() {
        let d = dir("second");
        let held = WorkdirLock::acquire(&d).unwrap();
        // flock locks belong to the open file description: a second open in the same process
        // conflicts exactly as another process would.
        let e = WorkdirLock::acquire(&d).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, LockError::Held { .. }), "{msg}");
        assert!(
            msg.contains(&format!("pid {} since ", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("mlcanary.lock is locked"), "{msg}");
        drop(held);
        let again = WorkdirLock::acquire(&d).unwrap();
        drop(again);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_stale_lock_file_from_a_dead_process_does_not_block() {
        let d = dir("stale");
        std::fs::write(
            d.join(LOCK_FILE),
            "pid 999999999 since 2020-01-01T00:00:00Z\n",
        )
        .unwrap();
        let l = WorkdirLock::acquire(&d).unwrap();
        let text = std::fs::read_to_string(&l.path).unwrap();
        assert_eq!(
            text.lines().next().unwrap().split(' ').nth(1),
            Some(std::process::id().to_string().as_str()),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1, "{text}");
        drop(l);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
