//! Team mode: runs, journals, leases, locks, approvals and the default
//! flag store in a PostgreSQL database (`--state-dir postgres://...`).
//!
//! One file per concern: the connection thread (`db`), the tables and
//! their migrations with the fencing trigger (`schema`), the journal
//! (`journal`), the lease and its renewal (`lease`), `lock:` queues
//! (`locks`), the approvals mailbox (`mailbox`), the flag store (`flags`),
//! the URL as shown (`url`); this file holds the store itself: the claim,
//! reading runs, cancel.
//!
//! The URL's password is a secret: messages and printed commands name the
//! database by [`PgStore::describe`], which leaves it out (give it again
//! with the URL or `PGPASSWORD`).

mod db;
mod flags;
mod journal;
mod lease;
mod locks;
mod mailbox;
mod schema;
mod url;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use db::{Db, DbError};
use lease::{Lease, PgClaim};

use super::{Claim, ClaimError, HeldLock, Holder, LockError, Store};
use crate::approvals::Decision;
use crate::error::Error;
use crate::events::Recorder;
use crate::journal::{Header, HeaderLine, Recorded, Tail};
use crate::providers::FlagStore;

pub struct PgStore {
    db: Arc<Db>,
    /// As given (password included): only for a child's environment.
    url: String,
    config: postgres::Config,
    shown: String,
    /// Leases this process holds, by run id (the journal writer, the
    /// mailbox, the lock queue and the flag store fence their writes by them).
    leases: Leases,
}

type Leases = Arc<Mutex<HashMap<String, Arc<Lease>>>>;

fn lease_in(leases: &Leases, run_id: &str) -> Option<Arc<Lease>> {
    leases.lock().ok()?.get(run_id).cloned()
}

#[allow(clippy::needless_pass_by_value)] // the shape `map_err` takes
pub(super) fn io(e: DbError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl PgStore {
    /// Connects and creates or migrates the tables; exit 4 when it cannot.
    pub fn connect(url: &str) -> Result<PgStore, Error> {
        let mut config: postgres::Config = url.parse().map_err(|e| {
            // The parser's message never holds the URL, only what is wrong.
            Error::invalid(format!("--state-dir: not a PostgreSQL URL: {e}"))
        })?;
        if config.get_password().is_none() {
            if let Some(pw) = std::env::var_os("PGPASSWORD") {
                config.password(pw.as_encoded_bytes());
            }
        }
        if config.get_application_name().is_none() {
            config.application_name("runbook");
        }
        // No transaction of ours idles: a session that does (its engine
        // paused mid-write) is ended, so its row locks never hold up a
        // takeover; nothing waits on a lock or a statement unbounded.
        let options = format!(
            "{} -c idle_in_transaction_session_timeout=1000 -c lock_timeout=5000 -c statement_timeout=8000",
            config.get_options().unwrap_or_default()
        );
        config.options(options.trim_start());
        let shown = url::shown_url(url, &config);
        let store = PgStore {
            db: Arc::new(Db::new(config.clone())),
            url: url.to_string(),
            config,
            shown,
            leases: Arc::new(Mutex::new(HashMap::new())),
        };
        store.db.call(schema::migrate).map_err(|e| {
            Error::cannot_start(format!("cannot use the database {}: {e}", store.shown))
        })?;
        Ok(store)
    }

    fn lease_of(&self, run_id: &str) -> Option<Arc<Lease>> {
        lease_in(&self.leases, run_id)
    }

    /// This process's epoch on the run (0: it holds none, so every fenced
    /// write of it is refused).
    fn epoch_of(&self, run_id: &str) -> i64 {
        self.lease_of(run_id).map_or(0, |l| l.epoch())
    }

    fn recorder(&self, run_id: &str, header: Option<String>) -> std::io::Result<Box<dyn Recorder>> {
        let lease = self.lease_of(run_id).ok_or_else(|| {
            std::io::Error::other(format!("run {run_id} is not claimed by this process"))
        })?;
        let id = run_id.to_string();
        let next_seq = self
            .db
            .call(move |c| {
                Ok(c.query_one(
                    "SELECT COALESCE(max(seq), 0) + 1 FROM runbook_events WHERE run_id = $1",
                    &[&id],
                )?
                .try_get::<_, i64>(0)?)
            })
            .map_err(io)?;
        Ok(Box::new(journal::PgRecorder::new(journal::Journal {
            db: self.db.clone(),
            run_id: run_id.to_string(),
            lease,
            pending: Mutex::new(journal::Pending {
                header,
                next_seq,
                records: Vec::new(),
            }),
            closed: std::sync::atomic::AtomicBool::new(false),
        })))
    }

    /// A private directory (0700) for the run's local files, in this
    /// user's own state dir, one per epoch: what a killed engine of an
    /// earlier epoch left (`$RUNBOOK_OUTPUT` files) is cleared by the next
    /// claim on this machine, and a fenced engine's cleanup never touches
    /// the new holder's; removed when the lease is given up. Without a
    /// home, an unpredictable temp dir.
    fn scratch(run_id: &str, epoch: i64) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::DirBuilderExt as _;
        match crate::state_dir::from_env() {
            Ok(home) => {
                let base = home.join("team-runs");
                for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let earlier = name
                        .strip_prefix(&format!("{run_id}."))
                        .and_then(|n| n.parse::<i64>().ok())
                        .is_some_and(|n| n < epoch);
                    if earlier {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
                let dir = base.join(format!("{run_id}.{epoch}"));
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)?;
                Ok(dir)
            }
            Err(_) => Ok(tempfile::Builder::new()
                .prefix(&format!("runbook-{run_id}-"))
                .tempdir()?
                .keep()),
        }
    }
}

/// A `holder_host, holder_pid, epoch` row.
fn holder_of(r: &postgres::Row) -> Result<Holder, DbError> {
    Ok(Holder {
        host: r.try_get(0)?,
        pid: u32::try_from(r.try_get::<_, i32>(1)?).unwrap_or(0),
        epoch: r.try_get(2)?,
    })
}

fn not_found(run_id: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotFound, format!("no run `{run_id}`"))
}

impl Store for PgStore {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn flag(&self) -> String {
        format!(" --state-dir {}", crate::template::shell_quote(&self.shown))
    }

    fn locator(&self) -> std::ffi::OsString {
        self.url.clone().into()
    }

    fn secrets(&self) -> Vec<String> {
        url::secrets(&self.url, &self.config)
    }

    fn create(&self, header: &Header, _claim: &dyn Claim) -> std::io::Result<Box<dyn Recorder>> {
        let text = serde_json::to_string(&HeaderLine {
            header,
            record: "header",
        })
        .map_err(std::io::Error::other)?;
        // Written with the first records the engine acts on, in their commit.
        self.recorder(&header.run_id, Some(text))
    }

    fn append(&self, run_id: &str, _claim: &dyn Claim) -> std::io::Result<Box<dyn Recorder>> {
        self.recorder(run_id, None)
    }

    fn read(&self, run_id: &str) -> std::io::Result<Recorded> {
        if !crate::journal::valid_run_id(run_id) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("`{run_id}` is not a run id"),
            ));
        }
        let id = run_id.to_string();
        let (header, records) = self
            .db
            .call(move |c| {
                let mut tx = c.build_transaction().read_only(true).start()?;
                let header = tx
                    .query_opt("SELECT header FROM runbook_runs WHERE run_id = $1", &[&id])?
                    .map(|r| r.try_get::<_, Option<String>>(0))
                    .transpose()?
                    .flatten();
                let records = tx
                    .query(
                        "SELECT record FROM runbook_events WHERE run_id = $1 ORDER BY seq",
                        &[&id],
                    )?
                    .into_iter()
                    .map(|r| r.try_get::<_, String>(0))
                    .collect::<Result<Vec<_>, _>>()?;
                tx.commit()?;
                Ok((header, records))
            })
            .map_err(io)?;
        let header = header.ok_or_else(|| not_found(run_id))?;
        let header: Header = serde_json::from_str(&header).map_err(std::io::Error::other)?;
        let mut events = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            let value = serde_json::from_str(record).map_err(|e| {
                std::io::Error::other(format!("journal record {} is damaged: {e}", i + 1))
            })?;
            events.push(crate::journal::timed_event(value).map_err(|e| {
                std::io::Error::other(format!("journal record {} is not an event: {e}", i + 1))
            })?);
        }
        Ok(Recorded {
            header,
            events,
            torn: false,
        })
    }

    fn exists(&self, run_id: &str) -> bool {
        let id = run_id.to_string();
        self.db
            .call(move |c| {
                Ok(
                    c.query_opt("SELECT 1 FROM runbook_runs WHERE run_id = $1", &[&id])?
                        .is_some(),
                )
            })
            .unwrap_or(false)
    }

    fn list(&self) -> std::io::Result<Vec<String>> {
        self.db
            .call(|c| {
                c.query(
                    "SELECT run_id FROM runbook_runs WHERE header IS NOT NULL ORDER BY created_at, run_id",
                    &[],
                )?
                .into_iter()
                .map(|r| r.try_get::<_, String>(0).map_err(DbError::from))
                .collect()
            })
            .map_err(io)
    }

    fn tail(&self, run_id: &str) -> std::io::Result<Box<dyn Tail>> {
        if !self.exists(run_id) {
            return Err(not_found(run_id));
        }
        Ok(Box::new(journal::PgTail {
            db: self.db.clone(),
            run_id: run_id.to_string(),
            after: 0,
        }))
    }

    fn claim(
        &self,
        run_id: &str,
        fresh: bool,
        lease: Duration,
    ) -> Result<Arc<dyn Claim>, ClaimError> {
        let me = crate::runner::os_user_and_host();
        let host = me.host.unwrap_or_else(|| "unknown".into());
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let ms = lease.as_millis() as f64;
        let id = run_id.to_string();
        let claimed = self.db.call(move |c| {
            let row = if fresh {
                c.query_opt(
                    // A run whose engine died before its journal's first
                    // commit left a row with no header: once its lease ran
                    // out the id is free again, as a state dir's would be.
                    "INSERT INTO runbook_runs (run_id, holder_host, holder_pid, lease_until)
                     VALUES ($1, $2, $3, clock_timestamp() + $4 * interval '1 millisecond')
                     ON CONFLICT (run_id) DO UPDATE SET epoch = runbook_runs.epoch + 1,
                         holder_host = $2, holder_pid = $3,
                         lease_until = clock_timestamp() + $4 * interval '1 millisecond',
                         created_at = clock_timestamp()
                     WHERE runbook_runs.header IS NULL
                       AND (runbook_runs.lease_until IS NULL OR runbook_runs.lease_until < clock_timestamp())
                     RETURNING epoch, cancel_requests",
                    &[&id, &host, &pid, &ms],
                )?
            } else {
                c.query_opt(
                    "UPDATE runbook_runs SET epoch = epoch + 1, holder_host = $2, holder_pid = $3,
                         lease_until = clock_timestamp() + $4 * interval '1 millisecond'
                     WHERE run_id = $1 AND (lease_until IS NULL OR lease_until < clock_timestamp())
                     RETURNING epoch, cancel_requests",
                    &[&id, &host, &pid, &ms],
                )?
            };
            match row {
                Some(r) => Ok(Ok((r.try_get::<_, i64>(0)?, r.try_get::<_, i32>(1)?))),
                None => Ok(Err(c
                    .query_opt(
                        "SELECT holder_host, holder_pid, epoch FROM runbook_runs WHERE run_id = $1",
                        &[&id],
                    )?
                    .map(|r| holder_of(&r))
                    .transpose()?)),
            }
        });
        let (epoch, cancels) = match claimed {
            Ok(Ok(x)) => x,
            Ok(Err(_)) if fresh => return Err(ClaimError::Exists),
            Ok(Err(Some(holder))) => return Err(ClaimError::Held(holder)),
            Ok(Err(None)) => {
                return Err(ClaimError::Unusable(format!(
                    "no run `{run_id}` in {}",
                    self.shown
                )))
            }
            Err(e) => {
                return Err(ClaimError::Unusable(format!(
                    "cannot use the database {}: {e}",
                    self.shown
                )))
            }
        };
        let scratch = PgStore::scratch(run_id, epoch).map_err(|e| {
            ClaimError::Unusable(format!("cannot make a directory for the run's files: {e}"))
        })?;
        // Its own connection: renewals never wait behind a journal write.
        let renewals = Arc::new(Db::new(self.config.clone()));
        let lease = Lease::new(renewals, run_id, epoch, lease, scratch);
        lease.keep(cancels);
        if let Ok(mut l) = self.leases.lock() {
            l.insert(run_id.to_string(), lease.clone());
        }
        Ok(Arc::new(PgClaim(lease)))
    }

    fn forget(&self, run_id: &str) {
        // Only this engine's own: a run another engine took over is its.
        let (id, epoch) = (run_id.to_string(), self.epoch_of(run_id));
        let _ = self.db.call(move |c| {
            c.execute(
                "DELETE FROM runbook_runs WHERE run_id = $1 AND epoch = $2",
                &[&id, &epoch],
            )?;
            Ok(())
        });
    }

    fn holder(&self, run_id: &str) -> std::io::Result<Option<Holder>> {
        let id = run_id.to_string();
        self.db
            .call(move |c| {
                c.query_opt(
                    "SELECT holder_host, holder_pid, epoch FROM runbook_runs
                     WHERE run_id = $1 AND lease_until >= clock_timestamp()",
                    &[&id],
                )?
                .map(|r| holder_of(&r))
                .transpose()
            })
            .map_err(io)
    }

    fn lock(
        &self,
        key: &str,
        run_id: &str,
        wait: Option<Duration>,
        queued: &mut dyn FnMut(usize),
        stopped: &dyn Fn() -> bool,
    ) -> Result<Box<dyn HeldLock>, LockError> {
        let Some(lease) = self.lease_of(run_id) else {
            return Err(LockError::Unusable(format!(
                "run {run_id} is not claimed by this process"
            )));
        };
        locks::acquire(&self.db, &lease, key, run_id, wait, queued, stopped)
    }

    fn queue_position(&self, run_id: &str) -> Option<usize> {
        locks::position(&self.db, run_id)
    }

    fn open_waiting(&self, run_id: &str, step: &str, rules: &[u8]) -> std::io::Result<()> {
        mailbox::open_waiting(&self.db, run_id, step, self.epoch_of(run_id), rules)
    }

    fn close_waiting(&self, run_id: &str, step: &str) {
        mailbox::close_waiting(&self.db, run_id, step, self.epoch_of(run_id));
    }

    fn waiting(&self, run_id: &str, step: &str) -> std::io::Result<Option<Vec<u8>>> {
        mailbox::waiting(&self.db, run_id, step)
    }

    fn post_decision(&self, run_id: &str, step: &str, decision: &Decision) -> std::io::Result<()> {
        mailbox::post_decision(&self.db, run_id, step, decision)
    }

    fn pending_decisions(
        &self,
        run_id: &str,
        step: &str,
        claim: &dyn Claim,
    ) -> std::io::Result<Vec<(String, Result<Decision, String>)>> {
        mailbox::pending_decisions(&self.db, run_id, step, claim.epoch())
    }

    fn consume_decisions(&self, run_id: &str, step: &str, claim: &dyn Claim, tokens: &[String]) {
        mailbox::consume_decisions(&self.db, run_id, step, claim.epoch(), tokens);
    }

    fn request_cancel(&self, run_id: &str) -> Result<String, String> {
        let id = run_id.to_string();
        let holder = self
            .db
            .call(move |c| {
                c.query_opt(
                    "UPDATE runbook_runs SET cancel_requests = cancel_requests + 1
                     WHERE run_id = $1 AND lease_until >= clock_timestamp()
                     RETURNING holder_host, holder_pid, epoch",
                    &[&id],
                )?
                .map(|r| holder_of(&r))
                .transpose()
            })
            .map_err(|e| e.to_string())?;
        match holder {
            Some(h) => Ok(format!(
                "{}, which hears it within a third of its lease",
                h.describe()
            )),
            None => Err("no engine holds it".into()),
        }
    }

    fn default_flags(&self, run_id: &str) -> Arc<dyn FlagStore> {
        Arc::new(flags::PgFlags {
            db: self.db.clone(),
            run_id: run_id.to_string(),
            leases: self.leases.clone(),
        })
    }

    fn detached_log(&self, run_id: &str) -> PathBuf {
        // On the machine that started it, in its user's own state dir
        // (without a home, a private temp dir of its own).
        let dir = crate::state_dir::from_env()
            .map(|d| d.join("detached"))
            .or_else(|_| {
                tempfile::Builder::new()
                    .prefix("runbook-detached-")
                    .tempdir()
                    .map(tempfile::TempDir::keep)
            });
        dir.unwrap_or_else(|_| std::env::temp_dir())
            .join(format!("{run_id}.log"))
    }
}
