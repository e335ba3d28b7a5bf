//! Arbitrary bytes -> load + validate -> (if valid) params, plan, every rendering.
//!
//! Whatever the input, none of this may panic, hang or allocate without bound:
//! validation turns every problem into a diagnostic, and a valid runbook always
//! has a plan.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runbook::plan::{render, resolve_params, Format, Plan};
use runbook::runbook::ParamType;
use runbook::validate::validate_text;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let validated = validate_text(&text);
    // Diagnostics are rendered against the source: spans must stay in range.
    for d in &validated.diagnostics {
        let _ = d.render("fuzz.yaml", &text, false);
    }
    let Some(rb) = validated.runbook else { return };
    let rb = std::sync::Arc::new(rb);

    // First with no params at all, as the brief of `runbook plan` with no --param.
    let params = match resolve_params(&rb, &[]) {
        Ok(p) => p,
        // Required params without a default: give each a value of its type
        // (the first enum value if there is one) so the plan is still built.
        Err(_) => {
            let given: Vec<(String, String)> = rb
                .params
                .iter()
                .filter(|p| p.required)
                .map(|p| {
                    let v = match p.allowed.as_ref().and_then(|a| a.first()) {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                        None => match p.ty {
                            ParamType::String => "x".into(),
                            ParamType::Integer | ParamType::Number => "1".into(),
                            ParamType::Boolean => "true".into(),
                        },
                    };
                    (p.name.clone(), v)
                })
                .collect();
            match resolve_params(&rb, &given) {
                Ok(p) => p,
                Err(_) => return,
            }
        }
    };
    let plan = Plan::build(&rb, &text, &params);
    for format in [
        Format::Text,
        Format::Markdown,
        Format::Json,
        Format::Mermaid,
    ] {
        let _ = render(&plan, format);
    }
});
