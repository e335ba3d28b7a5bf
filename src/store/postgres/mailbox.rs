//! The approvals mailbox in the database: what a waiting step accepts
//! (`runbook_waiting`, written by its engine and fenced by its epoch) and
//! the decisions `runbook approve` posts (`runbook_decisions`), taken by
//! the holder's epoch once journaled. The file mailbox's twin
//! (`approvals/mailbox.rs`), behind the same [`crate::store::Store`] calls.

use super::db::{Db, DbError};
use super::io;
use crate::approvals::Decision;

/// Publishes what a waiting step accepts, as this engine's (epoch).
pub(super) fn open_waiting(
    db: &Db,
    run_id: &str,
    step: &str,
    epoch: i64,
    rules: &[u8],
) -> std::io::Result<()> {
    let (id, step, rules) = (
        run_id.to_string(),
        step.to_string(),
        String::from_utf8_lossy(rules).into_owned(),
    );
    db.call(move |c| {
        c.execute(
            "INSERT INTO runbook_waiting (run_id, step, epoch, rules) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (run_id, step) DO UPDATE SET epoch = $3, rules = $4",
            &[&id, &step, &epoch, &rules],
        )?;
        Ok(())
    })
    .map_err(io)
}

/// Withdraws what this engine published: after a takeover the row is the
/// new holder's, and stays.
pub(super) fn close_waiting(db: &Db, run_id: &str, step: &str, epoch: i64) {
    let (id, step) = (run_id.to_string(), step.to_string());
    let _ = db.call(move |c| {
        c.execute(
            "DELETE FROM runbook_waiting WHERE run_id = $1 AND step = $2 AND epoch = $3",
            &[&id, &step, &epoch],
        )?;
        Ok(())
    });
}

/// The rules of a step waiting now.
pub(super) fn waiting(db: &Db, run_id: &str, step: &str) -> std::io::Result<Option<Vec<u8>>> {
    let (id, step) = (run_id.to_string(), step.to_string());
    db.call(move |c| {
        c.query_opt(
            "SELECT rules FROM runbook_waiting WHERE run_id = $1 AND step = $2",
            &[&id, &step],
        )?
        .map(|r| r.try_get::<_, String>(0).map(String::into_bytes))
        .transpose()
        .map_err(DbError::from)
    })
    .map_err(io)
}

/// Posts a decision (`runbook approve`).
pub(super) fn post_decision(
    db: &Db,
    run_id: &str,
    step: &str,
    decision: &Decision,
) -> std::io::Result<()> {
    let text = serde_json::to_string(decision).map_err(std::io::Error::other)?;
    let (id, step) = (run_id.to_string(), step.to_string());
    db.call(move |c| {
        c.execute(
            "INSERT INTO runbook_decisions (run_id, step, decision) VALUES ($1, $2, $3)",
            &[&id, &step, &text],
        )?;
        Ok(())
    })
    .map_err(io)
}

/// Decisions not yet taken by this epoch; a fenced engine gets none.
pub(super) fn pending_decisions(
    db: &Db,
    run_id: &str,
    step: &str,
    epoch: i64,
) -> std::io::Result<Vec<(String, Result<Decision, String>)>> {
    let (id, step) = (run_id.to_string(), step.to_string());
    let rows = db
            .call(move |c| {
                let mut tx = c.transaction()?;
                // A fenced engine gets nothing: the decisions are the new holder's.
                tx.execute("SELECT runbook_fence($1, $2)", &[&id, &epoch])?;
                // Taken by an older epoch that died before journaling them: again.
                let rows = tx.query(
                    "SELECT id, decision FROM runbook_decisions
                     WHERE run_id = $1 AND step = $2 AND (taken_by_epoch IS NULL OR taken_by_epoch < $3)
                     ORDER BY id",
                    &[&id, &step, &epoch],
                )?;
                tx.commit()?;
                rows.into_iter()
                    .map(|r| Ok((r.try_get::<_, i64>(0)?, r.try_get::<_, String>(1)?)))
                    .collect::<Result<Vec<_>, DbError>>()
            })
            .map_err(io)?;
    Ok(rows
        .into_iter()
        .map(|(n, text)| {
            let d = serde_json::from_str::<Decision>(&text)
                .map_err(|e| format!("decision {n}: not a decision ({e})"));
            (n.to_string(), d)
        })
        .collect())
}

/// Marks decisions taken by this epoch, once the journal holds them.
pub(super) fn consume_decisions(db: &Db, run_id: &str, step: &str, epoch: i64, tokens: &[String]) {
    let ids: Vec<i64> = tokens.iter().filter_map(|t| t.parse().ok()).collect();
    let (id, step) = (run_id.to_string(), step.to_string());
    let _ = db.call(move |c| {
        let mut tx = c.transaction()?;
        tx.execute("SELECT runbook_fence($1, $2)", &[&id, &epoch])?;
        tx.execute(
            "UPDATE runbook_decisions SET taken_by_epoch = $3
                 WHERE run_id = $1 AND step = $2 AND id = ANY($4)",
            &[&id, &step, &epoch, &ids],
        )?;
        tx.commit()?;
        Ok(())
    });
}
