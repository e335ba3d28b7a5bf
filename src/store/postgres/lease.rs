//! A run's lease: a row in `runbook_runs` with the holder, an epoch and an
//! expiry, renewed by a thread of its own (on a connection of its own, so
//! a journal write waiting for the database does not starve it) every
//! third of the lease.
//!
//! Every renewal is conditional on the epoch: when another engine took the
//! run over, the renewal finds a newer epoch and this engine is fenced. A
//! fenced engine (or one that hears `runbook cancel`) is stopped the way
//! Ctrl-C stops it, by SIGINT to itself: the engine's own unwinding then
//! tries to record, the database refuses, and the run stops acting with
//! nothing more written (the fenced case exits 4, see `runner::start`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::db::{Db, DbError};

#[derive(Default)]
struct Interrupts {
    armed: bool,
    pending: bool,
}

pub(crate) struct Lease {
    db: Arc<Db>,
    run_id: String,
    epoch: i64,
    duration: Duration,
    /// Why this engine may not write any more.
    fenced: Mutex<Option<String>>,
    released: AtomicBool,
    /// Whether the engine's interrupt handler is in place, and whether a
    /// cancel came before it was (one lock: neither is lost between them).
    interrupts: Mutex<Interrupts>,
    /// When the last successful renewal was sent: the lease is held until
    /// then plus its duration, as far as this process can know.
    renewed_at: Mutex<Instant>,
    wake: (Mutex<bool>, Condvar),
    scratch: std::path::PathBuf,
}

impl Lease {
    pub(super) fn new(
        db: Arc<Db>,
        run_id: &str,
        epoch: i64,
        duration: Duration,
        scratch: std::path::PathBuf,
    ) -> Arc<Lease> {
        Arc::new(Lease {
            db,
            run_id: run_id.to_string(),
            epoch,
            duration,
            fenced: Mutex::new(None),
            released: AtomicBool::new(false),
            interrupts: Mutex::new(Interrupts::default()),
            renewed_at: Mutex::new(Instant::now()),
            wake: (Mutex::new(false), Condvar::new()),
            scratch,
        })
    }

    pub(crate) fn epoch(&self) -> i64 {
        self.epoch
    }

    pub(crate) fn duration(&self) -> Duration {
        self.duration
    }

    /// `Err` once the engine is fenced, or once its lease ran out by this
    /// process's own clock (it could not renew: paused, or cut off).
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(why) = self.fenced() {
            return Err(why);
        }
        // A tenth short: the claim's own round trip, and clocks that drift.
        let held_until = self.renewed_at.lock().map(|t| *t + self.duration * 9 / 10);
        if held_until.is_ok_and(|t| Instant::now() >= t) {
            // One try to renew says what happened: still ours (go on), taken
            // over (by whom), or out of reach.
            if self.renew_now().is_ok() {
                return Ok(());
            }
            if let Some(why) = self.fenced() {
                return Err(why);
            }
            self.fence(format!(
                "the lease of this engine on run {} ran out before it could renew it (the database was unreachable or this process was paused); what it held may be another run's now, so it stopped without acting again: `runbook resume {}` continues the run",
                self.run_id, self.run_id
            ));
            return Err(self.fenced().unwrap_or_default());
        }
        Ok(())
    }

    pub(crate) fn fenced(&self) -> Option<String> {
        self.fenced.lock().ok().and_then(|f| f.clone())
    }

    pub(crate) fn fence(&self, why: String) {
        if let Ok(mut f) = self.fenced.lock() {
            if f.is_none() {
                *f = Some(why);
            }
        }
    }

    /// Cancels asked for before the engine could hear them (while queued).
    pub(crate) fn cancel_pending(&self) -> bool {
        self.interrupts.lock().is_ok_and(|i| i.pending)
    }

    /// From now on a cancel request interrupts the engine (its handler is in place).
    pub(crate) fn arm(&self) {
        if let Ok(mut i) = self.interrupts.lock() {
            i.armed = true;
            if std::mem::take(&mut i.pending) {
                interrupt_self();
            }
        }
    }

    /// A cancel (or a fence) stops the engine as Ctrl-C would, once it can.
    fn interrupt(&self) {
        if let Ok(mut i) = self.interrupts.lock() {
            if i.armed {
                interrupt_self();
            } else {
                i.pending = true;
            }
        }
    }

    /// Renews now; the cancel requests counted so far.
    pub(crate) fn renew_now(&self) -> Result<i32, String> {
        let sent = Instant::now();
        let (run_id, epoch) = (self.run_id.clone(), self.epoch);
        let ms = i64::try_from(self.duration.as_millis()).unwrap_or(i64::MAX);
        let renewed = self.db.call(move |c| {
            // Only a live lease is extended: once it ran out, what it
            // held (a `lock:` key, a place in a queue) may be another
            // run's, so this engine must not go on, taken over or not.
            let row = c.query_opt(
                "UPDATE runbook_runs SET lease_until = clock_timestamp() + $3 * interval '1 millisecond'
                 WHERE run_id = $1 AND epoch = $2 AND lease_until >= clock_timestamp()
                 RETURNING cancel_requests",
                &[&run_id, &epoch, &(ms as f64)],
            )?;
            match row {
                Some(r) => Ok(Some(r.try_get::<_, i32>(0)?)),
                None => {
                    let holder = c
                        .query_opt(
                            "SELECT holder_host, holder_pid, epoch FROM runbook_runs WHERE run_id = $1",
                            &[&run_id],
                        )?
                        .map(|r| super::holder_of(&r))
                        .transpose()?;
                    Err(DbError::Fenced(match holder {
                        Some(h) if h.epoch != epoch => format!(
                            "run {run_id} was taken over by {}; this engine (epoch {epoch}) stopped without acting again",
                            h.describe()
                        ),
                        Some(_) => format!(
                            "the lease of this engine on run {run_id} ran out before it could renew it (the database was unreachable or this process was paused); what it held may be another run's now, so it stopped without acting again: `runbook resume {run_id}` continues the run"
                        ),
                        None => format!("run {run_id} is gone from the database; this engine stopped"),
                    }))
                }
            }
        });
        if renewed.is_ok() {
            if let Ok(mut t) = self.renewed_at.lock() {
                *t = sent;
            }
        }
        match renewed {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Ok(0),
            Err(DbError::Fenced(why)) => {
                self.fence(why.clone());
                Err(why)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Renews every third of the lease until released; stops the engine
    /// (SIGINT to itself) when fenced or asked to cancel.
    pub(super) fn keep(self: &Arc<Lease>, mut cancels_seen: i32) {
        let lease = self.clone();
        let every = (self.duration / 3).max(Duration::from_millis(100));
        // After a failed renewal, again soon: the lease is running out.
        let again = every.min(Duration::from_millis(500));
        let spawned = std::thread::Builder::new()
            .name("runbook-lease".into())
            .spawn(move || {
                let mut wait = every;
                loop {
                    {
                        let (lock, cvar) = &lease.wake;
                        let Ok(woken) = lock.lock() else { return };
                        let Ok((woken, _)) = cvar.wait_timeout_while(woken, wait, |w| !*w) else {
                            return;
                        };
                        if *woken {
                            return;
                        }
                    }
                    if lease.released.load(Ordering::SeqCst) {
                        return;
                    }
                    let renewed = lease.renew_now();
                    wait = if renewed.is_ok() { every } else { again };
                    match renewed {
                        Ok(n) => {
                            while cancels_seen < n {
                                cancels_seen += 1;
                                lease.interrupt();
                            }
                        }
                        // Fenced by the database, or out of lease by our clock.
                        Err(_) if lease.fenced().is_some() || lease.check().is_err() => {
                            crate::broken_pipe::eprint_line(&lease.fenced().unwrap_or_default());
                            lease.interrupt();
                            return;
                        }
                        // Unreachable: again soon; the journal waits for the
                        // database on its own.
                        Err(_) => {}
                    }
                }
            });
        drop(spawned);
    }

    /// Gives the lease up: the run is free for `resume` at once.
    pub(crate) fn release(&self) {
        if self.released.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Ok(mut w) = self.wake.0.lock() {
            *w = true;
            self.wake.1.notify_all();
        }
        let (run_id, epoch) = (self.run_id.clone(), self.epoch);
        let _ = self.db.call(move |c| {
            c.execute(
                "UPDATE runbook_runs SET lease_until = NULL WHERE run_id = $1 AND epoch = $2",
                &[&run_id, &epoch],
            )?;
            Ok(())
        });
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// What a Ctrl-C at the engine's terminal would do.
fn interrupt_self() {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::INT);
}

/// The claim a [`super::PgStore`] hands out.
pub(super) struct PgClaim(pub(super) Arc<Lease>);

impl crate::store::Claim for PgClaim {
    fn epoch(&self) -> i64 {
        self.0.epoch
    }

    fn scratch_dir(&self) -> std::path::PathBuf {
        self.0.scratch.clone()
    }

    fn release(&self) {
        self.0.release();
    }

    fn fenced(&self) -> Option<String> {
        self.0.fenced()
    }

    fn arm(&self) {
        self.0.arm();
    }
}

impl Drop for PgClaim {
    fn drop(&mut self) {
        self.0.release();
    }
}
