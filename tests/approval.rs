#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! `approval:` steps end to end: a run waits in the background while a second
//! `runbook` process answers it with `runbook approve`.
//!
//! Nothing here depends on timing: the tests wait (bounded) for the run to
//! write `approvals/<step>/waiting.json`, or for `runbook status` to show a
//! state, before acting. The only timeouts are approval timeouts the tests
//! set on purpose, and they are asserted by message, not by duration.

mod common;

use common::log;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{poll_until, report, step, Running, Test};
use serde_json::{json, Value as Json};

const RB: &str = "rb.yaml";
const RUN: &str = "r1";
const WAITING: &str = "st/runs/r1/approvals/gate/waiting.json";

/// A run of `yaml` with id `r1`, state dir `st`, a report, started by `who`.
fn run_as(who: &str, yaml: &str) -> Test {
    Test::new().file(RB, yaml).args(&[
        "run",
        RB,
        "--state-dir",
        "st",
        "--report",
        "report.json",
        "--run-id",
        RUN,
        "--as",
        who,
    ])
}

/// What a second `runbook` process said.
struct Cmd {
    args: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Cmd {
    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\ncommand: runbook {}\nexit code: {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }

    fn code(self, expected: i32) -> Cmd {
        if self.code != Some(expected) {
            self.fail(&format!("expected exit code {expected}"));
        }
        self
    }

    fn stderr_contains(self, needle: &str) -> Cmd {
        if !self.stderr.contains(needle) {
            self.fail(&format!("stderr does not contain {needle:?}"));
        }
        self
    }

    fn stdout_contains(self, needle: &str) -> Cmd {
        if !self.stdout.contains(needle) {
            self.fail(&format!("stdout does not contain {needle:?}"));
        }
        self
    }
}

/// Runs `runbook ARGS` in `dir` (another process, as a second person would),
/// with `st` as the state dir and without the caller's `RUNBOOK_*` variables.
fn runbook_in(dir: &Path, args: &[&str]) -> Cmd {
    runbook_env(dir, args, &[])
}

fn runbook_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Cmd {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbook"));
    cmd.args(args).current_dir(dir);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("RUNBOOK_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("NO_COLOR", "1")
        .env("RUNBOOK_STATE_DIR", dir.join("st"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the runbook binary");
    Cmd {
        args: args.join(" "),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn approve(dir: &Path, who: &str, extra: &[&str]) -> Cmd {
    let mut args = vec!["approve", RUN, "gate", "--as", who];
    args.extend_from_slice(extra);
    runbook_in(dir, &args)
}

/// `runbook status r1 --format json`.
fn status(dir: &Path) -> Json {
    let out = runbook_in(dir, &["status", RUN, "--format", "json"]).code(0);
    serde_json::from_str(&out.stdout).expect("status JSON")
}

fn status_step(status: &Json, id: &str) -> Json {
    status["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no step {id}: {status:#}"))
}

/// Waits (bounded) until `runbook status` shows `gate` waiting on `on`.
fn wait_for_waiting_on(dir: &Path, on: &str) {
    let mut last = Json::Null;
    let ok = poll_until(Duration::from_secs(30), || {
        last = status_step(&status(dir), "gate");
        last["waiting_on"].as_str() == Some(on)
    });
    assert!(ok, "gate never showed waiting on {on:?}; last: {last:#}");
}

fn start(test: Test) -> Running {
    let mut running = test.spawn();
    running.wait_for_file(WAITING, Duration::from_secs(60));
    running
}

const QUORUM: &str = r#"
version: 1
name: approvals
steps:
  - id: before
    shell: echo before >> log
    rollback: { shell: echo undo-before >> log }
  - id: gate
    approval:
      message: Promote the canary to 50%?
      approvers: [alice, bob, carol]
      required: 2
  - id: after
    shell: echo after >> log
"#;

#[test]
fn two_distinct_approvers_reach_quorum_and_the_run_continues() {
    let running = start(run_as("dave", QUORUM));
    let dir = running.path().to_path_buf();
    wait_for_waiting_on(&dir, "approval 0/2; waiting for alice, bob or carol");

    approve(&dir, "alice", &["--comment", "canary looks healthy"])
        .code(0)
        .stdout_contains("alice approved step `gate` of run `r1`");
    wait_for_waiting_on(&dir, "approval 1/2 (alice); waiting for bob or carol");
    // The same person twice is still one approval.
    approve(&dir, "alice", &[]).code(0);
    let s = status_step(&status(&dir), "gate");
    assert_eq!(s["status"], "running", "{s:#}");

    approve(&dir, "bob", &[]).code(0);
    let out = running.wait().success();
    assert_eq!(log(&out), ["before", "after"]);

    let r = report(&out);
    let gate = step(&r, "gate");
    assert_eq!(gate["status"], "succeeded");
    assert_eq!(gate["outputs"]["approved_by"], json!(["alice", "bob"]));
    let approvals = gate["approvals"]
        .as_array()
        .expect("approvals in the report");
    let by: Vec<&str> = approvals.iter().filter_map(|a| a["by"].as_str()).collect();
    assert_eq!(by, ["alice", "alice", "bob"], "{r:#}");
    assert_eq!(approvals[0]["approved"], true);
    assert_eq!(approvals[0]["comment"], "canary looks healthy");
    assert!(approvals[0]["at"].as_str().is_some_and(|a| !a.is_empty()));

    // `runbook status` shows who decided, when, and why.
    let s = status_step(&status(out.path()), "gate");
    assert_eq!(s["approvals"][0]["by"], "alice", "{s:#}");
    assert_eq!(s["approvals"][0]["comment"], "canary looks healthy");
    assert!(s["approvals"][0]["at"]
        .as_str()
        .is_some_and(|a| !a.is_empty()));
    let text = runbook_in(out.path(), &["status", RUN]).code(0);
    assert!(
        text.stdout.contains("approved by alice at ")
            && text.stdout.contains(": canary looks healthy")
            && text.stdout.contains("approved by bob at "),
        "{}",
        text.stdout
    );
}

#[test]
fn a_rejection_fails_the_step_and_unwinds() {
    let running = start(run_as("dave", QUORUM));
    let dir = running.path().to_path_buf();
    approve(&dir, "alice", &[]).code(0);
    approve(
        &dir,
        "bob",
        &["--reject", "--comment", "error rate too high"],
    )
    .code(0)
    .stdout_contains("bob rejected step `gate`");
    let out = running
        .wait()
        .code(1)
        .stdout_contains("rejected by bob: error rate too high");
    assert_eq!(log(&out), ["before", "undo-before"]);
    let r = report(&out);
    assert_eq!(r["status"], "rolled_back");
    assert_eq!(step(&r, "gate")["status"], "failed");
    assert_eq!(step(&r, "after")["status"], "not_started");
    let rejected = step(&r, "gate")["approvals"]
        .as_array()
        .expect("approvals")
        .iter()
        .find(|a| a["by"] == "bob")
        .cloned()
        .expect("bob's decision");
    assert_eq!(rejected["approved"], false);
    let text = runbook_in(out.path(), &["status", RUN]).code(0);
    assert!(
        text.stdout.contains("rejected by bob at ")
            && text.stdout.contains(": error rate too high"),
        "{}",
        text.stdout
    );
}

/// One approval step `gate` that may be tried three times.
/// An approval under a `defaults.retry` (which applies to shell and http
/// steps only; `retry` on the approval itself is invalid).
fn retried_gate(approval: &str) -> String {
    format!(
        "version: 1\nname: approvals\ndefaults:\n  retry: {{ attempts: 3, delay: 10ms }}\nsteps:\n  - id: gate\n    approval: {approval}\n"
    )
}

#[test]
fn a_rejection_is_not_retried() {
    let running = start(run_as("dave", &retried_gate("{ approvers: [bob] }")));
    let dir = running.path().to_path_buf();
    approve(&dir, "bob", &["--reject", "--comment", "not today"]).code(0);
    let out = running
        .wait()
        .code(1)
        .stdout_contains("rejected by bob: not today")
        .stdout_not_contains("attempt 2");
    let gate = step(&report(&out), "gate").clone();
    assert_eq!(gate["attempts"], 1, "{gate:#}");

    // Nor is an approval nobody answered: asking again would only wait again.
    let out = run_as(
        "dave",
        &retried_gate("{ approvers: [bob], timeout: 300ms }"),
    )
    .run()
    .code(1)
    .stdout_contains("approval timed out after 300ms with no approvals")
    .stdout_not_contains("attempt 2");
    assert_eq!(step(&report(&out), "gate")["attempts"], 1);
}

#[test]
fn an_approval_that_nobody_answers_times_out() {
    let out = run_as(
        "dave",
        r#"
version: 1
name: approvals
steps:
  - id: gate
    approval: { approvers: [alice], timeout: 1s }
  - id: gate2
    timeout: 1s
    approval: { message: nobody will answer }
"#,
    )
    .run()
    .code(1)
    .stdout_contains("approval timed out after 1s with no approvals");
    let r = report(&out);
    assert_eq!(step(&r, "gate")["status"], "failed");

    // The attempt's own `timeout` bounds an approval too.
    let out = run_as(
        "dave",
        r#"
version: 1
name: approvals
steps:
  - id: gate
    timeout: 1s
    approval: { message: nobody will answer }
"#,
    )
    .run()
    .code(1)
    .stdout_contains("timed out after 1s");
    assert_eq!(step(&report(&out), "gate")["status"], "failed");
}

#[test]
fn the_starter_cannot_approve_unless_self_approval_is_allowed() {
    let running = start(run_as(
        "alice",
        r#"
version: 1
name: approvals
steps:
  - id: gate
    approval: { approvers: [alice, bob] }
"#,
    ));
    let dir = running.path().to_path_buf();
    wait_for_waiting_on(&dir, "approval 0/1; waiting for bob");
    approve(&dir, "alice", &[]).code(2).stderr_contains(
        "alice started this run and cannot approve step `gate` (allow_self_approval is not set); approvers: bob",
    );
    approve(&dir, "bob", &[]).code(0);
    let out = running.wait().success();
    assert_eq!(
        step(&report(&out), "gate")["outputs"]["approved_by"],
        json!(["bob"])
    );

    // Allowed: the starter's approval counts.
    let running = start(run_as(
        "alice",
        r#"
version: 1
name: approvals
steps:
  - id: gate
    approval: { approvers: [alice, bob], allow_self_approval: true }
"#,
    ));
    approve(running.path(), "alice", &[]).code(0);
    let out = running.wait().success();
    assert_eq!(
        step(&report(&out), "gate")["outputs"]["approved_by"],
        json!(["alice"])
    );
}

#[test]
fn run_approve_counts_only_where_self_approval_is_allowed() {
    let allowed = r#"
version: 1
name: approvals
steps:
  - id: gate
    approval: { approvers: [alice], allow_self_approval: true, timeout: 1m }
  - id: after
    shell: echo after >> log
"#;
    let out = run_as("alice", allowed)
        .args(&["--approve", "gate"])
        .run()
        .success()
        .stdout_contains("gate: approved by alice");
    assert_eq!(log(&out), ["after"]);
    assert_eq!(
        step(&report(&out), "gate")["outputs"]["approved_by"],
        json!(["alice"])
    );

    // Without allow_self_approval, `--approve` by the starter does not count.
    let out = run_as(
        "alice",
        r#"
version: 1
name: approvals
steps:
  - id: gate
    approval: { approvers: [alice, bob], timeout: 1s }
"#,
    )
    .args(&["--approve", "gate"])
    .run()
    .code(1)
    .stdout_contains("--approve gate does not count: alice started this run")
    .stdout_contains("approval timed out after 1s with no approvals");
    assert_eq!(step(&report(&out), "gate")["status"], "failed");
}

#[test]
fn someone_not_listed_cannot_approve_and_is_told_who_can() {
    let running = start(run_as("dave", QUORUM));
    let dir = running.path().to_path_buf();
    approve(&dir, "mallory", &[])
        .code(2)
        .stderr_contains("mallory is not an approver of step `gate`; approvers: alice, bob, carol");
    approve(&dir, "mallory", &["--reject"])
        .code(2)
        .stderr_contains("mallory is not an approver");
    // Identity from $RUNBOOK_USER when --as is absent.
    runbook_env(
        &dir,
        &["approve", RUN, "gate"],
        &[("RUNBOOK_USER", "mallory")],
    )
    .code(2)
    .stderr_contains("mallory is not an approver");
    runbook_env(
        &dir,
        &["approve", RUN, "gate"],
        &[("RUNBOOK_USER", "carol")],
    )
    .code(0);
    approve(&dir, "bob", &[]).code(0);
    let out = running.wait().success();
    assert_eq!(
        step(&report(&out), "gate")["outputs"]["approved_by"],
        json!(["carol", "bob"])
    );
}

#[test]
fn approving_what_is_not_waiting_is_a_usage_error() {
    let mut running = start(run_as(
        "dave",
        r#"
version: 1
name: approvals
steps:
  - id: before
    shell: "true"
  - id: gate
    approval: { approvers: [alice] }
  - id: later
    approval: { approvers: [alice] }
"#,
    ));
    let dir = running.path().to_path_buf();
    runbook_in(&dir, &["approve", "nope", "gate", "--as", "alice"])
        .code(2)
        .stderr_contains("no run `nope`");
    runbook_in(&dir, &["approve", RUN, "later", "--as", "alice"])
        .code(2)
        .stderr_contains(
            "step `later` of run `r1` is not waiting for approval (it is not started)",
        );
    runbook_in(&dir, &["approve", RUN, "before", "--as", "alice"])
        .code(2)
        .stderr_contains("`before` is a shell step, not an approval");
    runbook_in(&dir, &["approve", RUN, "ghost", "--as", "alice"])
        .code(2)
        .stderr_contains("there is no step `ghost`; approval steps: gate, later");

    approve(&dir, "alice", &[]).code(0);
    running.wait_for_file(
        "st/runs/r1/approvals/later/waiting.json",
        Duration::from_secs(60),
    );
    runbook_in(
        &dir,
        &["approve", RUN, "later", "--as", "alice", "--reject"],
    )
    .code(0);
    // Once the run is over nothing is waiting.
    let out = running.wait().code(1);
    runbook_in(out.path(), &["approve", RUN, "gate", "--as", "alice"])
        .code(2)
        .stderr_contains("run `r1` already finished");
}

#[test]
fn approvals_survive_a_crash_and_resume() {
    let running = start(run_as("dave", QUORUM));
    let dir = running.path().to_path_buf();
    approve(&dir, "alice", &["--comment", "first"]).code(0);
    wait_for_waiting_on(&dir, "approval 1/2 (alice); waiting for bob or carol");
    running.signal(libc::SIGKILL);
    let out = running.wait();
    assert!(out.killed(), "{}", out.stderr);

    // Nobody is waiting while the run is down.
    approve(out.path(), "bob", &[])
        .code(2)
        .stderr_contains("run `r1` is not running");

    let mut resumed = out
        .again()
        .args(&[
            "resume",
            RUN,
            "--state-dir",
            "st",
            "--report",
            "report.json",
        ])
        .spawn();
    // The resumed step starts from alice's journaled approval.
    let dir = resumed.path().to_path_buf();
    resumed.wait_for_file(WAITING, Duration::from_secs(60));
    wait_for_waiting_on(&dir, "approval 1/2 (alice); waiting for bob or carol");
    approve(&dir, "bob", &[]).code(0);
    let out = resumed.wait().success();
    assert_eq!(log(&out), ["before", "after"]);
    assert_eq!(
        step(&report(&out), "gate")["outputs"]["approved_by"],
        json!(["alice", "bob"])
    );
}

/// An approval nobody may give fails at once, and says why in plain words.
#[test]
fn an_approval_only_the_starter_could_give_fails_at_once_saying_why() {
    let yaml = "version: 1\nname: a\nsteps:\n  - id: go\n    approval: { approvers: [alice], required: 1, timeout: 1h }\n";
    Test::new()
        .file("a.yaml", yaml)
        .env("RUNBOOK_USER", "alice")
        .args(&["run", "a.yaml"])
        .run()
        .code(1)
        .stdout_contains("this approval can never pass: 1 approval is required but nobody can approve (alice started the run and cannot approve it: allow_self_approval is not set)");
}
