//! Resume and rollback start from the journal, not the command line: the
//! runbook as it was recorded and the params it ran with. Kept apart from
//! [`super::prepare()`], which checks a run the same way whichever way it came.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value as Json;

use crate::commands::{self, Loaded};
use crate::error::{Error, Result};
use crate::journal;
use crate::runbook::Runbook;
use crate::state::RunState;
use crate::store::Store;

use super::identity::operator;
use super::prepare::{prepare, Launch, Prepare};
use super::Output;

/// Loads a run's journal and the runbook recorded in it.
pub(super) fn recorded(
    store: &dyn Store,
    run_id: &str,
) -> Result<(journal::Recorded, Loaded, RunState)> {
    let rec = journal::read_run(store, run_id)?;
    if rec.torn {
        crate::broken_pipe::eprint_line("note: the journal's last record was torn (the engine died while writing it); it is ignored");
    }
    let Some(runbook) = commands::journaled_runbook(&rec) else {
        return Err(Error::invalid(format!(
            "the runbook recorded in run `{run_id}` no longer validates with this version of runbook"
        )));
    };
    let loaded = Loaded {
        runbook,
        text: rec.header.source.clone(),
        name: rec.header.file.clone(),
    };
    if let Ok(now) = std::fs::read_to_string(Path::new(&rec.header.cwd).join(&rec.header.file)) {
        if journal::hash(&now) != rec.header.hash {
            crate::broken_pipe::eprint_line(&format!(
                "note: {} changed since run `{run_id}` started; continuing with the runbook as it was then (recorded in the journal)",
                rec.header.file
            ));
        }
    }
    let state = rec.state(Some(&loaded.runbook));
    Ok((rec, loaded, state))
}

/// The params a journaled run ran with: the journaled ones as they were,
/// each secret one given at the start from `given` again, the others'
/// defaults from the journaled text.
fn journaled_params(
    rec: &journal::Recorded,
    rb: &Runbook,
    given: &[(String, String)],
) -> Result<crate::plan::ResolvedParams> {
    let mut out = crate::plan::ResolvedParams::new();
    let mut missing = Vec::new();
    for (k, text) in given {
        let Some(p) = rb.params.iter().find(|p| &p.name == k) else {
            return Err(Error::invalid(format!("unknown parameter `{k}`")));
        };
        // A non-secret param is the journal's; giving it again is fine as
        // long as it is the same value.
        if !p.secret && p.parse(text).ok().as_ref() != rec.header.params.get(k) {
            return Err(Error::invalid(format!(
                "--param {k}: the run started with another value ({}); a run's params cannot change, only secret ones are given again",
                rec.header.params.get(k).map_or_else(|| "none".to_string(), ToString::to_string)
            )));
        }
    }
    for p in &rb.params {
        if !p.secret {
            let v = rec
                .header
                .params
                .get(&p.name)
                .cloned()
                .unwrap_or(Json::Null);
            out.insert(p.name.clone(), (v, true));
            continue;
        }
        match given.iter().rev().find(|(k, _)| k == &p.name) {
            Some((_, text)) => {
                let v = p
                    .parse(text)
                    .map_err(|e| Error::invalid(format!("parameter `{}`: {e}", p.name)))?;
                out.insert(p.name.clone(), (v, true));
            }
            None if rec.header.secret_params.contains(&p.name) => missing.push(p.name.clone()),
            None => {
                out.insert(
                    p.name.clone(),
                    (p.default.clone().unwrap_or(Json::Null), false),
                );
            }
        }
    }
    if !missing.is_empty() {
        let flags: Vec<String> = missing
            .iter()
            .map(|m| format!("--param {m}=VALUE"))
            .collect();
        return Err(Error::Coded(vec![(
            crate::diagnostics::Code::MissingParam,
            format!(
                "secret parameter{} {} {} given at the start and never journaled: give {} again ({})",
                if missing.len() == 1 { "" } else { "s" },
                missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
                if missing.len() == 1 { "was" } else { "were" },
                if missing.len() == 1 { "it" } else { "them" },
                flags.join(" ")
            ),
        )]));
    }
    Ok(out)
}

/// Prepares a journaled run again, for resume or rollback.
pub(super) fn from_journal(
    store: &Arc<dyn Store>,
    rec: &journal::Recorded,
    state: &RunState,
    loaded: &Loaded,
    given: &[(String, String)],
    output: Output,
) -> Result<Launch> {
    let flag_ledger = state.flags.clone();
    let rb = &loaded.runbook;
    let resolved = journaled_params(rec, rb, given)?;
    let plan =
        Arc::new(crate::plan::Plan::for_run(rb, &loaded.text, &resolved).map_err(Error::Invalid)?);
    let here = std::env::current_dir()
        .map_err(|e| Error::cannot_start(format!("cannot read the working directory: {e}")))?;
    let cwd = Some(PathBuf::from(&rec.header.cwd))
        .filter(|d| d.is_dir())
        .unwrap_or_else(|| here.clone());
    let mut launch = prepare(
        loaded,
        plan,
        Prepare {
            store: store.clone(),
            file: PathBuf::from(&rec.header.file),
            run_id: rec.header.run_id.clone(),
            identity: rec.header.identity.clone(),
            operator: operator(output.identity.as_deref()),
            output,
            flag_ledger,
            cwd,
            signers: Some(
                crate::approvals::RunSigners::from_texts(&rec.header.allowed_signers)
                    .map_err(Error::cannot_start)?,
            ),
        },
    )?;
    launch.events_seen = Some(rec.events.len());
    Ok(launch)
}
