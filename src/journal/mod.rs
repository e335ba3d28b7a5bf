//! Durable runs: an append-only, fsync'd journal per run. The journal stores
//! and replays events; what they mean is [`crate::state`]'s business.
//!
//! The journal is the bus's [`Recorder`]: it hears each event first and
//! syncs when the bus says the engine acts next ([`Event::must_be_durable`]),
//! so a step's result is durable before anything that needs it starts (it
//! rides along with the dependent's `step_started`). The first line is a
//! header with the runbook's full text, its hash and the resolved params
//! (never a secret one); every other line is one event. A torn last line
//! (the engine died mid-write) is ignored.
//!
//! The file journal is [`FileStore`]; [`crate::store`] puts it (or the
//! PostgreSQL journal) behind the one store trait commands use.

mod crash;
mod file;

pub(crate) use crash::Point as CrashPoint;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

pub use file::FileStore;

use crate::events::{Event, Recorder};

/// An event as one journal line: its fields, then when it happened.
#[derive(serde::Serialize)]
pub(crate) struct Timed<'a> {
    #[serde(flatten)]
    pub(crate) event: &'a Event,
    pub(crate) at: String,
}

/// The first line: the header's fields, then `"record": "header"`.
#[derive(serde::Serialize)]
pub(crate) struct HeaderLine<'a> {
    #[serde(flatten)]
    pub(crate) header: &'a Header,
    pub(crate) record: &'static str,
}

/// An event record as `(at, event)`.
pub(crate) fn timed_event(value: Json) -> Result<(String, Event), serde_json::Error> {
    let at = value
        .get("at")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string();
    serde_json::from_value::<Event>(value).map(|e| (at, e))
}

/// The first record of a journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub run_id: String,
    pub runbook: String,
    pub file: String,
    pub source: String,
    pub hash: String,
    /// Resolved params, without the `secret: true` ones.
    pub params: Map<String, Json>,
    /// Secret params given with `--param` at the start: `resume` and
    /// `rollback` must be given them again (a default is read from `source`).
    #[serde(default)]
    pub secret_params: Vec<String>,
    pub identity: String,
    pub pid: u32,
    pub started_at: String,
    pub cwd: String,
    /// The plan fingerprint the run was started with (empty in journals older than it).
    #[serde(default)]
    pub fingerprint: String,
    /// The allowed-signers files the run's approvals are checked against,
    /// by approval label (`""`: the runbook's own), as read at the start.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub allowed_signers: std::collections::BTreeMap<String, String>,
    /// The fingerprint of the key that proved `identity` (`run --key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_key: Option<String>,
}

/// A journal as read back.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub header: Header,
    /// (timestamp, event), in order.
    pub events: Vec<(String, Event)>,
    /// Whether a torn last record was dropped.
    pub torn: bool,
}

/// Where journals live.
pub trait RunStore: Send + Sync {
    /// Starts a new run's journal with its header.
    fn create(&self, header: &Header) -> std::io::Result<Box<dyn Recorder>>;
    /// Appends to an existing run's journal (resume, rollback).
    fn append(&self, run_id: &str) -> std::io::Result<Box<dyn Recorder>>;
    fn read(&self, run_id: &str) -> std::io::Result<Recorded>;
    /// Run ids, oldest first.
    fn list(&self) -> std::io::Result<Vec<String>>;
    /// Follows a run's events as they are recorded (`logs --follow`).
    fn tail(&self, run_id: &str) -> std::io::Result<Box<dyn Tail>>;
}

/// A run's events from where the last call stopped.
pub trait Tail: Send {
    /// Events recorded since the last call (all of them the first time).
    fn next_events(&mut self) -> std::io::Result<Vec<(String, Event)>>;
}

/// A run's journal, with the errors a command reports: an unknown or
/// malformed id is a usage error (exit 2), an unreadable journal exit 4.
pub fn read_run(
    store: &dyn crate::store::Store,
    run_id: &str,
) -> Result<Recorded, crate::error::Error> {
    use crate::error::Error;
    match store.read(run_id) {
        Ok(r) => Ok(r),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::invalid(format!(
            "no run `{run_id}` in {}",
            store.describe()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            Err(Error::invalid(e.to_string()))
        }
        Err(e) => Err(Error::cannot_start(format!(
            "cannot read the journal of run `{run_id}`: {e}"
        ))),
    }
}

/// Run ids name directories: letters, digits, `-`, `_`, `.`, not leading `.`.
pub fn valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub fn hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(text.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl Recorded {
    /// The run's state, folded from its events.
    pub fn state(&self, rb: Option<&crate::runbook::Runbook>) -> crate::state::RunState {
        let mut s = crate::state::RunState::replay(
            &self.header.run_id,
            rb,
            self.events.iter().map(|(at, e)| (at.as_str(), e)),
        );
        if s.runbook.is_empty() {
            s.runbook.clone_from(&self.header.runbook);
        }
        s.fingerprint.clone_from(&self.header.fingerprint);
        if s.params.is_empty() {
            s.params.clone_from(&self.header.params);
        }
        s.started_at = Some(self.header.started_at.clone());
        s
    }
}
