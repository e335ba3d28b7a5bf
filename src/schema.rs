//! The JSON Schema, generated from the same types the loader deserialises.

use crate::spec::RunbookSpec;

/// The schema as pretty JSON, with a trailing newline (the committed file's form).
pub fn json() -> String {
    let schema = schemars::schema_for!(RunbookSpec);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}
