//! Where runs live: a state directory on one machine ([`DirStore`]) or a
//! PostgreSQL database shared by a team ([`PgStore`]), behind one trait.
//!
//! Everything a command needs from "the state dir" goes through [`Store`]:
//! the journal, the claim on a run (a `flock` on one machine, a lease with
//! an epoch in the database), `lock:` keys and their queues, the approvals
//! mailbox, cancel requests, the default flag store. Commands get one
//! `Arc<dyn Store>` from [`open`] and never look at a path or a URL again,
//! so every command works the same way against either.

mod dir;
pub(crate) mod postgres;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use dir::DirStore;
pub use postgres::PgStore;

use crate::approvals::Decision;
use crate::events::Recorder;
use crate::journal::{Header, Recorded, Tail};
use crate::providers::FlagStore;

/// The default `--lease`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Who holds a run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    /// The holder's epoch (always 1 in a state dir).
    pub epoch: i64,
}

impl Holder {
    /// Whether it holds the run by a lease, which outlives a dead host until
    /// it runs out (a database's holder, named by its host); a state dir's
    /// claim dies with its process.
    pub fn leased(&self) -> bool {
        !self.host.is_empty()
    }

    /// "process 123 on host-a" (a state dir: "process 123").
    pub fn describe(&self) -> String {
        if !self.leased() {
            format!("process {}", self.pid)
        } else {
            format!(
                "process {} on {} (epoch {})",
                self.pid, self.host, self.epoch
            )
        }
    }
}

/// Why a run could not be claimed.
#[derive(Debug)]
pub enum ClaimError {
    /// A fresh run's id is taken.
    Exists,
    /// A live engine holds it.
    Held(Holder),
    /// The store could not be used.
    Unusable(String),
}

/// This process's hold on a run, released when dropped (a state dir's
/// lock file closes; a lease is given up). A lease is renewed in the
/// background until then.
pub trait Claim: Send + Sync {
    /// The epoch every write of this engine carries.
    fn epoch(&self) -> i64;
    /// The local directory for the run's files that never leave this
    /// machine (`$RUNBOOK_OUTPUT` files).
    fn scratch_dir(&self) -> PathBuf;
    /// Gives the claim up now (a lease ends at once instead of expiring);
    /// dropping the last handle does the same.
    fn release(&self) {}
    /// Why this engine may no longer write, once another took the run over.
    fn fenced(&self) -> Option<String> {
        None
    }
    /// The engine's interrupt handler is in place: a remote cancel may now
    /// interrupt it (before, it only stops a wait in a lock queue).
    fn arm(&self) {}
}

/// Why a `lock:` key was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Held by another run (the run id), and this one does not wait.
    Held {
        holder: String,
    },
    /// Waited `wait` and it was still held.
    TimedOut {
        holder: String,
        waited: Duration,
    },
    /// `runbook cancel` while the run waited in the queue.
    Cancelled,
    /// The claim was lost while waiting.
    Fenced(String),
    Unusable(String),
}

/// A held `lock:` key, released when dropped.
pub trait HeldLock: Send {}

/// Where runs live.
pub trait Store: Send + Sync {
    /// How messages name it: a path, or a URL without its password.
    fn describe(&self) -> String;
    /// ` --state-dir X` for a command printed for a person (empty when X
    /// is the default they would get anyway).
    fn flag(&self) -> String;
    /// The `--state-dir` value that reaches this store again, password
    /// included: for a child process's environment, never for printing.
    fn locator(&self) -> std::ffi::OsString;
    /// What the store's own address holds that no output may show.
    fn secrets(&self) -> Vec<String> {
        Vec::new()
    }

    // The journal.
    /// Starts a new run's journal with its header.
    fn create(&self, header: &Header, claim: &dyn Claim) -> std::io::Result<Box<dyn Recorder>>;
    /// Appends to an existing run's journal (resume, rollback).
    fn append(&self, run_id: &str, claim: &dyn Claim) -> std::io::Result<Box<dyn Recorder>>;
    fn read(&self, run_id: &str) -> std::io::Result<Recorded>;
    /// Whether a run by that id exists (even without a journal yet).
    fn exists(&self, run_id: &str) -> bool;
    /// Run ids, oldest first.
    fn list(&self) -> std::io::Result<Vec<String>>;
    /// Follows a run's events as they are recorded (`logs --follow`).
    fn tail(&self, run_id: &str) -> std::io::Result<Box<dyn Tail>>;

    // Claims.
    /// Claims the run for this process: `fresh` creates it. A fresh run
    /// refused later (lock held) is forgotten with [`Store::forget`].
    fn claim(
        &self,
        run_id: &str,
        fresh: bool,
        lease: Duration,
    ) -> Result<Arc<dyn Claim>, ClaimError>;
    /// Removes a fresh run that never got a journal.
    fn forget(&self, run_id: &str);
    /// The live engine holding the run, if any (`Err`: the store cannot
    /// say, which is not the same as nobody).
    fn holder(&self, run_id: &str) -> std::io::Result<Option<Holder>>;
    fn is_live(&self, run_id: &str) -> std::io::Result<bool> {
        self.holder(run_id).map(|h| h.is_some())
    }

    // `lock:` keys.
    /// Takes `key` for `run_id`; with `wait`, queues (FIFO) for up to that
    /// long, calling `queued` with the run's place (1: next) as it changes,
    /// and leaving the queue ([`LockError::Cancelled`]) once `stopped` says
    /// so (a signal to the waiting process) or the run is cancelled.
    fn lock(
        &self,
        key: &str,
        run_id: &str,
        wait: Option<Duration>,
        queued: &mut dyn FnMut(usize),
        stopped: &dyn Fn() -> bool,
    ) -> Result<Box<dyn HeldLock>, LockError>;
    /// The run's place in a lock queue while it waits (1: next).
    fn queue_position(&self, run_id: &str) -> Option<usize>;

    // The approvals mailbox.
    /// Publishes what a waiting approval step accepts (its rules, as JSON).
    fn open_waiting(&self, run_id: &str, step: &str, rules: &[u8]) -> std::io::Result<()>;
    fn close_waiting(&self, run_id: &str, step: &str);
    /// The rules of a step waiting now.
    fn waiting(&self, run_id: &str, step: &str) -> std::io::Result<Option<Vec<u8>>>;
    /// Posts a decision for a waiting step (`runbook approve`).
    fn post_decision(&self, run_id: &str, step: &str, decision: &Decision) -> std::io::Result<()>;
    /// The decisions posted and not yet [`Store::consume_decisions`]d,
    /// oldest first, each with its token (a damaged one as its error). A
    /// fenced claim gets none.
    fn pending_decisions(
        &self,
        run_id: &str,
        step: &str,
        claim: &dyn Claim,
    ) -> std::io::Result<Vec<(String, Result<Decision, String>)>>;
    /// Marks decisions as handled, once the journal holds them: a crash
    /// before this hands them to the next attempt again.
    fn consume_decisions(&self, run_id: &str, step: &str, claim: &dyn Claim, tokens: &[String]);

    /// Asks the engine holding the run to stop as on Ctrl-C; what was done.
    fn request_cancel(&self, run_id: &str) -> Result<String, String>;

    /// The flag store `flag:` steps of `run_id` use without a `provider:`.
    fn default_flags(&self, run_id: &str) -> Arc<dyn FlagStore>;
    /// Where a detached run's own output goes (on the machine that started it).
    fn detached_log(&self, run_id: &str) -> PathBuf;
}

/// Whether a `--state-dir` value names a database.
pub fn is_database_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// The store a `--state-dir` value names: a PostgreSQL URL, else a
/// directory (relative to `cwd`).
pub fn open(
    given: &std::ffi::OsStr,
    cwd: &std::path::Path,
) -> Result<Arc<dyn Store>, crate::error::Error> {
    match given.to_str() {
        Some(s) if is_database_url(s) => Ok(Arc::new(PgStore::connect(s)?)),
        _ => Ok(Arc::new(DirStore::new(cwd.join(given)))),
    }
}
