//! Claiming a prepared run and running it: the run's claim (a run lock, or
//! a lease in the database) and the lock key, the journal, the views, the runtime, and the message when
//! the journal fails. Everything after the first write lives here, so a
//! refused run (see [`super::prepare()`]) never reaches this file.

use std::io::IsTerminal;
use std::sync::Arc;

use serde_json::Value as Json;

use crate::engine::Engine;
use crate::error::{Done, Error, Result};
use crate::events::{Bus, Event};
use crate::journal::{self, Header};
use crate::state::RunState;
use crate::steps::RunEnv;
use crate::store::{ClaimError, LockError};
use crate::view;

use super::prepare::Launch;
use super::signals::Heard;

/// What the engine is asked to do.
pub(super) enum Mode {
    Fresh,
    Resume(RunState),
    Rollback(RunState),
}

/// Claims the run (its claim, lock key, journal) and runs the engine.
pub(super) fn start(l: Launch, mode: Mode) -> Result {
    // From here a signal is counted, not fatal: it reaches the engine, or
    // takes a queued run out of its queue.
    let heard = Heard::install();
    let rb = l.plan.source.clone();
    let store = l.store.clone();
    let fresh = matches!(mode, Mode::Fresh);
    let claim = match store.claim(&l.run_id, fresh, l.output.lease) {
        Ok(c) => c,
        Err(ClaimError::Exists) => {
            return Err(Error::invalid(format!(
                "run `{}` already exists in {}; pick another --run-id",
                l.run_id,
                store.describe()
            )))
        }
        Err(ClaimError::Held(holder)) => {
            let lease = if holder.leased() {
                "; wait for it to end, or for its lease to run out if its host died"
            } else {
                ""
            };
            return Err(Error::cannot_start(format!(
                "run {} is being run by {}{lease}",
                l.run_id,
                holder.describe()
            )));
        }
        Err(ClaimError::Unusable(e)) => return Err(Error::cannot_start(l.masker.mask(&e))),
    };
    // A fresh run refused before it started (lock held, ...) must not
    // keep its id: the same `--run-id` may run once fixed.
    let mut unclaimed = Unclaimed {
        store: store.as_ref(),
        run_id: fresh.then(|| l.run_id.clone()),
    };
    let run_dir = claim.scratch_dir();
    // Resume and rollback read the run before they could claim it: another
    // engine may have moved it on (or ended it) in between.
    if let Some(seen) = l.events_seen {
        let now = store.read(&l.run_id).map_err(|e| {
            Error::cannot_start(format!(
                "cannot read run {} again: {}",
                l.run_id,
                l.masker.mask(&e.to_string())
            ))
        })?;
        if now.events.len() != seen {
            return Err(Error::cannot_start(format!(
                "run {id} moved on while this command was starting (another engine ran it meanwhile); nothing was done: `runbook status {id}{flag}` shows where it is, then ask again",
                id = l.run_id,
                flag = store.flag()
            )));
        }
    }

    let header = || Header {
        run_id: l.run_id.clone(),
        runbook: rb.name.clone(),
        file: l.file.display().to_string(),
        hash: journal::hash(&l.text),
        source: l.text.clone(),
        params: crate::plan::public_params(&rb, &l.plan.resolved),
        secret_params: crate::plan::given_secret_params(&rb, &l.plan.resolved),
        identity: l.identity.clone(),
        pid: std::process::id(),
        started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        cwd: l.cwd.display().to_string(),
        fingerprint: l.plan.fingerprint.clone(),
        allowed_signers: l.signers.texts(),
        identity_key: l.key.as_ref().map(|(_, fp)| fp.clone()),
    };
    let cannot_journal = |e: std::io::Error| {
        Error::cannot_start(format!(
            "cannot write the journal of run {} in {}: {}",
            l.run_id,
            store.describe(),
            l.masker.mask(&e.to_string())
        ))
    };
    // Secrets are never journaled, not even masked: resume reads them
    // again from their sources, and secret params from --param.
    let mut journal = None;
    if fresh && l.lock_wait.is_some() {
        // A run that queues is listed (`status` shows it queued) while it
        // waits: its journal exists from the start.
        let mut j = store
            .create(&header(), claim.as_ref())
            .map_err(cannot_journal)?;
        j.sync()
            .map_err(|e| Error::cannot_start(l.masker.mask(&e)))?;
        journal = Some(j);
    }
    let _lock = match &l.lock_key {
        None => None,
        Some(key) => {
            let shown = l.masker.mask(key);
            let mut queued = |place: usize| {
                crate::broken_pipe::eprint_line(&format!(
                    "queued for lock `{shown}`: place {place} in line"
                ));
            };
            // A signal (Ctrl-C, `runbook cancel`) takes a waiting run out
            // of the queue; a second one ends it at once.
            let _second = l.lock_wait.map(|_| heard.second_ends_the_wait());
            match store.lock(key, &l.run_id, l.lock_wait, &mut queued, &|| {
                heard.pending()
            }) {
                Ok(lock) => Some(lock),
                Err(LockError::Held { holder }) => {
                    return Err(Error::cannot_start(format!("lock `{shown}` is held by run {holder}; wait for it or check `runbook status {holder}{}`", store.flag())));
                }
                Err(LockError::TimedOut { holder, waited }) => {
                    return Err(Error::cannot_start(format!(
                        "lock `{shown}` was still held by run {holder} after waiting {}; nothing ran",
                        crate::duration::format(waited)
                    )));
                }
                Err(LockError::Unusable(e)) => {
                    return Err(Error::cannot_start(format!(
                        "cannot take lock `{shown}`: {}",
                        l.masker.mask(&e)
                    )));
                }
                Err(LockError::Fenced(why)) => return Err(Error::cannot_start(why)),
                Err(LockError::Cancelled) => {
                    crate::broken_pipe::eprint_line(&format!(
                        "run {} was cancelled while it waited for lock `{shown}`; nothing ran",
                        l.run_id
                    ));
                    return Ok(Done::Run(crate::events::RunStatus::Interrupted));
                }
            }
        }
    };

    // Output files an engine that died left behind may hold secrets a
    // script wrote: nothing reads them any more.
    let _ = std::fs::remove_dir_all(run_dir.join("outputs"));
    let bus = Bus::new(l.masker.clone());
    // The journal hears each event first: a listener sees an event only once it is durable.
    let journal = match journal {
        Some(j) => Ok(j),
        None if fresh => store.create(&header(), claim.as_ref()),
        None => store.append(&l.run_id, claim.as_ref()),
    };
    match journal {
        Ok(j) => {
            bus.record_with(j);
            unclaimed.run_id = None;
        }
        Err(e) => return Err(cannot_journal(e)),
    }
    let mut seed = match &mode {
        Mode::Fresh => RunState::new(&l.run_id, Some(&rb)),
        Mode::Resume(s) | Mode::Rollback(s) => s.clone(),
    };
    seed.fingerprint.clone_from(&l.plan.fingerprint);
    let live: crate::state::Shared = Arc::new(std::sync::Mutex::new(seed));
    let state = live.clone();
    let rolling_back = matches!(mode, Mode::Rollback(_));
    bus.subscribe(Box::new(crate::state::Follow(live.clone())));
    subscribe_views(&bus, &l, &live);

    let env = Arc::new(RunEnv {
        plan: l.plan.clone(),
        run_id: l.run_id.clone(),
        store: store.clone(),
        claim: claim.clone(),
        run_dir,
        cwd: l.cwd.clone(),
        base_env: l.base_env,
        identity: l.identity.clone(),
        flags: l.flags,
        metrics: l.metrics,
        flag_ledger: std::sync::Mutex::new(l.flag_ledger.clone()),
        gate_progress: std::sync::Mutex::new(match &mode {
            Mode::Fresh => std::collections::HashMap::new(),
            Mode::Resume(s) | Mode::Rollback(s) => s.gate_samples.clone(),
        }),
        approve: l.output.approve.clone(),
        operator: l.operator.clone(),
        interactive: std::io::stdin().is_terminal() && std::io::stdout().is_terminal(),
        state: live,
        live_processes: std::sync::atomic::AtomicUsize::new(0),
        signers: l.signers.clone(),
        key: l.key.as_ref().map(|(path, _)| path.clone()),
    });
    // One thread serves: the engine waits on processes, sockets and timers,
    // and renders templates on a worker thread of their own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::cannot_start(format!("cannot start the runtime: {e}")))?;
    let ctx = l.ctx;
    let outcome = runtime.block_on(async {
        let signals = heard.stream();
        // Ctrl-C is handled from here on: a remote cancel may interrupt too.
        claim.arm();
        if matches!(mode, Mode::Fresh) {
            crate::broken_pipe::eprint_line(&format!("plan {}", l.plan.fingerprint));
            // Its record is checked by the engine before the first step.
            let _ = bus.emit(Event::RunStarted {
                run_id: l.run_id.clone(),
                runbook: rb.name.clone(),
                steps: rb.steps.len(),
                params: Json::Object(crate::plan::public_params(&rb, &l.plan.resolved)),
            });
        } else {
            crate::broken_pipe::eprint_line(&format!(
                "continuing run {} of {} (started by {}; plan {})",
                l.run_id, rb.name, l.identity, l.plan.fingerprint
            ));
            // The record counts the processes a run took and spans them.
            // (A `rollback` is counted by the `unwind_started` that reopens
            // the run: a record before it would leave a crash there looking
            // like a run that never reopened.)
            if !rolling_back {
                bus.note(Event::Resumed {
                    mode: "resume".into(),
                    by: l.operator.clone(),
                    pid: std::process::id(),
                });
            }
        }
        if let Mode::Resume(prior) | Mode::Rollback(prior) = &mode {
            kill_leftovers(prior);
        }
        let engine = Arc::new(Engine::new(env, bus.clone(), ctx));
        match mode {
            Mode::Fresh => engine.run(signals, RunState::default()).await,
            Mode::Resume(prior) => engine.run(signals, prior).await,
            Mode::Rollback(prior) => engine.rollback(signals, prior, &l.operator).await,
        }
    });
    bus.finish();
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if let Some(fenced) = claim.fenced() {
        // Another engine holds the run: what this one showed after that is
        // its own view, not the run's story.
        return Err(Error::cannot_start(format!(
            "{fenced}\nthe lines above after that were never recorded; `runbook status {}{}` shows the run as it is",
            l.run_id,
            store.flag()
        )));
    }
    if let Some(error) = bus.journal_error() {
        return Err(journal_failed(&l.run_id, &error, &bus));
    }
    if matches!(
        outcome.status,
        crate::events::RunStatus::RollbackFailed | crate::events::RunStatus::UnwindIncomplete
    ) {
        let unfinished = state
            .lock()
            .map(|s| s.unfinished_rollbacks(&rb))
            .unwrap_or_default();
        crate::broken_pipe::eprint_line(&crate::state::way_forward(
            &l.run_id,
            &store.flag(),
            &unfinished,
        ));
    }
    Ok(if rolling_back {
        Done::Rollback(outcome.status)
    } else {
        Done::Run(outcome.status)
    })
}

/// The message of a run stopped because its journal could not be written.
fn journal_failed(run_id: &str, error: &str, bus: &Bus) -> Error {
    let (lost, dropped) = bus.unrecorded();
    let mut msg = format!(
        "{error}\nthe run stopped acting: no step or rollback started after this, and steps still running were stopped.\nnot recorded ({} event{}):",
        lost.len() + dropped,
        if lost.len() + dropped == 1 { "" } else { "s" }
    );
    for line in &lost {
        msg.push_str("\n  ");
        msg.push_str(line);
    }
    if dropped > 0 {
        msg.push_str(&format!("\n  ... and {dropped} more"));
    }
    msg.push_str(&format!(
        "\ncheck what those steps did, fix what stopped the journal (a full disk, an unreachable database), then `runbook resume {run_id}` continues from what the journal holds"
    ));
    Error::NeedsPerson(msg)
}

/// Forgets a fresh run that was refused before it started.
struct Unclaimed<'a> {
    store: &'a dyn crate::store::Store,
    run_id: Option<String>,
}

impl Drop for Unclaimed<'_> {
    fn drop(&mut self) {
        if let Some(id) = &self.run_id {
            self.store.forget(id);
        }
    }
}

fn subscribe_views(bus: &Bus, l: &Launch, live: &crate::state::Shared) {
    let state = || view::RunView::Live(live.clone());
    let tty = std::io::stdout().is_terminal();
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && tty;
    if l.output.json_log {
        bus.subscribe(Box::new(view::JsonLog::install()));
    } else if tty && std::env::var_os("CI").is_none() {
        bus.subscribe(Box::new(view::Terminal::new(state(), color)));
    } else {
        bus.subscribe(Box::new(view::Plain::new(state(), color)));
    }
    if let Some(path) = &l.output.report {
        let here = std::env::current_dir().unwrap_or_else(|_| l.cwd.clone());
        bus.subscribe(Box::new(view::Report::new(here.join(path), state())));
    }
}

/// Kills the process groups of attempts that were running when the engine
/// before this one died (kill -9, power loss): they would run on beside the
/// attempts this engine starts again.
fn kill_leftovers(prior: &RunState) {
    for (label, &(pgid, leader)) in &prior.spawned {
        if crate::process_group::kill_leftover(pgid, leader) {
            crate::broken_pipe::eprint_line(&format!(
                "note: killed what `{label}` was running when the engine before this one died (process group {pgid})"
            ));
        }
    }
}
