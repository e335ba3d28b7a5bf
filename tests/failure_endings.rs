#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // a test fails loudly
//! Every failure ends in a known state with a way forward: the endings of
//! the "Every failure ends in a known state" issue, through the real binary.
//! Each test is named after the dead end it was.

mod common;

use std::time::{Duration, Instant};

use common::{log, report, step, Test};

const RB: &str = "rb.yaml";
const ST: &str = "st";

/// Two steps with rollbacks; b sleeps, and a's rollback is slow.
const SLOW_UNDO: &str = r#"version: 1
name: slow-undo
steps:
  - id: a
    shell: echo a >> log
    rollback:
      - shell: |
          echo undo-a-start >> log
          touch undo-a-running
          test -e fast || sleep 30
          echo undo-a-end >> log
  - id: b
    shell: |
      touch b-running
      sleep 30
    rollback: { shell: echo undo-b >> log }
finally:
  - id: fin
    shell: echo fin >> log
"#;

#[test]
fn second_signal_during_unwinding_left_no_way_to_finish_it() {
    let mut running = Test::new()
        .file(RB, SLOW_UNDO)
        .args(&[
            "run",
            RB,
            "--state-dir",
            ST,
            "--run-id",
            "r1",
            "--report",
            "report.json",
        ])
        .spawn();
    running.wait_for_file("b-running", Duration::from_secs(60));
    running.signal(libc::SIGINT);
    running.wait_for_file("undo-a-running", Duration::from_secs(60));
    let sent = Instant::now();
    running.signal(libc::SIGINT);
    let out = running
        .wait()
        .code(3)
        .stdout_contains("a second signal stops at once and leaves the unwind incomplete")
        .stderr_contains("rollback of `a` failed: stopped by a second signal")
        .stderr_contains("`runbook rollback r1 --state-dir ");
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "the second signal did not stop at once"
    );
    assert_eq!(report(&out)["status"], "unwind_incomplete");
    assert_eq!(log(&out), ["a", "undo-b", "undo-a-start"]);

    // status says the same, with the command.
    let (status, out) = common::status_json(out, ST, "r1");
    assert_eq!(status["status"], "unwind_incomplete");
    assert!(
        status["next"]
            .as_str()
            .unwrap_or("")
            .contains("runbook rollback r1"),
        "{status:#}"
    );

    // rollback finishes it: only a's rollback runs again, then finally.
    std::fs::write(out.path().join("fast"), "").unwrap();
    let out = out
        .again()
        .args(&[
            "rollback",
            "r1",
            "--yes",
            "--state-dir",
            ST,
            "--report",
            "report.json",
        ])
        .run()
        .code(0);
    assert_eq!(
        log(&out),
        [
            "a",
            "undo-b",
            "undo-a-start",
            "undo-a-start",
            "undo-a-end",
            "fin"
        ]
    );
    let r = report(&out);
    assert_eq!(r["status"], "rolled_back");
    let (status, _) = common::status_json(out, ST, "r1");
    assert_eq!(status["status"], "rolled_back");
    let a = step(&status, "a");
    assert_eq!(a["rollback"]["status"], "succeeded");
    assert!(
        a["rollback_history"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("second signal"),
        "the stopped attempt is kept in the history: {a:#}"
    );
    assert_eq!(step(&status, "b")["rollback"]["status"], "succeeded");
}

#[test]
fn rollback_of_a_succeeded_run_exited_1_and_skipped_finally() {
    let rb = r#"version: 1
name: ok
steps:
  - id: a
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: b
    shell: echo b >> log
    rollback: { shell: echo undo-b >> log }
finally:
  - id: fin
    shell: echo fin >> log
"#;
    let out = Test::new()
        .file(RB, rb)
        .args(&["run", RB, "--state-dir", ST, "--run-id", "ok"])
        .run()
        .success();
    let out = out
        .again()
        .args(&[
            "rollback",
            "ok",
            "--state-dir",
            ST,
            "--as",
            "carol",
            "--report",
            "report.json",
        ])
        .run()
        .code(0);
    assert_eq!(log(&out), ["a", "b", "fin", "undo-b", "undo-a", "fin"]);
    assert_eq!(report(&out)["status"], "rolled_back");
    // History: it succeeded, then carol rolled it back.
    let journal =
        std::fs::read_to_string(out.path().join(ST).join("runs/ok/journal.jsonl")).unwrap();
    let succeeded = journal.find(r#""status":"succeeded","duration_ms""#);
    let requested = journal.find("rollback requested by carol");
    assert!(
        matches!((succeeded, requested), (Some(s), Some(r)) if s < r),
        "the journal keeps both episodes:\n{journal}"
    );
    // A second rollback has nothing left to do and says so.
    out.again()
        .args(&["rollback", "ok", "--state-dir", ST])
        .run()
        .code(0)
        .stdout_contains("every rollback it owed has succeeded");
}

#[test]
fn a_failed_rollback_could_not_be_retried() {
    let rb = r#"version: 1
name: fixable
steps:
  - id: a
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: b
    shell: echo b >> log
    rollback:
      shell: |
        test -e fixed || { echo "the backup is missing" >&2; exit 7; }
        echo undo-b >> log
  - id: c
    shell: exit 1
"#;
    let out = Test::new()
        .file(RB, rb)
        .args(&["run", RB, "--state-dir", ST, "--run-id", "f"])
        .run()
        .code(3)
        .stderr_contains("rollback of `b` failed: exit code 7")
        .stderr_contains("`runbook rollback f --state-dir ");
    assert_eq!(log(&out), ["a", "b", "undo-a"]);
    let out = out
        .again()
        .args(&["status", "f", "--state-dir", ST])
        .run()
        .success()
        .stdout_contains("rollback failed: exit code 7")
        .stdout_contains("`runbook rollback f --state-dir ");
    std::fs::write(out.path().join("fixed"), "").unwrap();
    let out = out
        .again()
        .args(&[
            "rollback",
            "f",
            "--yes",
            "--state-dir",
            ST,
            "--report",
            "report.json",
        ])
        .run()
        .code(0);
    // Only b's rollback ran again; a's had succeeded and is never re-run.
    assert_eq!(log(&out), ["a", "b", "undo-a", "undo-b"]);
    let r = report(&out);
    assert_eq!(r["status"], "rolled_back");
    assert_eq!(step(&r, "b")["rollback"]["status"], "succeeded");
}

#[test]
fn a_rollback_that_fails_again_exits_3_and_names_the_step() {
    let rb = r#"version: 1
name: broken
steps:
  - id: a
    shell: "true"
    rollback: { shell: exit 9 }
"#;
    let out = Test::new()
        .file(RB, rb)
        .args(&["run", RB, "--state-dir", ST, "--run-id", "x"])
        .run()
        .success();
    let out = out
        .again()
        .args(&["rollback", "x", "--state-dir", ST])
        .run()
        .code(3)
        .stderr_contains("rollback of `a` failed: exit code 9")
        .stderr_contains("`runbook rollback x --state-dir ");
    // And again: still 3, the run still rollback_failed.
    let out = out
        .again()
        .args(&["rollback", "x", "--state-dir", ST])
        .run()
        .code(3);
    let (status, _) = common::status_json(out, ST, "x");
    assert_eq!(status["status"], "rollback_failed");
    assert_eq!(
        step(&status, "a")["rollback_history"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[test]
fn rollback_of_a_running_run_exits_4() {
    let mut running = Test::new()
        .file(
            RB,
            "version: 1\nname: long\nsteps:\n  - id: a\n    shell: touch started; sleep 30\n",
        )
        .args(&["run", RB, "--state-dir", ST, "--run-id", "live"])
        .spawn();
    running.wait_for_file("started", Duration::from_secs(60));
    Test::new()
        .args(&[
            "rollback",
            "live",
            "--state-dir",
            running.path().join(ST).to_str().unwrap(),
        ])
        .run()
        .code(4)
        .stderr_contains("still running");
    running.signal(libc::SIGINT);
    running.wait().code(130);
}

#[test]
fn signals_were_ignored_during_finally() {
    let rb = r#"version: 1
name: slow-finally
steps:
  - id: a
    shell: echo a >> log
finally:
  - id: notify
    shell: touch notify-running; sleep 30; echo notified >> log
  - id: after
    shell: echo after >> log
"#;
    let mut running = Test::new()
        .file(RB, rb)
        .args(&[
            "run",
            RB,
            "--state-dir",
            ST,
            "--run-id",
            "fin",
            "--report",
            "report.json",
        ])
        .spawn();
    running.wait_for_file("notify-running", Duration::from_secs(60));
    running.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    running.signal(libc::SIGTERM);
    let out = running
        .wait()
        .stdout_contains("signal received while `finally` runs")
        .stdout_contains("second signal: `notify` is stopped");
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "the second signal was ignored"
    );
    assert_eq!(log(&out), ["a"]);
    let r = report(&out);
    assert_eq!(step(&r, "notify")["status"], "cancelled");
}

#[test]
fn defaults_retry_sampled_a_breached_gate_again_and_asked_a_rejection_again() {
    let rb = r#"version: 1
name: strict
defaults:
  retry: { attempts: 3, delay: 10ms }
providers:
  sh: { kind: command }
steps:
  - id: flaky
    shell: |
      n=$(cat n 2>/dev/null || echo 0); echo $((n+1)) > n
      test "$n" -ge 1
  - id: gate
    metric:
      query: echo 0.5 >> samples; echo 0.5
      condition: value < 0.01
      interval: 10ms
      samples: 1
"#;
    let out = Test::new()
        .file(RB, rb)
        .args(&["run", RB, "--state-dir", ST, "--report", "report.json"])
        .run()
        .code(1);
    let r = report(&out);
    // The shell step still takes the default (it passed on its second try).
    assert_eq!(step(&r, "flaky")["attempts"], 2);
    // The gate failed on its first breach: one attempt, one sample.
    assert_eq!(step(&r, "gate")["attempts"], 1);
    let samples = std::fs::read_to_string(out.path().join("samples")).unwrap();
    assert_eq!(samples.lines().count(), 1, "the gate was sampled again");

    // An approval with `retry` is invalid: a rejection is final.
    let rb =
        "version: 1\nname: t\nsteps:\n  - id: ok\n    approval: {}\n    retry: { attempts: 3 }\n";
    Test::new()
        .file(RB, rb)
        .args(&["validate", RB])
        .run()
        .code(2)
        .stderr_contains("error[E026]")
        .stderr_contains("never retried")
        .stderr_contains(&format!("{RB}:{}:", common::line_of(rb, "attempts: 3")));
}

#[test]
fn plan_diff_did_not_flag_retries_added_to_a_gate() {
    let base = "version: 1\nname: t\nproviders:\n  sh: { kind: command }\nsteps:\n  - id: gate\n    metric:\n      query: echo 0\n      condition: value < 1\n";
    let head = "version: 1\nname: t\nproviders:\n  sh: { kind: command }\nsteps:\n  - id: gate\n    retry: { attempts: 3 }\n    metric:\n      query: echo 0\n      condition: value < 1\n";
    Test::new()
        .file("base.yaml", base)
        .file(RB, head)
        .args(&["plan", RB, "--diff", "base.yaml"])
        .run()
        .success()
        .stdout_contains("gate `gate` is retried after a breach");
}

/// Every value a run wrote to `flag`, in order, from its journal
/// (`absent` for a delete).
fn flag_writes(out: &common::Output, run: &str, flag: &str) -> Vec<String> {
    let journal = std::fs::read_to_string(
        out.path()
            .join(ST)
            .join("runs")
            .join(run)
            .join("journal.jsonl"),
    )
    .unwrap();
    journal
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "flag_previous" && e["flag"] == flag)
        .map(|e| match &e["value"] {
            serde_json::Value::Null => "absent".to_string(),
            v => v.to_string(),
        })
        .collect()
}

#[test]
fn restores_undid_a_step_down() {
    let rb = r#"version: 1
name: stepdown
steps:
  - id: internal
    flag: { name: rollout, value: 1 }
  - id: canary
    flag: { name: rollout, value: 10 }
  - id: full
    flag: { name: rollout, value: 100 }
    rollback:
      - flag: { name: rollout, value: 50 }
      - flag: { name: rollout, value: 10 }
      - flag: { name: rollout, value: 0 }
  - id: verify
    shell: exit 1
"#;
    let out = Test::new()
        .file(RB, rb)
        .file(
            &format!("{ST}/flags.json"),
            r#"{"rollout": 0, "other": 1.50}"#,
        )
        .args(&["run", RB, "--state-dir", ST, "--run-id", "sd"])
        .run()
        .code(1)
        .stdout_contains(
            "restore of flag rollout to 1 skipped: a rollback already stepped it down",
        );
    // Down and never back up: canary's restore (to 1) is skipped; internal's
    // restore puts back the value from before the run.
    assert_eq!(
        flag_writes(&out, "sd", "rollout"),
        ["1", "10", "100", "50", "10", "0", "0"]
    );
    let flags: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join(ST).join("flags.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(flags["rollout"], 0);
}

const SOAK: &str = r#"version: 1
name: soak
providers:
  sh: { kind: command }
steps:
  - id: soak
    metric:
      query: |
        touch count; n=$(wc -l < count | tr -d ' '); echo x >> count
        if [ "$n" = 1 ] || [ "$n" = 4 ]; then echo 9; else echo 0; fi
      condition: value < 1
      interval: 400ms
      samples: 6
      failure_limit: 1
"#;

#[test]
fn a_gate_killed_mid_soak_restarted_from_its_first_sample() {
    // Samples 2 and 5 breach; failure_limit 1: the gate fails at sample 5
    // only if the failure before the crash still counts.
    let rb = SOAK;
    let running = Test::new()
        .file(RB, rb)
        .args(&["run", RB, "--state-dir", ST, "--run-id", "soak"])
        .spawn();
    let count = running.path().join("count");
    let lines = || {
        std::fs::read_to_string(&count)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    // Killed once three samples are journaled (a sample's query runs
    // before its record: counting queries would race the record).
    let journal = running.path().join(ST).join("runs/soak/journal.jsonl");
    assert!(
        common::poll_until(Duration::from_secs(30), || journaled_samples(&journal) >= 3),
        "the gate never took 3 samples"
    );
    running.signal(libc::SIGKILL);
    let crashed = running.wait();
    assert!(crashed.killed());
    assert_eq!(lines(), 3, "killed between samples 3 and 4");
    let resumed_at = Instant::now();
    let out = crashed
        .again()
        .args(&[
            "resume",
            "soak",
            "--state-dir",
            ST,
            "--report",
            "report.json",
        ])
        .run()
        .code(1)
        .stdout_contains("continuing from sample 3/6 (1 failed)")
        .stdout_contains("gate failed at sample 5/6");
    assert_eq!(
        std::fs::read_to_string(out.path().join("count"))
            .unwrap()
            .lines()
            .count(),
        5,
        "samples taken before the crash were taken again"
    );
    // Samples 4 and 5 kept to the grid: at least one interval passed.
    assert!(resumed_at.elapsed() >= Duration::from_millis(300));
}

#[test]
fn a_step_down_list_restarted_from_its_first_body_after_kill_9() {
    let rb = r#"version: 1
name: stepdown
steps:
  - id: full
    shell: echo full >> log
    rollback:
      - shell: echo down-75 >> log
      - shell: echo down-50 >> log
      - shell: |
          echo down-25 >> log
          test -e resumed || { touch body-3-running; sleep 30; }
      - shell: echo down-0 >> log
  - id: verify
    shell: exit 1
"#;
    let mut running = Test::new()
        .file(RB, rb)
        .args(&["run", RB, "--state-dir", ST, "--run-id", "sd"])
        .spawn();
    running.wait_for_file("body-3-running", Duration::from_secs(60));
    running.signal(libc::SIGKILL);
    let crashed = running.wait();
    assert!(crashed.killed());
    std::fs::write(crashed.path().join("resumed"), "").unwrap();
    let out = crashed
        .again()
        .args(&["resume", "sd", "--state-dir", ST])
        .run()
        .code(1);
    // The body that was running runs again; the two before it do not.
    assert_eq!(
        log(&out),
        ["full", "down-75", "down-50", "down-25", "down-25", "down-0"]
    );
}

/// A rollback body that fails until `fixed` exists, beside one that works.
const FIXABLE: &str = r#"version: 1
name: fixable
steps:
  - id: a
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: b
    shell: echo b >> log
    rollback:
      - shell: echo undo-b-1 >> log
      - shell: |
          test -e fixed || exit 7
          echo undo-b-2 >> log
  - id: c
    shell: exit 1
finally:
  - id: fin
    shell: echo fin >> log
"#;

/// The journal's records that are crash points (`spawned` is not one: see
/// journal/file.rs).
fn journal_lines(out: &common::Output, run: &str) -> usize {
    std::fs::read_to_string(
        out.path()
            .join(ST)
            .join("runs")
            .join(run)
            .join("journal.jsonl"),
    )
    .unwrap()
    .lines()
    .filter(|l| !l.contains("\"event\":\"spawned\""))
    .count()
}

/// `rollback` of an ended run that owes rollbacks (from `ended`), killed at
/// every event it writes, then continued by `resume` or by `rollback` again:
/// it ends `rolled_back`, and `check` sees the log.
fn crash_anywhere_in_a_rollback_of(
    run: &str,
    ended: impl Fn() -> common::Output,
    check: impl Fn(&str, &[String]),
) {
    let clean = ended();
    let before = journal_lines(&clean, run);
    let clean = clean
        .again()
        .args(&["rollback", run, "--yes", "--state-dir", ST])
        .run()
        .code(0);
    let events = journal_lines(&clean, run) - before;
    assert!(events >= 4, "only {events} events");
    for n in 1..=events {
        for when in ["before", "after"] {
            let label = format!("{when}:{n}");
            let crashed = ended()
                .again()
                .args(&["rollback", run, "--yes", "--state-dir", ST])
                .env("RUNBOOK_CRASH_AT", &label)
                .run();
            assert!(
                crashed.killed(),
                "{label}: {:?}\n{}",
                crashed.code,
                crashed.stderr
            );
            let args: &[&str] = if when == "after" {
                &["resume", run, "--state-dir", ST]
            } else {
                &["rollback", run, "--yes", "--state-dir", ST]
            };
            let out = crashed.again().args(args).run().code(0);
            check(&label, &log(&out));
            let (status, _) = common::status_json(out, ST, run);
            assert_eq!(status["status"], "rolled_back", "{label}");
        }
    }
}

/// ... of a `rollback_failed` run: the rollback that had succeeded never
/// runs again, and the failed list continues at the body that failed.
#[test]
fn crash_anywhere_in_a_rollback_of_a_rollback_failed_run_then_resume_finishes_it() {
    let failed = || {
        let out = Test::new()
            .file(RB, FIXABLE)
            .args(&["run", RB, "--state-dir", ST, "--run-id", "f"])
            .run()
            .code(3);
        std::fs::write(out.path().join("fixed"), "").unwrap();
        out
    };
    crash_anywhere_in_a_rollback_of("f", failed, |label, log| {
        let count = |l: &str| log.iter().filter(|x| *x == l).count();
        assert_eq!(count("undo-a"), 1, "{label}: {log:?}");
        assert_eq!(count("undo-b-1"), 1, "{label}: {log:?}");
        // The body running at the crash may run again (at least once).
        assert!(count("undo-b-2") >= 1, "{label}: {log:?}");
        assert!(
            count("fin") >= 2,
            "{label}: finally ran in both episodes: {log:?}"
        );
    });
}

/// ... of an `unwind_incomplete` run (a second Ctrl-C): b's rollback, which
/// succeeded, never runs again; a's, which was stopped, finishes.
#[test]
fn crash_anywhere_in_a_rollback_of_an_unwind_incomplete_run_then_resume_finishes_it() {
    let incomplete = || {
        let out = double_interrupt(None).code(3);
        std::fs::write(out.path().join("fast"), "").unwrap();
        out
    };
    crash_anywhere_in_a_rollback_of("r1", incomplete, |label, log| {
        let count = |l: &str| log.iter().filter(|x| *x == l).count();
        assert_eq!(count("undo-b"), 1, "{label}: {log:?}");
        assert!(count("undo-a-end") >= 1, "{label}: {log:?}");
        assert!(count("fin") >= 1, "{label}: {log:?}");
    });
}

/// Starts SLOW_UNDO, interrupts it twice (the second during a's rollback),
/// with `crash` as its RUNBOOK_CRASH_AT, and returns how it ended.
fn double_interrupt(crash: Option<&str>) -> common::Output {
    let mut t =
        Test::new()
            .file(RB, SLOW_UNDO)
            .args(&["run", RB, "--state-dir", ST, "--run-id", "r1"]);
    if let Some(c) = crash {
        t = t.env("RUNBOOK_CRASH_AT", c);
    }
    let mut running = t.spawn();
    running.wait_for_file("b-running", Duration::from_secs(60));
    running.signal(libc::SIGINT);
    running.wait_for_file("undo-a-running", Duration::from_secs(60));
    running.signal(libc::SIGINT);
    running.wait()
}

/// Kill points inside the second signal's stop (its notice, the stopped
/// rollback's record, the run's end): `resume`, then `rollback` if the run
/// still owes rollbacks, always finishes the unwind.
#[test]
fn crash_anywhere_in_the_second_signals_stop_then_the_unwind_is_finished() {
    let clean = double_interrupt(None).code(3);
    let events = journal_lines(&clean, "r1") - 1; // the header is not an event
    for n in events - 2..=events {
        for when in ["before", "after"] {
            let label = format!("{when}:{n}");
            let crashed = double_interrupt(Some(&label));
            assert!(
                crashed.killed(),
                "{label}: {:?}\n{}",
                crashed.code,
                crashed.stderr
            );
            std::fs::write(crashed.path().join("fast"), "").unwrap();
            let out = crashed
                .again()
                .args(&["resume", "r1", "--state-dir", ST])
                .run();
            let out = match out.code {
                // The resumed unwind finished: interrupted and unwound.
                Some(130) => out,
                // A rollback is still owed: `rollback` finishes it.
                Some(3) => out
                    .again()
                    .args(&["rollback", "r1", "--yes", "--state-dir", ST])
                    .run()
                    .code(0),
                other => panic!(
                    "{label}: resume exited {other:?}\n{}\n{}",
                    out.stdout, out.stderr
                ),
            };
            let log = log(&out);
            let count = |l: &str| log.iter().filter(|x| *x == l).count();
            assert_eq!(count("undo-b"), 1, "{label}: {log:?}");
            assert_eq!(count("undo-a-end"), 1, "{label}: {log:?}");
            let (status, _) = common::status_json(out, ST, "r1");
            assert!(
                matches!(
                    status["status"].as_str(),
                    Some("interrupted" | "rolled_back")
                ),
                "{label}: {status:#}"
            );
        }
    }
}

/// Sample 2 breaches; once `breach` exists, every sample does.
const SOAK_BREACHING: &str = r#"version: 1
name: soak
providers:
  sh: { kind: command }
steps:
  - id: soak
    metric:
      query: |
        touch count; n=$(wc -l < count | tr -d ' '); echo x >> count
        if [ -e breach ] || [ "$n" = 1 ]; then echo 9; else echo 0; fi
      condition: value < 1
      interval: 400ms
      samples: 6
      failure_limit: 2
"#;

/// Kill points inside a resumed gate: killed after 3 samples (one failed),
/// resumed with a crash at each of its first events, resumed again: the
/// gate fails at sample 5, its third failure (the one before the first crash
/// counts; without it the gate would fail at sample 6). A sample whose
/// record a crash lost is taken again but keeps its number.
#[test]
fn crash_anywhere_in_a_resumed_gate_then_resume_still_counts_the_earlier_failure() {
    for n in 1..=5 {
        for when in ["before", "after"] {
            let label = format!("{when}:{n}");
            let running = Test::new()
                .file(RB, SOAK_BREACHING)
                .args(&["run", RB, "--state-dir", ST, "--run-id", "soak"])
                .spawn();
            assert!(
                common::poll_until(Duration::from_secs(30), || {
                    journaled_samples(&running.path().join(ST).join("runs/soak/journal.jsonl")) >= 3
                }),
                "{label}"
            );
            running.signal(libc::SIGKILL);
            let crashed = running.wait();
            std::fs::write(crashed.path().join("breach"), "").unwrap();
            let again = crashed
                .again()
                .args(&["resume", "soak", "--state-dir", ST])
                .env("RUNBOOK_CRASH_AT", &label)
                .run();
            let out = if again.killed() {
                again
                    .again()
                    .args(&["resume", "soak", "--state-dir", ST])
                    .run()
            } else {
                again
            };
            // (A crash between the failing sample's record and the step's
            // end: the resumed gate used to sample again, a fourth failure.)
            let out = out
                .code(1)
                .stdout_contains("3 failed samples exceed failure_limit 2");
            if !out.stdout.contains("(before the engine stopped)") {
                // From `continuing from sample X/6 (F failed)`: the third
                // failure comes 3 - F samples later.
                let (x, f) =
                    continuing(&out.stdout).unwrap_or_else(|| panic!("{label}: {}", out.stdout));
                let at = format!("gate failed at sample {}/6", x + 3 - f);
                assert!(
                    out.stdout.contains(&at),
                    "{label}: no {at:?}\n{}",
                    out.stdout
                );
            }
            // No sample was taken twice but one whose record a crash lost
            // (at most one per crash).
            assert!(
                (4..=7).contains(&common::lines_at(out.path(), "count").len()),
                "{label}"
            );
        }
    }
}

/// How many gate samples a journal holds.
fn journaled_samples(journal: &std::path::Path) -> usize {
    std::fs::read_to_string(journal)
        .map(|t| t.matches(r#""event":"gate_sample""#).count())
        .unwrap_or(0)
}

/// `continuing from sample X/N (F failed)` in a resumed gate's output.
fn continuing(stdout: &str) -> Option<(usize, usize)> {
    let rest = stdout.rsplit("continuing from sample ").next()?;
    let (x, rest) = rest.split_once('/')?;
    let f = rest.split_once(" (")?.1.split_once(' ')?.0;
    Some((x.parse().ok()?, f.parse().ok()?))
}

#[test]
fn a_gate_in_a_failed_rollback_failed_again_on_every_retry_without_sampling() {
    let rb = r#"version: 1
name: gated-undo
providers:
  sh: { kind: command }
steps:
  - id: a
    shell: echo a >> log
    rollback:
      - shell: echo undo-a >> log
      - metric: { query: cat level, condition: value < 1, samples: 1 }
  - id: boom
    shell: exit 1
"#;
    let out = Test::new()
        .file(RB, rb)
        .file("level", "5\n")
        .args(&["run", RB, "--state-dir", ST, "--run-id", "g"])
        .run()
        .code(3);
    std::fs::write(out.path().join("level"), "0\n").unwrap();
    out.again()
        .args(&["rollback", "g", "--yes", "--state-dir", ST])
        .run()
        .code(0)
        .stdout_contains("sample 1/1: value 0 (pass)");
}

#[test]
fn a_skipped_step_was_rolled_back_by_runbook_rollback() {
    let rb = r#"version: 1
name: skipped
steps:
  - id: a
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: b
    when: "false"
    shell: echo b >> log
    rollback: { shell: echo undo-b >> log }
  - id: c
    shell: echo c >> log
    rollback: { shell: "test -e fixed && echo undo-c >> log" }
  - id: boom
    shell: exit 1
"#;
    let out = Test::new()
        .file(RB, rb)
        .args(&["run", RB, "--state-dir", ST, "--run-id", "s"])
        .run()
        .code(3);
    std::fs::write(out.path().join("fixed"), "").unwrap();
    let out = out
        .again()
        .args(&["rollback", "s", "--yes", "--state-dir", ST])
        .run()
        .code(0);
    assert_eq!(log(&out), ["a", "c", "undo-a", "undo-c"]);
}

/// The way forward after a failed rollback said `runbook rollback ID` with
/// no state dir: run anywhere but beside the default one, it did not find
/// the run. Now it names the state dir, and works from another directory.
#[test]
fn regression_the_way_forward_named_no_state_dir() {
    let rb = r#"version: 1
name: broken
steps:
  - id: a
    shell: echo a >> log
    rollback:
      shell: |
        test -e fixed || exit 9
        echo undo-a >> log
  - id: c
    shell: exit 1
"#;
    let out = Test::new()
        .file(RB, rb)
        .args(&["run", RB, "--state-dir", ST, "--run-id", "w"])
        .run()
        .code(3);
    let (_, rest) = out
        .stderr
        .split_once("then `runbook ")
        .expect("a way forward");
    let (command, _) = rest.split_once('`').expect("a closed command");
    let args: Vec<String> = shell_words(command);
    assert_eq!(args[..2], ["rollback", "w"], "{command}");
    std::fs::write(out.path().join("fixed"), "").unwrap();
    std::fs::create_dir_all(out.path().join("elsewhere")).unwrap();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.push("--yes");
    let out = out.again().in_dir("elsewhere").args(&args).run().success();
    assert_eq!(log(&out), ["a", "undo-a"]);
}

/// Splits what `template::shell_quote` wrote back into words.
fn shell_words(command: &str) -> Vec<String> {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("printf '%s\\n' {command}")])
        .output()
        .expect("sh");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}
