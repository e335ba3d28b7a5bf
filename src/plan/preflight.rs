//! Pre-flight: once params are known, render and type-check every template
//! that depends only on them (and on vars, secrets and env), before anything
//! runs.
//!
//! Validation proves a template compiles and reads names that exist; only
//! the values say whether `{{ params.gate_interval }}` is a duration or a
//! URL parses. A run that learned that at its gate, days in, would already
//! have changed the world, so `run` checks here first and `plan` shows the
//! same errors. Templates that read `steps`, `run` or `step` wait for the
//! run; which other roots count as known is the caller's choice (`plan`
//! knows neither real secrets nor the run's environment).

use minijinja::Value;

use crate::diagnostics::{Code, Diagnostic};
use crate::duration;
use crate::runbook::{Action, ActionKind, Dur, Num, ProviderKind, Rollback, Runbook, Step, Tpl};
use crate::spec::Span;
use crate::template;

/// Roots `run` knows before the first step: everything but the run's progress.
pub const RUN_ROOTS: &[&str] = &["params", "vars", "secrets", "env"];
/// Roots a preview knows: secrets are masked and env is the run's, not ours.
pub const PLAN_ROOTS: &[&str] = &["params", "vars"];

/// Every error found, in file order of the steps (top-level settings first).
///
/// `not_given` names the required params a preview was built without:
/// templates that depend on one (directly or through a var) wait for the run.
pub fn preflight(
    rb: &Runbook,
    ctx: &Value,
    known: &[&str],
    not_given: &[String],
) -> Vec<Diagnostic> {
    let mut c = Checker {
        ctx,
        known,
        not_given: not_given.iter().map(|p| format!("params.{p}")).collect(),
        secret_params: rb
            .params
            .iter()
            .filter(|p| p.secret)
            .map(|p| format!("params.{}", p.name))
            .collect(),
        out: Vec::new(),
    };
    // A var that cannot render (e.g. it runs out of its budget) would stop
    // the run before its first step; plan's preview shows it as `<vars.x>`.
    for (k, v) in &rb.vars {
        c.json(v, 1, &format!("var `{k}`"));
    }
    if let Some(lock) = &rb.lock {
        c.text(&lock.key, "lock", Kind::NonEmpty);
        if let Some(wait) = &lock.wait {
            c.dur(wait, "lock: wait");
        }
    }
    for p in &rb.providers {
        let what = format!("provider `{}`", p.name);
        if let Some(url) = &p.url {
            c.text(url, &format!("{what}: url"), Kind::Url(p.kind));
        }
        if let Some(path) = &p.path {
            c.text(path, &format!("{what}: path"), Kind::NonEmpty);
        }
    }
    for s in rb.steps.iter().chain(&rb.on_failure).chain(&rb.finally) {
        c.step(s);
    }
    c.out
}

#[derive(Clone, Copy)]
enum Kind {
    Any,
    NonEmpty,
    Url(ProviderKind),
    HttpUrl,
}

struct Checker<'a> {
    ctx: &'a Value,
    known: &'a [&'a str],
    /// `params.NAME` of each `secret: true` param.
    secret_params: Vec<String>,
    /// `params.NAME` of each required param a preview was not given.
    not_given: Vec<String>,
    out: Vec<Diagnostic>,
}

impl Checker<'_> {
    /// Whether a template reads only known roots (so can be checked now),
    /// and whether it reads a secret (so its value is never shown).
    fn decidable(&self, text: &str, expression: bool) -> Option<bool> {
        if !expression && !template::is_template(text) {
            return None;
        }
        let reads = template::reads(text, expression).ok()?;
        let root = |r: &String| r.split('.').next().unwrap_or_default().to_string();
        if !self.not_given.is_empty() && reads.iter().any(|r| self.waits_on_not_given(r)) {
            return None;
        }
        // Calling `range` or `namespace` is not a read of the context.
        reads
            .iter()
            .all(|r| {
                let r = root(r);
                self.known.contains(&r.as_str()) || template::GLOBAL_FUNCTIONS.contains(&r.as_str())
            })
            .then(|| {
                reads.iter().any(|r| {
                    root(r) == "secrets"
                        || self
                            .secret_params
                            .iter()
                            .any(|p| r == p || r.starts_with(&format!("{p}.")))
                })
            })
    }

    /// Whether a read is of a param not given, or of a var made from one
    /// (whose preview value holds its `<params.NAME>` symbol).
    fn waits_on_not_given(&self, read: &str) -> bool {
        let of = |p: &String| read == p || read.starts_with(&format!("{p}."));
        if self.not_given.iter().any(of) {
            return true;
        }
        read.starts_with("vars.")
            && template::render_str(&format!("{{{{ {read} }}}}"), self.ctx)
                .is_ok_and(|v| self.not_given.iter().any(|p| v.contains(&format!("<{p}>"))))
    }

    fn error(&mut self, code: Code, span: Span, message: String) {
        self.out.push(Diagnostic::new(code, span, message));
    }

    fn render_failed(&mut self, span: Span, what: &str, e: &minijinja::Error) {
        let msg = format!("{what}: {}", crate::steps::template_message(e));
        self.error(Code::RenderFailed, span, msg);
    }

    fn shown(value: &str, secret: bool) -> String {
        if secret {
            "a value read from a secret".into()
        } else {
            format!("`{value}`")
        }
    }

    fn text(&mut self, t: &Tpl, what: &str, kind: Kind) {
        let Some(secret) = self.decidable(t, false) else {
            return;
        };
        let value = match template::render_str(t, self.ctx) {
            Ok(v) => v,
            Err(e) => return self.render_failed(t.span, what, &e),
        };
        let problem = match kind {
            Kind::Any => None,
            Kind::NonEmpty => value.trim().is_empty().then(|| "renders empty".to_string()),
            Kind::HttpUrl => url_problem(&value, &["http", "https"]),
            Kind::Url(ProviderKind::Redis) => url_problem(&value, &["redis", "rediss"]),
            Kind::Url(ProviderKind::Prometheus) => url_problem(&value, &["http", "https"]),
            Kind::Url(_) => None,
        };
        if let Some(p) = problem {
            let code = match kind {
                Kind::Url(_) | Kind::HttpUrl => Code::InvalidUrl,
                _ => Code::RenderFailed,
            };
            let shown = Self::shown(&value, secret);
            self.error(
                code,
                t.span,
                format!("{what}: `{}` gives {shown}, which {p}", t.text),
            );
        }
    }

    /// An approver is a person's name: printed in `status`, journaled,
    /// typed with `--as` and pasted from the command `status` prints. So it
    /// never comes from a secret, and holds nothing a terminal or a shell
    /// would act on.
    fn approver(&mut self, t: &Tpl, what: &str) {
        let value = if template::is_template(t) {
            match self.decidable(t, false) {
                None => return,
                Some(true) => {
                    return self.error(
                        Code::ApproverName,
                        t.span,
                        format!("{what}: `{}` reads a secret; an approver's name is shown in status, journaled and typed with --as", t.text),
                    )
                }
                Some(false) => match template::render_str(t, self.ctx) {
                    Ok(v) => v,
                    Err(e) => return self.render_failed(t.span, what, &e),
                },
            }
        } else {
            t.text.clone()
        };
        // A param not given shows as a symbol: the run checks the real name.
        if value.contains("<params.") && !self.not_given.is_empty() {
            return;
        }
        let invisible = |c: char| {
            c.is_control()
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
        };
        let problem = if value.trim().is_empty() {
            Some("renders empty")
        } else if value.chars().any(invisible) {
            Some("holds a control or invisible character, which a terminal would act on")
        } else if value.trim_start().starts_with('-') {
            Some("starts with `-`, which `--as` would take for an option")
        } else {
            None
        };
        if let Some(p) = problem {
            let code = if p == "renders empty" {
                Code::RenderFailed
            } else {
                Code::ApproverName
            };
            self.error(
                code,
                t.span,
                format!("{what}: `{}` gives {:?}, which {p}", t.text, value),
            );
        }
    }

    fn dur(&mut self, d: &Dur, what: &str) {
        let Dur::Template(t) = d else { return };
        let Some(secret) = self.decidable(t, false) else {
            return;
        };
        match template::render_str(t, self.ctx) {
            Err(e) => self.render_failed(t.span, what, &e),
            Ok(v) => {
                if let Err(e) = duration::parse(&v) {
                    // The parser's message quotes the value: not for a secret.
                    let e = if secret {
                        "write e.g. `30s`, `5m`, `2h`, `1d`".to_string()
                    } else {
                        e
                    };
                    let shown = Self::shown(&v, secret);
                    self.error(
                        Code::InvalidDuration,
                        t.span,
                        format!(
                            "{what}: `{}` gives {shown}, which is not a duration: {e}",
                            t.text
                        ),
                    );
                }
            }
        }
    }

    fn num(&mut self, n: &Num, what: &str) {
        let Num::Template(t, min) = n else { return };
        let Some(secret) = self.decidable(t, false) else {
            return;
        };
        match template::render_value(t, self.ctx) {
            Err(e) => self.render_failed(t.span, what, &e),
            Ok(v) => {
                let n = i64::try_from(v.clone())
                    .ok()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()));
                let shown = Self::shown(&v.to_string(), secret);
                match n {
                    None => self.error(
                        Code::InvalidNumber,
                        t.span,
                        format!(
                            "{what}: `{}` gives {shown}, which is not a whole number",
                            t.text
                        ),
                    ),
                    Some(n) if n < *min => {
                        let shown = if secret {
                            Self::shown("", true)
                        } else {
                            n.to_string()
                        };
                        self.error(
                            Code::InvalidNumber,
                            t.span,
                            format!(
                                "{what}: `{}` gives {shown}; it must be at least {min}",
                                t.text
                            ),
                        );
                    }
                    Some(_) => {}
                }
            }
        }
    }

    fn when(&mut self, t: &Tpl) {
        if self.decidable(t, true).is_none() {
            return;
        }
        if let Err(e) = template::eval_bool(t, self.ctx) {
            self.render_failed(t.span, "`when`", &e);
        }
    }

    /// A template without a span of its own: reported at its step's line.
    fn plain(&mut self, text: &str, line: u32, what: &str, shell: Option<bool>) {
        if self.decidable(text, false).is_none() {
            return;
        }
        let r = if let Some(posix) = shell {
            template::render_shell(text, self.ctx, posix).map(|s| s.display)
        } else {
            template::render_str(text, self.ctx)
        };
        if let Err(e) = r {
            self.render_failed(Span::point(line, 1), what, &e);
        }
    }

    fn json(&mut self, v: &serde_json::Value, line: u32, what: &str) {
        let mut leaves = Vec::new();
        string_leaves(v, &mut leaves);
        if leaves.is_empty() || leaves.iter().any(|t| self.decidable(t, false).is_none()) {
            return;
        }
        if let Err(e) = template::render_json(v, self.ctx) {
            self.render_failed(Span::point(line, 1), what, &e);
        }
    }

    fn step(&mut self, s: &Step) {
        if let Some(w) = &s.when {
            self.when(w);
        }
        self.action(&s.action, s.line, &format!("step `{}`", s.id));
        if let Rollback::Bodies(bodies) = &s.rollback {
            for (b, body) in bodies.iter().enumerate() {
                self.action(body, s.line, &format!("step `{}` rollback {}", s.id, b + 1));
            }
        }
    }

    fn action(&mut self, a: &Action, line: u32, who: &str) {
        if let Some(t) = &a.timeout {
            self.dur(t, &format!("{who}: timeout"));
        }
        self.num(&a.retry.attempts, &format!("{who}: retry.attempts"));
        self.dur(&a.retry.delay, &format!("{who}: retry.delay"));
        if let Some(m) = &a.retry.max_delay {
            self.dur(m, &format!("{who}: retry.max_delay"));
        }
        for (k, v) in &a.env {
            self.plain(v, line, &format!("{who}: env {k}"), None);
        }
        if let Some(cwd) = &a.cwd {
            self.plain(cwd, line, &format!("{who}: cwd"), None);
        }
        match &a.kind {
            ActionKind::Shell { script, .. } => {
                let posix = template::is_shell(&a.interpreter);
                self.plain(script, line, &format!("{who}: shell"), Some(posix));
            }
            ActionKind::Http(h) => {
                self.text(&h.url, &format!("{who}: url"), Kind::HttpUrl);
                for (k, v) in &h.headers {
                    self.plain(v, line, &format!("{who}: header {k}"), None);
                }
                if let Some(b) = &h.body {
                    self.json(b, line, &format!("{who}: body"));
                }
                if let Some(l) = &h.expect.max_latency {
                    self.dur(l, &format!("{who}: expect.max_latency"));
                }
            }
            ActionKind::Metric(m) => {
                match &m.judge {
                    crate::runbook::Judge::Threshold { query, .. } => {
                        self.text(query, &format!("{who}: query"), Kind::Any);
                    }
                    crate::runbook::Judge::Compare(c) => {
                        self.text(&c.baseline, &format!("{who}: compare.baseline"), Kind::Any);
                        self.text(&c.canary, &format!("{who}: compare.canary"), Kind::Any);
                        self.dur(&c.range, &format!("{who}: compare.range"));
                        self.dur(&c.step, &format!("{who}: compare.step"));
                    }
                }
                self.dur(&m.interval, &format!("{who}: interval"));
                if let Some(d) = &m.initial_delay {
                    self.dur(d, &format!("{who}: initial_delay"));
                }
                self.num(&m.samples, &format!("{who}: samples"));
                self.num(&m.failure_limit, &format!("{who}: failure_limit"));
                self.num(&m.inconclusive_limit, &format!("{who}: inconclusive_limit"));
                self.num(&m.error_limit, &format!("{who}: error_limit"));
                self.num(&m.pause.required, &format!("{who}: required"));
                for (i, name) in m.pause.approvers.iter().flatten().enumerate() {
                    self.approver(name, &format!("{who}: approvers[{i}]"));
                }
                if let Some(t) = &m.pause.timeout {
                    self.dur(t, &format!("{who}: timeout"));
                }
            }
            ActionKind::Approval(ap) => {
                if let Some(msg) = &ap.message {
                    self.plain(msg, line, &format!("{who}: message"), None);
                }
                self.num(&ap.required, &format!("{who}: required"));
                for (i, name) in ap.approvers.iter().flatten().enumerate() {
                    self.approver(name, &format!("{who}: approvers[{i}]"));
                }
                if let Some(t) = &ap.timeout {
                    self.dur(t, &format!("{who}: approval timeout"));
                }
            }
            ActionKind::Flag(f) => {
                self.text(&f.name, &format!("{who}: flag name"), Kind::NonEmpty);
                self.json(&f.value, line, &format!("{who}: flag value"));
            }
        }
    }
}

fn string_leaves<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::String(s) if template::is_template(s) => out.push(s),
        serde_json::Value::Array(items) => items.iter().for_each(|i| string_leaves(i, out)),
        serde_json::Value::Object(m) => m.values().for_each(|i| string_leaves(i, out)),
        _ => {}
    }
}

fn url_problem(value: &str, schemes: &[&str]) -> Option<String> {
    match reqwest::Url::parse(value.trim()) {
        Err(e) => Some(format!("is not a URL ({e})")),
        Ok(u) if !schemes.contains(&u.scheme()) => {
            Some(format!("is not a {} URL", schemes.join(" or ")))
        }
        Ok(_) => None,
    }
}
