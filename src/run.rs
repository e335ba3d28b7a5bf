//! `runbook run`, `resume` and `rollback`: everything between a validated
//! runbook and a started engine (params, secrets, state dir, journal, locks,
//! providers, listeners, signals), and the exit code of the outcome.
//!
//! The three commands differ only in where the runbook and params come from
//! (the file and flags, or the journal) and in what the engine is asked to do
//! (run, continue, unwind); everything else is [`launch`].

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::cli::{load_runbook, Exit, LogFormat, RunArgs, ViewArgs};
use crate::engine::{Context, Engine, Prior};
use crate::events::{Bus, Event, RunStatus};
use crate::journal::{self, FileStore, Header, RunStore};
use crate::lock::{Lock, LockError};
use crate::providers::file_flags::FileFlags;
use crate::providers::redis_flags::RedisFlags;
use crate::runbook::{ActionKind, ProviderKind, Runbook};
use crate::secrets::{self, Masker};
use crate::steps::{FlagStores, RunEnv};
use crate::view;

/// What the engine is asked to do.
enum Mode {
    Fresh,
    Resume(Prior),
    Rollback(Prior),
}

struct Launch {
    rb: Arc<Runbook>,
    source: String,
    file: PathBuf,
    params: IndexMap<String, Json>,
    run_id: String,
    /// Who started the run (approvals compare against it).
    identity: String,
    /// Who runs this command.
    operator: String,
    view: ViewArgs,
    flag_previous: HashMap<String, Option<Json>>,
    /// Where steps run: the run's original working directory when resuming.
    workdir: Option<PathBuf>,
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

/// The login name of the real user, from the password database.
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

pub fn run(state_dir: &Path, args: RunArgs) -> Exit {
    let rb = match load_runbook(&args.file) {
        Ok(rb) => Arc::new(rb),
        Err(e) => return e,
    };
    let source = std::fs::read_to_string(&args.file).unwrap_or_default();
    let params = match crate::plan::resolve_params(&rb, &args.params) {
        Ok(p) => p
            .into_iter()
            .map(|(k, (v, _))| (k, v))
            .collect::<IndexMap<String, Json>>(),
        Err(errors) => {
            for (code, e) in errors {
                eprintln!("error[{code}]: {e}");
            }
            return Exit::Invalid;
        }
    };
    let run_id = match &args.run_id {
        Some(id) if journal::valid_run_id(id) => id.clone(),
        Some(id) => {
            eprintln!("error: run id `{id}` may only contain letters, digits, `-`, `_` and `.`");
            return Exit::Invalid;
        }
        None => new_run_id(),
    };
    for step in &args.view.approve {
        let is_approval = rb
            .steps
            .iter()
            .chain(&rb.on_failure)
            .chain(&rb.finally)
            .any(|s| &s.id == step && matches!(s.action.kind, ActionKind::Approval(_)));
        if !is_approval {
            eprintln!("error: --approve {step}: the runbook has no approval step `{step}`");
            return Exit::Invalid;
        }
    }
    let identity = operator(args.view.identity.as_deref());
    launch(
        state_dir,
        Launch {
            rb,
            source,
            file: args.file,
            params,
            run_id,
            operator: identity.clone(),
            identity,
            view: args.view,
            flag_previous: HashMap::new(),
            workdir: None,
        },
        Mode::Fresh,
    )
}

/// Loads a run's journal and the runbook recorded in it.
fn recorded(state_dir: &Path, run_id: &str) -> Result<(journal::Recorded, Arc<Runbook>), Exit> {
    let store = FileStore::new(state_dir);
    let rec = match store.read(run_id) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("error: no run `{run_id}` in {}", state_dir.display());
            return Err(Exit::Invalid);
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            eprintln!("error: {e}");
            return Err(Exit::Invalid);
        }
        Err(e) => {
            eprintln!("error: cannot read the journal of run `{run_id}`: {e}");
            return Err(Exit::CannotStart);
        }
    };
    if rec.torn {
        eprintln!("note: the journal's last record was torn (the engine died while writing it); it is ignored");
    }
    let v = crate::validate::validate(crate::spec::load(&rec.header.source));
    let Some(rb) = v.runbook else {
        eprintln!("error: the runbook recorded in run `{run_id}` no longer validates with this version of runbook");
        return Err(Exit::Invalid);
    };
    if let Ok(now) = std::fs::read_to_string(Path::new(&rec.header.cwd).join(&rec.header.file)) {
        if journal::hash(&now) != rec.header.hash {
            eprintln!(
                "note: {} changed since run `{run_id}` started; continuing with the runbook as it was then (recorded in the journal)",
                rec.header.file
            );
        }
    }
    Ok((rec, Arc::new(rb)))
}

fn from_journal(rec: &journal::Recorded, rb: Arc<Runbook>, view: ViewArgs) -> Launch {
    let (_, flag_previous) = rec.prior();
    Launch {
        rb,
        source: rec.header.source.clone(),
        file: PathBuf::from(&rec.header.file),
        params: rec.header.params.clone().into_iter().collect(),
        run_id: rec.header.run_id.clone(),
        identity: rec.header.identity.clone(),
        operator: operator(view.identity.as_deref()),
        view,
        flag_previous,
        workdir: Some(PathBuf::from(&rec.header.cwd)).filter(|d| d.is_dir()),
    }
}

pub fn resume(state_dir: &Path, run_id: &str, view: ViewArgs) -> Exit {
    let (rec, rb) = match recorded(state_dir, run_id) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if let Some(status) = rec.finished() {
        println!("run {run_id} already finished: {}", status.as_str());
        return exit_of(status);
    }
    let (prior, _) = rec.prior();
    let mode = if rec.rollback_started_after_success() {
        Mode::Rollback(prior)
    } else {
        Mode::Resume(prior)
    };
    launch(state_dir, from_journal(&rec, rb, view), mode)
}

pub fn rollback(state_dir: &Path, run_id: &str, view: ViewArgs) -> Exit {
    let (rec, rb) = match recorded(state_dir, run_id) {
        Ok(r) => r,
        Err(e) => return e,
    };
    match rec.finished() {
        Some(RunStatus::Succeeded) => {}
        Some(other) => {
            eprintln!(
                "error: run {run_id} ended {}; only a succeeded run can be rolled back",
                other.as_str()
            );
            return Exit::Invalid;
        }
        None if rec.rollback_started_after_success() => {}
        None => {
            eprintln!(
                "error: run {run_id} has not finished; `runbook resume {run_id}` continues it"
            );
            return Exit::Invalid;
        }
    }
    let (prior, _) = rec.prior();
    launch(
        state_dir,
        from_journal(&rec, rb, view),
        Mode::Rollback(prior),
    )
}

fn exit_of(status: RunStatus) -> Exit {
    match status {
        RunStatus::Succeeded => Exit::Succeeded,
        RunStatus::RolledBack => Exit::Failed,
        RunStatus::RollbackFailed => Exit::RollbackFailed,
        RunStatus::Interrupted => Exit::Interrupted,
    }
}

fn launch(state_dir: &Path, l: Launch, mode: Mode) -> Exit {
    let rb = l.rb.clone();
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot read the working directory: {e}");
            return Exit::CannotStart;
        }
    };
    let state_dir = cwd.join(state_dir);
    // A resumed run goes on where it started: relative paths in its steps
    // mean what they meant then, whatever directory the operator is in now.
    let cwd = l.workdir.clone().unwrap_or(cwd);
    let store = FileStore::new(&state_dir);
    let run_dir = store.run_dir(&l.run_id);
    if matches!(mode, Mode::Fresh) && run_dir.exists() {
        eprintln!(
            "error: run `{}` already exists in {}; pick another --run-id",
            l.run_id,
            state_dir.display()
        );
        return Exit::Invalid;
    }
    if let Err(e) = std::fs::create_dir_all(&run_dir) {
        eprintln!("error: state dir {} is unusable: {e}", state_dir.display());
        return Exit::CannotStart;
    }
    // One process per run: a second `resume` of a live run must not race it.
    let _run_lock =
        match Lock::acquire_file(&run_dir.join("run.lock"), &std::process::id().to_string()) {
            Ok(l) => l,
            Err(LockError::Held { holder }) => {
                eprintln!("error: run {} is being run by process {holder}", l.run_id);
                return Exit::CannotStart;
            }
            Err(LockError::Io(e)) => {
                eprintln!("error: state dir {} is unusable: {e}", state_dir.display());
                return Exit::CannotStart;
            }
        };

    // A fresh run refused before its journal exists (missing secret, lock
    // held, ...) must not keep its id: the same `--run-id` may run once fixed.
    let mut unclaimed = Unclaimed(matches!(mode, Mode::Fresh).then(|| run_dir.clone()));

    let secret_values = match secrets::load(&rb, &cwd) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Invalid;
        }
    };
    let mut masked: Vec<String> = secret_values.iter().map(|(_, v)| v.clone()).collect();
    for p in rb.params.iter().filter(|p| p.secret) {
        if let Some(Json::String(v)) = l.params.get(&p.name) {
            masked.push(v.clone());
        }
    }
    let masker = Arc::new(Masker::new(masked));
    let process_env: Vec<(String, String)> = std::env::vars().collect();
    let ctx = match Context::new(&rb, &l.run_id, &l.params, &secret_values, &process_env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", masker.mask(&e));
            return Exit::Invalid;
        }
    };
    let mut base_env = process_env;
    for (k, v) in &rb.env {
        match ctx.render(v) {
            Ok(v) => base_env.push((k.clone(), v)),
            Err(e) => {
                eprintln!("error: env {k}: {}", masker.mask(&e));
                return Exit::Invalid;
            }
        }
    }
    base_env.push(("RUNBOOK_RUN_ID".into(), l.run_id.clone()));
    let flags = match flag_stores(&rb, &state_dir, &ctx) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Invalid;
        }
    };

    let _lock = match &rb.lock {
        None => None,
        Some(key) => {
            let key = match ctx.render(key) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("error: lock: {e}");
                    return Exit::Invalid;
                }
            };
            match Lock::acquire(&state_dir, &key, &l.run_id) {
                Ok(lock) => Some(lock),
                Err(LockError::Held { holder }) => {
                    eprintln!("error: lock `{key}` is held by run {holder}; wait for it or check `runbook status {holder}`");
                    return Exit::CannotStart;
                }
                Err(LockError::Io(e)) => {
                    eprintln!("error: cannot take lock `{key}`: {e}");
                    return Exit::CannotStart;
                }
            }
        }
    };

    let bus = Bus::new(masker.clone());
    // The journal listens first: every other listener sees an event only once it is durable.
    let journal = match &mode {
        Mode::Fresh => {
            let mut params: serde_json::Map<String, Json> = l.params.clone().into_iter().collect();
            for p in rb.params.iter().filter(|p| p.secret) {
                params.insert(p.name.clone(), Json::String("***".into()));
            }
            let mut source = l.source.clone();
            masker.mask_in_place(&mut source);
            let header = Header {
                run_id: l.run_id.clone(),
                runbook: rb.name.clone(),
                file: l.file.display().to_string(),
                hash: journal::hash(&l.source),
                source,
                params,
                identity: l.identity.clone(),
                pid: std::process::id(),
                started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                    .to_string(),
                cwd: cwd.display().to_string(),
            };
            store.create(&header)
        }
        _ => store.append(&l.run_id),
    };
    match journal {
        Ok(j) => {
            bus.subscribe(j);
            unclaimed.0 = None;
        }
        Err(e) => {
            eprintln!(
                "error: cannot write the journal in {}: {e}",
                run_dir.display()
            );
            return Exit::CannotStart;
        }
    }
    subscribe_views(&bus, &rb, &l, &cwd);

    let env = Arc::new(RunEnv {
        runbook: rb.clone(),
        run_id: l.run_id.clone(),
        state_dir: state_dir.clone(),
        run_dir,
        cwd,
        base_env,
        identity: l.identity.clone(),
        flags,
        flag_previous: l.flag_previous.clone(),
        approve: l.view.approve.clone(),
        operator: l.operator.clone(),
        interactive: std::io::stdin().is_terminal() && std::io::stdout().is_terminal(),
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return Exit::CannotStart;
        }
    };
    let outcome = runtime.block_on(async {
        let signals = signals();
        if matches!(mode, Mode::Fresh) {
            bus.emit(Event::RunStarted {
                run_id: l.run_id.clone(),
                runbook: rb.name.clone(),
                steps: rb.steps.len(),
                params: serde_json::to_value(&l.params).unwrap_or_default(),
            });
        } else {
            eprintln!(
                "continuing run {} of {} (started by {})",
                l.run_id, rb.name, l.identity
            );
        }
        let engine = Arc::new(Engine::new(env, bus.clone(), ctx));
        match mode {
            Mode::Fresh => engine.run(signals, Prior::default()).await,
            Mode::Resume(prior) => engine.run(signals, prior).await,
            Mode::Rollback(prior) => engine.rollback(signals, prior, &l.operator).await,
        }
    });
    bus.finish();
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    exit_of(outcome.status)
}

/// Removes the directory of a fresh run that never got a journal.
struct Unclaimed(Option<PathBuf>);

impl Drop for Unclaimed {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn subscribe_views(bus: &Bus, rb: &Runbook, l: &Launch, cwd: &Path) {
    let tty = std::io::stdout().is_terminal();
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && tty;
    match l.view.log_format {
        LogFormat::Json => bus.subscribe(Box::new(view::JsonLog::install())),
        LogFormat::Text if tty && std::env::var_os("CI").is_none() => {
            bus.subscribe(Box::new(view::Terminal::new(rb.steps.len(), color)));
        }
        LogFormat::Text => bus.subscribe(Box::new(view::Plain::new(color))),
    }
    if let Some(path) = &l.view.report {
        let ids: Vec<(String, &'static str)> = rb
            .steps
            .iter()
            .map(|s| (s.id.clone(), "steps"))
            .chain(rb.on_failure.iter().map(|s| (s.id.clone(), "on_failure")))
            .chain(rb.finally.iter().map(|s| (s.id.clone(), "finally")))
            .collect();
        bus.subscribe(Box::new(view::Report::new(
            std::env::current_dir()
                .unwrap_or_else(|_| cwd.to_path_buf())
                .join(path),
            &l.run_id,
            &rb.name,
            &ids,
        )));
    }
}

fn flag_stores(rb: &Runbook, state_dir: &Path, ctx: &Context) -> Result<FlagStores, String> {
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
                let url = p
                    .url
                    .as_deref()
                    .ok_or_else(|| format!("provider `{}` needs a `url`", p.name))?;
                let url = ctx
                    .render(url)
                    .map_err(|e| format!("provider `{}`: url: {e}", p.name))?;
                let store = RedisFlags::new(&url, &p.prefix, p.timeout)
                    .map_err(|e| format!("provider `{}`: {e}", p.name))?;
                stores.push((Some(p.name.clone()), Arc::new(store)));
            }
            _ => {}
        }
    }
    Ok(stores)
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
