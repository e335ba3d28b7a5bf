//! Parameter rules: names, default and enum values of the declared type,
//! default inside the enum, and `required` with a default (a warning).

use serde_json::Value as Json;

use crate::diagnostics::{Code, Diagnostic, Diagnostics};
use crate::runbook::{json_eq, Param, ParamType};
use crate::spec::{Node, RunbookSpec, Value};

pub(super) fn convert(spec: &RunbookSpec, ds: &mut Diagnostics) -> Vec<Param> {
    let mut out = Vec::new();
    for (name, p) in &spec.params {
        super::check_name(ds, name, "parameter");
        let Some(p) = &p.0 else { continue };
        let mut allowed = None;
        if let Some(list) = &p.allowed {
            let mut vals = Vec::new();
            for item in &list.value {
                if let Some(v) = typed(ds, &item.0, p.ty, &name.value, "enum value") {
                    vals.push(v);
                }
            }
            if list.value.is_empty() {
                ds.error(
                    Code::InvalidValue,
                    list.span,
                    format!("parameter `{}` has an empty enum", name.value),
                );
            }
            allowed = Some(vals);
        }
        let default = p.default.as_ref().and_then(|d| {
            let v = typed(ds, &d.0, p.ty, &name.value, "default")?;
            if let Some(allowed) = &allowed {
                if !allowed.iter().any(|a| json_eq(a, &v)) {
                    let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
                    ds.error(
                        Code::ParamDefaultNotInEnum,
                        d.0.span,
                        format!(
                            "default {v} of parameter `{}` is not in its enum",
                            name.value
                        ),
                    )
                    .help = Some(format!("allowed: {}", list.join(", ")));
                }
            }
            Some(v)
        });
        if p.required && default.is_some() {
            ds.push(Diagnostic::warning(
                Code::InvalidValue,
                name.span,
                format!(
                    "parameter `{}` is required and has a default; the default is never used",
                    name.value
                ),
            ));
        }
        out.push(Param {
            name: name.value.clone(),
            ty: p.ty,
            allowed,
            default,
            required: p.required,
            description: p.description.clone(),
            secret: p.secret,
        });
    }
    out
}

fn typed(
    ds: &mut Diagnostics,
    node: &Node,
    ty: ParamType,
    param: &str,
    what: &str,
) -> Option<Json> {
    let ok = matches!(
        (&node.value, ty),
        (Value::Str(_), ParamType::String)
            | (Value::Int(_), ParamType::Integer)
            | (Value::Int(_) | Value::Float(_), ParamType::Number)
            | (Value::Bool(_), ParamType::Boolean)
    );
    if ok {
        Some(node.to_json())
    } else {
        let d = ds.error(
            Code::ParamType,
            node.span,
            format!(
                "{what} of parameter `{param}` is {}, but its type is {}",
                node.kind_name(),
                ty.name()
            ),
        );
        if ty == ParamType::String
            && matches!(node.value, Value::Int(_) | Value::Float(_) | Value::Bool(_))
        {
            d.help = Some(format!("quote it: \"{}\"", node.scalar_text()));
        }
        None
    }
}
