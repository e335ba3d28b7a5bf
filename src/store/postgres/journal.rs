//! The journal in `runbook_events`: one row per record, numbered, with the
//! writer's epoch, each holding the line a file journal would.
//!
//! Records are kept in memory until the bus says the engine acts next
//! ([`Recorder::sync`]); then all of them go in one transaction (records
//! that become due together share one commit). A flusher writes what
//! nobody synced within 200 ms, so other machines see output and waiting
//! steps live. A kill -9 loses at most what a power loss loses from a file
//! journal: records never synced, none of which the engine acted on. A sync that finds the database gone waits
//! for it (bounded, saying so), because the engine must not act without a
//! journal; the insert is idempotent by `(run_id, seq)`, so a commit whose
//! acknowledgement was lost is not written twice when retried.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::db::{Db, DbError};
use super::lease::Lease;
use crate::events::{Event, Recorder};
use crate::journal::{CrashPoint, Timed};

/// How soon a record nobody waits for reaches the database, so the other
/// machines see output and progress as they happen.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Records not in the database yet, in order.
pub(super) struct Pending {
    /// The header, until the first write takes it with the first records.
    pub(super) header: Option<String>,
    pub(super) next_seq: i64,
    pub(super) records: Vec<(i64, String)>,
}

/// What the recorder and its flusher share.
pub(super) struct Journal {
    pub(super) db: Arc<Db>,
    pub(super) run_id: String,
    pub(super) lease: Arc<Lease>,
    pub(super) pending: Mutex<Pending>,
    pub(super) closed: AtomicBool,
}

pub(super) struct PgRecorder {
    journal: Arc<Journal>,
    crash: CrashPoint,
    written: usize,
}

impl PgRecorder {
    /// A recorder whose records a flusher thread also writes, every
    /// [`FLUSH_EVERY`], when nothing synced them sooner.
    pub(super) fn new(journal: Journal) -> PgRecorder {
        let journal = Arc::new(journal);
        let flusher = journal.clone();
        let spawned = std::thread::Builder::new()
            .name("runbook-journal".into())
            .spawn(move || {
                while !flusher.closed.load(Ordering::SeqCst) {
                    std::thread::sleep(FLUSH_EVERY);
                    // Errors wait for the next sync, which reports them.
                    let _ = flusher.flush();
                }
            });
        drop(spawned);
        PgRecorder {
            journal,
            crash: CrashPoint::from_env(),
            written: 0,
        }
    }
}

impl Drop for PgRecorder {
    /// What the flusher had not written yet goes now (once, bounded like
    /// every call): the story's last lines, none of which anything waits on.
    fn drop(&mut self) {
        self.journal.closed.store(true, Ordering::SeqCst);
        if self.journal.lease.check().is_ok() {
            let _ = self.journal.flush();
        }
    }
}

impl Journal {
    /// Writes what is pending, in one transaction.
    fn flush(&self) -> Result<(), DbError> {
        let Ok(mut p) = self.pending.lock() else {
            return Err(DbError::Refused("the journal's buffer is poisoned".into()));
        };
        if p.records.is_empty() && p.header.is_none() {
            return Ok(());
        }
        if let Some(why) = self.lease.fenced() {
            return Err(DbError::Fenced(why));
        }
        self.write(&p)?;
        p.records.clear();
        p.header = None;
        Ok(())
    }

    fn write(&self, p: &Pending) -> Result<(), DbError> {
        let run_id = self.run_id.clone();
        let epoch = self.lease.epoch();
        let header = p.header.clone();
        let seqs: Vec<i64> = p.records.iter().map(|(s, _)| *s).collect();
        let lines: Vec<String> = p.records.iter().map(|(_, l)| l.clone()).collect();
        self.db.call(move |c| {
            let mut tx = c.transaction()?;
            if let Some(header) = &header {
                tx.execute("SELECT runbook_fence($1, $2)", &[&run_id, &epoch])?;
                tx.execute(
                    "UPDATE runbook_runs SET header = $2 WHERE run_id = $1",
                    &[&run_id, header],
                )?;
            }
            tx.execute(
                "INSERT INTO runbook_events (run_id, seq, epoch, record)
                 SELECT $1, s, $2, r FROM unnest($3::bigint[], $4::text[]) AS t(s, r)
                 ON CONFLICT (run_id, seq) DO NOTHING",
                &[&run_id, &epoch, &seqs, &lines],
            )?;
            tx.commit()?;
            Ok(())
        })
    }
}

impl Recorder for PgRecorder {
    fn record(&mut self, at: SystemTime, event: &Event) -> Result<(), String> {
        self.journal.lease.check()?;
        let line = Timed {
            event,
            at: humantime::format_rfc3339_millis(at).to_string(),
        };
        let line = serde_json::to_string(&line).map_err(|e| e.to_string())?;
        let counted = !matches!(event, Event::Spawned { .. });
        if counted {
            self.written += 1;
            self.crash.check(true, self.written);
        }
        self.crash.written(line.as_bytes());
        {
            let mut p = self
                .journal
                .pending
                .lock()
                .map_err(|_| "the journal's buffer is poisoned".to_string())?;
            let seq = p.next_seq;
            p.records.push((seq, line));
            p.next_seq += 1;
        }
        if counted {
            self.crash.check(false, self.written);
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let lease = &self.journal.lease;
        // Past its lease the engine could not write anyway (it would be
        // fenced): waiting longer would only hide that.
        let limit = lease.duration();
        let mut said = false;
        let mut pause = Duration::from_millis(100);
        loop {
            lease.check()?;
            match self.journal.flush() {
                Ok(()) => break,
                Err(DbError::LeaseExpired) => {
                    // Nobody took it over (that would be Fenced), but what
                    // the lease held may be another run's now: stop.
                    let why = match lease.renew_now() {
                        Err(why) => why,
                        Ok(_) => "the lease of this engine ran out while it wrote".into(),
                    };
                    lease.fence(why.clone());
                    return Err(why);
                }
                Err(DbError::Unreachable(e)) if started.elapsed() < limit => {
                    if !said {
                        crate::broken_pipe::eprint_line(&format!(
                            "the database is unreachable ({e}): the run waits for it (up to its lease, {}) and starts nothing until its journal is written",
                            crate::duration::format(limit)
                        ));
                        said = true;
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(DbError::Fenced(e)) => {
                    lease.fence(e.clone());
                    return Err(e);
                }
                Err(e) => {
                    return Err(format!(
                        "cannot write the journal of run {}: {e}",
                        self.journal.run_id
                    ))
                }
            }
        }
        if said {
            crate::broken_pipe::eprint_line(&format!(
                "the database is back after {}: the run goes on",
                crate::duration::format(started.elapsed())
            ));
        }
        self.crash.synced();
        Ok(())
    }
}

/// Follows `runbook_events` from the last row read.
pub(super) struct PgTail {
    pub(super) db: Arc<Db>,
    pub(super) run_id: String,
    pub(super) after: i64,
}

impl crate::journal::Tail for PgTail {
    fn next_events(&mut self) -> std::io::Result<Vec<(String, Event)>> {
        let (run_id, after) = (self.run_id.clone(), self.after);
        let rows = self
            .db
            .call(move |c| {
                c.query(
                    "SELECT seq, record FROM runbook_events WHERE run_id = $1 AND seq > $2 ORDER BY seq",
                    &[&run_id, &after],
                )?
                .into_iter()
                .map(|r| Ok((r.try_get::<_, i64>(0)?, r.try_get::<_, String>(1)?)))
                .collect::<Result<Vec<_>, DbError>>()
            })
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut out = Vec::new();
        for (seq, record) in rows {
            self.after = seq;
            if let Ok(value) = serde_json::from_str(&record) {
                if let Ok(e) = crate::journal::timed_event(value) {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }
}
