//! `runbook run`, `resume` and `rollback`: everything between a validated
//! runbook and a started engine (params, secrets, pre-flight, state dir,
//! journal, locks, providers, listeners, signals).
//!
//! The three commands differ only in where the runbook and params come from
//! (the file and flags, or the journal) and in what the engine is asked to do
//! (run, continue, unwind). Everything that can reject a run is checked
//! before the state dir is touched ([`prepare`]); only then is the run
//! claimed and started ([`start`]), so a run refused for bad input leaves
//! nothing behind.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::commands::{self, Loaded};
use crate::engine::{Context, Engine};
use crate::error::{Done, Error, Result};
use crate::events::{Bus, Event, RunStatus};
use crate::journal::{self, FileStore, Header, RunStore};
use crate::lock::{Lock, LockError};
use crate::plan::Plan;
use crate::providers::file_flags::FileFlags;
use crate::providers::prometheus::Prometheus;
use crate::providers::redis_flags::RedisFlags;
use crate::providers::MetricProvider;
use crate::runbook::{Action, ActionKind, Provider, ProviderKind, Rollback, Runbook};
use crate::secrets::{self, Masker};
use crate::state::RunState;
use crate::steps::{FlagStores, MetricSources, RunEnv};
use crate::view;

/// What the engine is asked to do.
enum Mode {
    Fresh,
    Resume(RunState),
    Rollback(RunState),
}

/// How a run shows itself and what the operator answered up front: the
/// resolved form of the command line's view flags.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Approval steps approved up front (`--approve STEP`).
    pub approve: Vec<String>,
    /// `--as`: who runs this command.
    pub identity: Option<String>,
    /// Where to write the JSON report.
    pub report: Option<PathBuf>,
    /// One JSON object per event line instead of the human view.
    pub json_log: bool,
}

/// `runbook run`, resolved.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub state_dir: PathBuf,
    pub file: PathBuf,
    pub params: Vec<(String, String)>,
    pub run_id: Option<String>,
    pub output: Output,
}

/// A run as prepared: everything checked, nothing written yet.
struct Launch {
    plan: Arc<Plan>,
    /// The runbook's text as read (journaled, for resume).
    text: String,
    file: PathBuf,
    run_id: String,
    /// Who started the run (approvals compare against it).
    identity: String,
    /// Who runs this command.
    operator: String,
    output: Output,
    flag_previous: HashMap<String, Option<Json>>,
    /// Where steps run: the run's original working directory when resuming.
    cwd: PathBuf,
    state_dir: PathBuf,
    ctx: Context,
    masker: Arc<Masker>,
    base_env: Vec<(String, String)>,
    flags: FlagStores,
    metrics: MetricSources,
    lock_key: Option<String>,
}

/// Who runs this process: `--as`, else `$RUNBOOK_USER`, else the login name.
pub(crate) fn operator(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_string)
        .or_else(|| std::env::var("RUNBOOK_USER").ok().filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("USER").ok().filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("LOGNAME").ok().filter(|s| !s.is_empty()))
        .or_else(login_name)
        .unwrap_or_else(|| "unknown".into())
}

/// The login name of the real user, from the password database (rustix has
/// no `getpwuid`; this is the one `unsafe` block).
#[allow(unsafe_code)]
fn login_name() -> Option<String> {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy
    // the name out at once and this process does not call it concurrently.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

pub fn run(s: RunSettings) -> Result {
    let loaded = commands::load(&s.file)?;
    let resolved = commands::params(&loaded.runbook, &s.params, None)?;
    let run_id = match &s.run_id {
        Some(id) if journal::valid_run_id(id) => id.clone(),
        Some(id) => {
            return Err(Error::invalid(format!(
                "run id `{id}` may only contain letters, digits, `-`, `_` and `.`"
            )))
        }
        None => new_run_id(),
    };
    let rb = &loaded.runbook;
    for step in &s.output.approve {
        let is_approval = rb
            .steps
            .iter()
            .chain(&rb.on_failure)
            .chain(&rb.finally)
            .any(|st| &st.id == step && matches!(st.action.kind, ActionKind::Approval(_)));
        if !is_approval {
            return Err(Error::invalid(format!(
                "--approve {step}: the runbook has no approval step `{step}`"
            )));
        }
    }
    let identity = operator(s.output.identity.as_deref());
    let plan = Arc::new(Plan::build(rb, &loaded.text, &resolved));
    let cwd = std::env::current_dir()
        .map_err(|e| Error::cannot_start(format!("cannot read the working directory: {e}")))?;
    let launch = prepare(
        &loaded,
        plan,
        Prepare {
            state_dir: cwd.join(&s.state_dir),
            file: s.file,
            run_id,
            operator: identity.clone(),
            identity,
            output: s.output,
            flag_previous: HashMap::new(),
            cwd,
        },
    )?;
    start(launch, Mode::Fresh)
}

/// What [`prepare`] needs besides the runbook and its plan.
struct Prepare {
    state_dir: PathBuf,
    file: PathBuf,
    run_id: String,
    identity: String,
    operator: String,
    output: Output,
    flag_previous: HashMap<String, Option<Json>>,
    cwd: PathBuf,
}

/// Everything that can refuse a run, before anything is written: secrets,
/// the template context, pre-flight, `env`, the lock key, flag stores and
/// metric sources.
fn prepare(loaded: &Loaded, plan: Arc<Plan>, p: Prepare) -> Result<Launch> {
    let rb = plan.runbook();
    let secret_values = secrets::load(rb, &p.cwd).map_err(Error::invalid)?;
    let mut masked: Vec<String> = secret_values.iter().map(|(_, v)| v.clone()).collect();
    let params: IndexMap<String, Json> = plan
        .resolved
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    for sp in rb.params.iter().filter(|sp| sp.secret) {
        match params.get(&sp.name) {
            Some(Json::String(v)) => masked.push(v.clone()),
            Some(Json::Null) | None => {}
            Some(other) => masked.push(other.to_string()),
        }
    }
    let masker = Arc::new(Masker::new(masked));
    let process_env: Vec<(String, String)> = std::env::vars().collect();
    let ctx = Context::new(rb, &p.run_id, &params, &secret_values, &process_env)
        .map_err(|e| Error::invalid(masker.mask(&e)))?;
    let mut problems = crate::plan::preflight(rb, &ctx.for_step(None), crate::plan::RUN_ROOTS);
    for d in &mut problems {
        masker.mask_in_place(&mut d.message);
    }
    commands::preflight_errors(loaded, problems)?;
    let mut base_env = process_env;
    for (k, v) in &rb.env {
        match ctx.render(v) {
            Ok(v) => base_env.push((k.clone(), v)),
            Err(e) => return Err(Error::invalid(format!("env {k}: {}", masker.mask(&e)))),
        }
    }
    base_env.push(("RUNBOOK_RUN_ID".into(), p.run_id.clone()));
    let flags = flag_stores(rb, &p.state_dir, &ctx).map_err(|e| Error::invalid(masker.mask(&e)))?;
    let metrics = metric_sources(rb, &ctx).map_err(|e| Error::invalid(masker.mask(&e)))?;
    let lock_key = match &rb.lock {
        None => None,
        Some(key) => Some(
            ctx.render(key)
                .map_err(|e| Error::invalid(format!("lock: {}", masker.mask(&e))))?,
        ),
    };
    Ok(Launch {
        plan,
        text: loaded.text.clone(),
        file: p.file,
        run_id: p.run_id,
        identity: p.identity,
        operator: p.operator,
        output: p.output,
        flag_previous: p
            .flag_previous
            .into_iter()
            .map(|(k, mut v)| {
                if let Some(v) = v.as_mut() {
                    masker.resolve_refs(v);
                }
                (k, v)
            })
            .collect(),
        cwd: p.cwd,
        state_dir: p.state_dir,
        ctx,
        masker,
        base_env,
        flags,
        metrics,
        lock_key,
    })
}

/// Loads a run's journal and the runbook recorded in it.
fn recorded(state_dir: &Path, run_id: &str) -> Result<(journal::Recorded, Loaded, RunState)> {
    let store = FileStore::new(state_dir);
    let rec = match store.read(run_id) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::invalid(format!(
                "no run `{run_id}` in {}",
                state_dir.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            return Err(Error::invalid(e.to_string()))
        }
        Err(e) => {
            return Err(Error::cannot_start(format!(
                "cannot read the journal of run `{run_id}`: {e}"
            )))
        }
    };
    if rec.torn {
        eprintln!("note: the journal's last record was torn (the engine died while writing it); it is ignored");
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
            eprintln!(
                "note: {} changed since run `{run_id}` started; continuing with the runbook as it was then (recorded in the journal)",
                rec.header.file
            );
        }
    }
    let state = rec.state(Some(&loaded.runbook));
    Ok((rec, loaded, state))
}

/// Prepares a journaled run again, for resume or rollback.
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

fn from_journal(
    state_dir: &Path,
    rec: &journal::Recorded,
    state: &RunState,
    loaded: &Loaded,
    given: &[(String, String)],
    output: Output,
) -> Result<Launch> {
    let flag_previous = state.flag_previous.clone();
    let rb = &loaded.runbook;
    let resolved = journaled_params(rec, rb, given)?;
    let plan = Arc::new(Plan::build(rb, &loaded.text, &resolved));
    let here = std::env::current_dir()
        .map_err(|e| Error::cannot_start(format!("cannot read the working directory: {e}")))?;
    let cwd = Some(PathBuf::from(&rec.header.cwd))
        .filter(|d| d.is_dir())
        .unwrap_or_else(|| here.clone());
    prepare(
        loaded,
        plan,
        Prepare {
            state_dir: here.join(state_dir),
            file: PathBuf::from(&rec.header.file),
            run_id: rec.header.run_id.clone(),
            identity: rec.header.identity.clone(),
            operator: operator(output.identity.as_deref()),
            output,
            flag_previous,
            cwd,
        },
    )
}

pub fn resume(
    state_dir: &Path,
    run_id: &str,
    given: &[(String, String)],
    output: Output,
) -> Result {
    let (rec, loaded, state) = recorded(state_dir, run_id)?;
    if let Some(status) = state.status {
        println!("run {run_id} already finished: {}", status.as_str());
        return Ok(Done::Run(status));
    }
    let launch = from_journal(state_dir, &rec, &state, &loaded, given, output)?;
    let mode = if state.rollback_after_success {
        Mode::Rollback(state)
    } else {
        Mode::Resume(state)
    };
    start(launch, mode)
}

pub fn rollback(
    state_dir: &Path,
    run_id: &str,
    given: &[(String, String)],
    output: Output,
) -> Result {
    let (rec, loaded, state) = recorded(state_dir, run_id)?;
    match state.status {
        Some(RunStatus::Succeeded) => {}
        Some(other) => {
            return Err(Error::invalid(format!(
                "run {run_id} ended {}; only a succeeded run can be rolled back",
                other.as_str()
            )))
        }
        None if state.rollback_after_success => {}
        None => {
            return Err(Error::invalid(format!(
                "run {run_id} has not finished; `runbook resume {run_id}` continues it"
            )))
        }
    }
    let launch = from_journal(state_dir, &rec, &state, &loaded, given, output)?;
    start(launch, Mode::Rollback(state))
}

/// Claims the run (its directory, run lock, lock key, journal) and runs the engine.
fn start(l: Launch, mode: Mode) -> Result {
    let rb = l.plan.source.clone();
    let state_dir = l.state_dir.clone();
    let store = FileStore::new(&state_dir);
    let run_dir = store.run_dir(&l.run_id);
    if matches!(mode, Mode::Fresh) && run_dir.exists() {
        return Err(Error::invalid(format!(
            "run `{}` already exists in {}; pick another --run-id",
            l.run_id,
            state_dir.display()
        )));
    }
    let fresh_dirs = !state_dir.exists();
    std::fs::create_dir_all(&run_dir).map_err(|e| {
        Error::cannot_start(format!(
            "state dir {} is unusable: {e}",
            state_dir.display()
        ))
    })?;
    // A fresh run refused before its journal exists (lock held, ...) must not
    // keep its id: the same `--run-id` may run once fixed.
    let mut unclaimed = Unclaimed(
        matches!(mode, Mode::Fresh).then(|| run_dir.clone()),
        fresh_dirs.then(|| state_dir.clone()),
    );
    // One process per run: a second `resume` of a live run must not race it.
    let _run_lock =
        match Lock::acquire_file(&run_dir.join("run.lock"), &std::process::id().to_string()) {
            Ok(l) => l,
            Err(LockError::Held { holder }) => {
                return Err(Error::cannot_start(format!(
                    "run {} is being run by process {holder}",
                    l.run_id
                )))
            }
            Err(LockError::Io(e)) => {
                return Err(Error::cannot_start(format!(
                    "state dir {} is unusable: {e}",
                    state_dir.display()
                )))
            }
        };
    let _lock = match &l.lock_key {
        None => None,
        Some(key) => match Lock::acquire(&state_dir, key, &l.run_id) {
            Ok(lock) => Some(lock),
            Err(LockError::Held { holder }) => {
                return Err(Error::cannot_start(format!("lock `{key}` is held by run {holder}; wait for it or check `runbook status {holder}`")))
            }
            Err(LockError::Io(e)) => {
                return Err(Error::cannot_start(format!("cannot take lock `{key}`: {e}")))
            }
        },
    };

    // Output files an engine that died left behind may hold secrets a
    // script wrote: nothing reads them any more.
    let _ = std::fs::remove_dir_all(run_dir.join("outputs"));
    let bus = Bus::new(l.masker.clone());
    // The journal hears each event first: a listener sees an event only once it is durable.
    let journal = match &mode {
        Mode::Fresh => {
            // Secrets are never journaled, not even masked: resume reads
            // them again from their sources, and secret params from --param.
            let secret: Vec<&str> = rb
                .params
                .iter()
                .filter(|p| p.secret)
                .map(|p| p.name.as_str())
                .collect();
            let params: serde_json::Map<String, Json> = l
                .plan
                .resolved
                .iter()
                .filter(|(k, _)| !secret.contains(&k.as_str()))
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect();
            let secret_params: Vec<String> = l
                .plan
                .resolved
                .iter()
                .filter(|(k, (_, given))| *given && secret.contains(&k.as_str()))
                .map(|(k, _)| k.clone())
                .collect();
            let header = Header {
                run_id: l.run_id.clone(),
                runbook: rb.name.clone(),
                file: l.file.display().to_string(),
                hash: journal::hash(&l.text),
                source: l.text.clone(),
                params,
                secret_params,
                identity: l.identity.clone(),
                pid: std::process::id(),
                started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                    .to_string(),
                cwd: l.cwd.display().to_string(),
                fingerprint: l.plan.fingerprint.clone(),
            };
            store.create(&header)
        }
        _ => store.append(&l.run_id),
    };
    match journal {
        Ok(j) => {
            bus.record_with(j);
            unclaimed.0 = None;
            unclaimed.1 = None;
        }
        Err(e) => {
            return Err(Error::cannot_start(format!(
                "cannot write the journal in {}: {e}",
                run_dir.display()
            )))
        }
    }
    let mut seed = match &mode {
        Mode::Fresh => RunState::new(&l.run_id, Some(&rb)),
        Mode::Resume(s) | Mode::Rollback(s) => s.clone(),
    };
    seed.fingerprint.clone_from(&l.plan.fingerprint);
    let live: crate::state::Shared = Arc::new(std::sync::Mutex::new(seed.clone()));
    bus.subscribe(Box::new(crate::state::Follow(live.clone())));
    subscribe_views(&bus, &rb, &l, seed);

    let env = Arc::new(RunEnv {
        plan: l.plan.clone(),
        run_id: l.run_id.clone(),
        state_dir: state_dir.clone(),
        run_dir,
        cwd: l.cwd.clone(),
        base_env: l.base_env,
        identity: l.identity.clone(),
        flags: l.flags,
        metrics: l.metrics,
        flag_previous: l.flag_previous.clone(),
        approve: l.output.approve.clone(),
        operator: l.operator.clone(),
        interactive: std::io::stdin().is_terminal() && std::io::stdout().is_terminal(),
        state: live,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::cannot_start(format!("cannot start the runtime: {e}")))?;
    let ctx = l.ctx;
    let outcome = runtime.block_on(async {
        let signals = signals();
        if matches!(mode, Mode::Fresh) {
            eprintln!("plan {}", l.plan.fingerprint);
            // Its record is checked by the engine before the first step.
            let _ = bus.emit(Event::RunStarted {
                run_id: l.run_id.clone(),
                runbook: rb.name.clone(),
                steps: rb.steps.len(),
                params: Json::Object(
                    l.plan
                        .resolved
                        .iter()
                        .filter(|(k, _)| !rb.params.iter().any(|p| p.secret && &p.name == *k))
                        .map(|(k, (v, _))| (k.clone(), v.clone()))
                        .collect(),
                ),
            });
        } else {
            eprintln!(
                "continuing run {} of {} (started by {}; plan {})",
                l.run_id, rb.name, l.identity, l.plan.fingerprint
            );
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
    if let Some(error) = bus.journal_error() {
        return Err(journal_failed(&l.run_id, &error, &bus));
    }
    Ok(Done::Run(outcome.status))
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
        "\ncheck what those steps did, free the disk, then `runbook resume {run_id}` continues from what the journal holds"
    ));
    Error::NeedsPerson(msg)
}

/// Removes the directory of a fresh run that never got a journal, and the
/// state dir too if this run created it.
struct Unclaimed(Option<PathBuf>, Option<PathBuf>);

impl Drop for Unclaimed {
    fn drop(&mut self) {
        for dir in self.0.iter().chain(self.1.iter()) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn subscribe_views(bus: &Bus, rb: &Runbook, l: &Launch, state: RunState) {
    let tty = std::io::stdout().is_terminal();
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && tty;
    if l.output.json_log {
        bus.subscribe(Box::new(view::JsonLog::install()));
    } else if tty && std::env::var_os("CI").is_none() {
        bus.subscribe(Box::new(view::Terminal::new(rb.steps.len(), color)));
    } else {
        bus.subscribe(Box::new(view::Plain::new(color)));
    }
    if let Some(path) = &l.output.report {
        let here = std::env::current_dir().unwrap_or_else(|_| l.cwd.clone());
        bus.subscribe(Box::new(view::Report::new(here.join(path), state)));
    }
}

fn flag_stores(
    rb: &Runbook,
    state_dir: &Path,
    ctx: &Context,
) -> std::result::Result<FlagStores, String> {
    let mut stores: FlagStores = Vec::new();
    let default_path = state_dir.join("flags.json");
    let uses_default = rb
        .steps
        .iter()
        .chain(&rb.on_failure)
        .chain(&rb.finally)
        .any(|s| matches!(&s.action.kind, ActionKind::Flag(f) if f.provider.is_none()));
    if uses_default {
        stores.push((None, Arc::new(FileFlags::new(default_path.clone()))));
    }
    for p in &rb.providers {
        match p.kind {
            ProviderKind::File => {
                let path = match &p.path {
                    Some(path) => PathBuf::from(ctx.render(path)?),
                    None => default_path.clone(),
                };
                stores.push((Some(p.name.clone()), Arc::new(FileFlags::new(path))));
            }
            ProviderKind::Redis => {
                let url = provider_url(p, ctx)?;
                let store = RedisFlags::new(&url, &p.prefix, p.timeout)
                    .map_err(|e| format!("provider `{}`: {e}", p.name))?;
                stores.push((Some(p.name.clone()), Arc::new(store)));
            }
            _ => {}
        }
    }
    Ok(stores)
}

/// A provider's `url`, rendered in the run-level context.
fn provider_url(p: &Provider, ctx: &Context) -> std::result::Result<String, String> {
    let url = p
        .url
        .as_deref()
        .ok_or_else(|| format!("provider `{}` needs a `url`", p.name))?;
    ctx.render(url)
        .map_err(|e| format!("provider `{}`: url: {e}", p.name))
}

/// The metric providers some `metric:` step (or rollback body) uses, built
/// once: a Prometheus client from the provider's rendered `url` and
/// `headers`, a command provider's settings. Pre-flight already reported a
/// `url` that renders badly; what is left (a header value that is not one)
/// refuses the run here, before anything ran.
fn metric_sources(rb: &Runbook, ctx: &Context) -> std::result::Result<MetricSources, String> {
    let used = |name: &str| {
        rb.steps
            .iter()
            .chain(&rb.on_failure)
            .chain(&rb.finally)
            .flat_map(|s| {
                let bodies: &[Action] = match &s.rollback {
                    Rollback::Bodies(b) => b,
                    _ => &[],
                };
                std::iter::once(&s.action).chain(bodies)
            })
            .any(|a| matches!(&a.kind, ActionKind::Metric(m) if m.provider == name))
    };
    let mut sources: MetricSources = Vec::new();
    for p in rb.providers.iter().filter(|p| used(&p.name)) {
        let source = match p.kind {
            ProviderKind::Prometheus => {
                let url = provider_url(p, ctx)?;
                let headers = p
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        ctx.render(v)
                            .map(|v| (k.clone(), v))
                            .map_err(|e| format!("provider `{}`: header {k}: {e}", p.name))
                    })
                    .collect::<std::result::Result<Vec<_>, String>>()?;
                let prom = Prometheus::new(&url, &headers, p.timeout)
                    .map_err(|e| format!("provider `{}`: {e}", p.name))?;
                MetricProvider::Server(Arc::new(prom))
            }
            ProviderKind::Command => MetricProvider::Command { timeout: p.timeout },
            // Validation lets metric steps name metric providers only.
            _ => continue,
        };
        sources.push((p.name.clone(), source));
    }
    Ok(sources)
}

fn signals() -> crate::engine::Signals {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    use tokio::signal::unix::{signal, SignalKind};
    for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
        if let Ok(mut s) = signal(kind) {
            let tx = tx.clone();
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
            });
        }
    }
    rx
}

fn new_run_id() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let stamp: String = now.chars().filter(char::is_ascii_digit).take(14).collect();
    let (date, time) = stamp.split_at(8.min(stamp.len()));
    format!("{date}-{time}-{:04x}", fastrand::u16(..))
}
