//! Template rules: every string compiles, every name it reads exists, and a
//! step only reads `steps.X` where X surely ran before it (X is an ancestor in
//! the graph). `when` and `condition` must compile as expressions.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use crate::diagnostics::{did_you_mean, Code, Diagnostics};
use crate::graph::{Ancestors, StepGraph};
use crate::runbook::Phase;
use crate::spec::{
    BodySpec, Checked, IntOrTemplate, LockField, Node, RollbackSpec, RunbookSpec, Span, Spanned,
    StepSpec, Value,
};
use crate::template::{self, is_template, GLOBAL_FUNCTIONS, ROOTS, RUN_KEYS};

use super::StepIndex;

/// Where a template sits decides what it may read.
#[derive(Clone, Copy)]
enum Scope {
    /// `vars` entry `n`: params, env, and vars before it.
    Var(usize),
    /// `env`, `lock`, providers: params, vars, secrets, env, run.
    Top,
    /// A main step; `rollback` is true inside its rollback bodies.
    Main { idx: usize, rollback: bool },
    /// An `on_failure` or `finally` step: any main step, earlier steps of its list.
    Aux { phase: Phase, idx: usize },
}

struct Names<'a> {
    params: Vec<&'a str>,
    vars: Vec<&'a str>,
    secrets: Vec<&'a str>,
    /// The same names for lookups: a search of the lists for every read is
    /// quadratic in a file declaring many names.
    param_set: HashSet<&'a str>,
    secret_set: HashSet<&'a str>,
    var_index: HashMap<&'a str, usize>,
    index: &'a StepIndex,
    ancestors: Option<Ancestors>,
    /// Whether any string was a template or an expression.
    any: Cell<bool>,
}

/// Checks every template and expression; true when there was one at all.
pub(super) fn check(
    ds: &mut Diagnostics,
    spec: &RunbookSpec,
    index: &StepIndex,
    graph: Option<&StepGraph>,
) -> bool {
    let mut names = Names {
        // Declared names, including params that failed to load (already reported).
        params: spec.params.keys().map(|k| k.value.as_str()).collect(),
        vars: spec.vars.keys().map(|k| k.value.as_str()).collect(),
        secrets: spec.secrets.keys().map(|k| k.value.as_str()).collect(),
        param_set: spec.params.keys().map(|k| k.value.as_str()).collect(),
        secret_set: spec.secrets.keys().map(|k| k.value.as_str()).collect(),
        var_index: spec
            .vars
            .keys()
            .enumerate()
            .map(|(i, k)| (k.value.as_str(), i))
            .collect(),
        index,
        ancestors: None,
        any: Cell::new(false),
    };
    let reads_steps = |s: &StepSpec| {
        let mut found = false;
        each_string(s, &mut |t, _, _| found |= t.contains("steps"));
        if let Some(Checked(Some(RollbackSpec::Bodies(bodies)))) = &s.rollback {
            for b in bodies {
                each_body_string(b, &mut |t, _, _| found |= t.contains("steps"));
            }
        }
        found
    };
    if spec
        .steps
        .iter()
        .filter_map(|s| s.0.as_ref())
        .any(reads_steps)
    {
        names.ancestors = graph.map(StepGraph::ancestors);
    }

    for (i, (_, v)) in spec.vars.iter().enumerate() {
        each_node_string(&v.0, &mut |t, span| {
            one(ds, &names, t, span, Expr::Template, Scope::Var(i));
        });
    }
    for v in spec.env.values() {
        one(ds, &names, &v.value, v.span, Expr::Template, Scope::Top);
    }
    if let Some(l) = spec.lock.as_ref().and_then(|l| l.0.as_ref()) {
        let (key, wait) = match l {
            LockField::Key(key) => (Some(key), None),
            LockField::Mapping(Checked(m)) => (
                m.as_ref().map(|m| &m.key),
                m.as_ref().and_then(|m| m.wait.as_ref()),
            ),
        };
        for t in key.into_iter().chain(wait) {
            one(ds, &names, &t.value, t.span, Expr::Template, Scope::Top);
        }
    }
    if let Some(d) = spec.defaults.as_ref().and_then(|d| d.0.as_ref()) {
        // Defaults apply to every step, so they read what any step could.
        common(
            &mut |t, span, expr| one(ds, &names, t, span, expr, Scope::Top),
            d.timeout.as_ref(),
            d.retry.as_ref(),
            &indexmap::IndexMap::new(),
            None,
            None,
            std::iter::empty(),
            None,
            None,
            None,
        );
    }
    for p in spec.providers.values().filter_map(|p| p.0.as_ref()) {
        for s in p.url.iter().chain(p.path.iter()).chain(p.headers.values()) {
            one(ds, &names, &s.value, s.span, Expr::Template, Scope::Top);
        }
    }
    let lists = [
        (Phase::Main, &spec.steps),
        (Phase::OnFailure, &spec.on_failure),
        (Phase::Finally, &spec.finally),
    ];
    for (phase, list) in lists {
        for (idx, s) in list.iter().enumerate() {
            let Some(s) = &s.0 else { continue };
            let scope = match phase {
                Phase::Main => Scope::Main {
                    idx,
                    rollback: false,
                },
                _ => Scope::Aux { phase, idx },
            };
            each_string(s, &mut |t, span, expr| {
                one(ds, &names, t, span, expr, scope);
            });
            if let Some(Checked(Some(RollbackSpec::Bodies(bodies)))) = &s.rollback {
                let scope = match scope {
                    Scope::Main { idx, .. } => Scope::Main {
                        idx,
                        rollback: true,
                    },
                    other => other,
                };
                for b in bodies {
                    each_body_string(b, &mut |t, span, expr| {
                        one(ds, &names, t, span, expr, scope);
                    });
                }
            }
        }
    }
    names.any.get()
}

/// Which strings are templates: (text, span, is_expression). `condition` may read `value`.
fn each_string(s: &StepSpec, f: &mut dyn FnMut(&str, Span, Expr)) {
    if let Some(w) = &s.when {
        f(&w.value, w.span, Expr::When);
    }
    common(
        f,
        s.timeout.as_deref(),
        s.retry.as_deref(),
        &s.env,
        s.cwd.as_deref(),
        s.shell.as_ref(),
        s.http.iter().filter_map(|h| h.0.as_ref()),
        s.metric.as_ref().and_then(|m| m.0.as_ref()),
        s.approval.as_ref().and_then(|a| a.0.as_ref()),
        s.flag.as_ref().and_then(|f| f.0.as_ref()),
    );
}

fn each_body_string(b: &Spanned<BodySpec>, f: &mut dyn FnMut(&str, Span, Expr)) {
    common(
        f,
        b.timeout.as_ref(),
        b.retry.as_deref(),
        &b.env,
        b.cwd.as_ref(),
        b.shell.as_ref(),
        b.http.iter().filter_map(|h| h.0.as_ref()),
        b.metric.as_ref().and_then(|m| m.0.as_ref()),
        b.approval.as_ref().and_then(|a| a.0.as_ref()),
        b.flag.as_ref().and_then(|f| f.0.as_ref()),
    );
}

#[derive(Clone, Copy, PartialEq)]
enum Expr {
    Template,
    When,
    Condition,
}

#[allow(clippy::too_many_arguments)]
fn common<'a>(
    f: &mut dyn FnMut(&str, Span, Expr),
    timeout: Option<&Spanned<String>>,
    retry: Option<&Checked<crate::spec::RetrySpec>>,
    env: &indexmap::IndexMap<Spanned<String>, Spanned<String>>,
    cwd: Option<&Spanned<String>>,
    shell: Option<&Spanned<String>>,
    http: impl Iterator<Item = &'a crate::spec::HttpSpec>,
    metric: Option<&crate::spec::MetricSpec>,
    approval: Option<&crate::spec::ApprovalSpec>,
    flag: Option<&crate::spec::FlagSpec>,
) {
    let mut t = |s: &Spanned<String>| f(&s.value, s.span, Expr::Template);
    timeout.into_iter().for_each(&mut t);
    env.values().for_each(&mut t);
    cwd.into_iter().for_each(&mut t);
    shell.into_iter().for_each(&mut t);
    let num = |n: &Spanned<IntOrTemplate>, f: &mut dyn FnMut(&str, Span, Expr)| {
        if let IntOrTemplate::Template(s) = &n.value {
            f(s, n.span, Expr::Template);
        }
    };
    if let Some(r) = retry.and_then(|r| r.0.as_ref()) {
        r.delay
            .iter()
            .chain(r.max_delay.iter())
            .for_each(|s| f(&s.value, s.span, Expr::Template));
        if let Some(a) = &r.attempts {
            num(a, f);
        }
    }
    for h in http {
        f(&h.url.value, h.url.span, Expr::Template);
        h.method
            .iter()
            .chain(h.headers.values())
            .for_each(|s| f(&s.value, s.span, Expr::Template));
        if let Some(b) = &h.body {
            each_node_string(&b.0, &mut |s, sp| f(s, sp, Expr::Template));
        }
        if let Some(e) = h.expect.as_ref().and_then(|e| e.0.as_ref()) {
            e.body_contains
                .iter()
                .chain(e.max_latency.iter())
                .for_each(|s| f(&s.value, s.span, Expr::Template));
            for v in e.json.values() {
                each_node_string(&v.0, &mut |s, sp| f(s, sp, Expr::Template));
            }
        }
    }
    if let Some(m) = metric {
        m.query
            .iter()
            .chain(m.interval.iter())
            .chain(m.initial_delay.iter())
            .chain(m.message.iter())
            .chain(m.timeout.iter())
            .for_each(|s| f(&s.value, s.span, Expr::Template));
        m.condition
            .iter()
            .chain(m.failure_condition.iter())
            .for_each(|s| f(&s.value, s.span, Expr::Condition));
        if let Some(c) = m.compare.as_ref().and_then(|c| c.0.as_ref()) {
            [&c.baseline, &c.canary]
                .into_iter()
                .chain(c.range.iter())
                .chain(c.step.iter())
                .for_each(|s| f(&s.value, s.span, Expr::Template));
            for n in c.confidence.iter().chain(c.allowed_change.iter()) {
                each_node_string(&n.0, &mut |s, sp| f(s, sp, Expr::Template));
            }
        }
        for n in m
            .samples
            .iter()
            .chain(m.failure_limit.iter())
            .chain(m.inconclusive_limit.iter())
            .chain(m.error_limit.iter())
            .chain(m.required.iter())
        {
            num(n, f);
        }
        for who in m.approvers.iter().flat_map(|l| l.value.iter()) {
            f(&who.value, who.span, Expr::Template);
        }
        if let Some(a) = &m.at {
            each_node_string(&a.0, &mut |s, sp| f(s, sp, Expr::Template));
        }
    }
    if let Some(a) = approval {
        a.message
            .iter()
            .chain(a.timeout.iter())
            .for_each(|s| f(&s.value, s.span, Expr::Template));
        if let Some(r) = &a.required {
            num(r, f);
        }
        for who in a.approvers.iter().flat_map(|l| l.value.iter()) {
            f(&who.value, who.span, Expr::Template);
        }
    }
    if let Some(fl) = flag {
        f(&fl.name.value, fl.name.span, Expr::Template);
        each_node_string(&fl.value.0, &mut |s, sp| f(s, sp, Expr::Template));
    }
}

fn each_node_string(n: &Node, f: &mut dyn FnMut(&str, Span)) {
    match &n.value {
        Value::Str(s) => f(s, n.span),
        Value::Seq(items) => items.iter().for_each(|i| each_node_string(i, f)),
        Value::Map(entries) => entries.iter().for_each(|(_, v)| each_node_string(v, f)),
        _ => {}
    }
}

fn one(ds: &mut Diagnostics, names: &Names<'_>, text: &str, span: Span, kind: Expr, scope: Scope) {
    let expression = kind != Expr::Template;
    if !expression && !is_template(text) {
        return;
    }
    names.any.set(true);
    // Before anything parses it: a parser recursing on a 50,000-long chain
    // overflows the stack.
    if let Err(e) = template::check_limits(text, expression) {
        let (code, help) = if e.loads_template {
            (
                Code::TemplateLoad,
                "a runbook's templates are its strings; there are no template files to load",
            )
        } else {
            (
                Code::TemplateLimit,
                "split the work into vars, or compute it in a shell step",
            )
        };
        let d = ds.error(code, span, e.describe());
        d.help = Some(help.into());
        return;
    }
    let reads = match template::reads(text, expression) {
        Ok(r) => r,
        Err(e) => {
            let code = if expression {
                Code::ExpressionSyntax
            } else {
                Code::TemplateSyntax
            };
            let what = match kind {
                Expr::When => "`when` expression",
                Expr::Condition => "`condition` expression",
                Expr::Template => "template",
            };
            let detail = e
                .detail()
                .map_or_else(|| e.kind().to_string(), ToString::to_string);
            let line = match e.line() {
                Some(l) if text.trim_end().contains('\n') => format!(" (line {l} of the template)"),
                _ => String::new(),
            };
            let d = ds.error(
                code,
                span,
                format!("{what} does not compile: {detail}{line}"),
            );
            if expression && is_template(text) {
                d.help = Some(format!(
                    "{what}s are written without `{{{{ }}}}`, e.g. `params.environment == \"production\"`"
                ));
            } else if text.contains("{#") {
                d.help = Some(
                    "`{#` opens a template comment, also inside shell's `${#x}`: write `{% raw %}${#x}{% endraw %}` (or `{{ '${#' | safe }}x}`)"
                        .into(),
                );
            }
            return;
        }
    };
    let mut reported = HashSet::new();
    for (name, is_test) in template::filters_and_tests(text, expression) {
        if !template::knows(&name, is_test) && reported.insert(name.clone()) {
            let what = if is_test { "test" } else { "filter" };
            let d = ds.error(
                Code::UnknownFilter,
                span,
                format!("unknown {what} `{name}`"),
            );
            let near = if is_test {
                COMMON_TESTS
            } else {
                COMMON_FILTERS
            };
            d.help = Some(match did_you_mean(&name, near.iter().copied()) {
                Some(m) => format!("did you mean `{m}`?"),
                None => format!("{what}s include {}", near[..8].join(", ")),
            });
        }
    }
    for name in reads {
        if let Some((msg, help, code)) = check_read(names, &name, kind, scope) {
            if reported.insert(msg.clone()) {
                let d = ds.error(code, span, msg);
                d.help = help;
            }
        }
    }
}

type Problem = (String, Option<String>, Code);

/// Names to suggest for a misspelt filter or test (every one exists).
const COMMON_FILTERS: &[&str] = &[
    "upper",
    "lower",
    "trim",
    "replace",
    "default",
    "length",
    "join",
    "split",
    "quote",
    "tojson",
    "int",
    "float",
    "round",
    "abs",
    "first",
    "last",
    "title",
    "capitalize",
    "list",
    "sort",
    "unique",
    "reverse",
    "map",
    "select",
    "reject",
    "selectattr",
    "rejectattr",
    "indent",
    "items",
    "dictsort",
    "min",
    "max",
    "sum",
    "string",
    "bool",
    "urlencode",
    "format",
    "lines",
    "safe",
    "escape",
    "batch",
    "slice",
    "attr",
];
const COMMON_TESTS: &[&str] = &[
    "defined",
    "undefined",
    "none",
    "number",
    "string",
    "true",
    "false",
    "even",
    "odd",
    "divisibleby",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "in",
    "startingwith",
    "endingwith",
    "mapping",
    "sequence",
    "iterable",
    "boolean",
    "integer",
    "float",
    "filter",
    "test",
];

fn check_read(names: &Names<'_>, name: &str, kind: Expr, scope: Scope) -> Option<Problem> {
    let mut parts = name.split('.');
    let root = parts.next().unwrap_or_default();
    let key = parts.next();
    let missing = |what: &str, key: &str, known: &[&str]| -> Problem {
        let help =
            did_you_mean(key, known.iter().copied()).map(|m| format!("did you mean `{what}.{m}`?"));
        (
            format!("`{what}.{key}` is not defined"),
            help,
            Code::UndefinedName,
        )
    };
    match root {
        "params" => key
            .filter(|k| !names.param_set.contains(k))
            .map(|k| missing("params", k, &names.params)),
        "secrets" => key
            .filter(|k| !names.secret_set.contains(k))
            .map(|k| missing("secrets", k, &names.secrets)),
        "vars" => {
            let k = key?;
            match (names.var_index.get(k), scope) {
                // A var sees only the vars above it.
                (Some(&j), Scope::Var(i)) if j >= i => Some((
                    format!("`vars.{k}` is defined below this var; vars are rendered in order"),
                    None,
                    Code::UndefinedName,
                )),
                (Some(_), _) => None,
                (None, _) => Some(missing("vars", k, &names.vars)),
            }
        }
        "env" => None,
        "run" => key
            .filter(|k| !RUN_KEYS.contains(k))
            .map(|k| missing("run", k, RUN_KEYS)),
        "step" => match scope {
            Scope::Main { rollback: true, .. } => None,
            _ => Some((
                "`step` is only defined inside a rollback body".into(),
                Some("use `steps.<id>` to read another step".into()),
                Code::UndefinedName,
            )),
        },
        "value" if kind == Expr::Condition => None,
        "value" => Some((
            "`value` is only defined in a metric `condition`".into(),
            None,
            Code::UndefinedName,
        )),
        "steps" => {
            // `steps['b']`, `steps[name]`, `steps | tojson`: which step is
            // read cannot be seen, so neither can whether it ran before.
            let Some(k) = key else {
                return Some((
                    "reads `steps` without naming a step".into(),
                    Some("read another step as `steps.<id>` (step ids are identifiers), so validation can check it runs before this point".into()),
                    Code::NotAncestor,
                ));
            };
            if names.index.broken.contains(k) && !names.index.ids.contains_key(k) {
                return None;
            }
            let Some(&(phase, j)) = names.index.ids.get(k) else {
                let ids: Vec<&str> = names.index.ids.keys().map(String::as_str).collect();
                let help = did_you_mean(k, ids.iter().copied())
                    .map(|m| format!("did you mean `steps.{m}`?"));
                return Some((
                    format!("`steps.{k}` names no step"),
                    help,
                    Code::UndefinedName,
                ));
            };
            let ok = match scope {
                Scope::Main { idx, rollback } => {
                    phase == Phase::Main
                        && ((rollback && j == idx)
                            || names
                                .ancestors
                                .as_ref()
                                .is_none_or(|a| a.is_ancestor(j, idx)))
                }
                Scope::Aux { phase: p, idx } => phase == Phase::Main || (phase == p && j < idx),
                Scope::Var(_) | Scope::Top => false,
            };
            if ok {
                return None;
            }
            let help = match scope {
                Scope::Main { .. } if phase == Phase::Main => Some(format!(
                    "add `{k}` to this step's `needs` (directly or through a step that needs it)"
                )),
                _ => None,
            };
            Some((
                format!("reads `steps.{k}`, which does not surely run before this point"),
                help,
                Code::NotAncestor,
            ))
        }
        r if GLOBAL_FUNCTIONS.contains(&r) => None,
        r => {
            let help = did_you_mean(r, ROOTS.iter().copied())
                .map(|m| format!("did you mean `{m}`?"))
                .or_else(|| Some(format!("templates can read {}", ROOTS.join(", "))));
            Some((format!("`{r}` is not defined"), help, Code::UndefinedName))
        }
    }
}
