//! `runbook run`: everything between a validated runbook and a started
//! engine (params, secrets, state dir, lock, providers, listeners, signals),
//! and the exit code of the outcome.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::cli::{load_runbook, Exit, LogFormat, RunArgs};
use crate::engine::{Context, Engine};
use crate::events::{Bus, Event, RunStatus};
use crate::lock::{Lock, LockError};
use crate::providers::file_flags::FileFlags;
use crate::runbook::{ActionKind, ProviderKind, Runbook};
use crate::secrets::{self, Masker};
use crate::steps::{FlagStores, RunEnv};
use crate::view;

pub fn run(state_dir: &Path, args: RunArgs) -> Exit {
    let rb = match load_runbook(&args.file) {
        Ok(rb) => Arc::new(rb),
        Err(e) => return e,
    };
    let params = match crate::plan::resolve_params(&rb, &args.params) {
        Ok(p) => p
            .into_iter()
            .map(|(k, (v, _))| (k, v))
            .collect::<IndexMap<String, Json>>(),
        Err(errors) => {
            for e in errors {
                eprintln!("error[E032]: {e}");
            }
            return Exit::Invalid;
        }
    };
    let run_id = match &args.run_id {
        Some(id) if valid_run_id(id) => id.clone(),
        Some(id) => {
            eprintln!("error: run id `{id}` may only contain letters, digits, `-`, `_` and `.`");
            return Exit::Invalid;
        }
        None => new_run_id(),
    };
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot read the working directory: {e}");
            return Exit::CannotStart;
        }
    };
    let state_dir = cwd.join(state_dir);
    let run_dir = state_dir.join("runs").join(&run_id);
    if run_dir.exists() {
        eprintln!(
            "error: run `{run_id}` already exists in {}; pick another --run-id",
            state_dir.display()
        );
        return Exit::Invalid;
    }
    if let Err(e) = std::fs::create_dir_all(&run_dir) {
        eprintln!("error: state dir {} is unusable: {e}", state_dir.display());
        return Exit::CannotStart;
    }
    let secret_values = match secrets::load(&rb, &cwd) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Invalid;
        }
    };
    let mut masked: Vec<String> = secret_values.iter().map(|(_, v)| v.clone()).collect();
    for p in rb.params.iter().filter(|p| p.secret) {
        if let Some(Json::String(v)) = params.get(&p.name) {
            masked.push(v.clone());
        }
    }
    let masker = Arc::new(Masker::new(masked));
    let process_env: Vec<(String, String)> = std::env::vars().collect();
    let ctx = match Context::new(&rb, &run_id, &params, &secret_values, &process_env) {
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
    base_env.push(("RUNBOOK_RUN_ID".into(), run_id.clone()));
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
            match Lock::acquire(&state_dir, &key, &run_id) {
                Ok(l) => Some(l),
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

    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("RUNBOOK_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "unknown".into());

    let bus = Bus::new(masker);
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stdout().is_terminal();
    match args.log_format {
        LogFormat::Json => bus.subscribe(Box::new(view::JsonLog::install())),
        LogFormat::Text if std::io::stdout().is_terminal() && std::env::var_os("CI").is_none() => {
            bus.subscribe(Box::new(view::Terminal::new(rb.steps.len(), color)));
        }
        LogFormat::Text => bus.subscribe(Box::new(view::Plain::new(color))),
    }
    if let Some(path) = &args.report {
        let ids: Vec<(String, &'static str)> = rb
            .steps
            .iter()
            .map(|s| (s.id.clone(), "steps"))
            .chain(rb.on_failure.iter().map(|s| (s.id.clone(), "on_failure")))
            .chain(rb.finally.iter().map(|s| (s.id.clone(), "finally")))
            .collect();
        bus.subscribe(Box::new(view::Report::new(
            cwd.join(path),
            &run_id,
            &rb.name,
            &ids,
        )));
    }

    let env = Arc::new(RunEnv {
        runbook: rb.clone(),
        run_id: run_id.clone(),
        state_dir: state_dir.clone(),
        run_dir,
        cwd,
        base_env,
        identity,
        flags,
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
        bus.emit(Event::RunStarted {
            run_id: run_id.clone(),
            runbook: rb.name.clone(),
            steps: rb.steps.len(),
            params: serde_json::to_value(&params).unwrap_or_default(),
        });
        let engine = Arc::new(Engine::new(env, bus.clone(), ctx));
        engine.run(signals).await
    });
    bus.finish();
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome.status {
        RunStatus::Succeeded => Exit::Succeeded,
        RunStatus::RolledBack => Exit::Failed,
        RunStatus::RollbackFailed => Exit::RollbackFailed,
        RunStatus::Interrupted => Exit::Interrupted,
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
                return Err(format!(
                    "provider `{}`: redis flag stores are not available in this build yet",
                    p.name
                ));
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

fn valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !id.starts_with('.')
}

fn new_run_id() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let stamp: String = now.chars().filter(char::is_ascii_digit).take(14).collect();
    format!(
        "{}-{}-{:04x}",
        &stamp[..8.min(stamp.len())],
        &stamp[8.min(stamp.len())..],
        fastrand::u16(..)
    )
}
