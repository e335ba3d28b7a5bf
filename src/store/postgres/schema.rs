//! The engine's tables, created and migrated by the engine itself.
//!
//! Migrations are numbered and applied in order, each in a transaction that
//! also records it in `runbook_migrations`; a transaction-scoped advisory
//! lock makes two engines that start at once apply them once (it ends with
//! the transaction, so no lock outlives a pooled or re-made connection).
//! A database migrated by a newer runbook than this one is refused rather
//! than written in a shape this version does not know.
//!
//! Fencing lives here, inside the database: `runbook_fence` checks the
//! writer's epoch against the run's and its lease against the clock, as a
//! trigger on the journal, the waiting approvals and the lock queue, and
//! called first by every other write (header, decisions, flags), so an
//! engine that was paused or cut off cannot write once another has taken
//! over, whatever it believes.

use postgres::Client;

use super::db::DbError;

/// (version, what it does, SQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "runs, events, leases and fencing, lock queue, approvals, flags",
        r"
CREATE TABLE runbook_runs (
    run_id text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Raised by every takeover; writes of an older epoch are refused.
    epoch bigint NOT NULL DEFAULT 1,
    holder_host text NOT NULL,
    holder_pid integer NOT NULL,
    -- NULL once the holder let go (the run ended, or was refused).
    lease_until timestamptz,
    -- The journal's header (NULL until the journal exists).
    header text,
    -- Raised by `runbook cancel`; the holder stops on each raise.
    cancel_requests integer NOT NULL DEFAULT 0
);

CREATE TABLE runbook_events (
    run_id text NOT NULL REFERENCES runbook_runs ON DELETE CASCADE,
    seq bigint NOT NULL,
    epoch bigint NOT NULL,
    -- The record as a file journal line holds it.
    record text NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE FUNCTION runbook_fence(writer_run text, writer_epoch bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r runbook_runs%ROWTYPE;
BEGIN
    -- FOR SHARE: a takeover (an UPDATE of the row) waits for this write to
    -- commit, and a write waits for a takeover to commit, then sees it.
    SELECT * INTO r FROM runbook_runs WHERE run_id = writer_run FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % does not exist', writer_run USING ERRCODE = 'RB001';
    END IF;
    IF r.epoch <> writer_epoch THEN
        RAISE EXCEPTION 'run % was taken over by process % on % (epoch %); this engine (epoch %) may not write',
            writer_run, r.holder_pid, r.holder_host, r.epoch, writer_epoch
            USING ERRCODE = 'RB001';
    END IF;
    IF r.lease_until IS NULL OR r.lease_until < clock_timestamp() THEN
        RAISE EXCEPTION 'the lease of epoch % on run % ran out', writer_epoch, writer_run
            USING ERRCODE = 'RB002';
    END IF;
END $$;

CREATE FUNCTION runbook_fenced_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM runbook_fence(NEW.run_id, NEW.epoch);
    RETURN NEW;
END $$;

CREATE TRIGGER runbook_events_fenced BEFORE INSERT ON runbook_events
    FOR EACH ROW EXECUTE FUNCTION runbook_fenced_insert();

-- What a waiting approval step accepts, while it waits.
CREATE TABLE runbook_waiting (
    run_id text NOT NULL REFERENCES runbook_runs ON DELETE CASCADE,
    step text NOT NULL,
    epoch bigint NOT NULL,
    rules text NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE TRIGGER runbook_waiting_fenced BEFORE INSERT ON runbook_waiting
    FOR EACH ROW EXECUTE FUNCTION runbook_fenced_insert();

-- Decisions posted by `runbook approve`, until the engine takes them.
CREATE TABLE runbook_decisions (
    id bigserial PRIMARY KEY,
    run_id text NOT NULL REFERENCES runbook_runs ON DELETE CASCADE,
    step text NOT NULL,
    decision text NOT NULL,
    taken_by_epoch bigint
);

-- `lock:` keys: one row per run holding or waiting, FIFO by ticket.
CREATE TABLE runbook_lock_queue (
    ticket bigserial PRIMARY KEY,
    key_hash text NOT NULL,
    run_id text NOT NULL REFERENCES runbook_runs ON DELETE CASCADE,
    holding boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX runbook_lock_holder ON runbook_lock_queue (key_hash) WHERE holding;
CREATE INDEX runbook_lock_queue_key ON runbook_lock_queue (key_hash, ticket);

-- The default flag store.
CREATE TABLE runbook_flags (
    name text PRIMARY KEY,
    value text NOT NULL
);
",
    ),
    (
        2,
        "the lock queue fenced by epoch",
        r"
ALTER TABLE runbook_lock_queue ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
CREATE TRIGGER runbook_lock_queue_fenced BEFORE INSERT OR UPDATE ON runbook_lock_queue
    FOR EACH ROW EXECUTE FUNCTION runbook_fenced_insert();
",
    ),
];

/// Creates or migrates the tables. Every command opens the store, and the
/// tables are nearly always current: that is read first, without the lock
/// or a transaction (two round trips instead of four, and no command waits
/// behind another's migration it does not need).
pub(super) fn migrate(c: &mut Client) -> Result<(), DbError> {
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    let exists: bool = c
        .query_one("SELECT to_regclass('runbook_migrations') IS NOT NULL", &[])?
        .try_get(0)?;
    if exists {
        let applied: i32 = c
            .query_one(
                "SELECT COALESCE(max(version), 0) FROM runbook_migrations",
                &[],
            )?
            .try_get(0)?;
        if applied == known {
            return Ok(());
        }
    }
    let mut tx = c.transaction()?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(7204115370021196);
         CREATE TABLE IF NOT EXISTS runbook_migrations (
             version integer PRIMARY KEY,
             description text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
         );",
    )?;
    let applied: i32 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM runbook_migrations",
            &[],
        )?
        .try_get(0)?;
    if applied > known {
        return Err(DbError::Refused(format!(
            "the database's runbook tables are at version {applied}, newer than this runbook knows ({known}); upgrade runbook"
        )));
    }
    for (version, description, sql) in MIGRATIONS.iter().filter(|m| m.0 > applied) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO runbook_migrations (version, description) VALUES ($1, $2)",
            &[version, description],
        )?;
    }
    tx.commit()?;
    Ok(())
}
