#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! `runbook run` end to end: the real binary on small runbooks whose steps
//! append lines to a file (`log`) in the test's directory, so the tests assert
//! the ORDER of side effects, plus exit codes and `--report` contents.
//!
//! Nothing here depends on how fast the machine is: steps that must overlap
//! wait for each other through files (bounded polling), and wall-clock checks
//! are only generous upper bounds ("well under the 30 s a leaked sleep would
//! take") or lower bounds that a correct engine cannot violate (backoff).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{poll_until, report, step, Output, Test, WAIT_FOR};
use serde_json::{json, Value as Json};

const RB: &str = "rb.yaml";

/// A test that runs `yaml` from `rb.yaml` with its own state dir (`st`) and a
/// report (`report.json`), both inside the test's directory.
fn runbook(yaml: &str) -> Test {
    Test::new()
        .file(RB, yaml)
        .file("wait_for.sh", WAIT_FOR)
        .args(&["run", RB, "--state-dir", "st", "--report", "report.json"])
}

/// The lines of a file in the test directory (none when it does not exist).
fn lines_at(dir: &Path, rel: &str) -> Vec<String> {
    match std::fs::read_to_string(dir.join(rel)) {
        Ok(text) => text.lines().map(str::to_string).collect(),
        Err(_) => Vec::new(),
    }
}

fn lines(out: &Output, rel: &str) -> Vec<String> {
    lines_at(out.path(), rel)
}

fn log(out: &Output) -> Vec<String> {
    lines(out, "log")
}

/// Processes (not zombies) whose process group is `pgid`, from /proc: a
/// zombie nobody reaped yet cannot write files, and `kill -0` would count it.
fn live_group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...; comm may contain spaces and parens.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && !matches!(fields[0], "Z" | "X") {
            out.push(pid);
        }
    }
    out
}

/// Reads a pid a step wrote (`echo $$ > FILE`) and checks its process group
/// is gone (bounded wait: the engine reaps before it reports, but the kernel
/// may take a moment to tear down killed grandchildren).
fn assert_group_gone(dir: &Path, pid_file: &str) {
    let text = std::fs::read_to_string(dir.join(pid_file))
        .unwrap_or_else(|e| panic!("{pid_file} was not written: {e}"));
    let pgid: i32 = text.trim().parse().expect("a pid");
    let gone = poll_until(Duration::from_secs(10), || {
        live_group_members(pgid).is_empty()
    });
    assert!(
        gone,
        "process group {pgid} still has processes: {:?}",
        live_group_members(pgid)
    );
}

// ---------------------------------------------------------------------------
// Unwinding order

#[test]
fn chain_failure_rolls_back_the_failed_step_then_the_rest_in_reverse() {
    let out = runbook(
        r#"
version: 1
name: chain
steps:
  - id: a
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: b
    shell: echo b >> log
    rollback: { shell: echo undo-b >> log }
  - id: c
    shell: |
      echo c >> log
      exit 1
    rollback: { shell: echo undo-c >> log }
  - id: d
    shell: echo d >> log
    rollback: { shell: echo undo-d >> log }
"#,
    )
    .run()
    .code(1);
    assert_eq!(log(&out), ["a", "b", "c", "undo-c", "undo-b", "undo-a"]);
    let r = report(&out);
    assert_eq!(r["status"], "rolled_back");
    assert!(r["run_id"].as_str().is_some_and(|id| !id.is_empty()));
    for (id, status) in [
        ("a", "succeeded"),
        ("b", "succeeded"),
        ("c", "failed"),
        ("d", "not_started"),
    ] {
        assert_eq!(step(&r, id)["status"], status, "{id}");
    }
    for id in ["a", "b", "c"] {
        assert_eq!(
            step(&r, id)["rollback"]["status"],
            "succeeded",
            "{id}: {r:#}"
        );
        assert_eq!(step(&r, id)["rollback"]["attempts"], 1);
    }
    assert!(
        step(&r, "d").get("rollback").is_none(),
        "a step that never started is not rolled back"
    );
}

#[test]
fn diamond_failure_rolls_back_dependents_before_what_they_depend_on() {
    // a -> {b, c} -> d; d fails. b and c run side by side, finishing in
    // either order; their rollbacks run in the plan's unwind order (c, then
    // b, whatever the timing), one at a time, and a's only after both.
    let out = runbook(
        r#"
version: 1
name: diamond
concurrency: 4
steps:
  - id: a
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: b
    needs: [a]
    shell: echo b >> log
    rollback:
      shell: |
        echo undo-b-start >> log
        sleep 0.2
        echo undo-b-end >> log
  - id: c
    needs: [a]
    shell: echo c >> log
    rollback:
      shell: |
        echo undo-c-start >> log
        sleep 0.2
        echo undo-c-end >> log
  - id: d
    needs: [b, c]
    shell: |
      echo d >> log
      exit 1
    rollback: { shell: echo undo-d >> log }
"#,
    )
    .run()
    .code(1);
    let log = log(&out);
    assert_eq!(log[0], "a");
    assert_eq!(log[3], "d");
    assert_eq!(
        log[4..],
        [
            "undo-d",
            "undo-c-start",
            "undo-c-end",
            "undo-b-start",
            "undo-b-end",
            "undo-a",
        ],
        "whole log: {log:#?}"
    );
    let r = report(&out);
    assert_eq!(r["status"], "rolled_back");
    for id in ["a", "b", "c", "d"] {
        assert_eq!(step(&r, id)["rollback"]["status"], "succeeded", "{id}");
    }
}

#[test]
fn failure_cancels_running_siblings_and_rolls_them_back() {
    let t = runbook(
        r#"
version: 1
name: cancel
concurrency: 4
steps:
  - id: a
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: slow
    needs: [a]
    shell: |
      echo $$ > slow.pgid
      echo slow-start >> log
      touch slow-running
      sleep 30
      echo slow-end >> log
    rollback:
      shell: echo undo-slow {{ step.status }} >> log
  - id: fast
    needs: [a]
    shell: |
      bash ./wait_for.sh slow-running
      echo fast-fail >> log
      exit 1
    rollback: { shell: echo undo-fast >> log }
  - id: never
    needs: [slow, fast]
    shell: echo never >> log
    rollback: { shell: echo undo-never >> log }
"#,
    );
    let started = Instant::now();
    let out = t.run().code(1);
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the cancelled step's `sleep 30` held the run"
    );
    assert_eq!(
        log(&out),
        [
            "a",
            "slow-start",
            "fast-fail",
            "undo-fast",
            "undo-slow cancelled",
            "undo-a"
        ]
    );
    let r = report(&out);
    assert_eq!(step(&r, "fast")["status"], "failed");
    assert_eq!(step(&r, "slow")["status"], "cancelled");
    assert_eq!(step(&r, "slow")["rollback"]["status"], "succeeded");
    assert_eq!(step(&r, "never")["status"], "not_started");
    assert!(step(&r, "never").get("rollback").is_none());
    assert_group_gone(out.path(), "slow.pgid");
}

#[test]
fn failing_rollback_exits_3_and_the_other_rollbacks_still_run() {
    let out = runbook(
        r#"
version: 1
name: bad-rollback
steps:
  - id: a
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: b
    shell: echo b >> log
    rollback:
      retry: { attempts: 2, delay: 10ms }
      shell: |
        echo undo-b-attempt >> log
        exit 1
  - id: c
    shell: echo c >> log
    rollback: { shell: echo undo-c >> log }
  - id: d
    shell: exit 1
finally:
  - id: fin
    shell: echo fin >> log
"#,
    )
    .run()
    .code(3);
    assert_eq!(
        log(&out),
        [
            "a",
            "b",
            "c",
            "undo-c",
            "undo-b-attempt",
            "undo-b-attempt",
            "undo-a",
            "fin"
        ]
    );
    let r = report(&out);
    assert_eq!(r["status"], "rollback_failed");
    assert_eq!(step(&r, "b")["rollback"]["status"], "failed");
    assert_eq!(step(&r, "b")["rollback"]["attempts"], 2);
    assert_eq!(step(&r, "a")["rollback"]["status"], "succeeded");
    assert_eq!(step(&r, "c")["rollback"]["status"], "succeeded");
    assert_eq!(step(&r, "d")["status"], "failed");
    assert!(step(&r, "d").get("rollback").is_none(), "d has no rollback");
}

#[test]
fn rollback_body_list_runs_in_order_and_stops_at_the_first_failure() {
    let out = runbook(
        r#"
version: 1
name: stepdown
steps:
  - id: a
    shell: echo a >> log
    rollback:
      - shell: echo a-50 >> log
      - shell: echo a-25 >> log
      - shell: echo a-0 >> log
  - id: b
    shell: echo b >> log
    rollback:
      - shell: echo b-50 >> log
      - shell: |
          echo b-check-failed >> log
          exit 1
      - shell: echo b-0 >> log
  - id: c
    shell: exit 1
"#,
    )
    .run()
    .code(3);
    assert_eq!(
        log(&out),
        ["a", "b", "b-50", "b-check-failed", "a-50", "a-25", "a-0"]
    );
    let r = report(&out);
    assert_eq!(step(&r, "a")["rollback"]["status"], "succeeded");
    assert_eq!(step(&r, "a")["rollback"]["attempts"], 3);
    assert_eq!(step(&r, "b")["rollback"]["status"], "failed");
}

// ---------------------------------------------------------------------------
// Retries and timeouts

/// The body of a step that fails until it has run `n` times, counting its
/// attempts in `count` and stamping each in `times` (nanoseconds).
fn fails_until(n: u32) -> String {
    format!(
        r#"|
      c=$(cat count 2>/dev/null || echo 0)
      c=$((c + 1))
      echo $c > count
      date +%s%N >> times
      [ "$c" -ge {n} ]"#
    )
}

#[test]
fn retry_fails_twice_then_succeeds_with_exponential_backoff() {
    let out = runbook(&format!(
        r#"
version: 1
name: retry
steps:
  - id: flaky
    retry: {{ attempts: 3, delay: 200ms, backoff: exponential }}
    shell: {}
  - id: after
    shell: echo after {{{{ steps.flaky.attempts }}}} >> log
"#,
        fails_until(3)
    ))
    .run()
    .success()
    .stdout_contains("flaky: attempt 1 failed: exit code 1")
    .stdout_contains("retrying in 200ms")
    .stdout_contains("flaky: attempt 2 failed: exit code 1")
    .stdout_contains("retrying in 400ms")
    .stdout_not_contains("attempt 3 failed");
    assert_eq!(lines(&out, "count"), ["3"]);
    assert_eq!(log(&out), ["after 3"]);
    let r = report(&out);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(step(&r, "flaky")["status"], "succeeded");
    assert_eq!(step(&r, "flaky")["attempts"], 3);
    // The delays are lower bounds: an engine that waited less is wrong
    // however loaded the machine is.
    let t: Vec<u128> = lines(&out, "times")
        .iter()
        .map(|l| l.parse().expect("nanoseconds"))
        .collect();
    assert_eq!(t.len(), 3);
    let ms = |d: u128| d / 1_000_000;
    assert!(
        ms(t[1] - t[0]) >= 200,
        "first retry after {}ms",
        ms(t[1] - t[0])
    );
    assert!(
        ms(t[2] - t[1]) >= 400,
        "second retry after {}ms",
        ms(t[2] - t[1])
    );
}

#[test]
fn retry_backoff_is_capped_by_max_delay_and_exhausted_attempts_fail() {
    let out = runbook(&format!(
        r#"
version: 1
name: retry-exhausted
steps:
  - id: flaky
    retry: {{ attempts: 4, delay: 100ms, backoff: exponential, max_delay: 250ms }}
    shell: {}
"#,
        fails_until(99)
    ))
    .run()
    .code(1)
    .stdout_contains("flaky: attempt 1 failed: exit code 1")
    .stdout_contains("retrying in 100ms")
    .stdout_contains("retrying in 200ms")
    .stdout_contains("retrying in 250ms")
    .stdout_contains("flaky: attempt 4 failed");
    assert_eq!(lines(&out, "count"), ["4"]);
    let r = report(&out);
    let flaky = step(&r, "flaky");
    assert_eq!(flaky["status"], "failed");
    assert_eq!(flaky["attempts"], 4);
    assert!(
        flaky["error"]
            .as_str()
            .is_some_and(|e| e.contains("attempt 4 of 4")),
        "{flaky:#}"
    );
}

/// A step's error from the report.
fn error_of(out: &Output, id: &str) -> String {
    step(&report(out), id)["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_template_error_at_run_time_is_not_retried() {
    // `steps.a.outputs.missing` is only known to be missing once `a` ran.
    let out = runbook(
        r#"
version: 1
name: retry-kinds
steps:
  - id: a
    shell: echo a
  - id: b
    needs: [a]
    retry: { attempts: 3, delay: 10ms }
    shell: echo ran >> count; echo {{ steps.a.outputs.missing }}
"#,
    )
    .run()
    .code(1)
    .stdout_contains("b: attempt 1 failed: template error")
    .stdout_not_contains("attempt 2");
    assert!(lines(&out, "count").is_empty(), "the command never ran");
    assert_eq!(step(&report(&out), "b")["attempts"], 1);
    let e = error_of(&out, "b");
    assert!(
        e.contains("not retried: another attempt would fail the same way; attempt 1 of 3"),
        "{e}"
    );
}

#[test]
fn an_exit_code_is_retried_until_attempts_run_out() {
    let out = runbook(
        r#"
version: 1
name: retry-kinds
steps:
  - id: flaky
    retry: { attempts: 3, delay: 10ms }
    shell: echo ran >> count; exit 1
"#,
    )
    .run()
    .code(1)
    .stdout_contains("flaky: attempt 3 failed: exit code 1");
    assert_eq!(lines(&out, "count"), ["ran", "ran", "ran"]);
    assert_eq!(step(&report(&out), "flaky")["attempts"], 3);
    let e = error_of(&out, "flaky");
    assert!(
        e.ends_with("(attempt 3 of 3)") && !e.contains("not retried"),
        "{e}"
    );
}

#[test]
fn a_timed_out_attempt_is_retried() {
    let out = runbook(
        r#"
version: 1
name: retry-kinds
steps:
  - id: slow
    timeout: 200ms
    retry: { attempts: 2, delay: 10ms }
    shell: echo ran >> count; sleep 30
"#,
    )
    .run()
    .code(1);
    assert_eq!(lines(&out, "count"), ["ran", "ran"]);
    assert_eq!(step(&report(&out), "slow")["attempts"], 2);
    let e = error_of(&out, "slow");
    assert!(e.contains("timed out after 200ms"), "{e}");
}

#[test]
fn timeout_kills_the_whole_process_group() {
    // The script leaves a background child, a grandchild that would write
    // after 30 s, and one that ignores SIGTERM (so only SIGKILL stops it).
    let t = runbook(
        r#"
version: 1
name: timeout
steps:
  - id: slow
    timeout: 2s
    shell: |
      echo $$ > pgid
      sleep 30 &
      bash -c 'sleep 30; echo leaked >> leaked' &
      bash -c 'trap "" TERM; sleep 4; echo leaked-despite-term >> leaked' &
      echo started >> log
      wait
    rollback: { shell: echo undo-slow >> log }
"#,
    );
    let started = Instant::now();
    let out = t.run().code(1);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the run took {:?}: something waited for the sleeps",
        started.elapsed()
    );
    assert_eq!(log(&out), ["started", "undo-slow"]);
    let r = report(&out);
    assert_eq!(step(&r, "slow")["status"], "failed");
    assert!(
        step(&r, "slow")["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "{r:#}"
    );
    assert_group_gone(out.path(), "pgid");
    // Longer than the TERM-ignoring grandchild's sleep: had it survived, it
    // would have written by now. (Its sleep outlasts the timeout by 2 s, so
    // a loaded machine that fires the timeout late cannot let it win a race.)
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        !out.path().join("leaked").exists(),
        "a grandchild outlived the timeout: {:?}",
        lines(&out, "leaked")
    );
}

// ---------------------------------------------------------------------------
// Signals

const INTERRUPTIBLE: &str = r#"
version: 1
name: interrupt
steps:
  - id: a
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: b
    shell: |
      echo $$ > b.pgid
      echo b-start >> log
      touch b-running
      sleep 30
      echo b-end >> log
    rollback:
      shell: echo undo-b {{ step.status }} >> log
  - id: c
    shell: echo c >> log
    rollback: { shell: echo undo-c >> log }
on_failure:
  - id: notify
    shell: echo on_failure {{ run.status }} >> log
finally:
  - id: fin
    shell: echo finally {{ run.status }} >> log
"#;

fn interrupt_while_step_2_runs(sig: i32) {
    let mut running = runbook(INTERRUPTIBLE).spawn();
    running.wait_for_file("b-running", Duration::from_secs(60));
    let sent = Instant::now();
    running.signal(sig);
    let out = running.wait().code(130);
    assert!(
        sent.elapsed() < Duration::from_secs(25),
        "the running step was not cancelled"
    );
    assert_eq!(
        log(&out),
        [
            "a",
            "b-start",
            "undo-b cancelled",
            "undo-a",
            "on_failure interrupted",
            "finally interrupted"
        ]
    );
    let r = report(&out);
    assert_eq!(r["status"], "interrupted");
    assert_eq!(step(&r, "a")["status"], "succeeded");
    assert_eq!(step(&r, "a")["rollback"]["status"], "succeeded");
    assert_eq!(step(&r, "b")["status"], "cancelled");
    assert_eq!(step(&r, "b")["rollback"]["status"], "succeeded");
    assert_eq!(step(&r, "c")["status"], "not_started");
    assert!(step(&r, "c").get("rollback").is_none());
    assert_group_gone(out.path(), "b.pgid");
}

#[test]
fn sigint_cancels_the_running_step_and_unwinds() {
    interrupt_while_step_2_runs(libc::SIGINT);
}

#[test]
fn sigterm_cancels_the_running_step_and_unwinds() {
    interrupt_while_step_2_runs(libc::SIGTERM);
}

#[test]
fn second_sigint_stops_at_once_and_kills_the_running_rollback() {
    let mut running = runbook(
        r#"
version: 1
name: impatient
steps:
  - id: a
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: b
    shell: |
      touch b-running
      sleep 30
    rollback:
      shell: |
        echo $$ > undo.pgid
        echo undo-b-start >> log
        touch undo-b-running
        sleep 30
        echo undo-b-end >> log
finally:
  - id: fin
    shell: echo fin >> log
"#,
    )
    .spawn();
    running.wait_for_file("b-running", Duration::from_secs(60));
    running.signal(libc::SIGINT);
    running.wait_for_file("undo-b-running", Duration::from_secs(60));
    let sent = Instant::now();
    running.signal(libc::SIGINT);
    // Stopped with rollbacks owed: unwind_incomplete, exit 3, and the
    // command that finishes it (it used to be a clean `interrupted`, 130).
    let out = running
        .wait()
        .code(3)
        .stdout_contains("second signal: stopping the unwind at once")
        .stderr_contains("rollback of `b` failed: stopped by a second signal")
        .stderr_contains("rollback of `a` did not run")
        .stderr_contains("`runbook rollback ");
    assert!(sent.elapsed() < Duration::from_secs(25));
    assert_eq!(log(&out), ["a", "undo-b-start"]);
    assert_eq!(report(&out)["status"], "unwind_incomplete");
    assert_group_gone(out.path(), "undo.pgid");
}

// ---------------------------------------------------------------------------
// Data between steps

#[test]
fn outputs_stdout_and_exit_code_pass_between_steps() {
    let out = runbook(
        r#"
version: 1
name: outputs
steps:
  - id: build
    shell: |
      echo "version=1.2.3" >> "$RUNBOOK_OUTPUT"
      echo "url=http://example.test/a b" >> "$RUNBOOK_OUTPUT"
      echo "query=a=b&c=d" >> "$RUNBOOK_OUTPUT"
      echo "  hello world  "
  - id: use
    env:
      VERSION: "{{ steps.build.outputs.version }}"
    shell: |
      echo version {{ steps.build.outputs.version }} >> log
      echo url {{ steps.build.outputs.url }} >> log
      echo query {{ steps.build.outputs.query }} >> log
      echo stdout={{ steps.build.stdout }} >> log
      echo exit {{ steps.build.exit_code }} >> log
      echo status {{ steps.build.status }} >> log
      echo env "$VERSION" >> log
  - id: gated
    when: steps.build.outputs.version == "1.2.3"
    shell: echo gated ran >> log
"#,
    )
    .run()
    .success();
    assert_eq!(
        log(&out),
        [
            "version 1.2.3",
            "url http://example.test/a b",
            "query a=b&c=d",
            "stdout=hello world",
            "exit 0",
            "status succeeded",
            "env 1.2.3",
            "gated ran"
        ]
    );
    let r = report(&out);
    assert_eq!(
        step(&r, "build")["outputs"],
        json!({ "version": "1.2.3", "url": "http://example.test/a b", "query": "a=b&c=d" })
    );
}

/// A failed step's outputs, stdout and exit code should stay readable: by
/// later steps when it had `continue_on_failure` (`exit_code` is otherwise
/// always 0), and by its own rollback (`step.outputs`), which must know what
/// the step did before failing.
#[test]
fn failed_step_keeps_its_outputs_and_exit_code() {
    let out = runbook(
        r#"
version: 1
name: failed-outputs
steps:
  - id: deploy
    continue_on_failure: true
    shell: |
      echo "revision=5" >> "$RUNBOOK_OUTPUT"
      exit 7
    rollback:
      shell: echo undo revision {{ step.outputs.revision }} exit {{ step.exit_code }} >> log
  - id: check
    shell: echo deploy exited {{ steps.deploy.exit_code }} >> log
  - id: boom
    shell: exit 1
"#,
    )
    .run()
    .code(1);
    assert_eq!(log(&out), ["deploy exited 7", "undo revision 5 exit 7"]);
}

#[test]
fn secrets_are_masked_in_output_report_and_state_dir() {
    const SECRET: &str = "tok3n-Xq9-hunter2-zzz";
    for format in ["text", "json"] {
        let out = runbook(
            r#"
version: 1
name: secrets
secrets:
  token: { env: RB_TEST_DEPLOY_TOKEN }
steps:
  - id: direct
    shell: echo direct {{ secrets.token | safe }}
  - id: via_env
    env:
      TOKEN: "{{ secrets.token }}"
    shell: |
      echo "env $TOKEN"
      echo "stderr $TOKEN" >&2
      echo "tok=$TOKEN" >> "$RUNBOOK_OUTPUT"
      echo "$TOKEN" > token-was-here
  - id: fails
    env:
      TOKEN: "{{ secrets.token }}"
    shell: |
      echo "failing with $TOKEN"
      exit 3
    rollback:
      shell: echo undo {{ secrets.token | safe }}
"#,
        )
        .env("RB_TEST_DEPLOY_TOKEN", SECRET)
        .args(&["--log-format", format])
        .run()
        .code(1)
        .stdout_not_contains(SECRET)
        .stderr_not_contains(SECRET)
        .stdout_contains("***");
        // The child did get the real value (masking is on the way out only).
        assert_eq!(lines(&out, "token-was-here"), [SECRET], "{format}");
        let text = std::fs::read_to_string(out.path().join("report.json")).unwrap();
        assert!(!text.contains(SECRET), "{format}: report leaks: {text}");
        assert_eq!(
            step(&report(&out), "via_env")["outputs"]["tok"],
            "***",
            "{format}"
        );
        let mut files = 0;
        let mut stack = vec![out.path().join("st")];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files += 1;
                    let bytes = std::fs::read(&p).unwrap();
                    assert!(
                        !String::from_utf8_lossy(&bytes).contains(SECRET),
                        "{format}: {} leaks the secret",
                        p.display()
                    );
                }
            }
        }
        let _ = files; // the state dir may hold no files yet; none may leak
    }
}

#[test]
fn shell_injection_through_a_parameter_is_blocked() {
    let yaml = r#"
version: 1
name: injection
params:
  x: { type: string, required: true }
steps:
  - id: auto
    shell: echo {{ params.x }} >> log
  - id: quoted
    shell: echo {{ params.x | quote }} >> log
  - id: in_double_quotes_via_env
    env: { X: "{{ params.x }}" }
    shell: echo "$X" >> log
"#;
    for payload in [
        "x; touch pwned",
        "$(touch pwned)",
        "`touch pwned`",
        "a' ; touch pwned ; '",
        "\"; touch pwned; \"",
        "x\ntouch pwned",
        "x && touch pwned || touch pwned",
    ] {
        let out = runbook(yaml)
            .arg("--param")
            .arg(&format!("x={payload}"))
            .run()
            .success();
        assert!(
            !out.path().join("pwned").exists(),
            "{payload:?} ran as code"
        );
        let expected: Vec<String> = std::iter::repeat_n(payload.lines(), 3)
            .flatten()
            .map(str::to_string)
            .collect();
        assert_eq!(log(&out), expected, "{payload:?}");
    }
    // Control: `| safe` is the documented opt-out, and the check above would
    // see an injection.
    let out = runbook(
        r#"
version: 1
name: injection-control
params:
  x: { type: string, required: true }
steps:
  - id: raw
    shell: echo {{ params.x | safe }}
"#,
    )
    .args(&["--param", "x=x; touch pwned"])
    .run()
    .success();
    assert!(out.path().join("pwned").exists());
}

// ---------------------------------------------------------------------------
// Control flow

const WHEN: &str = r#"
version: 1
name: when
params:
  environment: { type: string, enum: [staging, production], default: staging }
  fail: { type: boolean, default: false }
steps:
  - id: a
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: prod_only
    when: params.environment == "production"
    shell: echo prod_only >> log
    rollback: { shell: echo undo-prod_only >> log }
  - id: c
    needs: [prod_only]
    shell: echo c sees {{ steps.prod_only.status }} >> log
    rollback: { shell: echo undo-c >> log }
  - id: d
    when: params.fail
    shell: exit 1
"#;

#[test]
fn when_false_skips_the_step_dependents_run_and_it_is_not_rolled_back() {
    let out = runbook(WHEN).args(&["--param", "fail=true"]).run().code(1);
    assert_eq!(log(&out), ["a", "c sees skipped", "undo-c", "undo-a"]);
    let r = report(&out);
    let skipped = step(&r, "prod_only");
    assert_eq!(skipped["status"], "skipped");
    assert_eq!(skipped["attempts"], 0);
    assert!(skipped.get("rollback").is_none(), "{r:#}");
    assert_eq!(step(&r, "c")["status"], "succeeded");

    // And with the condition true, the step runs.
    let out = runbook(WHEN)
        .args(&["--param", "environment=production"])
        .run()
        .success();
    assert_eq!(log(&out), ["a", "prod_only", "c sees succeeded"]);
    let r = report(&out);
    assert_eq!(step(&r, "prod_only")["status"], "succeeded");
    assert_eq!(step(&r, "d")["status"], "skipped");
}

#[test]
fn continue_on_failure_records_the_failure_and_goes_on() {
    let out = runbook(
        r#"
version: 1
name: continue
steps:
  - id: a
    shell: echo a >> log
  - id: flaky
    continue_on_failure: true
    shell: |
      echo flaky >> log
      exit 5
  - id: c
    shell: echo c after {{ steps.flaky.status }} >> log
finally:
  - id: fin
    shell: echo fin {{ run.status }} >> log
"#,
    )
    .run()
    .success();
    assert_eq!(log(&out), ["a", "flaky", "c after failed", "fin succeeded"]);
    let r = report(&out);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(step(&r, "flaky")["status"], "failed");
    assert_eq!(step(&r, "flaky")["error"], "exit code 5");
    assert_eq!(step(&r, "c")["status"], "succeeded");
}

const PHASES: &str = r#"
version: 1
name: phases
params:
  fail: { type: boolean, default: false }
steps:
  - id: a
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: b
    shell: |
      echo b >> log
      {% if params.fail %}exit 1{% endif %}
on_failure:
  - id: notify
    shell: echo on_failure 1 {{ run.failed_step }} {{ run.status }} >> log
  - id: page
    shell: |
      echo on_failure 2 >> log
      exit 1
  - id: after_page
    shell: echo on_failure 3 >> log
finally:
  - id: f1
    shell: echo finally 1 {{ run.status }} >> log
  - id: f2
    shell: echo finally 2 >> log
"#;

#[test]
fn on_failure_then_finally_run_after_unwinding_in_list_order() {
    let out = runbook(PHASES)
        .args(&["--param", "fail=true"])
        .run()
        .code(1);
    assert_eq!(
        log(&out),
        [
            "a",
            "b",
            "undo-a",
            "on_failure 1 b rolled_back",
            "on_failure 2",
            "on_failure 3",
            "finally 1 rolled_back",
            "finally 2"
        ]
    );
    let r = report(&out);
    assert_eq!(r["status"], "rolled_back");
    assert_eq!(step(&r, "notify")["status"], "succeeded");
    assert_eq!(step(&r, "page")["status"], "failed");
    assert_eq!(step(&r, "f2")["status"], "succeeded");
}

#[test]
fn finally_runs_after_success_and_on_failure_does_not() {
    let out = runbook(PHASES).run().success();
    assert_eq!(log(&out), ["a", "b", "finally 1 succeeded", "finally 2"]);
    let r = report(&out);
    assert_eq!(r["status"], "succeeded");
    for id in ["notify", "page", "after_page"] {
        assert_eq!(step(&r, id)["status"], "not_started", "{id}");
    }
}

#[test]
fn concurrency_limit_is_respected() {
    // `slot.sh ID BARRIER` marks ID as running, waits (bounded) until BARRIER
    // steps run at once, and logs how many run at its start and end. `a` and
    // `b` start first (lowest index) and wait for each other, so they prove
    // two steps do overlap; with a broken limit `c` and `d` would start too
    // and be counted.
    let slot = r#"id=$1; barrier=$2
mkdir -p running
touch "running/$id"
for _ in $(seq 1 1000); do
  [ "$(ls running | wc -l)" -ge "$barrier" ] && break
  sleep 0.02
done
echo "$id start $(ls running | wc -l)" >> log
sleep 0.3
echo "$id end $(ls running | wc -l)" >> log
rm "running/$id"
"#;
    let out = runbook(
        r#"
version: 1
name: concurrency
concurrency: 2
steps:
  - { id: a, needs: [], shell: bash ./slot.sh a 2 }
  - { id: b, needs: [], shell: bash ./slot.sh b 2 }
  - { id: c, needs: [], shell: bash ./slot.sh c 0 }
  - { id: d, needs: [], shell: bash ./slot.sh d 0 }
"#,
    )
    .file("slot.sh", slot)
    .run()
    .success();
    let log = log(&out);
    assert_eq!(log.len(), 8, "{log:#?}");
    for line in &log {
        let n: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n <= 2, "more than 2 steps at once: {log:#?}");
    }
    assert!(log.contains(&"a start 2".to_string()), "{log:#?}");
    assert!(log.contains(&"b start 2".to_string()), "{log:#?}");
    // c and d started only when a slot was free: after a or b ended.
    let first_end = log.iter().position(|l| l.contains(" end ")).unwrap();
    for id in ["c", "d"] {
        let start = log
            .iter()
            .position(|l| l.starts_with(&format!("{id} start")))
            .unwrap();
        assert!(
            start > first_end,
            "{id} started before a slot was free: {log:#?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Flags, locks

#[test]
fn flag_steps_are_restored_exactly_on_failure() {
    let initial = json!({ "checkout_v2": false, "untouched": { "a": 1 } });
    let out = runbook(
        r#"
version: 1
name: flags
params:
  percent: { type: integer, default: 10 }
steps:
  - id: existing
    flag:
      name: checkout_v2
      value: { stage: canary, percent: "{{ params.percent }}" }
  - id: brand_new
    flag: { name: brand_new, value: true }
  - id: stacked_1
    flag: { name: stacked, value: 1 }
  - id: stacked_2
    flag: { name: stacked, value: 2 }
  - id: snapshot
    shell: cp st/flags.json mid.json
  - id: boom
    shell: exit 1
"#,
    )
    .file(
        "st/flags.json",
        &serde_json::to_string_pretty(&initial).unwrap(),
    )
    .run()
    .code(1)
    .stdout_contains("existing: flag checkout_v2 was false")
    .stdout_contains("brand_new: flag brand_new was absent");
    let mid: Json =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("mid.json")).unwrap())
            .unwrap();
    assert_eq!(
        mid,
        json!({
            "checkout_v2": { "stage": "canary", "percent": 10 },
            "untouched": { "a": 1 },
            "brand_new": true,
            "stacked": 2
        })
    );
    let after: Json =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("st/flags.json")).unwrap())
            .unwrap();
    assert_eq!(after, initial, "flags.json is not back to where it started");
    let r = report(&out);
    assert_eq!(r["status"], "rolled_back");
    let existing = step(&r, "existing");
    assert_eq!(existing["outputs"]["previous"], false);
    assert_eq!(
        existing["outputs"]["value"],
        json!({ "stage": "canary", "percent": 10 })
    );
    for id in ["existing", "brand_new", "stacked_1", "stacked_2"] {
        assert_eq!(step(&r, id)["rollback"]["status"], "succeeded", "{id}");
    }
}

#[test]
fn flag_steps_keep_their_values_after_success() {
    let out = runbook(
        r#"
version: 1
name: flags-ok
steps:
  - id: on
    flag: { name: feature, value: { percent: 50 } }
"#,
    )
    .run()
    .success();
    let after: Json =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("st/flags.json")).unwrap())
            .unwrap();
    assert_eq!(after, json!({ "feature": { "percent": 50 } }));
}

#[test]
fn second_run_with_the_same_lock_exits_4_and_names_the_holder() {
    let yaml = r#"
version: 1
name: locked
params:
  environment: { type: string, default: staging }
lock: "deploy-{{ params.environment }}"
steps:
  - id: hold
    shell: |
      cd "$WORK"
      echo ran "$RUNBOOK_RUN_ID" >> log
      touch "held-$RUNBOOK_RUN_ID"
      bash ./wait_for.sh release
"#;
    let first = runbook(yaml);
    let work = first.path().to_path_buf();
    let mut first = first
        .env("WORK", work.to_str().unwrap())
        .args(&["--run-id", "first-run"])
        .spawn();
    first.wait_for_file("held-first-run", Duration::from_secs(60));

    // Same key, same state dir, started from elsewhere: refused, naming the holder.
    let rb = work.join(RB);
    let st = work.join("st");
    let second = |id: &str, extra: &[&str]| {
        Test::new()
            .env("WORK", work.to_str().unwrap())
            .args(&[
                "run",
                rb.to_str().unwrap(),
                "--state-dir",
                st.to_str().unwrap(),
            ])
            .args(&["--run-id", id])
            .args(extra)
    };
    second("second-run", &[])
        .run()
        .code(4)
        .stderr_contains("first-run");

    // Another key is not blocked.
    let other = second("other-run", &["--param", "environment=production"]).spawn();
    assert!(
        poll_until(Duration::from_secs(60), || work
            .join("held-other-run")
            .exists()),
        "a run with another lock key was blocked"
    );
    std::fs::write(work.join("release"), "").unwrap();
    let _other = other.wait().success();
    let _first = first.wait().success(); // keeps the directory

    // The refused run left nothing behind: the same id can run now.
    second("second-run", &[]).run().success();
    assert_eq!(
        lines_at(&work, "log"),
        ["ran first-run", "ran other-run", "ran second-run"]
    );
}

// ---------------------------------------------------------------------------
// Nothing runs when the input is wrong (exit 2)

#[test]
fn invalid_runbook_exits_2_and_nothing_runs() {
    for yaml in [
        // A cycle.
        "version: 1\nname: bad\nsteps:\n  - { id: a, needs: [b], shell: echo a >> log }\n  - { id: b, needs: [a], shell: echo b >> log }\n",
        // An unknown field, after a step that would otherwise run.
        "version: 1\nname: bad\nsteps:\n  - { id: a, shell: echo a >> log }\n  - { id: b, shell: echo b >> log, retries: 3 }\n",
        // A template reading something that does not exist.
        "version: 1\nname: bad\nsteps:\n  - { id: a, shell: echo a >> log }\n  - { id: b, shell: 'echo {{ params.nope }} >> log' }\n",
    ] {
        let out = runbook(yaml).run().code(2);
        assert!(log(&out).is_empty(), "a step ran: {yaml}");
        assert!(!out.path().join("st/runs").exists(), "a run was recorded: {yaml}");
        assert!(!out.path().join("report.json").exists());
    }
}

#[test]
fn bad_params_exit_2_and_nothing_runs() {
    let yaml = r#"
version: 1
name: params
params:
  environment: { type: string, enum: [staging, production], default: staging }
  image: { type: string, required: true }
  percent: { type: integer, default: 10 }
steps:
  - id: a
    shell: echo a >> log
"#;
    for args in [
        vec![],                                                    // required missing
        vec!["--param", "image=x", "--param", "environment=prod"], // not in the enum
        vec!["--param", "image=x", "--param", "percent=ten"],      // not an integer
        vec!["--param", "image=x", "--param", "nope=1"],           // unknown
        vec!["--param", "image=x", "--run-id", "../escape"],       // bad run id
    ] {
        let out = runbook(yaml).args(&args).run().code(2);
        assert!(log(&out).is_empty(), "a step ran with {args:?}");
        assert!(
            !out.path().join("st/runs").exists(),
            "a run was recorded with {args:?}"
        );
    }
    runbook(yaml).args(&["--param", "image=x"]).run().success();
}

#[test]
fn missing_secret_exits_2_names_the_variable_and_nothing_runs() {
    let yaml = r#"
version: 1
name: needs-secret
secrets:
  token: { env: RB_TEST_UNSET_TOKEN_VAR }
steps:
  - id: a
    shell: echo a >> log
"#;
    let out = runbook(yaml)
        .args(&["--run-id", "deploy-1"])
        .run()
        .code(2)
        .stderr_contains("RB_TEST_UNSET_TOKEN_VAR");
    assert!(log(&out).is_empty());
    // Fixing the environment and running again with the same id works: the
    // refused run left no record behind.
    let out2 = out
        .again()
        .env("RB_TEST_UNSET_TOKEN_VAR", "value-of-the-token")
        .args(&["run", RB, "--state-dir", "st", "--run-id", "deploy-1"])
        .run()
        .success();
    assert_eq!(lines(&out2, "log"), ["a"]);
}

#[test]
fn interpreter_is_found_through_the_step_path() {
    // `fakesh` exists only in `tools/`, which only the step's PATH names
    // (relative, so relative to the step's working directory).
    let t = runbook(
        r#"
version: 1
name: interpreter
steps:
  - id: fake
    interpreter: [fakesh, --flag]
    env:
      PATH: "tools:{{ env.PATH }}"
    shell: the script
  - id: argv0
    interpreter: [bash, -c]
    shell: echo "$0" >> log
  - id: missing
    interpreter: [no-such-interpreter-here]
    shell: "true"
"#,
    )
    .file(
        "tools/fakesh",
        "#!/bin/sh\necho \"fakesh $0 $*\" | sed \"s|$PWD/||\" >> log\n",
    );
    std::fs::set_permissions(
        t.path().join("tools/fakesh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = t.run().code(1);
    assert_eq!(log(&out), ["fakesh tools/fakesh --flag the script", "bash"]);
    let r = report(&out);
    assert!(
        step(&r, "missing")["error"]
            .as_str()
            .is_some_and(|e| e.contains("no-such-interpreter-here")),
        "{r:#}"
    );
}

/// Found by review: a `--report` path that cannot be written was found only
/// when the run ended (days later, for a rollout), and the run still exited 0.
#[test]
fn an_unwritable_report_path_is_refused_before_anything_runs() {
    let yaml = "version: 1\nname: r\nsteps:\n  - id: a\n    shell: touch ran\n";
    let out = Test::new()
        .file("r.yaml", yaml)
        .args(&["run", "r.yaml", "--report", "no-such-dir/report.json"])
        .run()
        .code(2)
        .stderr_contains("--report ")
        .stderr_contains("no-such-dir/report.json: cannot write there");
    assert!(!out.path().join("ran").exists());
}

/// Found while removing the idle wait at a step's end: a process the
/// script left in the background with its stderr still open made the step
/// drop the stdout it had already read (`steps.a.stdout` was empty).
#[test]
fn a_background_process_holding_stderr_keeps_the_steps_stdout() {
    let out = runbook(
        r#"
version: 1
name: background
steps:
  - id: a
    shell: sleep 5 >/dev/null & echo $! > bg; echo hi
  - id: b
    shell: echo "got={{ steps.a.stdout }}" > got
"#,
    )
    .run()
    .success();
    let bg: i32 = std::fs::read_to_string(out.path().join("bg"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The run did not wait for it: it was left running on purpose.
    let alive = unsafe { libc::kill(bg, 0) } == 0;
    unsafe {
        libc::kill(bg, libc::SIGKILL);
    }
    assert!(alive, "the run waited for the background process");
    assert_eq!(
        std::fs::read_to_string(out.path().join("got")).unwrap(),
        "got=hi\n"
    );
}

/// This process's session as `/proc` shows it.
fn own_session() -> u32 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    stat.rsplit_once(") ")
        .unwrap()
        .1
        .split(' ')
        .nth(3)
        .unwrap()
        .parse()
        .unwrap()
}

/// Found by CI: in a PID namespace whose session leader is outside it,
/// `getsid` says 0, and the engine panicked on every shell step (rustix's
/// `Pid` cannot hold 0). Where a new namespace cannot be made, the test
/// runs where it stands, which must then be that case.
#[test]
fn a_run_in_a_pid_namespace_whose_session_is_outside_it() {
    let unshare = ["unshare", "--pid", "--fork", "--mount-proc"];
    let can_unshare = std::process::Command::new(unshare[0])
        .args(&unshare[1..])
        .arg("true")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        can_unshare || own_session() == 0,
        "cannot make a PID namespace here, and this one shows its session"
    );
    let t = runbook(
        "version: 1\nname: ns\nsteps:\n  - id: a\n    shell: echo a >> log\n  - id: b\n    needs: [a]\n    shell: echo b >> log\n",
    );
    let t = if can_unshare { t.wrapped(&unshare) } else { t };
    let out = t.args(&["--run-id", "ns"]).run().success();
    assert_eq!(log(&out), ["a", "b"]);
    let journal = std::fs::read_to_string(out.path().join("st/runs/ns/journal.jsonl")).unwrap();
    let sids: Vec<Json> = journal
        .lines()
        .map(|l| serde_json::from_str::<Json>(l).unwrap())
        .filter(|v| v["event"] == "spawned")
        .map(|v| v["sid"].clone())
        .collect();
    assert_eq!(sids, [json!(0), json!(0)], "{journal}");
}
