//! Step rules: exactly one kind, durations, retry policies, providers of the
//! right kind, approval quorums, HTTP expectations, rollback bodies.

use std::sync::Arc;
use std::time::Duration;

use crate::diagnostics::{did_you_mean, Code, Diagnostics};
use crate::duration;
use crate::runbook::{
    Action, ActionKind, Approval, Compare, Dur, Expect, Flag, Http, Judge, LockSpec, Metric, Num,
    OnInconclusive, Provider, Retry, Rollback, StatusMatch, Step, Tpl,
};
use crate::spec::{
    ApprovalSpec, BodySpec, Checked, DefaultsSpec, FlagSpec, HttpSpec, IntOrTemplate, LockField,
    MetricSpec, Node, ProviderKind, ProviderSpec, RawNode, RetrySpec, RollbackSpec, Span, Spanned,
    StepSpec, Value,
};
use crate::template::is_template;

pub(super) struct StepCtx<'a> {
    pub defaults: &'a DefaultsSpec,
    pub providers: &'a [Provider],
    /// Declared providers that failed to load (already reported).
    pub broken_providers: &'a [&'a str],
    /// What an action that names no interpreter runs under: [`default_interpreter`].
    pub interpreter: Arc<[String]>,
    /// One attempt, the policy of every action that names none.
    pub no_retry: Arc<Retry>,
}

/// Checks `defaults` on their own, so a broken default is reported even when
/// no step falls back on it.
pub(super) fn check_defaults(ds: &mut Diagnostics, d: &DefaultsSpec) {
    if let Some(t) = &d.timeout {
        dur(ds, t);
    }
    if let Some(r) = d.retry.as_ref().and_then(|r| r.0.as_ref()) {
        retry(ds, r);
    }
    if let Some(i) = d.interpreter.as_ref().filter(|i| i.value.is_empty()) {
        ds.error(
            Code::InvalidValue,
            i.span,
            "`interpreter` needs at least a program",
        );
    }
}

const DEFAULT_INTERPRETER: &[&str] = &["bash", "-eo", "pipefail", "-c"];

/// `defaults.interpreter`, else bash: one allocation that every action
/// naming no interpreter of its own shares.
pub(super) fn default_interpreter(d: &DefaultsSpec) -> Arc<[String]> {
    match &d.interpreter {
        Some(i) => Arc::from(i.value.as_slice()),
        None => DEFAULT_INTERPRETER
            .iter()
            .map(ToString::to_string)
            .collect(),
    }
}

/// `lock:` lowered: its key, and its `wait` read like every other duration
/// (a template waits for the params). `None` when it was broken (reported).
pub(super) fn lock(ds: &mut Diagnostics, l: &Checked<LockField>) -> Option<LockSpec> {
    let (key, wait) = match l.0.as_ref()? {
        LockField::Key(key) => (key, None),
        LockField::Mapping(Checked(m)) => {
            let m = m.as_ref()?;
            (&m.key, m.wait.as_ref())
        }
    };
    Some(LockSpec {
        key: Tpl::new(key.value.clone(), key.span),
        wait: wait.map(|w| dur(ds, w)),
    })
}

pub(super) fn provider(
    ds: &mut Diagnostics,
    name: &Spanned<String>,
    p: &ProviderSpec,
) -> Option<Provider> {
    super::check_name(ds, name, "provider");
    let kind = p.kind.value;
    let needs_url = matches!(kind, ProviderKind::Redis | ProviderKind::Prometheus);
    if needs_url && p.url.is_none() {
        ds.error(
            Code::ProviderConfig,
            name.span,
            format!(
                "provider `{}` of kind {} needs a `url`",
                name.value,
                kind.name()
            ),
        );
    }
    if let Some(url) = &p.url {
        let scheme_ok = match kind {
            ProviderKind::Redis => url.starts_with("redis://") || url.starts_with("rediss://"),
            ProviderKind::Prometheus => url.starts_with("http://") || url.starts_with("https://"),
            _ => true,
        };
        if !scheme_ok && !is_template(url) {
            ds.error(
                Code::ProviderConfig,
                url.span,
                format!("`{}` is not a {} URL", url.value, kind.name()),
            );
        }
    }
    let timeout = p.timeout.as_ref().and_then(|t| fixed_duration(ds, t));
    Some(Provider {
        name: name.value.clone(),
        kind,
        url: p.url.as_ref().map(|u| Tpl::new(u.value.clone(), u.span)),
        prefix: p.prefix.clone().unwrap_or_default(),
        path: p.path.as_ref().map(|p| Tpl::new(p.value.clone(), p.span)),
        headers: p
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect(),
        timeout,
    })
}

pub(super) fn convert(ds: &mut Diagnostics, ctx: &StepCtx<'_>, s: &StepSpec) -> Option<Step> {
    let body = Body {
        at: s.id.span,
        name: s.name.as_ref(),
        timeout: s.timeout.as_deref(),
        retry: s.retry.as_deref(),
        env: &s.env,
        cwd: s.cwd.as_deref(),
        interpreter: s.interpreter.as_deref(),
        shell: s.shell.as_ref(),
        http: s.http.as_deref(),
        metric: s.metric.as_deref(),
        approval: s.approval.as_deref(),
        flag: s.flag.as_deref(),
    };
    let main = action(ds, ctx, &body, &format!("step `{}`", s.id.value));
    let rollback = match &s.rollback {
        None => None,
        Some(Checked(None)) => return None,
        Some(Checked(Some(RollbackSpec::Off))) => Some(Rollback::None),
        Some(Checked(Some(RollbackSpec::Bodies(bodies)))) => {
            let mut out = Vec::new();
            for b in bodies {
                let body = Body::of(b);
                if let Some(a) = action(ds, ctx, &body, &format!("rollback of `{}`", s.id.value)) {
                    out.push(a);
                }
            }
            Some(Rollback::Bodies(out))
        }
    };
    let action = main?;
    let rollback = rollback.unwrap_or(match &action.kind {
        ActionKind::Flag(f) => Rollback::Automatic(f.clone()),
        _ => Rollback::None,
    });
    Some(Step {
        id: s.id.value.clone(),
        name: s.name.clone(),
        description: s.description.clone(),
        stage: s.stage.clone(),
        line: s.id.span.start.line,
        needs: Vec::new(),
        when: s.when.as_ref().map(|w| Tpl::new(w.value.clone(), w.span)),
        continue_on_failure: s.continue_on_failure,
        on_resume: s.on_resume.unwrap_or_default(),
        action,
        rollback,
    })
}

/// The fields a step and a rollback body share.
pub(super) struct Body<'a> {
    pub at: Span,
    pub name: Option<&'a String>,
    pub timeout: Option<&'a Spanned<String>>,
    pub retry: Option<&'a Checked<RetrySpec>>,
    pub env: &'a indexmap::IndexMap<Spanned<String>, Spanned<String>>,
    pub cwd: Option<&'a Spanned<String>>,
    pub interpreter: Option<&'a Spanned<Vec<String>>>,
    pub shell: Option<&'a Spanned<String>>,
    pub http: Option<&'a Checked<HttpSpec>>,
    pub metric: Option<&'a Checked<MetricSpec>>,
    pub approval: Option<&'a Checked<ApprovalSpec>>,
    pub flag: Option<&'a Checked<FlagSpec>>,
}

impl<'a> Body<'a> {
    pub(super) fn of(b: &'a Spanned<BodySpec>) -> Body<'a> {
        Body {
            at: b.span,
            name: b.name.as_ref(),
            timeout: b.timeout.as_ref(),
            retry: b.retry.as_deref(),
            env: &b.env,
            cwd: b.cwd.as_ref(),
            interpreter: b.interpreter.as_ref(),
            shell: b.shell.as_ref(),
            http: b.http.as_deref(),
            metric: b.metric.as_deref(),
            approval: b.approval.as_deref(),
            flag: b.flag.as_deref(),
        }
    }
}

fn action(ds: &mut Diagnostics, ctx: &StepCtx<'_>, b: &Body<'_>, what: &str) -> Option<Action> {
    let kinds: Vec<&str> = [
        b.shell.map(|_| "shell"),
        b.http.map(|_| "http"),
        b.metric.map(|_| "metric"),
        b.approval.map(|_| "approval"),
        b.flag.map(|_| "flag"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if kinds.len() != 1 {
        let msg = if kinds.is_empty() {
            format!("{what} has no kind")
        } else {
            format!("{what} has {} kinds: {}", kinds.len(), kinds.join(", "))
        };
        ds.error(Code::StepKind, b.at, msg).help =
            Some("give exactly one of `shell`, `http`, `metric`, `approval` or `flag`".into());
        return None;
    }
    let explicit_timeout = b.timeout.map(|t| dur(ds, t));
    let kind = if let Some(script) = b.shell {
        // Decided once: a script without templates, under the default
        // interpreter, that is one simple command runs without a shell.
        let default_interpreter = b.interpreter.is_none() && ctx.defaults.interpreter.is_none();
        ActionKind::Shell {
            script: script.value.clone(),
            direct: (default_interpreter && !is_template(&script.value))
                .then(|| crate::simple_command::parse(&script.value))
                .flatten(),
        }
    } else if let Some(h) = b.http {
        ActionKind::Http(Box::new(http(ds, h.0.as_ref()?)))
    } else if let Some(m) = b.metric {
        ActionKind::Metric(Box::new(metric(ds, ctx, m.0.as_ref()?, b.at)))
    } else if let Some(a) = b.approval {
        ActionKind::Approval(Box::new(approval(ds, a.0.as_ref()?)))
    } else {
        ActionKind::Flag(Box::new(flag(ds, ctx, b.flag?.0.as_ref()?)))
    };
    // `defaults.timeout` bounds commands and requests; gates and approvals
    // define their own windows (a 24 h soak must not die at a 10 m default).
    let timeout = explicit_timeout.or_else(|| match kind {
        ActionKind::Shell { .. } | ActionKind::Http(_) | ActionKind::Flag(_) => {
            ctx.defaults.timeout.as_ref().map(|t| dur(ds, t))
        }
        _ => None,
    });
    // `defaults.retry` is for commands and requests only: asking a person
    // again after a rejection, or sampling a breached gate again, would turn
    // "stop on the first no" into "stop on the third".
    let own_retry = b.retry.and_then(|r| r.0.as_ref());
    if let (Some(r), ActionKind::Approval(_)) = (own_retry, &kind) {
        let at = r
            .attempts
            .as_ref()
            .map(|a| a.span)
            .or(r.delay.as_ref().map(|d| d.span))
            .or(r.max_delay.as_ref().map(|d| d.span))
            .unwrap_or(b.at);
        ds.error(
            Code::InvalidRetry,
            at,
            format!("{what} is an approval, which is never retried: a rejection is final"),
        )
        .help = Some("remove `retry`; to ask again, run the runbook again".into());
    }
    let retry_spec = own_retry.or_else(|| match kind {
        ActionKind::Shell { .. } | ActionKind::Http(_) => {
            ctx.defaults.retry.as_ref().and_then(|r| r.0.as_ref())
        }
        _ => None,
    });
    let retry = retry_spec.map_or_else(|| ctx.no_retry.clone(), |r| Arc::new(retry(ds, r)));
    let interpreter = match b.interpreter {
        Some(i) => {
            if i.value.is_empty() {
                ds.error(
                    Code::InvalidValue,
                    i.span,
                    "`interpreter` needs at least a program",
                );
            }
            Arc::from(i.value.as_slice())
        }
        // An empty `defaults.interpreter` is reported by `check_defaults`.
        None => ctx.interpreter.clone(),
    };
    Some(Action {
        name: b.name.cloned(),
        kind,
        timeout,
        retry,
        env: b
            .env
            .iter()
            .map(|(k, v)| (k.value.clone(), v.value.clone()))
            .collect(),
        cwd: b.cwd.map(|c| c.value.clone()),
        interpreter,
    })
}

fn fixed_duration(ds: &mut Diagnostics, t: &Spanned<String>) -> Option<Duration> {
    match duration::parse(&t.value) {
        Ok(d) => Some(d),
        Err(e) => {
            ds.error(Code::InvalidDuration, t.span, e);
            None
        }
    }
}

fn dur(ds: &mut Diagnostics, t: &Spanned<String>) -> Dur {
    if is_template(&t.value) {
        return Dur::Template(Tpl::new(t.value.clone(), t.span));
    }
    Dur::Fixed(fixed_duration(ds, t).unwrap_or_default())
}

fn num(ds: &mut Diagnostics, n: &Spanned<IntOrTemplate>, min: i64, what: &str) -> Num {
    match &n.value {
        IntOrTemplate::Template(t) => Num::Template(Tpl::new(t.clone(), n.span), min),
        IntOrTemplate::Int(i) => {
            if *i < min {
                ds.error(
                    Code::InvalidNumber,
                    n.span,
                    format!("{what} must be at least {min}, not {i}"),
                );
            }
            Num::Fixed(*i)
        }
    }
}

fn retry(ds: &mut Diagnostics, r: &RetrySpec) -> Retry {
    let d = Retry::default();
    let delay = r.delay.as_ref().map_or(d.delay, |t| dur(ds, t));
    let max_delay = r.max_delay.as_ref().map(|t| dur(ds, t));
    if let (Dur::Fixed(a), Some(Dur::Fixed(m)), Some(span)) =
        (&delay, &max_delay, r.max_delay.as_ref().map(|m| m.span))
    {
        if m < a {
            ds.error(
                Code::InvalidRetry,
                span,
                "`max_delay` is shorter than `delay`",
            );
        }
    }
    Retry {
        attempts: r
            .attempts
            .as_ref()
            .map_or(d.attempts, |a| num(ds, a, 1, "`attempts`")),
        delay,
        backoff: r.backoff.unwrap_or_default(),
        max_delay,
        jitter: r.jitter,
    }
}

fn http(ds: &mut Diagnostics, h: &HttpSpec) -> Http {
    const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    let method = match &h.method {
        Some(m) => {
            // A templated method is uppercased by the executor once rendered.
            let up = if is_template(&m.value) {
                m.value.clone()
            } else {
                m.value.to_ascii_uppercase()
            };
            if !METHODS.contains(&up.as_str()) && !is_template(&m.value) {
                ds.error(
                    Code::InvalidValue,
                    m.span,
                    format!("`{}` is not an HTTP method", m.value),
                )
                .help = Some(format!("one of {}", METHODS.join(", ")));
            }
            up
        }
        None => "GET".into(),
    };
    if !(is_template(&h.url) || h.url.starts_with("http://") || h.url.starts_with("https://")) {
        ds.error(
            Code::InvalidValue,
            h.url.span,
            format!("`{}` is not an http:// or https:// URL", h.url.value),
        );
    }
    let mut expect = Expect {
        status: vec![StatusMatch::Class(2)],
        body_contains: None,
        json: Vec::new(),
        max_latency: None,
    };
    if let Some(e) = h.expect.as_ref().and_then(|e| e.0.as_ref()) {
        if let Some(s) = &e.status {
            expect.status = status(ds, &s.0);
        }
        expect.body_contains = e.body_contains.as_ref().map(|b| b.value.clone());
        for (ptr, v) in &e.json {
            if !ptr.is_empty() && !ptr.starts_with('/') {
                ds.error(
                    Code::InvalidValue,
                    ptr.span,
                    format!("`{}` is not a JSON pointer", ptr.value),
                )
                .help = Some(format!(
                    "JSON pointers start with `/`, e.g. `/{}`",
                    ptr.value.replace('.', "/")
                ));
            }
            expect.json.push((ptr.value.clone(), v.0.to_json()));
        }
        expect.max_latency = e.max_latency.as_ref().map(|m| dur(ds, m));
    }
    Http {
        url: Tpl::new(h.url.value.clone(), h.url.span),
        method,
        headers: h
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect(),
        body: h.body.as_ref().map(|b| b.0.to_json()),
        expect,
    }
}

fn status(ds: &mut Diagnostics, n: &Node) -> Vec<StatusMatch> {
    let one = |ds: &mut Diagnostics, n: &Node| -> Option<StatusMatch> {
        match &n.value {
            Value::Int(c) if (100..=599).contains(c) => {
                u16::try_from(*c).ok().map(StatusMatch::Code)
            }
            Value::Str(s)
                if s.len() == 3
                    && s.ends_with("xx")
                    && (b'1'..=b'5').contains(&s.as_bytes()[0]) =>
            {
                Some(StatusMatch::Class(u16::from(s.as_bytes()[0] - b'0')))
            }
            _ => {
                ds.error(
                    Code::InvalidValue,
                    n.span,
                    format!("`{}` is not an HTTP status: write a code such as 200 or a class such as 2xx", n.scalar_text()),
                );
                None
            }
        }
    };
    match &n.value {
        Value::Seq(items) => items.iter().filter_map(|i| one(ds, i)).collect(),
        _ => one(ds, n).into_iter().collect(),
    }
}

/// Picks the provider a metric or flag step uses.
fn choose_provider(
    ds: &mut Diagnostics,
    ctx: &StepCtx<'_>,
    named: Option<&Spanned<String>>,
    fits: fn(ProviderKind) -> bool,
    what: &str,
    at: Span,
) -> Result<Option<String>, ()> {
    if let Some(name) = named {
        return match ctx.providers.iter().find(|p| p.name == name.value) {
            Some(p) if fits(p.kind) => Ok(Some(p.name.clone())),
            None if ctx.broken_providers.contains(&name.value.as_str()) => Err(()),
            Some(p) => {
                ds.error(
                    Code::ProviderKind,
                    name.span,
                    format!(
                        "provider `{}` is a {} provider and cannot serve a {what} step",
                        p.name,
                        p.kind.name()
                    ),
                );
                Err(())
            }
            None => {
                let d = ds.error(
                    Code::UnknownProvider,
                    name.span,
                    format!("no provider named `{}`", name.value),
                );
                if let Some(m) =
                    did_you_mean(&name.value, ctx.providers.iter().map(|p| p.name.as_str()))
                {
                    d.help = Some(format!("did you mean `{m}`?"));
                }
                Err(())
            }
        };
    }
    let candidates: Vec<&Provider> = ctx.providers.iter().filter(|p| fits(p.kind)).collect();
    match candidates.as_slice() {
        // A provider that failed to load might have served: no second error.
        [] if !ctx.broken_providers.is_empty() => Err(()),
        [one] => Ok(Some(one.name.clone())),
        [] => Ok(None),
        many => {
            let names: Vec<&str> = many.iter().map(|p| p.name.as_str()).collect();
            ds.error(
                Code::AmbiguousProvider,
                at,
                format!(
                    "this {what} step names no provider and several could serve it: {}",
                    names.join(", ")
                ),
            )
            .help = Some("add `provider: NAME`".into());
            Err(())
        }
    }
}

fn metric(ds: &mut Diagnostics, ctx: &StepCtx<'_>, m: &MetricSpec, at: Span) -> Metric {
    let judge = judge(ds, m, at);
    let where_ = match &judge {
        Judge::Threshold { query, .. } => query.span,
        Judge::Compare(c) => c.baseline.span,
    };
    let provider = match choose_provider(
        ds,
        ctx,
        m.provider.as_ref(),
        ProviderKind::serves_metrics,
        "metric",
        where_,
    ) {
        Ok(Some(p)) => p,
        Ok(None) => {
            ds.error(
                Code::UnknownProvider,
                where_,
                "no metric provider is declared",
            )
            .help = Some(
                "declare one under `providers:` with `kind: prometheus` or `kind: command`".into(),
            );
            String::new()
        }
        Err(()) => String::new(),
    };
    if let Judge::Compare(_) = judge {
        let kind = ctx
            .providers
            .iter()
            .find(|p| p.name == provider)
            .map(|p| p.kind);
        if kind.is_some_and(|k| k != ProviderKind::Prometheus) {
            ds.error(
                Code::ProviderKind,
                m.provider.as_ref().map_or(where_, |p| p.span),
                format!("`compare` reads range queries, which only a `prometheus` provider answers; `{provider}` is not one"),
            );
        }
    }
    let samples = m
        .samples
        .as_ref()
        .map_or(Num::Fixed(1), |n| num(ds, n, 1, "`samples`"));
    let failure_limit = m
        .failure_limit
        .as_ref()
        .map_or(Num::Fixed(0), |n| num(ds, n, 0, "`failure_limit`"));
    let background = m.background.as_ref().and_then(|b| b.0.as_ref());
    if let (Num::Fixed(s), Num::Fixed(f), Some(fl), None) =
        (&samples, &failure_limit, &m.failure_limit, background)
    {
        if f >= s {
            ds.error(
                Code::InvalidNumber,
                fl.span,
                format!(
                    "`failure_limit` {f} is not below `samples` {s}: the gate could never fail"
                ),
            );
        }
    }
    if let (Some(b), Some(s)) = (background, &m.samples) {
        ds.error(
            Code::GateSettings,
            s.span,
            format!(
                "a background gate samples until `{}` finishes; `samples` is not used",
                b.until.value
            ),
        )
        .help = Some("remove `samples`".into());
    }
    let inconclusive_limit = m
        .inconclusive_limit
        .as_ref()
        .map_or(Num::Fixed(0), |n| num(ds, n, 0, "`inconclusive_limit`"));
    let can_be_inconclusive = match &judge {
        Judge::Threshold {
            failure_condition, ..
        } => failure_condition.is_some(),
        Judge::Compare(_) => true,
    };
    if !can_be_inconclusive {
        let set = [
            m.inconclusive_limit
                .as_ref()
                .map(|n| ("inconclusive_limit", n.span)),
            m.on_inconclusive
                .as_ref()
                .map(|o| ("on_inconclusive", o.span)),
        ];
        for (field, span) in set.into_iter().flatten() {
            ds.error(
                Code::GateSettings,
                span,
                format!("`{field}` is set, but without `failure_condition` (or `compare`) no evaluation is inconclusive"),
            )
            .help = Some("add `failure_condition`, or remove it".into());
        }
    }
    let on_inconclusive = m
        .on_inconclusive
        .as_ref()
        .map(|o| o.value)
        .unwrap_or_default();
    let pause_fields = [
        m.approvers.as_ref().map(|a| ("approvers", a.span)),
        m.required.as_ref().map(|r| ("required", r.span)),
        m.timeout.as_ref().map(|t| ("timeout", t.span)),
        m.message.as_ref().map(|t| ("message", t.span)),
    ];
    if !can_be_inconclusive || on_inconclusive != OnInconclusive::Pause {
        for (field, span) in pause_fields.into_iter().flatten() {
            ds.error(
                Code::GateSettings,
                span,
                format!("`{field}` says who answers a paused gate, but this gate never pauses (it pauses on inconclusive evaluations, with `on_inconclusive: pause`)"),
            );
        }
    }
    let pause = approval(
        ds,
        &ApprovalSpec {
            message: m.message.clone(),
            approvers: m.approvers.clone(),
            required: m.required.clone(),
            timeout: m.timeout.clone(),
            allow_self_approval: m.allow_self_approval,
            allowed_signers: None,
        },
    );
    Metric {
        provider,
        judge,
        interval: m
            .interval
            .as_ref()
            .map_or(Dur::Fixed(Duration::from_secs(30)), |i| dur(ds, i)),
        samples,
        failure_limit,
        inconclusive_limit,
        on_inconclusive,
        pause,
        error_limit: m
            .error_limit
            .as_ref()
            .map_or(Num::Fixed(4), |n| num(ds, n, 0, "`error_limit`")),
        initial_delay: m.initial_delay.as_ref().map(|d| dur(ds, d)),
        dry_run: m.dry_run,
        // Resolved with the graph, once every id is known.
        until: None,
        on_no_data: m.on_no_data.unwrap_or_default(),
        at: m.at.as_ref().map(|a| a.0.to_json()),
    }
}

/// `query` + `condition` (+ `failure_condition`), or `compare`: exactly one.
fn judge(ds: &mut Diagnostics, m: &MetricSpec, at: Span) -> Judge {
    let compare = m.compare.as_ref().and_then(|c| c.0.as_ref());
    if let (Some(_), Some(q)) = (compare, &m.query) {
        ds.error(
            Code::GateSettings,
            q.span,
            "a gate has `query` or `compare`, not both",
        );
    }
    if let Some(c) = compare {
        for (field, span) in [
            m.condition.as_ref().map(|c| ("condition", c.span)),
            m.failure_condition
                .as_ref()
                .map(|c| ("failure_condition", c.span)),
        ]
        .into_iter()
        .flatten()
        {
            ds.error(
                Code::GateSettings,
                span,
                format!("`{field}` is not used with `compare`: the comparison decides (`direction`, `confidence`, `allowed_change`)"),
            );
        }
        for (field, value, ok) in [
            (
                "confidence",
                &c.confidence,
                (|v: f64| v > 0.0 && v < 1.0) as fn(f64) -> bool,
            ),
            ("allowed_change", &c.allowed_change, |v: f64| {
                v >= 0.0 && v.is_finite()
            }),
        ] {
            let Some(RawNode(node)) = value else { continue };
            let json = node.to_json();
            let fine = match &json {
                serde_json::Value::Number(n) => n.as_f64().is_some_and(ok),
                serde_json::Value::String(s) => is_template(s),
                _ => false,
            };
            if !fine {
                let want = if field == "confidence" {
                    "a number between 0 and 1 (exclusive), e.g. 0.98"
                } else {
                    "a number of 0 or more, e.g. 0.1 for 10%"
                };
                ds.error(
                    Code::InvalidNumber,
                    node.span,
                    format!("`{field}` is {json}; it must be {want}, or a template"),
                );
            }
        }
        let json_or = |v: &Option<RawNode>, default: f64| {
            v.as_ref()
                .map_or_else(|| serde_json::Value::from(default), |n| n.0.to_json())
        };
        return Judge::Compare(Compare {
            baseline: Tpl::new(c.baseline.value.clone(), c.baseline.span),
            canary: Tpl::new(c.canary.value.clone(), c.canary.span),
            range: c
                .range
                .as_ref()
                .map_or(Dur::Fixed(Duration::from_secs(30 * 60)), |d| dur(ds, d)),
            step: c
                .step
                .as_ref()
                .map_or(Dur::Fixed(Duration::from_secs(60)), |d| dur(ds, d)),
            direction: c.direction.unwrap_or_default(),
            confidence: json_or(&c.confidence, 0.98),
            allowed_change: json_or(&c.allowed_change, 0.1),
            nan: c.nan.unwrap_or_default(),
        });
    }
    let query = match &m.query {
        Some(q) => Tpl::new(q.value.clone(), q.span),
        None => {
            ds.error(
                Code::MissingField,
                at,
                "a metric gate needs `query` (with `condition`) or `compare`",
            );
            Tpl::new(String::new(), at)
        }
    };
    let condition = match &m.condition {
        Some(c) => Tpl::new(c.value.clone(), c.span),
        None => {
            if m.query.is_some() {
                ds.error(
                    Code::MissingField,
                    m.query.as_ref().map_or(at, |q| q.span),
                    "a gate with `query` needs `condition`, an expression over `value` such as `value < 0.01`",
                );
            }
            Tpl::new(String::new(), at)
        }
    };
    Judge::Threshold {
        query,
        condition,
        failure_condition: m
            .failure_condition
            .as_ref()
            .map(|c| Tpl::new(c.value.clone(), c.span)),
    }
}

fn approval(ds: &mut Diagnostics, a: &ApprovalSpec) -> Approval {
    let required = a
        .required
        .as_ref()
        .map_or(Num::Fixed(1), |n| num(ds, n, 1, "`required`"));
    if let (Some(list), Num::Fixed(r)) = (&a.approvers, &required) {
        let mut distinct: Vec<&str> = list.value.iter().map(|s| s.value.as_str()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        if usize::try_from(*r).is_ok_and(|r| r > distinct.len()) {
            let at = a.required.as_ref().map_or(list.span, |r| r.span);
            ds.error(
                Code::ApprovalQuorum,
                at,
                match distinct.len() {
                    1 => {
                        format!("{r} approvals are required but only 1 distinct approver is listed")
                    }
                    n => format!(
                        "{r} approvals are required but only {n} distinct approvers are listed"
                    ),
                },
            );
        }
    }
    Approval {
        message: a.message.as_ref().map(|m| m.value.clone()),
        approvers: a.approvers.as_ref().map(|l| {
            l.value
                .iter()
                .map(|s| Tpl::new(s.value.clone(), s.span))
                .collect()
        }),
        required,
        timeout: a.timeout.as_ref().map(|t| dur(ds, t)),
        allow_self_approval: a.allow_self_approval,
        allowed_signers: a
            .allowed_signers
            .as_ref()
            .map(|l| Tpl::new(l.value.clone(), l.span)),
    }
}

fn flag(ds: &mut Diagnostics, ctx: &StepCtx<'_>, f: &FlagSpec) -> Flag {
    let provider = choose_provider(
        ds,
        ctx,
        f.provider.as_ref(),
        ProviderKind::serves_flags,
        "flag",
        f.name.span,
    )
    .ok()
    .flatten();
    Flag {
        provider,
        name: Tpl::new(f.name.value.clone(), f.name.span),
        value: f.value.0.to_json(),
    }
}
