//! A state directory on one machine: journals as files
//! ([`crate::journal::FileStore`]), a run's claim as a `flock` on
//! `runs/<id>/run.lock`, `lock:` keys as `flock`s with a queue beside them
//! ([`crate::lock`]), approvals as files in the run's directory
//! ([`crate::approvals`]'s mailbox), cancel as SIGINT to the holder.
//!
//! The kernel holds every claim and lock here: a process that dies
//! releases them, so a state dir needs no leases and has one epoch.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{Claim, ClaimError, HeldLock, Holder, LockError, Store};
use crate::approvals::{approvals_dir, file_safe, write_atomic, Decision};
use crate::events::Recorder;
use crate::journal::{FileStore, Header, Recorded, RunStore, Tail};
use crate::lock::Lock;
use crate::providers::file_flags::FileFlags;
use crate::providers::FlagStore;

pub struct DirStore {
    dir: PathBuf,
    journals: FileStore,
    /// Whether this process made the state dir (a refused fresh run then
    /// takes it away again).
    made_dir: std::sync::atomic::AtomicBool,
}

impl DirStore {
    pub fn new(dir: PathBuf) -> DirStore {
        DirStore {
            journals: FileStore::new(&dir),
            dir,
            made_dir: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn run_dir(&self, run_id: &str) -> PathBuf {
        self.journals.run_dir(run_id)
    }
}

/// The run lock, held for the life of the claim.
struct DirClaim {
    _lock: Lock,
    run_dir: PathBuf,
}

impl Claim for DirClaim {
    fn epoch(&self) -> i64 {
        1
    }

    fn scratch_dir(&self) -> PathBuf {
        self.run_dir.clone()
    }
}

impl HeldLock for Lock {}

impl Store for DirStore {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn flag(&self) -> String {
        crate::state_dir::flag_for(&self.dir)
    }

    fn locator(&self) -> std::ffi::OsString {
        self.dir.clone().into_os_string()
    }

    fn create(&self, header: &Header, _claim: &dyn Claim) -> std::io::Result<Box<dyn Recorder>> {
        self.journals.create(header)
    }

    fn append(&self, run_id: &str, _claim: &dyn Claim) -> std::io::Result<Box<dyn Recorder>> {
        self.journals.append(run_id)
    }

    fn read(&self, run_id: &str) -> std::io::Result<Recorded> {
        self.journals.read(run_id)
    }

    fn exists(&self, run_id: &str) -> bool {
        crate::journal::valid_run_id(run_id) && self.run_dir(run_id).exists()
    }

    fn list(&self) -> std::io::Result<Vec<String>> {
        self.journals.list()
    }

    fn tail(&self, run_id: &str) -> std::io::Result<Box<dyn Tail>> {
        self.journals.tail(run_id)
    }

    fn claim(
        &self,
        run_id: &str,
        fresh: bool,
        _lease: Duration,
    ) -> Result<Arc<dyn Claim>, ClaimError> {
        let run_dir = self.run_dir(run_id);
        if fresh && run_dir.exists() {
            return Err(ClaimError::Exists);
        }
        let unusable = |e: std::io::Error| {
            ClaimError::Unusable(format!("state dir {} is unusable: {e}", self.dir.display()))
        };
        if !self.dir.exists() {
            self.made_dir
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        std::fs::create_dir_all(&run_dir).map_err(unusable)?;
        // One process per run: a second `resume` of a live run must not race it.
        match Lock::acquire_file(&run_dir.join("run.lock"), &std::process::id().to_string()) {
            Ok(lock) => Ok(Arc::new(DirClaim {
                _lock: lock,
                run_dir,
            })),
            Err(crate::lock::LockError::Held { holder }) => Err(ClaimError::Held(Holder {
                host: String::new(),
                pid: holder.parse().unwrap_or(0),
                epoch: 1,
            })),
            Err(crate::lock::LockError::Io(e)) => Err(unusable(e)),
            // (Taking a run's lock never waits, so nothing stops it.)
            Err(crate::lock::LockError::Stopped) => Err(unusable(std::io::Error::from(
                std::io::ErrorKind::Interrupted,
            ))),
        }
    }

    fn forget(&self, run_id: &str) {
        if crate::journal::valid_run_id(run_id) {
            let _ = std::fs::remove_dir_all(self.run_dir(run_id));
        }
        // Only what is empty: another run may have started in a state dir
        // this process made (its journal and lock files are not ours).
        if self.made_dir.load(std::sync::atomic::Ordering::SeqCst) {
            for dir in [
                self.dir.join("runs"),
                self.dir.join("locks"),
                self.dir.clone(),
            ] {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }

    fn holder(&self, run_id: &str) -> std::io::Result<Option<Holder>> {
        if !crate::journal::valid_run_id(run_id) {
            return Ok(None);
        }
        let path = self.run_dir(run_id).join("run.lock");
        if !crate::lock::is_held(&path) {
            return Ok(None);
        }
        let pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        Ok(Some(Holder {
            host: String::new(),
            pid,
            epoch: 1,
        }))
    }

    fn lock(
        &self,
        key: &str,
        run_id: &str,
        wait: Option<Duration>,
        queued: &mut dyn FnMut(usize),
        stopped: &dyn Fn() -> bool,
    ) -> Result<Box<dyn HeldLock>, LockError> {
        let lock = match wait {
            None => Lock::acquire(&self.dir, key, run_id),
            Some(wait) => Lock::acquire_queued(&self.dir, key, run_id, wait, queued, stopped),
        };
        match lock {
            Ok(l) => Ok(Box::new(l)),
            Err(crate::lock::LockError::Held { holder }) => Err(match wait {
                None => LockError::Held { holder },
                Some(waited) => LockError::TimedOut { holder, waited },
            }),
            Err(crate::lock::LockError::Io(e)) => Err(LockError::Unusable(e.to_string())),
            Err(crate::lock::LockError::Stopped) => Err(LockError::Cancelled),
        }
    }

    fn queue_position(&self, run_id: &str) -> Option<usize> {
        crate::lock::queue_position(&self.dir, run_id)
    }

    fn open_waiting(&self, run_id: &str, step: &str, rules: &[u8]) -> std::io::Result<()> {
        let dir = approvals_dir(&self.run_dir(run_id), step);
        std::fs::create_dir_all(dir.join("done"))?;
        crate::fsutil::write_atomic(&dir.join("waiting.json"), rules, crate::fsutil::PRIVATE)
    }

    fn close_waiting(&self, run_id: &str, step: &str) {
        let dir = approvals_dir(&self.run_dir(run_id), step);
        let _ = std::fs::remove_file(dir.join("waiting.json"));
    }

    fn waiting(&self, run_id: &str, step: &str) -> std::io::Result<Option<Vec<u8>>> {
        let path = approvals_dir(&self.run_dir(run_id), step).join("waiting.json");
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn post_decision(&self, run_id: &str, step: &str, decision: &Decision) -> std::io::Result<()> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = approvals_dir(&self.run_dir(run_id), step).join(format!(
            "{nanos:020}-{}-{}.json",
            file_safe(&decision.by),
            std::process::id()
        ));
        write_atomic(&path, decision).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
        })
    }

    fn pending_decisions(
        &self,
        run_id: &str,
        step: &str,
        _claim: &dyn Claim,
    ) -> std::io::Result<Vec<(String, Result<Decision, String>)>> {
        let dir = approvals_dir(&self.run_dir(run_id), step);
        let mut out = Vec::new();
        for file in crate::approvals::pending_files(&dir) {
            let decision = std::fs::read(&file)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Decision>(&b).map_err(|e| e.to_string()))
                .map_err(|e| format!("{}: not a decision ({e})", file.display()));
            out.push((file.display().to_string(), decision));
        }
        Ok(out)
    }

    fn consume_decisions(&self, run_id: &str, step: &str, _claim: &dyn Claim, tokens: &[String]) {
        let dir = approvals_dir(&self.run_dir(run_id), step);
        for file in tokens {
            crate::approvals::consume(&dir, Path::new(file));
        }
    }

    fn request_cancel(&self, run_id: &str) -> Result<String, String> {
        let Ok(Some(holder)) = self.holder(run_id) else {
            return Err("no engine holds it".into());
        };
        let pid = holder.pid;
        let target = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| format!("bad engine pid {pid}"))?;
        rustix::process::kill_process(target, rustix::process::Signal::INT)
            .map_err(|e| format!("cannot signal the engine (process {pid}): {e}"))?;
        Ok(format!("process {pid}"))
    }

    fn default_flags(&self, _run_id: &str) -> Arc<dyn FlagStore> {
        Arc::new(FileFlags::new(self.dir.join("flags.json")))
    }

    fn detached_log(&self, run_id: &str) -> PathBuf {
        self.dir.join("detached").join(format!("{run_id}.log"))
    }
}
