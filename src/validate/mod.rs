//! `Spec` -> `Runbook`: every rule the format implies, all errors in one pass.
//!
//! The validator walks the spec once, converting as it goes and pushing a
//! diagnostic (never returning early) for each broken rule, so an author sees
//! every problem at once. Rule families live in their own files: `params`,
//! `steps` (ids, kinds, durations, providers), `templates` (syntax, names,
//! ancestry). Graph rules (unknown needs, cycles) run here, between the two,
//! because template ancestry needs the graph.

mod gates;
mod params;
mod steps;
mod templates;

use std::collections::{HashMap, HashSet};

use crate::diagnostics::{did_you_mean, Code, Diagnostic, Diagnostics};
use crate::graph::StepGraph;
use crate::runbook::{Phase, Provider, Runbook, Secret, SecretSource};
use crate::spec::{Loaded, RunbookSpec, Span, StepSpec};

/// The outcome of validating one file.
pub struct Validated {
    pub runbook: Option<Runbook>,
    /// Errors and warnings, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
}

/// Validates a loaded file. The runbook is `Some` only when there is no error.
pub fn validate(loaded: Loaded) -> Validated {
    let mut ds = Diagnostics::default();
    for d in loaded.diagnostics {
        ds.push(d);
    }
    let broken = loaded.broken_ids;
    let runbook = loaded.spec.and_then(|spec| {
        let rb = convert(&spec, broken, &mut ds);
        (!ds.has_errors()).then_some(rb).flatten()
    });
    Validated {
        runbook: if ds.has_errors() { None } else { runbook },
        diagnostics: ds.sorted(),
    }
}

/// Loads and validates text in one call.
pub fn validate_text(text: &str) -> Validated {
    validate(crate::spec::load(text))
}

/// The id syntax of steps (and of params, vars, secrets, providers).
pub fn is_valid_id(id: &str) -> bool {
    let mut b = id.bytes();
    b.next().is_some_and(|c| c.is_ascii_lowercase())
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// Step ids in every list, with where each was declared.
pub(crate) struct StepIndex {
    pub ids: HashMap<String, (Phase, usize)>,
    /// Ids of steps that failed to load (already reported): reading them or
    /// naming them in `needs` is not a second error.
    pub broken: HashSet<String>,
}

fn convert(spec: &RunbookSpec, broken: Vec<String>, ds: &mut Diagnostics) -> Option<Runbook> {
    if *spec.version != 1 {
        ds.error(
            Code::UnsupportedVersion,
            spec.version.span,
            format!("format version {} is not supported", *spec.version),
        )
        .help = Some("this runbook engine reads `version: 1`".into());
    }

    let params = params::convert(spec, ds);

    let mut secrets = Vec::new();
    for (name, s) in &spec.secrets {
        check_name(ds, name, "secret");
        let Some(s) = &s.0 else { continue };
        let source = match (&s.env, &s.file) {
            (Some(e), None) => SecretSource::Env(e.value.clone()),
            (None, Some(f)) => SecretSource::File(f.value.clone()),
            _ => {
                ds.error(
                    Code::SecretSource,
                    name.span,
                    format!(
                        "secret `{}` needs exactly one of `env` or `file`",
                        name.value
                    ),
                );
                continue;
            }
        };
        secrets.push(Secret {
            name: name.value.clone(),
            source,
        });
    }

    let mut providers = Vec::new();
    // Providers that failed to load (already reported) are not "undeclared".
    let broken_providers: Vec<&str> = spec
        .providers
        .iter()
        .filter(|(_, p)| p.0.is_none())
        .map(|(name, _)| name.value.as_str())
        .collect();
    for (name, p) in &spec.providers {
        let Some(p) = &p.0 else { continue };
        if let Some(provider) = steps::provider(ds, name, p) {
            providers.push(provider);
        }
    }

    for (name, _) in &spec.vars {
        check_name(ds, name, "var");
    }

    let concurrency = match &spec.concurrency {
        Some(c) if c.value == 0 => {
            ds.error(
                Code::InvalidNumber,
                c.span,
                "`concurrency` must be at least 1",
            );
            1
        }
        Some(c) => c.value as usize,
        None => 4,
    };
    let lock = spec.lock.as_ref().and_then(|l| steps::lock(ds, l));

    // Ids first, across all lists: `needs` and templates refer to them.
    let lists: [(Phase, &Vec<crate::spec::Checked<StepSpec>>); 3] = [
        (Phase::Main, &spec.steps),
        (Phase::OnFailure, &spec.on_failure),
        (Phase::Finally, &spec.finally),
    ];
    let mut index = StepIndex {
        ids: HashMap::new(),
        broken: broken.into_iter().collect(),
    };
    // Borrowed keys, dropped once the ids are indexed: for a long file it
    // was as large as the index, alive while every step was converted.
    let mut first_span: HashMap<&str, Span> = HashMap::new();
    for (phase, list) in &lists {
        for (i, s) in list.iter().enumerate() {
            let Some(s) = &s.0 else { continue };
            let id = &s.id;
            if !is_valid_id(id) {
                ds.error(Code::InvalidId, id.span, format!("step id `{}` is not valid", id.value))
                    .help = Some("ids match [a-z][a-z0-9_]*: lowercase letters, digits and underscores, starting with a letter".into());
            }
            if let Some(first) = first_span.get(id.value.as_str()) {
                ds.push(
                    Diagnostic::new(
                        Code::DuplicateId,
                        id.span,
                        format!("step id `{}` is used twice", id.value),
                    )
                    .with_label(*first, "first used here"),
                );
                continue;
            }
            first_span.insert(&id.value, id.span);
            index.ids.insert(id.value.clone(), (*phase, i));
        }
    }
    drop(first_span);

    let defaults = spec
        .defaults
        .as_ref()
        .and_then(|d| d.0.clone())
        .unwrap_or_default();
    // Checked here once, even where every step overrides them; steps that
    // fall back on them repeat these diagnostics, which dedup removes.
    steps::check_defaults(ds, &defaults);
    let ctx = steps::StepCtx {
        defaults: &defaults,
        providers: &providers,
        broken_providers: &broken_providers,
        interpreter: steps::default_interpreter(&defaults),
        no_retry: std::sync::Arc::default(),
    };

    let main_specs: Vec<Option<&StepSpec>> = spec.steps.iter().map(|s| s.0.as_ref()).collect();
    let main_steps: Vec<Option<crate::runbook::Step>> = main_specs
        .iter()
        .map(|s| s.and_then(|s| steps::convert(ds, &ctx, s)))
        .collect();

    // Graph: needs resolve within the main list; absent needs mean "the step before".
    let mut needs: Vec<Vec<usize>> = Vec::with_capacity(main_specs.len());
    for (i, s) in main_specs.iter().enumerate() {
        let mut deps = Vec::new();
        match s.and_then(|s| s.needs.as_ref()) {
            None => {
                if i > 0 {
                    deps.push(i - 1);
                }
            }
            Some(list) => {
                for need in &list.value {
                    match index.ids.get(&need.value) {
                        Some((Phase::Main, j)) => deps.push(*j),
                        None if index.broken.contains(&need.value) => {}
                        Some((phase, _)) => {
                            ds.error(
                                Code::UnknownNeed,
                                need.span,
                                format!("`{}` is a step of `{}`; `needs` can only name steps of `steps`", need.value, phase_key(*phase)),
                            );
                        }
                        None => {
                            let d = ds.error(
                                Code::UnknownNeed,
                                need.span,
                                format!("`needs` names unknown step `{}`", need.value),
                            );
                            let ids = main_specs.iter().flatten().map(|s| s.id.value.as_str());
                            if let Some(m) = did_you_mean(&need.value, ids) {
                                d.help = Some(format!("did you mean `{m}`?"));
                            }
                        }
                    }
                }
            }
        }
        needs.push(deps);
    }
    let graph = match StepGraph::build(&needs) {
        Ok(g) => Some(g),
        Err(cycle) => {
            let path: Vec<&str> = cycle
                .iter()
                .map(|&i| main_specs[i].map_or("?", |s| s.id.value.as_str()))
                .collect();
            let at = cycle
                .first()
                .and_then(|&i| main_specs[i])
                .map_or(Span::default(), |s| {
                    s.needs.as_ref().map_or(s.id.span, |n| n.span)
                });
            let mut d = Diagnostic::new(
                Code::Cycle,
                at,
                format!("the steps form a cycle: {}", path.join(" -> ")),
            )
            .with_help("remove one of these `needs` so the steps can run in order");
            for (n, hop) in cycle.windows(2).enumerate() {
                if let Some((span, label)) = cycle_hop(&main_specs, hop[0], hop[1]) {
                    d = d.with_label(span, format!("{}. {label}", n + 1));
                }
            }
            ds.push(d);
            None
        }
    };

    let on_failure: Vec<_> = spec
        .on_failure
        .iter()
        .filter_map(|s| s.0.as_ref().and_then(|s| steps::convert(ds, &ctx, s)))
        .collect();
    let finally: Vec<_> = spec
        .finally
        .iter()
        .filter_map(|s| s.0.as_ref().and_then(|s| steps::convert(ds, &ctx, s)))
        .collect();
    for s in spec
        .on_failure
        .iter()
        .chain(&spec.finally)
        .filter_map(|s| s.0.as_ref())
    {
        if let Some(n) = &s.needs {
            ds.error(
                Code::UnknownNeed,
                n.span,
                "`on_failure` and `finally` steps run in list order; `needs` is not allowed there",
            );
        }
    }

    let renders = templates::check(ds, spec, &index, graph.as_ref());

    let mut main_steps = main_steps;
    gates::resolve(ds, &main_specs, &mut main_steps, &index, graph.as_ref());
    let others: Vec<&StepSpec> = spec
        .on_failure
        .iter()
        .chain(&spec.finally)
        .filter_map(|s| s.0.as_ref())
        .collect();
    gates::refuse_outside_steps(ds, &others);
    for (s, deps) in main_steps.iter_mut().zip(needs) {
        if let Some(s) = s {
            s.needs = deps;
        }
    }
    // Collected in place: no second list of every step while converting.
    let steps_out: Vec<crate::runbook::Step> = main_steps.into_iter().collect::<Option<_>>()?;
    let graph = graph?;
    if ds.has_errors() {
        return None;
    }
    Some(Runbook {
        name: spec.name.value.clone(),
        description: spec.description.clone(),
        params,
        vars: spec
            .vars
            .iter()
            .map(|(k, v)| (k.value.clone(), v.0.to_json()))
            .collect(),
        secrets,
        env: spec
            .env
            .iter()
            .map(|(k, v)| (k.value.clone(), v.value.clone()))
            .collect(),
        concurrency,
        lock,
        allowed_signers: spec
            .allowed_signers
            .as_ref()
            .map(|l| crate::runbook::Tpl::new(l.value.clone(), l.span)),
        providers: providers.into_iter().collect::<Vec<Provider>>(),
        steps: steps_out,
        on_failure,
        finally,
        graph,
        renders,
    })
}

pub(crate) fn phase_key(p: Phase) -> &'static str {
    match p {
        Phase::Main => "steps",
        Phase::OnFailure => "on_failure",
        Phase::Finally => "finally",
    }
}

/// One hop of a cycle, `before -> after`: where step `after` waits for step
/// `before`. That is the `needs` entry naming `before`, or `after`'s id when
/// it has no `needs` and so waits for the step listed before it.
fn cycle_hop(specs: &[Option<&StepSpec>], before: usize, after: usize) -> Option<(Span, String)> {
    let b = specs.get(before).copied().flatten()?;
    let a = specs.get(after).copied().flatten()?;
    let (b_id, a_id) = (&b.id.value, &a.id.value);
    match &a.needs {
        Some(needs) => {
            let entry = needs.value.iter().find(|n| n.value == *b_id)?;
            let label = if before == after {
                format!("`{a_id}` needs itself")
            } else {
                format!("`{a_id}` needs `{b_id}`")
            };
            Some((entry.span, label))
        }
        None => Some((
            a.id.span,
            format!("`{a_id}` has no `needs`, so it waits for `{b_id}`, the step before it"),
        )),
    }
}

fn check_name(ds: &mut Diagnostics, name: &crate::spec::Spanned<String>, what: &str) {
    let ok = {
        let mut b = name.bytes();
        b.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
    };
    if !ok {
        ds.error(
            Code::InvalidId,
            name.span,
            format!("{what} name `{}` cannot be used in templates", name.value),
        )
        .help = Some("names are letters, digits and underscores, starting with a letter".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(d: &Diagnostic) -> Vec<(u32, u32, &str)> {
        d.labels
            .iter()
            .map(|l| (l.span.start.line, l.span.start.col, l.message.as_str()))
            .collect()
    }

    #[test]
    fn a_cycle_labels_each_hop() {
        let text = "version: 1\nname: c\nsteps:\n  - id: a\n    needs: [c]\n    shell: echo\n  - id: b\n    shell: echo\n  - id: c\n    needs: [b]\n    shell: echo\n";
        let v = validate_text(text);
        let [d] = v.diagnostics.as_slice() else {
            panic!("{:?}", v.diagnostics);
        };
        assert_eq!(d.code, Code::Cycle);
        assert_eq!(d.message, "the steps form a cycle: a -> b -> c -> a");
        assert_eq!(
            labels(d),
            [
                (
                    7,
                    9,
                    "1. `b` has no `needs`, so it waits for `a`, the step before it"
                ),
                (10, 13, "2. `c` needs `b`"),
                (5, 13, "3. `a` needs `c`"),
            ]
        );
    }

    #[test]
    fn lock_is_a_key_or_a_key_with_a_wait() {
        use crate::runbook::{Dur, LockSpec, Tpl};
        use std::time::Duration;
        let lock = |l: &str| {
            let text = format!("version: 1\nname: l\nparams:\n  w: {{ default: 5m }}\nlock: {l}\nsteps:\n  - id: a\n    shell: echo\n");
            let v = validate_text(&text);
            (v.runbook.and_then(|r| r.lock), v.diagnostics)
        };
        let key = |text: &str, col| {
            let end = col + u32::try_from(text.len()).unwrap();
            Tpl::new(text, Span::range(5, col, 5, end))
        };
        assert_eq!(
            lock("deploy").0,
            Some(LockSpec {
                key: key("deploy", 7),
                wait: None
            })
        );
        assert_eq!(
            lock("{ key: deploy, wait: 30m }").0,
            Some(LockSpec {
                key: key("deploy", 14),
                wait: Some(Dur::Fixed(Duration::from_secs(1800)))
            })
        );
        assert_eq!(
            lock("{ key: deploy }").0.map(|l| l.wait),
            Some(None),
            "without `wait` it refuses at once"
        );
        assert!(matches!(
            lock("{ key: deploy, wait: \"{{ params.w }}\" }").0.and_then(|l| l.wait),
            Some(Dur::Template(t)) if t.text == "{{ params.w }}"
        ));
        // (the fragment, its error, line, column)
        for (l, code, line, col) in [
            ("{ key: deploy, wait: soon }", Code::InvalidDuration, 5, 28),
            ("{ key: deploy, wiat: 30m }", Code::UnknownField, 5, 22),
            ("{ wait: 30m }", Code::MissingField, 5, 7),
            ("{ key: deploy, wait: [30m] }", Code::WrongType, 5, 28),
            ("[deploy]", Code::WrongType, 5, 7),
            (
                "{ key: \"{{ params.nope }}\", wait: 1m }",
                Code::UndefinedName,
                5,
                14,
            ),
            (
                "{ key: deploy, wait: \"{{ params.nope }}\" }",
                Code::UndefinedName,
                5,
                28,
            ),
        ] {
            let (got, ds) = lock(l);
            assert!(got.is_none(), "{l}");
            let found: Vec<_> = ds
                .iter()
                .map(|d| (d.code, d.span.start.line, d.span.start.col))
                .collect();
            assert_eq!(found, [(code, line, col)], "{l}: {ds:?}");
        }
        let (_, ds) = lock("{ key: deploy, wiat: 30m }");
        assert_eq!(ds[0].help.as_deref(), Some("expected one of `key`, `wait`"));
        let (_, ds) = lock("{ key: deploy, waitt: 30m }");
        assert_eq!(ds[0].help.as_deref(), Some("did you mean `wait`?"));
    }

    #[test]
    fn a_duplicate_id_points_at_the_first() {
        let text =
            "version: 1\nname: d\nsteps:\n  - id: a\n    shell: echo\n  - id: a\n    shell: echo\n";
        let v = validate_text(text);
        let [d] = v.diagnostics.as_slice() else {
            panic!("{:?}", v.diagnostics);
        };
        assert_eq!(d.code, Code::DuplicateId);
        assert_eq!(d.span.start.line, 6);
        assert_eq!(labels(d), [(4, 9, "first used here")]);
    }
}
