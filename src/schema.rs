//! The JSON Schemas: of the runbook format, generated from the same types
//! the loader deserialises, and of `plan --format json`, from the types the
//! plan serialises.

use crate::spec::RunbookSpec;

/// The schema as pretty JSON, with a trailing newline (the committed file's form).
pub fn json() -> String {
    let schema = schemars::schema_for!(RunbookSpec);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}

/// The schema of `runbook plan --format json`, in the same form.
///
/// Every field is present in a plan (`null` where it does not apply), so
/// every object's properties are all required and no others are allowed:
/// a tool reading a plan can rely on its shape.
pub fn plan_json() -> String {
    let mut schema = schemars::schema_for!(crate::plan::Plan).to_value();
    close_objects(&mut schema);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}

fn close_objects(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = map.get("properties") {
                let names: Vec<Value> = props.keys().cloned().map(Value::String).collect();
                map.insert("required".into(), Value::Array(names));
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}
