//! `lock:` keys across machines: `runbook_lock_queue`, one row per run
//! holding or waiting for a key, in ticket (arrival) order. A partial
//! unique index lets one row per key hold. A row whose run's lease ran out
//! (its engine died) is deleted by whoever looks next, so a dead run never
//! holds a key or a place for longer than its lease. No advisory lock is
//! held across statements: everything is a row, visible to `status`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::db::{Db, DbError};
use crate::store::{HeldLock, LockError};

/// How often a queued run looks again.
const POLL: Duration = Duration::from_millis(100);

struct PgLock {
    db: Arc<Db>,
    ticket: i64,
}

impl HeldLock for PgLock {}

impl Drop for PgLock {
    fn drop(&mut self) {
        let ticket = self.ticket;
        let _ = self.db.call(move |c| {
            c.execute(
                "DELETE FROM runbook_lock_queue WHERE ticket = $1",
                &[&ticket],
            )?;
            Ok(())
        });
    }
}

fn clean(c: &mut postgres::Client, key: &str) -> Result<(), DbError> {
    c.execute(
        "DELETE FROM runbook_lock_queue q USING runbook_runs r
         WHERE q.key_hash = $1 AND q.run_id = r.run_id
           AND (r.lease_until IS NULL OR r.lease_until < clock_timestamp())",
        &[&key],
    )?;
    Ok(())
}

fn holder(c: &mut postgres::Client, key: &str) -> Result<Option<String>, DbError> {
    Ok(c.query_opt(
        "SELECT run_id FROM runbook_lock_queue WHERE key_hash = $1 AND holding",
        &[&key],
    )?
    .map(|r| r.try_get::<_, String>(0))
    .transpose()?)
}

pub(super) fn acquire(
    db: &Arc<Db>,
    lease: &super::Lease,
    key: &str,
    run_id: &str,
    wait: Option<Duration>,
    queued: &mut dyn FnMut(usize),
    stopped: &dyn Fn() -> bool,
) -> Result<Box<dyn HeldLock>, LockError> {
    let key = crate::lock::key_file_name(key);
    let unusable = |e: DbError| LockError::Unusable(e.to_string());
    let epoch = lease.epoch();
    let (k, id) = (key.clone(), run_id.to_string());
    // Rows of this run from an earlier epoch (the engine before a
    // takeover) are stale: this engine holds the run now. A newer epoch's
    // rows are not ours to touch.
    db.call(move |c| {
        c.execute(
            "DELETE FROM runbook_lock_queue WHERE key_hash = $1 AND run_id = $2 AND epoch < $3",
            &[&k, &id, &epoch],
        )?;
        Ok(())
    })
    .map_err(unusable)?;
    let (k, id) = (key.clone(), run_id.to_string());
    let Some(wait) = wait else {
        let taken = db
            .call(move |c| {
                clean(c, &k)?;
                // Runs waiting in line come first: a run that does not wait
                // takes a free key only when nobody queues for it.
                let waiter = c
                    .query_opt(
                        "SELECT run_id FROM runbook_lock_queue WHERE key_hash = $1 AND NOT holding
                         ORDER BY ticket LIMIT 1",
                        &[&k],
                    )?
                    .map(|r| r.try_get::<_, String>(0))
                    .transpose()?;
                if let Some(w) = waiter {
                    let held = holder(c, &k)?.unwrap_or(w);
                    return Ok(Err(held));
                }
                let row = c.query_opt(
                    "INSERT INTO runbook_lock_queue (key_hash, run_id, holding, epoch) VALUES ($1, $2, true, $3)
                     ON CONFLICT (key_hash) WHERE holding DO NOTHING RETURNING ticket",
                    &[&k, &id, &epoch],
                )?;
                match row {
                    Some(r) => Ok(Ok(r.try_get::<_, i64>(0)?)),
                    None => Ok(Err(holder(c, &k)?.unwrap_or_else(|| "unknown".into()))),
                }
            })
            .map_err(unusable)?;
        return match taken {
            Ok(ticket) => Ok(Box::new(PgLock {
                db: db.clone(),
                ticket,
            })),
            Err(holder) => Err(LockError::Held { holder }),
        };
    };
    let ticket: i64 = db
        .call(move |c| {
            Ok(c.query_one(
                "INSERT INTO runbook_lock_queue (key_hash, run_id, epoch) VALUES ($1, $2, $3) RETURNING ticket",
                &[&k, &id, &epoch],
            )?
            .try_get(0)?)
        })
        .map_err(unusable)?;
    // From here the row is ours: dropping the guard leaves the queue.
    let mine = PgLock {
        db: db.clone(),
        ticket,
    };
    let deadline = Instant::now() + wait;
    let mut shown = None;
    loop {
        // Checked before every look, so a fenced or cancelled waiter never
        // takes the key (the trigger refuses a fenced one's update too).
        if let Err(why) = lease.check() {
            return Err(LockError::Fenced(why));
        }
        if lease.cancel_pending() || stopped() {
            return Err(LockError::Cancelled);
        }
        let k = key.clone();
        let state = db.call(move |c| {
            clean(c, &k)?;
            let ahead: i64 = c
                .query_one(
                    "SELECT count(*) FROM runbook_lock_queue
                         WHERE key_hash = $1 AND ticket < $2 AND NOT holding",
                    &[&k, &ticket],
                )?
                .try_get(0)?;
            let held_by = holder(c, &k)?;
            if ahead == 0 && held_by.is_none() {
                // The unique index refuses a second holder if another got in first.
                let took = c.execute(
                    "UPDATE runbook_lock_queue SET holding = true WHERE ticket = $1",
                    &[&ticket],
                );
                if matches!(took, Ok(1)) {
                    return Ok(None);
                }
            }
            Ok(Some((ahead, held_by)))
        });
        let (ahead, held_by) = match state {
            Ok(None) => return Ok(Box::new(mine)),
            Ok(Some(x)) => x,
            // The database went away: the place is kept (our lease is
            // renewed as soon as it is back); look again.
            Err(DbError::Unreachable(_)) if Instant::now() < deadline => {
                std::thread::sleep(POLL);
                continue;
            }
            Err(DbError::Fenced(why)) => return Err(LockError::Fenced(why)),
            Err(e) => return Err(unusable(e)),
        };
        let place = usize::try_from(ahead).unwrap_or(0) + 1;
        if shown != Some(place) {
            queued(place);
            shown = Some(place);
        }
        if Instant::now() >= deadline {
            return Err(LockError::TimedOut {
                holder: held_by.unwrap_or_else(|| "a run ahead in the queue".into()),
                waited: wait,
            });
        }
        std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// The run's place in a queue while it waits.
pub(super) fn position(db: &Db, run_id: &str) -> Option<usize> {
    let id = run_id.to_string();
    db.call(move |c| {
        c.query_opt(
            "SELECT (SELECT count(*) FROM runbook_lock_queue a
                     WHERE a.key_hash = me.key_hash AND a.ticket < me.ticket AND NOT a.holding)
             FROM runbook_lock_queue me WHERE me.run_id = $1 AND NOT me.holding",
            &[&id],
        )?
        .map(|r| r.try_get::<_, i64>(0))
        .transpose()
        .map_err(Into::into)
    })
    .ok()
    .flatten()
    .map(|n| usize::try_from(n).unwrap_or(0) + 1)
}
