//! `--param` values against the declared params, and the params map every
//! later stage reads. Apart from the plan because `run`, `resume` and `plan`
//! all resolve params, and only the plan is built from them.

use std::collections::HashSet;

use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::diagnostics::Code;
use crate::runbook::Runbook;

/// Params by name: the value, and whether it was given (else the default).
pub type ResolvedParams = IndexMap<String, (Json, bool)>;

/// Resolves `--param` values against the declared params: types, enums,
/// required ones, defaults. Errors are user errors (exit 2).
pub fn resolve_params(
    rb: &Runbook,
    given: &[(String, String)],
) -> Result<ResolvedParams, Vec<(Code, String)>> {
    resolve(rb, given, true)
}

/// As [`resolve_params`], but a required param not given is left out, not
/// an error: `plan` shows it as `<params.NAME>` (spec: plan without
/// required params).
pub fn resolve_params_for_preview(
    rb: &Runbook,
    given: &[(String, String)],
) -> Result<ResolvedParams, Vec<(Code, String)>> {
    resolve(rb, given, false)
}

fn resolve(
    rb: &Runbook,
    given: &[(String, String)],
    require: bool,
) -> Result<ResolvedParams, Vec<(Code, String)>> {
    let mut errors = Vec::new();
    let mut out = IndexMap::new();
    // Given but refused: reported once, not again as missing.
    let mut failed: HashSet<&str> = HashSet::new();
    for (k, v) in given {
        match rb.params.iter().find(|p| &p.name == k) {
            None => {
                let names = rb.params.iter().map(|p| p.name.as_str());
                let hint = crate::diagnostics::did_you_mean(k, names)
                    .map(|m| format!(" (did you mean `{m}`?)"))
                    .unwrap_or_default();
                errors.push((Code::UnknownParam, format!("unknown parameter `{k}`{hint}")));
            }
            Some(p) => match p.parse(v) {
                Ok(j) => {
                    out.insert(k.clone(), (j, true));
                }
                Err(e) => {
                    failed.insert(k.as_str());
                    // The parser's message quotes the value: not for a secret.
                    let e = if p.secret {
                        "the value given does not fit its type or enum (not shown: the param is secret)".to_string()
                    } else {
                        e
                    };
                    errors.push((Code::ParamType, format!("parameter `{k}`: {e}")));
                }
            },
        }
    }
    for p in &rb.params {
        if out.contains_key(&p.name) || failed.contains(p.name.as_str()) {
            continue;
        }
        match &p.default {
            Some(d) => {
                out.insert(p.name.clone(), (d.clone(), false));
            }
            None if p.required && !require => {}
            None if p.required => errors.push((
                Code::MissingParam,
                format!(
                    "parameter `{}` is required: pass --param {}=VALUE",
                    p.name, p.name
                ),
            )),
            None => {
                out.insert(p.name.clone(), (Json::Null, false));
            }
        }
    }
    // Keep declaration order. (`swap_remove`, since `out`'s own order is
    // dropped: `shift_remove` is linear, so quadratic over many params.)
    let mut ordered = IndexMap::new();
    for p in &rb.params {
        if let Some(v) = out.swap_remove(&p.name) {
            ordered.insert(p.name.clone(), v);
        }
    }
    if errors.is_empty() {
        Ok(ordered)
    } else {
        Err(errors)
    }
}

pub(super) fn secret_params(rb: &Runbook) -> HashSet<&str> {
    rb.params
        .iter()
        .filter(|p| p.secret)
        .map(|p| p.name.as_str())
        .collect()
}
