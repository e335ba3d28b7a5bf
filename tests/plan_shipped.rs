#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! The plan of every runbook we ship, as a reviewer reads it: snapshots of
//! each format with no params given (a pull-request preview) and with the
//! required ones given; every JSON plan validates against the committed
//! schemas/plan.schema.json, which must match `runbook schema --plan`.
//!
//! Snapshots live in tests/snapshots/ (`plan_shipped__*`); accept intended
//! changes with `cargo insta review` or `INSTA_UPDATE=always`.

mod common;

use common::{read_repo_file, redact_fingerprint, Test};

const PLAN_SCHEMA: &str = "schemas/plan.schema.json";

/// (file, the required params a run needs).
const SHIPPED: &[(&str, &[&str])] = &[
    ("runbooks/production-rollout.yaml", &["revision=v1.4.2"]),
    ("runbooks/staging-deploy.yaml", &[]),
    ("runbooks/k8s-canary.yaml", &["image=registry.test/app:v2"]),
    (
        "runbooks/db-migration.yaml",
        &["database_url=postgresql://app@127.0.0.1:5432/app"],
    ),
    ("runbooks/emergency-disable.yaml", &["reason=INC-42"]),
    ("runbooks/rollout-guard.yaml", &[]),
    ("examples/demo/rollout.yaml", &[]),
    ("examples/hello.yaml", &[]),
];

const FORMATS: &[&str] = &["text", "markdown", "json", "mermaid"];

fn plan(file: &str, format: &str, params: &[&str]) -> String {
    common::plan_of(
        file,
        format,
        params,
        &[("ROLLOUT_WEBHOOK_TOKEN", "hunter2-webhook")],
    )
}

fn snapshot_name(file: &str, format: &str, given: bool) -> String {
    let stem = file
        .rsplit('/')
        .next()
        .unwrap_or(file)
        .trim_end_matches(".yaml")
        .replace('-', "_");
    let params = if given { "params" } else { "no_params" };
    format!("{stem}_{params}_{format}")
}

#[test]
fn every_shipped_runbook_plans_in_every_format() {
    for (file, required) in SHIPPED {
        let cases: &[bool] = if required.is_empty() {
            &[false]
        } else {
            &[false, true]
        };
        for &given in cases {
            let params: &[&str] = if given { required } else { &[] };
            for format in FORMATS {
                insta::assert_snapshot!(
                    snapshot_name(file, format, given),
                    redact_fingerprint(&plan(file, format, params))
                );
            }
        }
    }
}

/// What a pull-request preview with no params shows of the seed rollout:
/// every step, gate threshold, approval, flag timeline, on_failure/finally
/// and the lock, with the missing param named and shown as a symbol.
#[test]
fn production_rollout_preview_without_params_shows_what_a_reviewer_needs() {
    let file = "runbooks/production-rollout.yaml";
    let md = plan(file, "markdown", &[]);
    let json: serde_json::Value =
        serde_json::from_str(&plan(file, "json", &[])).expect("plan JSON");
    assert_eq!(json["not_given"], serde_json::json!(["revision"]));
    assert!(md.contains("| **Not given** | `revision`"), "{md}");
    for step in json["steps"].as_array().expect("steps") {
        let id = step["id"].as_str().expect("id");
        assert!(md.contains(&format!("| `{id}`")), "step {id} missing");
    }
    for gate in json["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["gate"].as_object())
    {
        // A comparison shows both queries instead of a condition.
        let shown = match gate["compare"]["baseline"].as_str() {
            Some(baseline) => format!("| baseline `{baseline}` vs canary"),
            None => format!(
                "| `{}` |",
                gate["condition_rendered"].as_str().expect("condition")
            ),
        };
        assert!(md.contains(&shown), "gate {shown} missing");
    }
    for needle in [
        "| `approve_production` | **2** | `engineering-manager`, `devops-lead` | 1d | no | signed |",
        "| Lock | `production-rollout-production` |",
        "### On failure",
        "| `escalate` | http |",
        "### Finally",
        "| `notify` | http |",
        "`stage_full` rollback 2",
        "  - flag `request_isolation`: ",
        "\"revision\":\"<params.revision>\"",
    ] {
        assert!(md.contains(needle), "missing {needle:?}");
    }
    // Run-time values are symbols, never `{}`.
    assert!(!md.contains("{}"), "an empty object in:\n{md}");
    assert!(md.contains("\"run_id\":\"<run.id>\""), "{md}");
}

fn validator() -> jsonschema::Validator {
    let schema: serde_json::Value =
        serde_json::from_str(&read_repo_file(PLAN_SCHEMA)).expect("schema JSON");
    jsonschema::validator_for(&schema).expect("a valid JSON Schema")
}

#[test]
fn json_plans_validate_against_the_committed_schema() {
    let v = validator();
    for (file, required) in SHIPPED {
        for params in [&[][..], required] {
            let plan: serde_json::Value =
                serde_json::from_str(&plan(file, "json", params)).expect("plan JSON");
            let errors: Vec<String> = v.iter_errors(&plan).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{file} {params:?}: {errors:#?}");
        }
    }
    // The schema can fail: an English retry, a missing field, an extra one.
    let mut bad: serde_json::Value =
        serde_json::from_str(&plan("examples/demo/rollout.yaml", "json", &[])).expect("JSON");
    bad["steps"][0]["retry"] = serde_json::json!("3 attempts, 2s apart");
    assert!(!v.is_valid(&bad));
    let mut bad: serde_json::Value =
        serde_json::from_str(&plan("examples/demo/rollout.yaml", "json", &[])).expect("JSON");
    bad.as_object_mut().expect("object").remove("fingerprint");
    assert!(!v.is_valid(&bad));
    bad["fingerprint"] = "sha256:x".into();
    bad["surprise"] = true.into();
    assert!(!v.is_valid(&bad));
}

#[test]
fn committed_plan_schema_is_up_to_date() {
    let generated = Test::new()
        .args(&["schema", "--plan"])
        .run()
        .success()
        .stdout;
    assert!(
        read_repo_file(PLAN_SCHEMA) == generated,
        "{PLAN_SCHEMA} is stale; regenerate it with:\n\n    cargo run --quiet -- schema --plan > {PLAN_SCHEMA}\n"
    );
}
