//! The default flag store in team mode: `runbook_flags`, one row per flag,
//! each value kept as the exact JSON text it was given (see
//! [`crate::providers::exact`]), so a restore puts back the same bytes.
//!
//! A set is a compare-and-set: read, let the journal record the previous
//! value, then write only if the row still holds what was read (else read
//! again). No transaction stays open across the journal's write.

use std::sync::Arc;

use serde_json::Value as Json;

use super::db::Db;
use crate::providers::{exact, BoxFuture, FlagStore};

/// Attempts of a compare-and-set that keeps losing to other writers.
const CAS_TRIES: usize = 20;

pub(super) struct PgFlags {
    pub(super) db: Arc<Db>,
    /// The run whose steps write through this store: each write is fenced
    /// by its epoch, so an engine that lost the run cannot write a stale
    /// value after the new holder restored one.
    pub(super) run_id: String,
    pub(super) leases: super::Leases,
}

impl PgFlags {
    fn read(&self, name: &str) -> Result<Option<String>, String> {
        let name = name.to_string();
        self.db
            .call(move |c| {
                c.query_opt("SELECT value FROM runbook_flags WHERE name = $1", &[&name])?
                    .map(|r| r.try_get::<_, String>(0))
                    .transpose()
                    .map_err(Into::into)
            })
            .map_err(|e| format!("flag store: {e}"))
    }

    /// Writes `new` (`None`: deletes) if the row still holds `old`.
    fn swap(&self, name: &str, old: Option<String>, new: Option<String>) -> Result<bool, String> {
        let name = name.to_string();
        let run_id = self.run_id.clone();
        let epoch = super::lease_in(&self.leases, &self.run_id).map_or(0, |l| l.epoch());
        self.db
            .call(move |c| {
                let mut c = c.transaction()?;
                c.execute("SELECT runbook_fence($1, $2)", &[&run_id, &epoch])?;
                let n = match (&old, &new) {
                    (None, Some(v)) => c.execute(
                        "INSERT INTO runbook_flags (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        &[&name, v],
                    )?,
                    (Some(o), Some(v)) => c.execute(
                        "UPDATE runbook_flags SET value = $3 WHERE name = $1 AND value = $2",
                        &[&name, o, v],
                    )?,
                    (Some(o), None) => c.execute(
                        "DELETE FROM runbook_flags WHERE name = $1 AND value = $2",
                        &[&name, o],
                    )?,
                    (None, None) => u64::from(
                        c.query_opt("SELECT 1 FROM runbook_flags WHERE name = $1", &[&name])?
                            .is_none(),
                    ),
                };
                c.commit()?;
                Ok(n == 1)
            })
            .map_err(|e| format!("flag store: {e}"))
    }
}

fn text(v: &Json) -> Result<String, String> {
    String::from_utf8(exact::to_bytes(v)).map_err(|_| "the flag value is not UTF-8 text".into())
}

impl FlagStore for PgFlags {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Json>, String>> {
        Box::pin(async move { Ok(self.read(name)?.map(|t| exact::from_bytes(t.as_bytes()))) })
    }

    fn set<'a>(
        &'a self,
        name: &'a str,
        value: &'a Json,
        record: &'a (dyn Fn(Option<&Json>) -> Result<(), String> + Send + Sync),
    ) -> BoxFuture<'a, Result<Option<Json>, String>> {
        Box::pin(async move {
            let new = text(value)?;
            for _ in 0..CAS_TRIES {
                let old = self.read(name)?;
                let previous = old.as_ref().map(|t| exact::from_bytes(t.as_bytes()));
                record(previous.as_ref())?;
                if self.swap(name, old, Some(new.clone()))? {
                    return Ok(previous);
                }
            }
            Err(format!(
                "flag {name} kept changing under this run; it was not set"
            ))
        })
    }

    fn restore<'a>(
        &'a self,
        name: &'a str,
        previous: Option<&'a Json>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let new = previous.map(text).transpose()?;
            for _ in 0..CAS_TRIES {
                let old = self.read(name)?;
                if self.swap(name, old, new.clone())? {
                    return Ok(());
                }
            }
            Err(format!(
                "flag {name} kept changing under this run; it was not restored"
            ))
        })
    }
}
