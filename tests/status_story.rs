#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // a test fails loudly
//! What `status`, the report and the live views tell of a run (issue 13,
//! parts 3 and 4): a waiting approval with who may answer and the exact
//! command that answers it; no prompt offer to a starter who may not
//! answer; params (secret ones masked), outputs, errors, attempts with
//! times and decisions in the record; a resumed run's duration across its
//! processes; tolerated failures in the last line; steps that never started
//! in the summary; a sampling gate's next sample time.
//!
//! Nothing waits on a fixed sleep: the tests poll `status` (bounded) for
//! the state they act on.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::{poll_until, report, status_json, step, Test};
use serde_json::Value as Json;

const RB: &str = "rb.yaml";

/// `runbook status RUN --state-dir st --format json` in `dir`, parsed.
fn status_in(dir: &Path, run: &str) -> Json {
    let out = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(["status", run, "--state-dir", "st", "--format", "json"])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Json::Null)
}

/// `runbook status [RUN] --state-dir st` (text) in `dir`.
fn status_text(dir: &Path, run: Option<&str>) -> String {
    let mut args = vec!["status"];
    args.extend(run);
    args.extend(["--state-dir", "st"]);
    let out = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(&args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `status` until `ok` holds of it; fails with the last one seen.
fn wait_status(dir: &Path, run: &str, ok: impl Fn(&Json) -> bool) -> Json {
    let mut last = Json::Null;
    let found = poll_until(Duration::from_secs(30), || {
        last = status_in(dir, run);
        ok(&last)
    });
    assert!(found, "status never got there: {last:#}");
    last
}

/// Runs a command line `status` printed, with `runbook` as this binary.
fn run_printed(dir: &Path, command: &str) -> std::process::Output {
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words[0], "runbook", "{command}");
    Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(&words[1..])
        .current_dir(dir)
        .env_remove("RUNBOOK_STATE_DIR")
        .output()
        .unwrap()
}

const WAITING: &str = r#"
version: 1
name: story
steps:
  - id: build
    name: Build the image
    stage: prep
    shell: echo built
  - id: gate
    name: Promote to 50%
    stage: canary
    approval:
      message: Canary healthy?
      approvers: [dave, bob]
      required: 1
      timeout: 1h
  - id: after
    shell: echo after
"#;

#[test]
fn status_of_a_waiting_approval_shows_who_may_answer_and_the_command_that_does() {
    let mut running = Test::new()
        .file(RB, WAITING)
        .args(&[
            "run",
            RB,
            "--state-dir",
            "st",
            "--run-id",
            "w1",
            "--as",
            "dave",
        ])
        .spawn();
    running.wait_for_file(
        "st/runs/w1/approvals/gate/waiting.json",
        Duration::from_secs(30),
    );
    let dir = running.path().to_path_buf();
    let s = wait_status(&dir, "w1", |s| {
        s["waiting"].as_array().is_some_and(|w| !w.is_empty())
    });
    let w = &s["waiting"][0];
    assert_eq!(w["kind"], "approval", "{w:#}");
    assert_eq!(w["step"], "gate");
    assert_eq!(w["name"], "Promote to 50%");
    assert_eq!(w["stage"], "canary");
    assert_eq!(w["approvers"], serde_json::json!(["dave", "bob"]));
    // dave started it: only bob may approve.
    assert_eq!(w["may_approve"], serde_json::json!(["bob"]));
    assert_eq!(w["required"], 1);
    assert_eq!(w["approved_by"], serde_json::json!([]));
    assert!(w["waited_ms"].as_u64().is_some(), "{w:#}");
    let deadline = humantime::parse_rfc3339_weak(w["deadline"].as_str().unwrap()).unwrap();
    let left = deadline.duration_since(SystemTime::now()).unwrap();
    assert!(
        left > Duration::from_secs(3500) && left <= Duration::from_secs(3600),
        "{left:?}"
    );
    let abs = std::fs::canonicalize(dir.join("st")).unwrap();
    let approve = w["approve_command"].as_str().unwrap();
    assert_eq!(
        approve,
        format!(
            "runbook approve w1 gate --as bob --state-dir {}",
            abs.display()
        )
    );
    assert_eq!(
        w["reject_command"].as_str().unwrap(),
        format!(
            "runbook approve w1 gate --as bob --reject --state-dir {}",
            abs.display()
        )
    );

    // The list and the run, as text: the same facts.
    for text in [status_text(&dir, None), status_text(&dir, Some("w1"))] {
        for needle in [
            "waiting: gate (Promote to 50%, stage canary)",
            "may approve: bob (0 of 1 required)",
            "times out at ",
            &format!("approve: {approve}"),
        ] {
            assert!(text.contains(needle), "no {needle:?} in:\n{text}");
        }
    }
    assert!(status_text(&dir, Some("w1")).contains("Build the image, stage prep"));

    // The command, exactly as printed, from another directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = run_printed(elsewhere.path(), approve);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = running.wait().success();
    let r = status_json(out, "st", "w1").0;
    assert_eq!(r["status"], "succeeded");
    assert_eq!(
        r["waiting"],
        serde_json::json!([]),
        "an ended run waits for nothing"
    );
    assert_eq!(
        step(&r, "gate")["outputs"]["approved_by"],
        serde_json::json!(["bob"])
    );
}

#[test]
fn a_starter_who_may_not_approve_gets_no_prompt_on_a_terminal_but_who_can_and_the_command() {
    if Command::new("script").arg("--version").output().is_err() {
        panic!("`script` (util-linux) is needed to drive a pseudo-terminal");
    }
    let t = Test::new().file(
        RB,
        "version: 1\nname: p\nsteps:\n  - id: gate\n    approval: { approvers: [bob], timeout: 1s }\n  - id: after\n    shell: echo after\n",
    );
    let bin = env!("CARGO_BIN_EXE_runbook");
    // `script` gives the run a pseudo-terminal for stdin and stdout.
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("{bin} run {RB} --state-dir st --run-id p1 --as dave"),
            "/dev/null",
        ])
        .current_dir(t.path())
        .env_remove("CI")
        .env_remove("RUNBOOK_STATE_DIR")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let seen = stdout.replace('\r', "");
    assert!(
        seen.contains("not asking you: dave is not an approver"),
        "{seen}"
    );
    assert!(
        seen.contains("approve: runbook approve p1 gate --as bob"),
        "who can answer and how: {seen}"
    );
    assert!(
        !seen.contains("approve as dave?"),
        "offered to answer: {seen}"
    );
    // The summary at the end lists the step that never started.
    let row = seen
        .lines()
        .find(|l| l.starts_with("after "))
        .unwrap_or_else(|| panic!("no summary row for `after`: {seen}"));
    assert!(row.contains("not_started"), "{row}");
}

const STORY: &str = r#"
version: 1
name: story
params:
  env: { type: string, default: staging }
  token: { type: string, secret: true, required: true }
steps:
  - id: build
    shell: echo "image=app:7" >> "$RUNBOOK_OUTPUT"
    rollback: { shell: "true" }
  - id: gate
    approval: { allow_self_approval: true }
  - id: deploy
    retry: { attempts: 2, delay: 10ms }
    shell: echo "deploy broke" >&2; exit 4
  - id: never
    shell: "true"
"#;

#[test]
fn the_report_and_status_tell_params_outputs_errors_attempts_decisions_and_the_failed_step() {
    let out = Test::new()
        .file(RB, STORY)
        .args(&[
            "run",
            RB,
            "--state-dir",
            "st",
            "--run-id",
            "s1",
            "--report",
            "report.json",
            "--param",
            "token=hunter2hunter2",
            "--approve",
            "gate",
            "--as",
            "erin",
        ])
        .run()
        .code(1);
    let r = report(&out);
    let (s, out) = status_json(out, "st", "s1");
    for (what, v) in [("report", &r), ("status", &s)] {
        assert_eq!(v["params"]["env"], "staging", "{what}: {v:#}");
        assert_eq!(v["params"]["token"], "***", "{what}");
        assert!(
            v["fingerprint"].as_str().unwrap().starts_with("sha256:"),
            "{what}"
        );
        assert_eq!(v["failed_step"], "deploy", "{what}");
        assert!(
            v["error"].as_str().unwrap().contains("exit code 4"),
            "{what}: {v:#}"
        );
        assert_eq!(v["processes"], 1, "{what}");
        assert_eq!(step(v, "build")["outputs"]["image"], "app:7", "{what}");
        let deploy = step(v, "deploy");
        assert_eq!(deploy["attempts"], 2, "{what}");
        let log = deploy["attempt_log"].as_array().unwrap();
        assert_eq!(log.len(), 2, "{what}: {deploy:#}");
        for (i, a) in log.iter().enumerate() {
            assert_eq!(a["attempt"], i + 1, "{what}");
            assert_eq!(a["outcome"], "failed", "{what}");
            let start = humantime::parse_rfc3339_weak(a["started_at"].as_str().unwrap()).unwrap();
            let end = humantime::parse_rfc3339_weak(a["finished_at"].as_str().unwrap()).unwrap();
            assert!(end >= start, "{what}: {a:#}");
            assert!(
                a["error"].as_str().unwrap().contains("exit code 4"),
                "{what}"
            );
        }
        let d = &step(v, "gate")["approvals"][0];
        assert_eq!(d["by"], "erin", "{what}");
        assert_eq!(d["approved"], true, "{what}");
        assert!(
            d["at"].as_str().is_some_and(|t| t.starts_with("20")),
            "{what}"
        );
        assert_eq!(step(v, "never")["status"], "not_started", "{what}");
        assert_eq!(
            step(v, "build")["rollback"]["status"],
            "succeeded",
            "{what}"
        );
        assert!(
            step(v, "build")["rollback"]["finished_at"].is_string(),
            "{what}"
        );
    }
    let text = status_text(out.path(), Some("s1"));
    for needle in [
        "params env=staging token=***",
        "failed step deploy: exit code 4",
        "attempt 1 ",
        "attempt 2 ",
        "approved by erin at ",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn a_resumed_run_counts_its_processes_and_its_whole_duration() {
    let yaml = "version: 1\nname: r\nsteps:\n  - id: slow\n    shell: sleep 0.6\n  - id: next\n    shell: \"true\"\n";
    let crashed = Test::new()
        .file(RB, yaml)
        .args(&["run", RB, "--state-dir", "st", "--run-id", "d1"])
        // After `slow` finished: run_started, step_started, step_finished.
        .env("RUNBOOK_CRASH_AT", "after:3")
        .run();
    assert!(crashed.killed(), "{}\n{}", crashed.stdout, crashed.stderr);
    let out = crashed
        .again()
        .args(&[
            "resume",
            "d1",
            "--state-dir",
            "st",
            "--report",
            "report.json",
        ])
        .run()
        .success();
    let r = report(&out);
    let (s, _) = status_json(out, "st", "d1");
    for (what, v) in [("report", &r), ("status", &s)] {
        assert_eq!(v["processes"], 2, "{what}: {v:#}");
        let total = v["total_duration_ms"].as_u64().unwrap();
        let last = v["duration_ms"].as_u64().unwrap();
        // The first process slept 0.6 s; the resumed one only ran `next`.
        assert!(total >= 600, "{what}: total {total}");
        assert!(
            last < 600 && total > last,
            "{what}: total {total}, last {last}"
        );
        assert_eq!(step(v, "slow")["attempts"], 1, "{what}: never run again");
    }
}

#[test]
fn the_last_line_counts_tolerated_failures() {
    // (a's script, b's script, the last line); both continue_on_failure
    let cases: &[(&str, &str, &str)] = &[
        (
            "exit 1",
            "true",
            "run succeeded (1 step failed, tolerated: a) in ",
        ),
        (
            "exit 1",
            "exit 2",
            "run succeeded (2 steps failed, tolerated: a, b) in ",
        ),
        ("true", "true", "run succeeded in "),
    ];
    for (a, b, line) in cases {
        let yaml = format!(
            "version: 1\nname: t\nsteps:\n  - id: a\n    continue_on_failure: true\n    shell: {a}\n  - id: b\n    continue_on_failure: true\n    shell: {b}\n  - id: c\n    shell: \"true\"\n"
        );
        Test::new()
            .file(RB, &yaml)
            .args(&["run", RB, "--state-dir", "st"])
            .run()
            .success()
            .stdout_contains(line);
    }
}

#[test]
fn status_shows_when_a_sampling_gate_takes_its_next_sample() {
    let yaml = "version: 1\nname: g\nproviders:\n  sh: { kind: command }\nsteps:\n  - id: soak\n    name: Soak\n    stage: canary\n    metric: { provider: sh, query: echo 0.001, condition: value < 0.01, interval: 4h, samples: 3 }\n";
    let running = Test::new()
        .file(RB, yaml)
        .args(&["run", RB, "--state-dir", "st", "--run-id", "g1"])
        .spawn();
    let dir = running.path().to_path_buf();
    let s = wait_status(&dir, "g1", |s| {
        s["steps"][0]["gate"]["next_sample_at"].is_string()
    });
    let gate = &s["steps"][0]["gate"];
    assert_eq!(gate["taken"], 1, "{gate:#}");
    assert_eq!(gate["samples"], 3);
    assert_eq!(gate["interval_ms"], 4 * 3600 * 1000);
    let next = humantime::parse_rfc3339_weak(gate["next_sample_at"].as_str().unwrap()).unwrap();
    let wait = next.duration_since(SystemTime::now()).unwrap();
    assert!(wait > Duration::from_secs(4 * 3600 - 60), "{wait:?}");
    let text = status_text(&dir, Some("g1"));
    let row = text.lines().find(|l| l.starts_with("soak ")).unwrap_or("");
    assert!(
        row.contains("sample 1/3: value 0.001 (pass) [value < 0.01]; next sample in 4h, at "),
        "{text}"
    );
    assert!(row.contains("(in 3h59m"), "{text}");
    assert!(text.contains("Soak, stage canary"), "{text}");
    drop(running);
}
