//! One PostgreSQL connection on a thread of its own.
//!
//! The `postgres` client blocks on a runtime of its own, which tokio
//! forbids inside the engine's runtime; a dedicated thread owns the
//! connection and runs jobs sent to it, so the same blocking call works
//! from the engine, from `runbook serve`'s handlers and from a plain
//! command. A job runs once: retrying is the caller's decision (a journal
//! write retries until the database is back; a status read does not). A
//! broken connection is dropped and made again for the next job.

use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use postgres::{Client, Config, NoTls};

/// How long connecting may take before the job fails as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long any one job may take, connecting included: a server that
/// accepts connections but never answers must not hang a command.
const JOB_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a job failed.
#[derive(Debug, Clone)]
pub(crate) enum DbError {
    /// No connection (refused, timed out, dropped mid-job).
    Unreachable(String),
    /// The database refused a write of an older epoch: another engine
    /// took the run over.
    Fenced(String),
    /// The writer's lease ran out: it must renew before writing again.
    LeaseExpired,
    /// Anything else the database said.
    Refused(String),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Unreachable(e) => write!(f, "the database is unreachable: {e}"),
            DbError::Fenced(e) => write!(f, "{e}"),
            DbError::LeaseExpired => write!(f, "this engine's lease on the run ran out"),
            DbError::Refused(e) => write!(f, "the database refused: {e}"),
        }
    }
}

/// SQLSTATEs our trigger raises (`schema.rs`).
pub(crate) const FENCED: &str = "RB001";
pub(crate) const EXPIRED: &str = "RB002";

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> DbError {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            return match code {
                FENCED => DbError::Fenced(db.message().to_string()),
                EXPIRED => DbError::LeaseExpired,
                // The server going away (shut down, restarting, crashed,
                // out of connections), a wait we bounded running out (a
                // statement, a lock, an idle transaction), or the server
                // choosing a victim: the same as not reaching it, worth
                // trying again.
                _ if code.starts_with("08")
                    || code.starts_with("57P")
                    || matches!(
                        code,
                        "53300" | "57014" | "55P03" | "40001" | "40P01" | "25P03"
                    ) =>
                {
                    DbError::Unreachable(db.message().to_string())
                }
                _ => DbError::Refused(db.message().to_string()),
            };
        }
        if e.is_closed() {
            return DbError::Unreachable("the connection closed".into());
        }
        // Not from the server: I/O, a timeout, a protocol error.
        DbError::Unreachable(error_chain(&e))
    }
}

/// The error and its sources, which say what really happened
/// ("Connection refused" is a source of "error connecting to server").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

type Job = Box<dyn FnOnce(&mut Option<Client>, &Config) + Send>;

pub(crate) struct Db {
    config: Config,
    jobs: Mutex<mpsc::Sender<Job>>,
}

/// A connection thread; it ends when its sender is dropped.
fn worker(config: Config) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    let spawned = std::thread::Builder::new()
        .name("runbook-db".into())
        .spawn(move || {
            let mut client: Option<Client> = None;
            while let Ok(job) = rx.recv() {
                job(&mut client, &config);
            }
        });
    // Without the thread every call fails as unreachable (its sender's
    // receiver is gone), which the callers report.
    drop(spawned);
    tx
}

impl Db {
    pub(crate) fn new(mut config: Config) -> Db {
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .tcp_user_timeout(JOB_TIMEOUT);
        Db {
            jobs: Mutex::new(worker(config.clone())),
            config,
        }
    }

    /// Runs `f` on the connection, connecting first when there is none.
    pub(crate) fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let (reply_tx, reply_rx) = mpsc::channel();
        let job: Job = Box::new(move |client, config| {
            let result = (|| {
                if client.as_ref().is_none_or(Client::is_closed) {
                    *client = Some(
                        config
                            .connect(NoTls)
                            .map_err(|e| DbError::Unreachable(error_chain(&e)))?,
                    );
                }
                let Some(c) = client.as_mut() else {
                    return Err(DbError::Unreachable("no connection".into()));
                };
                let result = f(c);
                if matches!(result, Err(DbError::Unreachable(_))) {
                    *client = None;
                }
                result
            })();
            let _ = reply_tx.send(result);
        });
        let sent = match self.jobs.lock() {
            Ok(tx) => tx.send(job).is_ok(),
            Err(_) => false,
        };
        if !sent {
            return Err(DbError::Unreachable("the database thread is gone".into()));
        }
        match reply_rx.recv_timeout(JOB_TIMEOUT) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // The thread is stuck on a server that does not answer: the
                // next job gets a thread and a connection of its own.
                if let Ok(mut tx) = self.jobs.lock() {
                    *tx = worker(self.config.clone());
                }
                Err(DbError::Unreachable(format!(
                    "no answer within {}s",
                    JOB_TIMEOUT.as_secs()
                )))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(DbError::Unreachable("the database thread is gone".into()))
            }
        }
    }
}
