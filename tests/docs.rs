#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! The field reference stays in step with the schema: every property and
//! enum value the schema knows is named in docs/reference.md.

use std::collections::BTreeSet;

fn collect(v: &serde_json::Value, names: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::Object(props)) = m.get("properties") {
                names.extend(props.keys().cloned());
            }
            if let Some(serde_json::Value::Array(values)) = m.get("enum") {
                names.extend(values.iter().filter_map(|v| v.as_str().map(str::to_string)));
            }
            m.values().for_each(|v| collect(v, names));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, names)),
        _ => {}
    }
}

#[test]
fn reference_names_every_schema_field() {
    let root = env!("CARGO_MANIFEST_DIR");
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/schemas/runbook.schema.json")).unwrap(),
    )
    .unwrap();
    let reference = std::fs::read_to_string(format!("{root}/docs/reference.md")).unwrap();
    let mut names = BTreeSet::new();
    collect(&schema, &mut names);
    assert!(
        names.len() > 50,
        "the schema walk found too few names: {names:?}"
    );
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !reference.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/reference.md does not mention: {missing:?}"
    );
}

#[test]
fn tutorial_runbooks_validate() {
    let root = env!("CARGO_MANIFEST_DIR");
    let tutorial = std::fs::read_to_string(format!("{root}/docs/tutorial.md")).unwrap();
    let blocks: Vec<&str> = tutorial
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .filter(|b| b.contains("version: 1"))
        .collect();
    assert!(
        blocks.len() >= 3,
        "the tutorial should build up at least three runbooks"
    );
    for b in blocks {
        let v = runbook::validate::validate_text(b);
        assert!(
            v.runbook.is_some(),
            "a tutorial runbook does not validate: {:?}\n{b}",
            v.diagnostics
        );
    }
}
