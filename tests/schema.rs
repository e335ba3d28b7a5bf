#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! The committed JSON Schema matches `runbook schema`, and every runbook the
//! repository ships (runbooks/, examples/) validates and points editors at
//! that schema with a `yaml-language-server` modeline.

mod common;

use std::path::{Path, PathBuf};

use common::{repo_root, Test};

const SCHEMA: &str = "schemas/runbook.schema.json";
const MODELINE: &str = "# yaml-language-server: $schema=";

fn generated_schema() -> String {
    Test::new().arg("schema").run().success().stdout
}

#[test]
fn committed_schema_is_up_to_date() {
    let committed = common::read_repo_file(SCHEMA);
    let generated = generated_schema();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || committed.lines().count().min(generated.lines().count()) + 1,
                |i| i + 1,
            );
        panic!(
            "{SCHEMA} is stale (first difference at line {line}).\n\
             Regenerate it with:\n\n    cargo run --quiet -- schema > {SCHEMA}\n"
        );
    }
}

#[test]
fn schema_describes_the_format() {
    let schema: serde_json::Value =
        serde_json::from_str(&generated_schema()).expect("`runbook schema` prints JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(
        schema["required"],
        serde_json::json!(["version", "name", "steps"])
    );
    let step = &schema["$defs"]["StepSpec"]["properties"];
    for kind in ["shell", "http", "metric", "approval", "flag"] {
        assert!(step.get(kind).is_some(), "step kind `{kind}` in the schema");
    }
}

/// Every `*.yaml` / `*.yml` under `dir`, recursively (none if it is absent).
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.map(|e| e.expect("dir entry").path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            // examples/ci holds a GitHub Actions workflow, not a runbook.
            if path.file_name().is_some_and(|n| n == "ci") {
                continue;
            }
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

fn shipped_runbooks() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["runbooks", "examples"] {
        yaml_files(&repo_root().join(dir), &mut files);
    }
    assert!(
        !files.is_empty(),
        "no runbooks found under runbooks/ or examples/"
    );
    files
}

fn rel(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn shipped_runbooks_validate() {
    let mut failures = Vec::new();
    for path in shipped_runbooks() {
        let out = Test::new()
            .args(&["validate", &path.display().to_string()])
            .run();
        if out.code != Some(0) || out.stderr.contains("error[") {
            failures.push(format!(
                "{} (exit {:?}):\n{}",
                rel(&path),
                out.code,
                out.stderr
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "shipped runbooks must validate:\n\n{}",
        failures.join("\n")
    );
}

#[test]
fn shipped_runbooks_carry_a_schema_modeline() {
    let schema = repo_root()
        .join(SCHEMA)
        .canonicalize()
        .expect("schema file");
    let mut failures = Vec::new();
    for path in shipped_runbooks() {
        let text = std::fs::read_to_string(&path).expect("read runbook");
        // The modeline must come before the document's content.
        let Some(target) = text
            .lines()
            .take_while(|l| l.starts_with('#') || l.trim().is_empty())
            .find_map(|l| l.strip_prefix(MODELINE))
        else {
            failures.push(format!(
                "{}: no `{MODELINE}...` line at the top",
                rel(&path)
            ));
            continue;
        };
        let target = target.trim();
        let resolved = path.parent().expect("parent").join(target).canonicalize();
        if resolved.as_ref().ok() != Some(&schema) {
            failures.push(format!(
                "{}: `$schema={target}` does not point at {SCHEMA}",
                rel(&path)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
