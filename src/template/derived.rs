//! Values a template derives from secrets, so they are masked like secrets.
//!
//! The masker knows each secret and the encodings the engine itself applies
//! ([`crate::secrets::forms`]), but a template can transform a secret in
//! ways no list of forms covers: `secrets.tok[0:6]`, `| replace`, `~`
//! with other text. Values carry no provenance in minijinja, so the rule is
//! by template: while a template that reads `secrets` renders, every value
//! it outputs is noted ([`note_value`], called by the formatter) and handed
//! to [`crate::secrets::note_derived`], which every masker consults.
//!
//! That over-masks a non-secret value printed by the same template; values
//! equal to a param, var, env entry or `run` field are left out, which
//! covers the common `https://{{ params.host }}/?key={{ secrets.k }}`.

use std::cell::RefCell;
use std::collections::HashSet;

use minijinja::value::{Value, ValueKind};
use minijinja::Error;

thread_local! {
    /// What the template being rendered on this thread output so far;
    /// `None` when it does not read secrets.
    static NOTED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Runs `render` (on this thread), noting its outputs when `source` reads
/// secrets.
pub(super) fn noting<T>(
    source: &str,
    expression: bool,
    ctx: &Value,
    render: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    if !reads_secrets(source, expression) {
        return render();
    }
    NOTED.with(|n| *n.borrow_mut() = Some(Vec::new()));
    let result = render();
    let noted = NOTED.with(|n| n.borrow_mut().take()).unwrap_or_default();
    if !noted.is_empty() {
        let public = public_values(ctx);
        crate::secrets::note_derived(noted.into_iter().filter(|v| !public.contains(v)));
    }
    result
}

/// Notes one output value of the template being rendered, if it is noted.
pub(super) fn note_value(value: &Value) {
    NOTED.with(|n| {
        if let Some(list) = n.borrow_mut().as_mut() {
            match value.kind() {
                ValueKind::String => list.push(value.as_str().unwrap_or_default().to_string()),
                ValueKind::Number => list.push(value.to_string()),
                ValueKind::Seq | ValueKind::Map => list.push(value.to_string()),
                _ => {}
            }
        }
    });
}

fn reads_secrets(source: &str, expression: bool) -> bool {
    source.contains("secrets")
        && super::reads(source, expression)
            // Unparsable: it will fail to render; note what it outputs anyway.
            .map_or(true, |names| {
                names
                    .iter()
                    .any(|n| n == "secrets" || n.starts_with("secrets."))
            })
}

/// The scalar values of params, vars, env and run, as text.
fn public_values(ctx: &Value) -> HashSet<String> {
    let mut out = HashSet::new();
    for root in ["params", "vars", "env", "run"] {
        let Ok(map) = ctx.get_attr(root) else {
            continue;
        };
        let Ok(keys) = map.try_iter() else { continue };
        for k in keys {
            if let Ok(v) = map.get_item(&k) {
                match v.kind() {
                    ValueKind::String => {
                        out.insert(v.as_str().unwrap_or_default().to_string());
                    }
                    ValueKind::Number | ValueKind::Bool => {
                        out.insert(v.to_string());
                    }
                    _ => {}
                }
            }
        }
    }
    out
}
