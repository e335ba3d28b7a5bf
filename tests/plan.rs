#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! `runbook plan`: snapshots of every format for examples/hello.yaml and for
//! a richer fixture, parameter errors, and proof that planning executes and
//! contacts nothing.
//!
//! Snapshots live in tests/snapshots/. After an intended change to plan
//! output, review and accept them with `cargo insta review` (or rerun with
//! `INSTA_UPDATE=always` and read the diff).

mod common;

use common::raw_tcp::{free_port, Untouched};
use common::{redact_fingerprint, Test};

const HELLO: &str = "examples/hello.yaml";
const ROLLOUT: &str = "tests/fixtures/rollout.yaml";

/// Plans a repository file in `format` and returns stdout; the plan must succeed.
fn plan(file: &str, format: &str, params: &[&str]) -> String {
    // A secret's real value must never reach a plan.
    let env = [
        ("DEPLOY_TOKEN", "hunter2-deploy-token"),
        ("HELLO_TOKEN", "hunter2-hello-token"),
    ];
    common::plan_of(file, format, params, &env)
}

macro_rules! snapshot {
    ($name:ident, $file:expr, $format:literal $(, $param:literal)*) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(
                stringify!($name),
                redact_fingerprint(&plan($file, $format, &[$($param),*]))
            );
        }
    };
}

snapshot!(hello_text, HELLO, "text");
snapshot!(hello_markdown, HELLO, "markdown");
snapshot!(hello_json, HELLO, "json");
snapshot!(hello_mermaid, HELLO, "mermaid");
snapshot!(rollout_text, ROLLOUT, "text", "image=v1.2.3");
snapshot!(rollout_markdown, ROLLOUT, "markdown", "image=v1.2.3");
snapshot!(rollout_json, ROLLOUT, "json", "image=v1.2.3");
snapshot!(rollout_mermaid, ROLLOUT, "mermaid", "image=v1.2.3");
snapshot!(
    rollout_production_text,
    ROLLOUT,
    "text",
    "image=v2.0.0",
    "environment=production",
    "soak_samples=5"
);

#[test]
fn default_format_is_text() {
    let out = Test::new()
        .repo_file(HELLO)
        .args(&["plan", HELLO])
        .run()
        .success();
    assert_eq!(out.stdout, plan(HELLO, "text", &[]));
}

#[test]
fn json_plan_is_machine_readable() {
    let json: serde_json::Value =
        serde_json::from_str(&plan(ROLLOUT, "json", &["image=v1.2.3"])).expect("plan JSON");
    assert_eq!(json["runbook"], "rich-rollout");
    assert_eq!(
        json["waves"],
        serde_json::json!([
            ["build"],
            ["migrate", "push"],
            ["approve"],
            ["canary_flag"],
            ["canary_gate"],
            ["full_rollout"],
            ["verify"]
        ])
    );
    assert_eq!(
        json["approvals"][0]["required"],
        serde_json::json!({ "value": 2, "text": "2" })
    );
    assert_eq!(
        json["approvals"][0]["approvers"],
        serde_json::json!(["alice", "bob"])
    );
    assert_eq!(json["flags"][0]["provider"], "redis `flags`");
    let kinds: Vec<&str> = json["steps"][6]["rollback"]
        .as_array()
        .expect("rollback bodies")
        .iter()
        .map(|r| r["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["shell", "metric", "shell"]);
    // Machine values: seconds and counts, not English.
    assert_eq!(json["approvals"][0]["timeout"]["seconds"], 3600.0);
    assert_eq!(
        json["steps"][6]["rollback"][1]["gate"]["samples"]["value"],
        3
    );
}

#[test]
fn secrets_are_masked() {
    let text = plan(ROLLOUT, "text", &["image=v1.2.3"]);
    assert!(text.contains("Authorization: Bearer ***"), "{text}");
    assert!(text.contains("rolling out with token '***'"), "{text}");
    let hello = plan(HELLO, "markdown", &[]);
    let line = hello
        .lines()
        .find(|l| l.contains("announcing with token"))
        .expect("the announce step");
    assert!(line.contains("***"), "{line}");
}

#[test]
fn unknown_param_is_a_usage_error() {
    Test::new()
        .repo_file(ROLLOUT)
        .args(&[
            "plan",
            ROLLOUT,
            "--param",
            "image=v1",
            "--param",
            "enviroment=production",
        ])
        .run()
        .code(2)
        .stdout_eq("")
        .stderr_contains("unknown parameter `enviroment`")
        .stderr_contains("did you mean `environment`?");
}

#[test]
fn badly_typed_param_is_a_usage_error() {
    Test::new()
        .repo_file(ROLLOUT)
        .args(&[
            "plan",
            ROLLOUT,
            "--param",
            "image=v1",
            "--param",
            "canary_percent=ten",
        ])
        .run()
        .code(2)
        .stdout_eq("")
        .stderr_contains("parameter `canary_percent`: `ten` is not an integer");
}

#[test]
fn param_outside_its_enum_is_a_usage_error() {
    Test::new()
        .repo_file(ROLLOUT)
        .args(&[
            "plan",
            ROLLOUT,
            "--param",
            "image=v1",
            "--param",
            "environment=prod",
        ])
        .run()
        .code(2)
        .stdout_eq("")
        .stderr_contains(
            "parameter `environment`: \"prod\" is not one of \"staging\", \"production\"",
        );
}

/// `plan` works without required params (spec rev 2); `run` still needs them.
#[test]
fn missing_required_param_is_a_usage_error_for_run_only() {
    Test::new()
        .repo_file(ROLLOUT)
        .args(&["run", ROLLOUT])
        .run()
        .code(2)
        .stdout_eq("")
        .stderr_contains("parameter `image` is required: pass --param image=VALUE");
    Test::new()
        .repo_file(ROLLOUT)
        .args(&["plan", ROLLOUT])
        .run()
        .success()
        .stdout_contains("Not given: image (shown as <params.image>)")
        .stdout_contains("<params.image>");
}

#[test]
fn malformed_param_argument_is_a_usage_error() {
    Test::new()
        .repo_file(ROLLOUT)
        .args(&["plan", ROLLOUT, "--param", "image"])
        .run()
        .code(2)
        .stdout_eq("")
        .stderr_contains("`image` is not name=value");
}

#[test]
fn plan_of_an_invalid_runbook_exits_2_with_diagnostics() {
    Test::new()
        .file(
            "bad.yaml",
            "version: 1\nname: bad\nsteps:\n  - id: a\n    neds: [b]\n    shell: echo a\n",
        )
        .args(&["plan", "bad.yaml"])
        .run()
        .code(2)
        .stdout_eq("")
        .stderr_contains("error[E010]: unknown field `neds`")
        .stderr_contains("--> bad.yaml:5:5");
}

/// A runbook whose every provider and request points at `port`, and whose
/// shell step would leave a file behind.
fn networked(port: u16) -> String {
    format!(
        r#"version: 1
name: networked
providers:
  flags: {{ kind: redis, url: "redis://127.0.0.1:{port}/0" }}
  prom: {{ kind: prometheus, url: "http://127.0.0.1:{port}" }}
steps:
  - id: touch
    shell: touch executed
  - id: health
    http: {{ url: "http://127.0.0.1:{port}/health" }}
  - id: flag
    flag: {{ name: feature, value: true }}
  - id: gate
    metric: {{ query: up, condition: value >= 1, interval: 1s, samples: 2 }}
"#
    )
}

#[test]
fn plan_contacts_nothing_even_with_unreachable_providers() {
    // A port that was free a moment ago: connecting to it would fail.
    let port = free_port();
    for format in ["text", "markdown", "json", "mermaid"] {
        let out = Test::new()
            .file("networked.yaml", &networked(port))
            .args(&["plan", "networked.yaml", "--format", format])
            .run()
            .success()
            .stdout_contains("gate");
        assert!(
            !out.path().join("executed").exists(),
            "plan ran a shell step"
        );
    }
}

#[test]
fn plan_opens_no_connection() {
    // A listening port that would see any connection the plan made.
    let listener = Untouched::bind();
    let port = listener.port;
    Test::new()
        .file("networked.yaml", &networked(port))
        .args(&["plan", "networked.yaml"])
        .run()
        .success()
        .stdout_contains(&format!("GET http://127.0.0.1:{port}/health"));
    listener.assert_no_connection();
}

/// `plan --diff` puts what makes a rollout riskier first: a loosened gate,
/// a dropped approval, a rollback removed, and lists plain edits after.
#[test]
fn diff_flags_loosened_gates_and_dropped_approvals() {
    let base = r#"
version: 1
name: d
providers:
  prom: { kind: prometheus, url: "http://127.0.0.1:9" }
steps:
  - id: deploy
    shell: ./deploy.sh
    rollback: { shell: ./undo.sh }
  - id: approve
    approval: { approvers: [a, b], required: 2 }
  - id: gate
    metric: { query: err, condition: value < 0.01, samples: 10, interval: 1m }
  - id: old_check
    shell: "true"
"#;
    let head = r#"
version: 1
name: d
providers:
  prom: { kind: prometheus, url: "http://127.0.0.1:9" }
steps:
  - id: deploy
    shell: ./deploy.sh --fast
  - id: gate
    metric: { query: err, condition: value < 0.05, samples: 5, interval: 1m, on_no_data: pass }
  - id: new_check
    shell: "true"
"#;
    let out = Test::new()
        .file("base.yaml", base)
        .file("head.yaml", head)
        .args(&["plan", "head.yaml", "--diff", "base.yaml"])
        .run()
        .success();
    let text = &out.stdout;
    for expected in [
        "gate `gate` loosened: `value < 0.01` -> `value < 0.05`",
        "gate `gate` takes fewer samples: 10 -> 5",
        "gate `gate` now passes when there is no data",
        "approval `approve` was dropped",
        "step `deploy` no longer has a rollback",
        "Steps added:\n- new_check",
        "Steps removed:\n- approve\n- old_check",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let same = Test::new()
        .file("base.yaml", base)
        .args(&[
            "plan",
            "base.yaml",
            "--diff",
            "base.yaml",
            "--format",
            "markdown",
        ])
        .run()
        .success();
    assert!(
        same.stdout.contains("No change to the plan."),
        "{}",
        same.stdout
    );
}

/// Without its required params a plan still renders: each missing one is a
/// `<params.NAME>` symbol, templates that need its value (a duration, a
/// sample count) wait for the run instead of failing pre-flight, and a
/// `when` that reads one says it depends on it.
#[test]
fn plan_without_required_params_shows_symbols_and_waits_for_them() {
    let runbook = r#"
version: 1
name: missing
params:
  revision: { type: string, required: true }
  soak: { type: string, required: true }
  samples: { type: integer, required: true }
providers:
  prom: { kind: prometheus, url: "http://127.0.0.1:9" }
steps:
  - id: deploy
    shell: ./deploy.sh {{ params.revision }}
  - id: gate
    when: params.revision != "hotfix"
    metric:
      query: errors{rev="{{ params.revision }}"}
      condition: value < 0.01
      interval: "{{ params.soak }}"
      samples: "{{ params.samples }}"
"#;
    let out = Test::new()
        .file("m.yaml", runbook)
        .args(&["plan", "m.yaml"])
        .run()
        .success();
    for needle in [
        "Not given: revision (shown as <params.revision>), soak (shown as <params.soak>), samples (shown as <params.samples>)",
        "$ ./deploy.sh '<params.revision>'",
        "when params.revision != \"hotfix\" (depends on params.revision, not given: decided at run time)",
        "<params.samples> sample(s) every <params.soak>",
    ] {
        assert!(out.stdout.contains(needle), "missing {needle:?} in:\n{}", out.stdout);
    }
    let json = common::plan_json(Test::new().file("m.yaml", runbook), "m.yaml", &[]);
    let gate = &json["steps"][1];
    assert_eq!(gate["when_not_given"], serde_json::json!(["revision"]));
    assert_eq!(gate["when_value"], serde_json::Value::Null);
    assert_eq!(gate["gate"]["interval"]["seconds"], serde_json::Value::Null);
    assert_eq!(gate["gate"]["interval"]["text"], "<params.soak>");
    assert_eq!(json["params"][0]["source"], "not_given");
    // A wrong value that is given is still an error.
    Test::new()
        .file("m.yaml", runbook)
        .args(&["plan", "m.yaml", "--param", "soak=soon"])
        .run()
        .code(2)
        .stderr_contains("error[E025]: step `gate`: interval: `{{ params.soak }}` gives `soon`");
}
