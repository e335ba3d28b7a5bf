//! Arbitrary bytes -> a runbook and hostile param values -> everything
//! `runbook plan` and `runbook run` render before the first step starts.
//!
//! The input is split at each 0xFF byte (never part of UTF-8 text): the
//! first part is the runbook, each later part (UTF-8, lossy) one hostile
//! value. Values go to the declared params in order (where the param's type
//! and enum accept them), then to the declared secrets, then to one
//! variable of the environment the run sees. Then, as `plan` does,
//! `plan::check_and_build` (pre-flight with the preview's roots, and the
//! plan) and every format; and, as `runbook::runner::prepare` does, the run's
//! `Context` (every var rendered), `plan::preflight` with the run's roots,
//! the masker over its messages, `env`, `lock` and the providers' templates,
//! plus every shell script and command query rendered with
//! `template::render_shell`, as their steps would render them.
//!
//! Nothing may panic, hang or allocate without bound, and a rendered shell
//! script must keep its promises: a value never carries a NUL byte, every
//! value is passed as a `RUNBOOK_VALUE_n` variable, and a non-POSIX
//! interpreter gets no values at all.
#![no_main]

use std::sync::Arc;

use indexmap::IndexMap;
use libfuzzer_sys::fuzz_target;
use runbook::engine::Context;
use runbook::plan::{self, render, resolve_params, Format, RUN_ROOTS};
use runbook::runbook::{Action, ActionKind, Param, ParamType, Rollback, Runbook};
use runbook::secrets::Masker;
use runbook::shell_values::VAR_PREFIX;
use runbook::template;
use serde_json::Value as Json;

/// As in the binary: renders run under the memory budget (docs/engine.md,
/// "Template budgets"), so a `~` doubling loop is an error, not an OOM.
#[global_allocator]
static ALLOC: template::budget::Alloc = template::budget::Alloc;

/// `FUZZ_DEBUG=1`: say what the input became (diagnostics, params, each
/// script as rendered), to reproduce a finding by hand.
fn debug() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FUZZ_DEBUG").is_some())
}

/// A value of the param's type, for a required param the input gave none.
fn typed_value(p: &Param) -> String {
    match p.allowed.as_ref().and_then(|a| a.first()) {
        Some(Json::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => match p.ty {
            ParamType::String => "x".into(),
            ParamType::Integer | ParamType::Number => "1".into(),
            ParamType::Boolean => "true".into(),
        },
    }
}

/// Checks what a rendered script promises (see `shell_values`).
fn check_script(source: &str, ctx: &minijinja::Value, posix: bool) {
    let s = match template::render_shell(source, ctx, posix) {
        Ok(s) => s,
        Err(e) => {
            if debug() {
                eprintln!("script refused: {e}");
            }
            return;
        }
    };
    if debug() {
        eprintln!("script:\n{}\nvalues: {:?}", s.text, s.values);
    }
    if !posix {
        assert!(s.values.is_empty(), "a non-shell interpreter got values");
    }
    for (name, value) in &s.values {
        assert!(name.starts_with(VAR_PREFIX), "value variable {name:?}");
        assert!(!value.contains('\0'), "a value with NUL reached {name}");
        assert!(
            s.text.contains(&format!("${{{name}}}")),
            "{name} is never read by the script"
        );
    }
}

fn scripts(a: &Action) -> Option<&str> {
    match &a.kind {
        ActionKind::Shell { script } => Some(script),
        ActionKind::Metric(m) => Some(&m.query),
        _ => None,
    }
}

fn run_side(
    rb: &Arc<Runbook>,
    text: &str,
    params: IndexMap<String, Json>,
    secrets: Vec<(String, String)>,
    env: Vec<(String, String)>,
) {
    // As `prepare`: what the masker must hide.
    let mut masked: Vec<String> = secrets.iter().map(|(_, v)| v.clone()).collect();
    for sp in rb.params.iter().filter(|sp| sp.secret) {
        match params.get(&sp.name) {
            Some(Json::String(v)) => masked.push(v.clone()),
            Some(Json::Null) | None => {}
            Some(other) => masked.push(other.to_string()),
        }
    }
    let masker = Masker::new(masked);
    let rb2 = rb.clone();
    let text = text.to_string();
    let r = template::budget::batch(move || {
        let ctx = match Context::new(&rb2, "fuzz-run", &params, &secrets, &env) {
            Ok(ctx) => ctx,
            Err(e) => {
                let _ = masker.mask(&e);
                return Ok(());
            }
        };
        let run_ctx = ctx.for_step(None);
        for mut d in plan::preflight(&rb2, &run_ctx, RUN_ROOTS) {
            masker.mask_in_place(&mut d.message);
            let _ = d.render("fuzz.yaml", &text, false);
        }
        for (_, v) in &rb2.env {
            let _ = ctx.render(v).map_err(|e| masker.mask(&e));
        }
        if let Some(lock) = &rb2.lock {
            let _ = ctx.render(&lock.key);
        }
        for p in &rb2.providers {
            for t in p.url.iter().chain(&p.path) {
                let _ = ctx.render(t);
            }
            for (_, v) in &p.headers {
                let _ = ctx.render(v);
            }
        }
        // Every script as its step renders it when it starts (rollback
        // bodies with `step` bound to the step they undo).
        let undo_ctx = ctx.for_step(Some(&runbook::state::StepRecord::new()));
        for s in rb2.steps.iter().chain(&rb2.on_failure).chain(&rb2.finally) {
            if let Some(src) = scripts(&s.action) {
                check_script(src, &run_ctx, template::is_shell(&s.action.interpreter));
            }
            if let Rollback::Bodies(bodies) = &s.rollback {
                for b in bodies {
                    if let Some(src) = scripts(b) {
                        check_script(src, &undo_ctx, template::is_shell(&b.interpreter));
                    }
                }
            }
        }
        Ok(())
    });
    // Only a worker that could not start (or a render that panicked,
    // which the worker turns into an error) gets here.
    if let Err(e) = r {
        assert!(
            !e.to_string().contains("panicked"),
            "a render panicked: {e}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0xFF);
    let text = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let mut values = parts.map(|p| String::from_utf8_lossy(p).into_owned());

    let validated = runbook::validate::validate_text(&text);
    if debug() {
        for d in &validated.diagnostics {
            eprintln!("{}", d.render("fuzz.yaml", &text, false));
        }
    }
    let Some(rb) = validated.runbook else {
        return;
    };
    let rb = Arc::new(rb);

    // Hostile values where the param takes them; a typed value for a
    // required param that is still missing.
    let mut given: Vec<(String, String)> = Vec::new();
    for p in &rb.params {
        match values.next() {
            Some(v) if p.parse(&v).is_ok() => given.push((p.name.clone(), v)),
            _ if p.required && p.default.is_none() => given.push((p.name.clone(), typed_value(p))),
            _ => {}
        }
    }
    let resolved = match resolve_params(&rb, &given) {
        Ok(r) => r,
        Err(e) => {
            if debug() {
                eprintln!("params: {e:?}");
            }
            return;
        }
    };
    if debug() {
        eprintln!("params: {resolved:?}");
    }
    let secrets: Vec<(String, String)> = rb
        .secrets
        .iter()
        .map(|s| {
            let v = values
                .next()
                .unwrap_or_else(|| format!("s3cret-{}", s.name));
            (s.name.clone(), v)
        })
        .collect();
    let mut env = vec![
        ("HOME".to_string(), "/home/fuzz".to_string()),
        ("PATH".to_string(), "/usr/bin:/bin".to_string()),
    ];
    if let Some(v) = values.next() {
        env.push(("FUZZ".to_string(), v));
    }

    // `runbook plan`: pre-flight with the preview's roots, then the plan.
    if let Ok((problems, built)) = plan::check_and_build(&rb, &text, &resolved) {
        for d in &problems {
            let _ = d.render("fuzz.yaml", &text, false);
        }
        for format in [
            Format::Text,
            Format::Markdown,
            Format::Json,
            Format::Mermaid,
        ] {
            let _ = render(&built, format);
        }
    }

    // `runbook run`, up to the first step.
    let params: IndexMap<String, Json> = resolved
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    run_side(&rb, &text, params, secrets, env);
});
