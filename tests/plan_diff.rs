#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! `plan --diff --fail-on-risk`: a corpus of loosenings a reviewer must see.
//!
//! Each case edits tests/fixtures/diff/base.yaml in one place (a table of
//! text replacements), and asserts the risk line the diff reports and exit 1
//! under `--fail-on-risk`. Changes that tighten or only edit are not risks:
//! they exit 0 and say so in their own sections.

mod common;

use common::{read_repo_file, Test};

const BASE: &str = "tests/fixtures/diff/base.yaml";

/// (case, text in base.yaml, replaced by, risk line expected).
const LOOSENINGS: &[(&str, &str, &str, &str)] = &[
    (
        "param default loosens two gates",
        "max_5xx: { type: number, default: 0.003 }",
        "max_5xx: { type: number, default: 0.03 }",
        "gate `gate_errors` loosened through param `max_5xx` `0.003` -> `0.03`: `value <= 0.003` -> `value <= 0.03` (10x looser)",
    ),
    (
        "param default loosens a computed bound",
        "max_5xx: { type: number, default: 0.003 }",
        "max_5xx: { type: number, default: 0.03 }",
        "gate `gate_latency` loosened through param `max_5xx` `0.003` -> `0.03`: `value <= 0.003 * 100` -> `value <= 0.03 * 100` (10x looser)",
    ),
    (
        "gate condition loosened",
        "condition: value <= params.max_5xx\n",
        "condition: value <= 0.01\n",
        "gate `gate_errors` loosened: `value <= 0.003` -> `value <= 0.01` (3.3333x looser)",
    ),
    (
        "lock removed",
        "lock: \"rollout-{{ params.revision }}\"\n",
        "",
        "lock `rollout-<params.revision>` was removed: two runs of this runbook can now act at once",
    ),
    (
        "approver added",
        "approvers: [engineering-manager, devops-lead]",
        "approvers: [engineering-manager, devops-lead, intern]",
        "approval `approve` may now be given by `intern`: more people can approve the rollout",
    ),
    (
        "approvers list removed",
        "      approvers: [engineering-manager, devops-lead]\n",
        "",
        "approval `approve` may now be given by anyone",
    ),
    (
        "required lowered",
        "required: 2",
        "required: 1",
        "approval `approve` needs fewer approvers: 2 -> 1",
    ),
    (
        "self approval allowed",
        "      timeout: 24h\n",
        "      timeout: 24h\n      allow_self_approval: true\n",
        "approval `approve` now allows self approval",
    ),
    (
        "approval dropped",
        "  - id: approve\n    approval:\n      approvers: [engineering-manager, devops-lead]\n      required: 2\n      timeout: 24h\n",
        "",
        "approval `approve` was dropped",
    ),
    (
        "gate made a dry run",
        "      failure_limit: 0\n",
        "      failure_limit: 0\n      dry_run: true\n",
        "gate `gate_errors` is now a dry run",
    ),
    (
        "more provider errors tolerated",
        "      failure_limit: 0\n",
        "      failure_limit: 0\n      error_limit: 10\n",
        "gate `gate_errors` tolerates more provider errors in a row: 4 -> 10",
    ),
    (
        "inconclusive passes instead of pausing",
        "      on_inconclusive: pause\n",
        "      on_inconclusive: pass\n",
        "gate `guard` on_inconclusive: pause -> pass",
    ),
    (
        "background guard made a foreground gate",
        "      background: { until: canary_latency }\n",
        "",
        "gate `guard` no longer runs in the background",
    ),
    (
        "failure condition changed",
        "failure_condition: value > 0.05",
        "failure_condition: value > 0.5",
        "gate `guard` failure_condition changed: `value > 0.05` -> `value > 0.5`",
    ),
    (
        "comparison allows a larger change",
        "allowed_change: 0.1,",
        "allowed_change: 0.3,",
        "gate `canary_latency` allows a larger change: 0.1 -> 0.3",
    ),
    (
        "comparison needs more confidence",
        "confidence: 0.98 }",
        "confidence: 0.999 }",
        "gate `canary_latency` needs more confidence to fail: 0.98 -> 0.999",
    ),
    (
        "step-down gate loosened",
        "condition: value <= 0.01, samples: 1",
        "condition: value <= 0.05, samples: 1",
        "rollback gate 2 of `full` loosened: `value <= 0.01` -> `value <= 0.05` (5x looser)",
    ),
    (
        "step-down gate removed",
        "      - metric: { query: \"rate(http_5xx[1m])\", condition: value <= 0.01, samples: 1, interval: 1s }\n",
        "",
        "rollback of `full` has fewer gates: 1 -> 0",
    ),
    (
        "retries added to a gate",
        "      failure_limit: 0\n",
        "      failure_limit: 0\n    retry: { attempts: 3, delay: 1m }\n",
        "gate `gate_errors` is retried after a breach: retry none -> 3 attempts, 1m apart",
    ),
    (
        "failure limit raised",
        "failure_limit: 0",
        "failure_limit: 3",
        "gate `gate_errors` tolerates more failed samples: 0 -> 3",
    ),
    (
        "fewer samples",
        "      samples: 12\n      interval: 4h\n      failure_limit: 0",
        "      samples: 3\n      interval: 4h\n      failure_limit: 0",
        "gate `gate_errors` takes fewer samples: 12 -> 3",
    ),
    (
        "shorter interval",
        "      samples: 12\n      interval: 4h\n      failure_limit: 0",
        "      samples: 12\n      interval: 1m\n      failure_limit: 0",
        "gate `gate_errors` samples more often: every 4h -> every 1m",
    ),
    (
        "no data passes",
        "      failure_limit: 0\n",
        "      failure_limit: 0\n      on_no_data: pass\n",
        "gate `gate_errors` now passes when there is no data",
    ),
    (
        "gate removed",
        "  - id: gate_latency\n    metric:\n      query: p95_latency\n      condition: value <= params.max_5xx * 100\n      samples: 12\n      interval: 4h\n",
        "",
        "gate `gate_latency` was removed",
    ),
    (
        "gate may be skipped",
        "  - id: gate_latency\n    metric:",
        "  - id: gate_latency\n    when: params.revision != \"hotfix\"\n    metric:",
        "metric `gate_latency` may now be skipped: when params.revision != \"hotfix\"",
    ),
    (
        "gate failure no longer unwinds",
        "  - id: gate_latency\n    metric:",
        "  - id: gate_latency\n    continue_on_failure: true\n    metric:",
        "a failure of `gate_latency` no longer unwinds the run",
    ),
    (
        "rollback removed",
        "    rollback: { shell: ./undo.sh }\n",
        "",
        "step `deploy` no longer has a rollback",
    ),
    (
        "flag restore disabled",
        "    flag: { name: isolation, value: 10 }\n",
        "    flag: { name: isolation, value: 10 }\n    rollback: false\n",
        "flag change `canary` is no longer restored on failure",
    ),
    (
        "timeout removed",
        "    timeout: 10m\n",
        "",
        "step `deploy` no longer has a timeout: a hang now waits forever",
    ),
    (
        "on_failure removed",
        "on_failure:\n  - id: page\n    shell: ./page-oncall.sh\n",
        "",
        "on_failure step `page` was removed",
    ),
    (
        "finally removed",
        "finally:\n  - id: notify\n    shell: ./notify.sh\n",
        "",
        "finally step `notify` was removed",
    ),
    (
        "a condition that always passes",
        "condition: value <= params.max_5xx\n",
        "condition: value <= params.max_5xx or true\n",
        "gate `gate_errors` condition changed: `value <= 0.003` -> `value <= 0.003 or true`",
    ),
    (
        "gate replaced by a shell step",
        "  - id: gate_latency\n    metric:\n      query: p95_latency\n      condition: value <= params.max_5xx * 100\n      samples: 12\n      interval: 4h\n",
        "  - id: gate_latency\n    shell: \"true\"\n",
        "gate `gate_latency` was replaced by a shell step",
    ),
    (
        "full rollout no longer waits for the gates",
        "  - id: full\n    flag:",
        "  - id: full\n    needs: [canary]\n    flag:",
        "`full` no longer wait(s) for gate `gate_errors`: they can now run before it has passed",
    ),
    (
        "gate moved before the change it checks",
        "  - id: gate_errors\n    metric:",
        "  - id: gate_errors\n    needs: [approve]\n    metric:",
        "gate `gate_errors` no longer runs after `canary`: it may measure before that change is live",
    ),
    (
        "gate reads another query",
        "query: p95_latency",
        "query: vector(0)",
        "gate `gate_latency` reads another metric: `p95_latency` from `prom` -> `vector(0)` from `prom`",
    ),
    (
        "metrics provider points elsewhere",
        "url: \"http://127.0.0.1:9\"",
        "url: \"http://127.0.0.2:9\"",
        "provider `prom` changed: prometheus `http://127.0.0.1:9` -> prometheus `http://127.0.0.2:9`",
    ),
    (
        "gate evaluated at a fixed past time",
        "      failure_limit: 0\n",
        "      failure_limit: 0\n      at: \"2020-01-01T00:00:00Z\"\n",
        "gate `gate_errors` is evaluated at a fixed time: `2020-01-01T00:00:00Z`",
    ),
    (
        "the page on failure may be skipped",
        "  - id: page\n    shell",
        "  - id: page\n    when: \"false\"\n    shell",
        "on_failure step `page` may now be skipped: when false",
    ),
    (
        "a secret param feeding gates changed",
        "max_5xx: { type: number, default: 0.003 }",
        "max_5xx: { type: number, default: 0.03, secret: true }",
        "secret param `max_5xx` changed; it feeds `gate_errors`, `gate_latency`",
    ),
    (
        "concurrency raised",
        "concurrency: 1",
        "concurrency: 4",
        "concurrency raised: 1 -> 4",
    ),
];

/// (case, text in base.yaml, replaced by, line expected) for changes that
/// are not risks: `--fail-on-risk` exits 0.
const SAFE: &[(&str, &str, &str, &str)] = &[
    (
        "gate tightened",
        "max_5xx: { type: number, default: 0.003 }",
        "max_5xx: { type: number, default: 0.001 }",
        "- max_5xx: 0.003 -> 0.001 (feeds gate_errors, gate_latency)",
    ),
    (
        "more samples",
        "      samples: 12\n      interval: 4h\n      failure_limit: 0",
        "      samples: 24\n      interval: 4h\n      failure_limit: 0",
        "- gate_errors\n",
    ),
    (
        "approval timeout shortened",
        "timeout: 24h",
        "timeout: 12h",
        "- approve\n  - timeout: 1d -> 12h",
    ),
    (
        "lock waits in line instead of refusing",
        "lock: \"rollout-{{ params.revision }}\"\n",
        "lock: { key: \"rollout-{{ params.revision }}\", wait: 30m }\n",
        "Settings changed:\n- lock wait: none (refused at once) -> 30m",
    ),
];

fn head(from: &str, to: &str) -> String {
    let base = read_repo_file(BASE);
    assert_eq!(
        base.matches(from).count(),
        1,
        "{from:?} must occur once in {BASE}"
    );
    base.replacen(from, to, 1)
}

fn diff(head: &str, code: i32) -> String {
    Test::new()
        .repo_file(BASE)
        .file("head.yaml", head)
        .args(&["plan", "head.yaml", "--diff", BASE, "--fail-on-risk"])
        .run()
        .code(code)
        .stdout
}

#[test]
fn every_loosening_is_a_risk_and_fails_the_check() {
    let mut missing = Vec::new();
    for (case, from, to, risk) in LOOSENINGS {
        let out = diff(&head(from, to), 1);
        let risks = out.split("\n\n").nth(1).unwrap_or_default();
        if !risks.starts_with("Needs a careful look")
            || !risks
                .lines()
                .any(|l| l.starts_with("- ! ") && l.contains(risk))
        {
            missing.push(format!(
                "{case}: no risk line containing {risk:?} in:\n{out}"
            ));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n\n"));
}

#[test]
fn tightening_and_plain_edits_pass_the_check() {
    for (case, from, to, line) in SAFE {
        let out = diff(&head(from, to), 0);
        assert!(!out.contains("Needs a careful look"), "{case}:\n{out}");
        assert!(out.contains(line), "{case}: missing {line:?} in:\n{out}");
    }
    let same = diff(&read_repo_file(BASE), 0);
    assert!(same.contains("No change to the plan."), "{same}");
}

/// Without `--fail-on-risk` a risky diff is a report, not a failure.
#[test]
fn risks_exit_0_without_fail_on_risk() {
    let (_, from, to, _) = LOOSENINGS[0];
    Test::new()
        .repo_file(BASE)
        .file("head.yaml", &head(from, to))
        .args(&["plan", "head.yaml", "--diff", BASE])
        .run()
        .success()
        .stdout_contains("Needs a careful look (2 risk(s))");
}

/// Risks first in Markdown too, with code spans that survive backticks in
/// the values they quote (found by the review: nested backticks broke them).
#[test]
fn markdown_risks_keep_code_spans_whole() {
    let out = Test::new()
        .repo_file(BASE)
        .file(
            "head.yaml",
            &head(
                "approvers: [engineering-manager, devops-lead]",
                "approvers: [engineering-manager, devops-lead, \"in`tern\"]",
            ),
        )
        .args(&[
            "plan",
            "head.yaml",
            "--diff",
            BASE,
            "--format",
            "markdown",
            "--fail-on-risk",
        ])
        .run()
        .code(1)
        .stdout;
    assert!(
        out.contains("- ⚠️ approval `approve` may now be given by `in'tern`: more people can approve the rollout"),
        "{out}"
    );
    let json = Test::new()
        .repo_file(BASE)
        .file("head.yaml", &head(LOOSENINGS[0].1, LOOSENINGS[0].2))
        .args(&["plan", "head.yaml", "--diff", BASE, "--format", "json"])
        .run()
        .success()
        .stdout;
    let json: serde_json::Value = serde_json::from_str(&json).expect("diff JSON");
    assert_eq!(json["risks"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["params"][0]["name"], "max_5xx");
    assert_eq!(
        json["params"][0]["feeds"],
        serde_json::json!(["gate_errors", "gate_latency"])
    );
    assert!(json["risks"][0]["why"]
        .as_str()
        .is_some_and(|w| !w.is_empty()));
}

/// Found by review: text outside code spans in a pull-request comment
/// mentioned users, linked URLs and lost backslashes.
#[test]
fn markdown_text_neither_mentions_nor_links_nor_loses_backslashes() {
    let runbook = r#"
version: 1
name: md
description: "hi @octocat, see www.evil.test and https://evil.test/x"
steps:
  - id: s1
    stage: 'st\|x \'
    name: "nm `code` **b** <img src=x>"
    shell: "true"
"#;
    let out = Test::new()
        .file("md.yaml", runbook)
        .args(&["plan", "md.yaml", "--format", "markdown"])
        .run()
        .success()
        .stdout;
    for needle in [
        "hi @\u{200B}octocat, see www\u{200B}.evil.test and https:\u{200B}//evil.test/x",
        "- **st\\\\\\|x \\\\**: `s1`",
        "nm \\`code\\` \\*\\*b\\*\\* &lt;img src=x&gt;",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

/// `--fail-on-risk` only means something with `--diff`.
#[test]
fn fail_on_risk_needs_diff() {
    Test::new()
        .repo_file(BASE)
        .args(&["plan", BASE, "--fail-on-risk"])
        .run()
        .code(2)
        .stderr_contains("--diff");
}
