//! Which params each step reads, directly or through vars: what `plan --diff`
//! names when a param's value changes ("`max_5xx` feeds gate_canary,
//! gate_staged"), and what tells a `when` that waits on a param not given.
//!
//! A scan of each template's text for `params.NAME` and `vars.NAME`, not a
//! parse: a reviewer's hint must not fail on a template the preview could
//! not render, and a name that merely appears in a comment only lists one
//! step too many. Vars are followed to the params they read, once each.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value as Json;

use crate::runbook::{Action, ActionKind, Dur, Num, Rollback, Runbook, Step};

/// Params read by templates: by vars (followed) and per step.
pub(super) struct ParamUse {
    var_params: HashMap<String, BTreeSet<String>>,
}

impl ParamUse {
    pub(super) fn new(rb: &Runbook) -> ParamUse {
        let mut var_params: HashMap<String, BTreeSet<String>> = HashMap::new();
        // A var reads only vars above it, so one pass in order resolves them.
        for (name, value) in &rb.vars {
            let mut texts = Vec::new();
            json_texts(value, &mut texts);
            let mut params = BTreeSet::new();
            for t in &texts {
                params.extend(names_after(t, "params."));
                for v in names_after(t, "vars.") {
                    if let Some(p) = var_params.get(&v) {
                        params.extend(p.iter().cloned());
                    }
                }
            }
            var_params.insert(name.clone(), params);
        }
        ParamUse { var_params }
    }

    /// Params read by one template text.
    pub(super) fn of_text(&self, text: &str) -> BTreeSet<String> {
        let mut params: BTreeSet<String> = names_after(text, "params.").collect();
        for v in names_after(text, "vars.") {
            if let Some(p) = self.var_params.get(&v) {
                params.extend(p.iter().cloned());
            }
        }
        params
    }

    /// Params read by a step: its `when`, action and rollback bodies.
    pub(super) fn of_step(&self, s: &Step) -> BTreeSet<String> {
        let mut texts: Vec<&str> = s.when.iter().map(|w| w.text.as_str()).collect();
        action_texts(&s.action, &mut texts);
        if let Rollback::Bodies(bodies) = &s.rollback {
            for b in bodies {
                action_texts(b, &mut texts);
            }
        }
        texts.iter().flat_map(|t| self.of_text(t)).collect()
    }
}

/// Identifiers following each `prefix` in `text` (`params.max_5xx` -> `max_5xx`).
fn names_after<'a>(text: &'a str, prefix: &'a str) -> impl Iterator<Item = String> + 'a {
    text.match_indices(prefix).filter_map(move |(at, _)| {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
            return None;
        }
        let rest = &text[at + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        (end > 0).then(|| rest[..end].to_string())
    })
}

fn json_texts<'a>(v: &'a Json, out: &mut Vec<&'a str>) {
    match v {
        Json::String(s) => out.push(s),
        Json::Array(items) => items.iter().for_each(|i| json_texts(i, out)),
        Json::Object(map) => map.values().for_each(|i| json_texts(i, out)),
        _ => {}
    }
}

fn dur_text(d: &Dur) -> Option<&str> {
    match d {
        Dur::Template(t) => Some(&t.text),
        Dur::Fixed(_) => None,
    }
}

fn num_text(n: &Num) -> Option<&str> {
    match n {
        Num::Template(t, _) => Some(&t.text),
        Num::Fixed(_) => None,
    }
}

/// Every template text of an action.
fn action_texts<'a>(a: &'a Action, out: &mut Vec<&'a str>) {
    out.extend(a.timeout.as_ref().and_then(dur_text));
    out.extend(num_text(&a.retry.attempts));
    out.extend(dur_text(&a.retry.delay));
    out.extend(a.retry.max_delay.as_ref().and_then(dur_text));
    out.extend(a.env.iter().map(|(_, v)| v.as_str()));
    out.extend(a.cwd.as_deref());
    match &a.kind {
        ActionKind::Shell { script, .. } => out.push(script),
        ActionKind::Http(h) => {
            out.push(&h.url.text);
            out.extend(h.headers.iter().map(|(_, v)| v.as_str()));
            if let Some(b) = &h.body {
                json_texts(b, out);
            }
            out.extend(h.expect.body_contains.as_deref());
            for (_, v) in &h.expect.json {
                json_texts(v, out);
            }
            out.extend(h.expect.max_latency.as_ref().and_then(dur_text));
        }
        ActionKind::Metric(m) => {
            match &m.judge {
                crate::runbook::Judge::Threshold {
                    query,
                    condition,
                    failure_condition,
                } => {
                    out.push(&query.text);
                    out.push(&condition.text);
                    out.extend(failure_condition.as_ref().map(|c| c.text.as_str()));
                }
                crate::runbook::Judge::Compare(c) => {
                    out.push(&c.baseline.text);
                    out.push(&c.canary.text);
                    out.extend(dur_text(&c.range));
                    out.extend(dur_text(&c.step));
                    json_texts(&c.confidence, out);
                    json_texts(&c.allowed_change, out);
                }
            }
            out.extend(dur_text(&m.interval));
            out.extend(m.initial_delay.as_ref().and_then(dur_text));
            out.extend(num_text(&m.samples));
            out.extend(num_text(&m.failure_limit));
            out.extend(num_text(&m.inconclusive_limit));
            out.extend(num_text(&m.error_limit));
            out.extend(num_text(&m.pause.required));
            out.extend(m.pause.message.as_deref());
            out.extend(m.pause.approvers.iter().flatten().map(|t| t.text.as_str()));
            out.extend(m.pause.timeout.as_ref().and_then(dur_text));
            if let Some(at) = &m.at {
                json_texts(at, out);
            }
        }
        ActionKind::Approval(ap) => {
            out.extend(ap.message.as_deref());
            out.extend(ap.approvers.iter().flatten().map(|t| t.text.as_str()));
            out.extend(num_text(&ap.required));
            out.extend(ap.timeout.as_ref().and_then(dur_text));
        }
        ActionKind::Flag(f) => {
            out.push(&f.name.text);
            json_texts(&f.value, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stop_at_the_identifier_and_skip_longer_paths() {
        let got: Vec<String> =
            names_after("{{ params.a_1 }} x.params.b {{params.c|int}}", "params.").collect();
        assert_eq!(got, ["a_1", "c"]);
    }
}
