#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! Durable runs end to end: the real binary killed (SIGKILL, through the
//! `RUNBOOK_CRASH_AT` fault injection) at every journal write of small
//! runbooks, then `runbook resume`d; torn and damaged journals; run locks
//! between processes; `runbook rollback` of a succeeded run; `runbook status`.
//!
//! Every shell step appends its id to `log` in the test's directory and every
//! rollback appends `undo-<id>`, so counting lines says how often each side
//! effect happened. The rules checked after each crash come from the spec
//! ("Durable runs"): a step or rollback whose end the journal recorded before
//! the crash never runs again; one that was running may run again (at least
//! once), so at most twice; one that had not started runs exactly as it would
//! have without the crash.
//!
//! Nothing here waits a fixed time: steps that must stay alive wait for a
//! file (bounded loop), and the test polls for files the steps write.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{kill_points, lines_at, on_two_workers, poll_until, step, Output, Test, WAIT_FOR};
use serde_json::{json, Value as Json};

const RB: &str = "rb.yaml";
const ST: &str = "st";
const RUN: &str = "r1";

// ---------------------------------------------------------------------------
// Reading what a run left behind

fn count(lines: &[String], line: &str) -> usize {
    lines.iter().filter(|l| *l == line).count()
}

fn journal_path(dir: &Path, run: &str) -> std::path::PathBuf {
    dir.join(ST).join("runs").join(run).join("journal.jsonl")
}

/// The events of a journal as JSON (the header and a torn last line left out).
struct Journal {
    events: Vec<Json>,
}

impl Journal {
    fn read(dir: &Path, run: &str) -> Journal {
        let path = journal_path(dir, run);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("no journal at {}: {e}", path.display()));
        let events = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Json>(l).ok())
            .filter(|v| v.get("record").is_none())
            // Not a crash point (the writer does not count it): see journal/file.rs.
            .filter(|v| v["event"] != "spawned")
            .collect();
        Journal { events }
    }

    fn has(&self, event: &str, step: &str) -> bool {
        self.events
            .iter()
            .any(|e| e["event"] == event && e["step"] == step)
    }

    fn started(&self, step: &str) -> bool {
        self.has("step_started", step)
    }

    /// The status of the step's last `step_finished`, if any.
    fn finished(&self, step: &str) -> Option<String> {
        self.events
            .iter()
            .rev()
            .find(|e| e["event"] == "step_finished" && e["step"] == step)
            .map(|e| e["status"].as_str().unwrap_or_default().to_string())
    }

    fn rollback_started(&self, step: &str) -> bool {
        self.has("rollback_started", step)
    }

    fn rollback_finished(&self, step: &str) -> bool {
        self.has("rollback_finished", step)
    }

    /// Events after the first `run_finished` (what `runbook rollback` wrote).
    fn after_first_finish(&self) -> usize {
        let first = self
            .events
            .iter()
            .position(|e| e["event"] == "run_finished")
            .expect("the run finished");
        self.events.len() - first - 1
    }

    /// Whether an unwinding started after the run had succeeded (a `runbook
    /// rollback` that got as far as its first record).
    fn rollback_after_success_began(&self) -> bool {
        let mut succeeded = false;
        for e in &self.events {
            if e["event"] == "run_finished" && e["status"] == "succeeded" {
                succeeded = true;
            }
            if succeeded && e["event"] == "unwind_started" {
                return true;
            }
        }
        false
    }
}

fn flags_at(dir: &Path) -> Json {
    let path = dir.join(ST).join("flags.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no flags file at {}: {e}", path.display()));
    serde_json::from_str(&text).expect("the flags file is JSON")
}

/// `runbook resume RUN`, again while it says another process still runs the
/// run (bounded: the crashed process is dead, so this settles at once).
fn resume(mut out: Output, run: &str) -> Output {
    for _ in 0..100 {
        out = out.again().args(&["resume", run, "--state-dir", ST]).run();
        if out.code == Some(4) && out.stderr.contains("is being run by") {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        return out;
    }
    panic!(
        "run {run} still looks alive after 100 resumes:\n{}",
        out.stderr
    )
}

// ---------------------------------------------------------------------------
// Crash tests: one fixture, every kill point

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Kill `runbook run`.
    Run,
    /// Run to success, then kill `runbook rollback`.
    Rollback,
}

struct Fixture {
    name: &'static str,
    yaml: &'static str,
    /// `st/flags.json` before the run (the default flag store).
    flags: Option<Json>,
    /// Steps (of every list) whose shell appends `<id>` to the log.
    logged: &'static [&'static str],
    /// Main steps whose rollback appends `undo-<id>`, in the order unwinding
    /// must first reach them.
    undo_order: &'static [&'static str],
    phase: Phase,
    /// What the run must come to, given the journal as the crash left it.
    outcome: fn(&Journal) -> Expect,
}

struct Expect {
    code: i32,
    status: &'static str,
    /// Steps that must have run (exactly once when they had not started at
    /// the crash). Logged steps not listed never run unless they had started.
    ran: Vec<&'static str>,
    /// Steps that must never run twice (`on_resume: fail`).
    once: Vec<&'static str>,
    /// Whether the run unwinds: then every main step that started has its
    /// rollback run.
    unwound: bool,
    flags: Option<Json>,
    /// Step statuses in `runbook status` at the end.
    steps: Vec<(&'static str, &'static str)>,
}

fn fresh(fx: &Fixture) -> Test {
    let mut t = Test::new().file(RB, fx.yaml).file("wait_for.sh", WAIT_FOR);
    if let Some(flags) = &fx.flags {
        t = t.file(&format!("{ST}/flags.json"), &flags.to_string());
    }
    t
}

fn run_args(t: Test) -> Test {
    t.args(&["run", RB, "--state-dir", ST, "--run-id", RUN])
}

fn rollback_args(t: Test) -> Test {
    t.args(&["rollback", RUN, "--state-dir", ST])
}

/// Runs the fixture once without a crash and returns how many events the
/// crashable process writes (the run, or the rollback after it).
fn events_of_clean_run(fx: &Fixture) -> usize {
    let out = run_args(fresh(fx)).run();
    match fx.phase {
        Phase::Run => {
            let expect = (fx.outcome)(&Journal { events: Vec::new() });
            let out = out.code(expect.code);
            Journal::read(out.path(), RUN).events.len()
        }
        Phase::Rollback => {
            let out = rollback_args(out.success().again()).run().code(0);
            Journal::read(out.path(), RUN).after_first_finish()
        }
    }
}

/// Every kill point of a fixture (`before:N` and `after:N` for every event
/// N); returns how many ran.
fn crash_everywhere(fx: &Fixture) -> usize {
    let events = events_of_clean_run(fx);
    assert!(events >= 4, "{}: only {events} events", fx.name);
    let points = kill_points(events);
    on_two_workers(&points, |&(when, n)| kill_point(fx, when, n));
    eprintln!("{}: {} kill points", fx.name, points.len());
    points.len()
}

fn kill_point(fx: &Fixture, when: &str, n: usize) {
    let label = format!("{} {when}:{n}", fx.name);
    let mut t = fresh(fx);
    if fx.phase == Phase::Rollback {
        t = run_args(t).run().success().again();
        t = rollback_args(t);
    } else {
        t = run_args(t);
    }
    let crashed = t.env("RUNBOOK_CRASH_AT", &format!("{when}:{n}")).run();
    assert!(
        crashed.killed(),
        "{label}: expected death by SIGKILL, got code {:?} signal {:?}\n{}",
        crashed.code,
        crashed.signal,
        crashed.stderr
    );
    let dir = crashed.path().to_path_buf();
    let at_crash = Journal::read(&dir, RUN);
    let log_at_crash = lines_at(&dir, "log");
    let expect = (fx.outcome)(&at_crash);

    // A rollback that died is continued by `resume` or by asking for the
    // rollback again; alternate between the two.
    let ask_again = fx.phase == Phase::Rollback && when == "after";
    let mut out = if ask_again {
        rollback_args(crashed.again()).run()
    } else {
        resume(crashed, RUN)
    };
    let rolled_back_at_crash = at_crash.rollback_after_success_began()
        && at_crash
            .events
            .last()
            .is_some_and(|e| e["event"] == "run_finished");
    if ask_again && rolled_back_at_crash {
        // The rollback had finished: a second one has nothing left to do.
        assert_eq!(out.code, Some(0), "{label}: {}", out.stderr);
        assert!(
            out.stdout.contains("every rollback it owed has succeeded"),
            "{label}: {}",
            out.stdout
        );
        out = resume(out, RUN);
    } else if !ask_again && fx.phase == Phase::Rollback && !at_crash.rollback_after_success_began()
    {
        // Nothing durable says a rollback began: the run is still the
        // succeeded run, and the operator asks for the rollback again.
        assert_eq!(out.code, Some(0), "{label}: {}", out.stderr);
        assert!(
            out.stdout.contains("already finished: succeeded"),
            "{label}"
        );
        out = rollback_args(out.again()).run();
    }
    assert_eq!(
        out.code,
        Some(expect.code),
        "{label}: exit code\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    let log = lines_at(&dir, "log");
    let end = Journal::read(&dir, RUN);
    let ctx = || format!("{label}\nlog at crash: {log_at_crash:?}\nlog now: {log:?}");

    for &id in fx.logged {
        let (then, now) = (count(&log_at_crash, id), count(&log, id));
        if let Some(status) = at_crash.finished(id) {
            assert_eq!(
                now,
                then,
                "{}: {id} finished before the crash and ran again",
                ctx()
            );
            if status == "succeeded" || status == "failed" {
                assert_eq!(then, 1, "{}: {id}", ctx());
            } else {
                assert!(then <= 1, "{}: {id}", ctx());
            }
        } else if !at_crash.started(id) {
            assert_eq!(then, 0, "{}: {id} ran before it started", ctx());
            let want = usize::from(expect.ran.contains(&id));
            assert_eq!(now, want, "{}: {id} had not started at the crash", ctx());
        } else {
            let most = if expect.once.contains(&id) { 1 } else { 2 };
            assert!(now <= most, "{}: {id} ran {now} times", ctx());
            if expect.ran.contains(&id) && !expect.once.contains(&id) {
                assert!(
                    now >= 1,
                    "{}: {id} was running at the crash and never re-ran",
                    ctx()
                );
            }
        }
    }
    for &id in fx.undo_order {
        let undo = format!("undo-{id}");
        let (then, now) = (count(&log_at_crash, &undo), count(&log, &undo));
        let due = expect.unwound && end.started(id);
        if at_crash.rollback_finished(id) {
            assert_eq!(
                (then, now),
                (1, 1),
                "{}: {undo} finished before the crash",
                ctx()
            );
        } else if !at_crash.rollback_started(id) {
            assert_eq!(then, 0, "{}: {undo}", ctx());
            assert_eq!(
                now,
                usize::from(due),
                "{}: {undo} had not started at the crash",
                ctx()
            );
        } else {
            assert!(now <= 2, "{}: {undo} ran {now} times", ctx());
            if due {
                assert!(
                    now >= 1,
                    "{}: {undo} was running at the crash and never re-ran",
                    ctx()
                );
            }
        }
    }
    // Unwinding first reaches rollbacks in the required order.
    let first: Vec<&str> = fx
        .undo_order
        .iter()
        .copied()
        .filter(|id| log.contains(&format!("undo-{id}")))
        .collect();
    let mut seen: Vec<&str> = Vec::new();
    for l in &log {
        if let Some(id) = l.strip_prefix("undo-") {
            if !seen.contains(&id) {
                seen.push(id);
            }
        }
    }
    assert_eq!(seen, first, "{}: rollback order", ctx());

    if let Some(want) = &expect.flags {
        assert_eq!(&flags_at(&dir), want, "{}: flags", ctx());
    }
    let (status, _out) = common::status_json(out, ST, RUN);
    assert_eq!(status["status"], expect.status, "{}: {status:#}", ctx());
    for s in status["steps"].as_array().expect("steps") {
        assert_ne!(s["status"], "running", "{}: {status:#}", ctx());
        assert_ne!(s["rollback"]["status"], "running", "{}: {status:#}", ctx());
    }
    for (id, want) in &expect.steps {
        assert_eq!(
            step(&status, id)["status"],
            *want,
            "{}: {id} in {status:#}",
            ctx()
        );
    }
}

fn succeeded(ran: &[&'static str], flags: Option<Json>) -> Expect {
    Expect {
        code: 0,
        status: "succeeded",
        ran: ran.to_vec(),
        once: Vec::new(),
        unwound: false,
        flags,
        steps: ran.iter().map(|id| (*id, "succeeded")).collect(),
    }
}

const CHAIN: &str = r#"
version: 1
name: chain
steps:
  - id: a
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: b
    shell: |
      echo b >> log
      echo "b says hello"
      echo n=2 >> "$RUNBOOK_OUTPUT"
    rollback: { shell: echo undo-b >> log }
  - id: c
    shell: echo c >> log
    rollback: { shell: echo undo-c >> log }
"#;

#[test]
fn crash_anywhere_in_a_chain_then_resume_runs_each_step_once() {
    let n = crash_everywhere(&Fixture {
        name: "chain",
        yaml: CHAIN,
        flags: None,
        logged: &["a", "b", "c"],
        undo_order: &["c", "b", "a"],
        phase: Phase::Run,
        outcome: |_| succeeded(&["a", "b", "c"], None),
    });
    assert!(n >= 12, "{n} kill points");
}

/// `a` then `b` and `flag` side by side, then `d`; the flag uses the default
/// file store (`st/flags.json`).
const DIAMOND: &str = r#"
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
    rollback: { shell: echo undo-b >> log }
  - id: flag
    needs: [a]
    flag: { name: feature, value: { stage: canary, percent: 50 } }
  - id: d
    needs: [b, flag]
    shell: echo d >> log
    rollback: { shell: echo undo-d >> log }
"#;

fn diamond_flags_before() -> Json {
    json!({ "feature": { "stage": "off", "percent": 0 }, "other": true })
}

#[test]
fn crash_anywhere_in_a_diamond_with_a_flag_then_resume_sets_the_flag() {
    let n = crash_everywhere(&Fixture {
        name: "diamond",
        yaml: DIAMOND,
        flags: Some(diamond_flags_before()),
        logged: &["a", "b", "d"],
        undo_order: &["d", "b", "a"],
        phase: Phase::Run,
        outcome: |_| {
            let mut e = succeeded(
                &["a", "b", "d"],
                Some(json!({ "feature": { "stage": "canary", "percent": 50 }, "other": true })),
            );
            e.steps.push(("flag", "succeeded"));
            e
        },
    });
    assert!(n >= 16, "{n} kill points");
}

#[test]
fn crash_anywhere_in_a_rollback_of_a_succeeded_run_then_resume_finishes_it() {
    let n = crash_everywhere(&Fixture {
        name: "rollback",
        yaml: DIAMOND,
        flags: Some(diamond_flags_before()),
        logged: &["a", "b", "d"],
        undo_order: &["d", "b", "a"],
        phase: Phase::Rollback,
        outcome: |_| Expect {
            // `runbook rollback` exits 0 once every rollback succeeded.
            code: 0,
            status: "rolled_back",
            ran: vec!["a", "b", "d"],
            once: Vec::new(),
            unwound: true,
            flags: Some(diamond_flags_before()),
            steps: vec![
                ("a", "succeeded"),
                ("b", "succeeded"),
                ("flag", "succeeded"),
                ("d", "succeeded"),
            ],
        },
    });
    assert!(n >= 12, "{n} kill points");
}

/// Fails at its last step and unwinds; `flag` creates a flag that did not
/// exist, so unwinding must delete it again.
const UNWIND: &str = r#"
version: 1
name: unwind
steps:
  - id: a
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: flag
    flag: { name: newflag, value: true }
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
on_failure:
  - id: notify
    shell: echo notify >> log
"#;

#[test]
fn crash_anywhere_in_a_failing_run_and_its_unwinding_then_resume_unwinds_once() {
    let n = crash_everywhere(&Fixture {
        name: "unwind",
        yaml: UNWIND,
        flags: Some(json!({ "other": true })),
        logged: &["a", "b", "c", "d", "notify"],
        undo_order: &["c", "b", "a"],
        phase: Phase::Run,
        outcome: |_| Expect {
            code: 1,
            status: "rolled_back",
            ran: vec!["a", "b", "c", "notify"],
            once: Vec::new(),
            unwound: true,
            flags: Some(json!({ "other": true })),
            steps: vec![
                ("a", "succeeded"),
                ("flag", "succeeded"),
                ("b", "succeeded"),
                ("c", "failed"),
                ("d", "not_started"),
                ("notify", "succeeded"),
            ],
        },
    });
    assert!(n >= 30, "{n} kill points");
}

/// `boom` fails while `slow` runs beside it: `slow` is cancelled, and both
/// are rolled back. `boom` waits until `slow` runs under the same engine
/// process (`$PPID`); `slow` lives until it is cancelled or that engine dies
/// (`kill -0 $PPID`), so a crash leaves no long-lived orphan behind.
const CANCEL: &str = r#"
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
      echo slow >> log
      touch "slow-running-$PPID"
      for _ in $(seq 1 500); do kill -0 $PPID 2>/dev/null || exit 0; sleep 0.02; done
    rollback: { shell: echo undo-slow >> log }
  - id: boom
    needs: [a]
    shell: |
      bash ./wait_for.sh "slow-running-$PPID"
      echo boom >> log
      exit 1
    rollback: { shell: echo undo-boom >> log }
  - id: d
    needs: [slow, boom]
    shell: echo d >> log
"#;

#[test]
fn crash_anywhere_while_a_sibling_is_cancelled_then_resume_rolls_both_back() {
    let n = crash_everywhere(&Fixture {
        name: "cancel",
        yaml: CANCEL,
        flags: None,
        logged: &["a", "boom", "d"],
        undo_order: &["boom", "slow", "a"],
        phase: Phase::Run,
        outcome: |_| Expect {
            code: 1,
            status: "rolled_back",
            ran: vec!["a", "boom"],
            once: Vec::new(),
            unwound: true,
            flags: None,
            steps: vec![
                ("a", "succeeded"),
                ("slow", "cancelled"),
                ("boom", "failed"),
                ("d", "not_started"),
            ],
        },
    });
    assert!(n >= 24, "{n} kill points");
}

/// `flag` and `boom` run side by side; `boom` fails once the flag is set.
const FLAG_RACE: &str = r#"
version: 1
name: flagrace
concurrency: 4
steps:
  - id: a
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: flag
    needs: [a]
    flag: { name: newflag, value: true }
  - id: boom
    needs: [a]
    shell: |
      for _ in $(seq 1 3000); do grep -q newflag st/flags.json && break; sleep 0.02; done
      echo boom >> log
      exit 1
    rollback: { shell: echo undo-boom >> log }
"#;

#[test]
fn a_flag_step_the_engine_died_under_while_the_run_failed_is_restored() {
    // The journal of a run where `flag` recorded the flag's previous value
    // (and wrote the flag), `boom` failed, and the engine died before it
    // recorded `flag`'s end: the clean run's journal up to `boom`'s end,
    // without `flag`'s `step_finished` (the scheduler may see `boom` first).
    let fx = Fixture {
        name: "flagrace",
        yaml: FLAG_RACE,
        flags: Some(json!({ "other": true })),
        logged: &[],
        undo_order: &[],
        phase: Phase::Run,
        outcome: |_| unreachable!(),
    };
    let clean = run_args(fresh(&fx)).run().code(1);
    let events = Journal::read(clean.path(), RUN).events;
    let boom_end = events
        .iter()
        .position(|e| e["event"] == "step_finished" && e["step"] == "boom")
        .expect("boom finished");
    let crashed = run_args(fresh(&fx))
        .env("RUNBOOK_CRASH_AT", &format!("after:{}", boom_end + 1))
        .run();
    assert!(crashed.killed());
    let path = journal_path(crashed.path(), RUN);
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !(l.contains(r#""event":"step_finished","step":"flag""#)))
        .collect();
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    assert_eq!(
        flags_at(crashed.path()),
        json!({ "other": true, "newflag": true })
    );
    let j = Journal::read(crashed.path(), RUN);
    assert!(j.has("flag_previous", "flag") && j.finished("flag").is_none());
    assert_eq!(j.finished("boom").as_deref(), Some("failed"));

    let out = resume(crashed, RUN).code(1);
    assert_eq!(
        flags_at(out.path()),
        json!({ "other": true }),
        "the flag `flag` may have written is deleted again"
    );
    let log = lines_at(out.path(), "log");
    assert_eq!(log, ["a", "boom", "undo-boom", "undo-a"]);
    let (status, _) = common::status_json(out, ST, RUN);
    assert_eq!(status["status"], "rolled_back");
    assert_eq!(step(&status, "flag")["status"], "cancelled");
    assert_eq!(step(&status, "flag")["rollback"]["status"], "succeeded");
}

const ON_RESUME_FAIL: &str = r#"
version: 1
name: careful
steps:
  - id: a
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: migrate
    on_resume: fail
    shell: echo migrate >> log
    rollback: { shell: echo undo-migrate >> log }
  - id: c
    shell: echo c >> log
    rollback: { shell: echo undo-c >> log }
"#;

#[test]
fn crash_while_an_on_resume_fail_step_runs_fails_it_and_unwinds() {
    let n = crash_everywhere(&Fixture {
        name: "on_resume",
        yaml: ON_RESUME_FAIL,
        flags: None,
        logged: &["a", "migrate", "c"],
        undo_order: &["c", "migrate", "a"],
        phase: Phase::Run,
        outcome: |j| {
            if j.started("migrate") && j.finished("migrate").is_none() {
                // The engine died under it: never run again, fail it, unwind.
                Expect {
                    code: 1,
                    status: "rolled_back",
                    ran: vec!["a"],
                    once: vec!["migrate"],
                    unwound: true,
                    flags: None,
                    steps: vec![
                        ("a", "succeeded"),
                        ("migrate", "failed"),
                        ("c", "not_started"),
                    ],
                }
            } else {
                let mut e = succeeded(&["a", "migrate", "c"], None);
                e.once = vec!["migrate"];
                e
            }
        },
    });
    assert!(n >= 12, "{n} kill points");
}

#[test]
fn on_resume_fail_step_reports_why_in_status() {
    let fx = Fixture {
        name: "on_resume",
        yaml: ON_RESUME_FAIL,
        flags: None,
        logged: &[],
        undo_order: &[],
        phase: Phase::Run,
        outcome: |_| unreachable!(),
    };
    // Die just after `migrate` is recorded as started (run_started, a
    // started, a finished, migrate started).
    let crashed = run_args(fresh(&fx))
        .env("RUNBOOK_CRASH_AT", "after:4")
        .run();
    assert!(crashed.killed());
    let j = Journal::read(crashed.path(), RUN);
    assert!(j.started("migrate") && j.finished("migrate").is_none());
    let out = resume(crashed, RUN).code(1);
    let (status, _) = common::status_json(out, ST, RUN);
    let migrate = step(&status, "migrate");
    assert_eq!(migrate["status"], "failed");
    assert!(
        migrate["error"]
            .as_str()
            .unwrap_or_default()
            .contains("on_resume"),
        "{migrate:#}"
    );
}

const FINALLY: &str = r#"
version: 1
name: tidy
steps:
  - id: a
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: b
    shell: echo b >> log
    rollback: { shell: echo undo-b >> log }
finally:
  - id: sweep
    shell: echo sweep >> log
  - id: note
    shell: echo note >> log
"#;

#[test]
fn crash_anywhere_including_finally_then_resume_runs_finally_once() {
    let n = crash_everywhere(&Fixture {
        name: "finally",
        yaml: FINALLY,
        flags: None,
        logged: &["a", "b", "sweep", "note"],
        undo_order: &["b", "a"],
        phase: Phase::Run,
        outcome: |_| succeeded(&["a", "b", "sweep", "note"], None),
    });
    assert!(n >= 16, "{n} kill points");
}

#[test]
fn a_second_crash_during_resume_is_resumed_too() {
    let fx = Fixture {
        name: "unwind",
        yaml: UNWIND,
        flags: Some(json!({ "other": true })),
        logged: &[],
        undo_order: &[],
        phase: Phase::Run,
        outcome: |_| unreachable!(),
    };
    // First death while `b` runs, second during the resumed unwinding.
    let crashed = run_args(fresh(&fx))
        .env("RUNBOOK_CRASH_AT", "after:7")
        .run();
    assert!(crashed.killed());
    let again = crashed
        .again()
        .args(&["resume", RUN, "--state-dir", ST])
        .env("RUNBOOK_CRASH_AT", "after:6")
        .run();
    assert!(again.killed(), "{}", again.stderr);
    let out = resume(again, RUN).code(1);
    let log = lines_at(out.path(), "log");
    for id in ["a", "c", "notify", "undo-c", "undo-b", "undo-a"] {
        assert!((1..=2).contains(&count(&log, id)), "{id}: {log:?}");
    }
    assert_eq!(count(&log, "d"), 0);
    assert_eq!(flags_at(out.path()), json!({ "other": true }));
}

/// `b` runs until it is cancelled (Ctrl-C); `c` after it.
const INTERRUPTIBLE: &str = r#"
version: 1
name: interruptible
steps:
  - id: a
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: b
    shell: |
      echo b >> log
      touch b-running
      bash ./wait_for.sh never
    rollback: { shell: echo undo-b >> log }
  - id: c
    shell: echo c >> log
    rollback: { shell: echo undo-c >> log }
finally:
  - id: fin
    shell: echo fin >> log
"#;

#[test]
fn a_crash_while_unwinding_after_ctrl_c_resumes_into_the_interrupted_unwinding() {
    // Events: run_started, a started, a finished, b started, signal, b
    // finished (cancelled by SIGINT), unwind_started, ...: die after 6 (the
    // engine recorded b as cancelled but not yet the unwinding), 7 and 8.
    for n in [6, 7, 8] {
        let mut running = Test::new()
            .file(RB, INTERRUPTIBLE)
            .file("wait_for.sh", WAIT_FOR)
            .args(&["run", RB, "--state-dir", ST, "--run-id", RUN])
            .env("RUNBOOK_CRASH_AT", &format!("after:{n}"))
            .spawn();
        running.wait_for_file("b-running", Duration::from_secs(60));
        running.signal(libc::SIGINT);
        let crashed = running.wait();
        assert!(
            crashed.killed(),
            "after:{n}: {:?}\n{}",
            crashed.code,
            crashed.stderr
        );
        let j = Journal::read(crashed.path(), RUN);
        assert_eq!(j.finished("b").as_deref(), Some("cancelled"), "after:{n}");

        let out = resume(crashed, RUN);
        let out = out.code(130);
        assert_eq!(
            lines_at(out.path(), "log"),
            ["a", "b", "undo-b", "undo-a", "fin"],
            "after:{n}"
        );
        let (status, _) = common::status_json(out, ST, RUN);
        assert_eq!(status["status"], "interrupted", "after:{n}");
        assert_eq!(step(&status, "b")["status"], "cancelled");
        assert_eq!(step(&status, "c")["status"], "not_started");
    }
}

// ---------------------------------------------------------------------------
// Torn and damaged journals

#[test]
fn a_torn_last_record_is_ignored_with_a_note_and_the_run_finishes() {
    // After:6 stops just after `b` finished (run_started, a started, a
    // finished, b started, b's output line, b finished); chopping bytes off
    // the end tears b's record, so b counts as running and runs again.
    for chop in [1usize, 2, 10, 40] {
        let fx_test = Test::new().file(RB, CHAIN);
        let crashed = run_args(fx_test).env("RUNBOOK_CRASH_AT", "after:6").run();
        assert!(crashed.killed());
        let path = journal_path(crashed.path(), RUN);
        let bytes = std::fs::read(&path).unwrap();
        let last = String::from_utf8_lossy(&bytes)
            .lines()
            .last()
            .unwrap()
            .to_string();
        assert!(
            last.contains("step_finished") && last.contains("\"b\""),
            "{last}"
        );
        assert!(chop < last.len());
        std::fs::write(&path, &bytes[..bytes.len() - chop]).unwrap();

        let out = crashed
            .again()
            .args(&["resume", RUN, "--state-dir", ST])
            .run()
            .success()
            .stderr_contains("torn")
            .stderr_not_contains("panicked");
        let log = lines_at(out.path(), "log");
        assert_eq!(count(&log, "a"), 1, "chop {chop}: {log:?}");
        assert_eq!(
            count(&log, "b"),
            2,
            "chop {chop}: b's end was lost, so b re-ran: {log:?}"
        );
        assert_eq!(count(&log, "c"), 1, "chop {chop}: {log:?}");
        // The journal is whole again: every line is JSON, the torn bytes gone.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'));
        for (i, l) in text.lines().enumerate() {
            assert!(
                serde_json::from_str::<Json>(l).is_ok(),
                "chop {chop}: line {} is not JSON: {l}",
                i + 1
            );
        }
        let (status, out) = common::status_json(out, ST, RUN);
        assert_eq!(status["status"], "succeeded");
        // Resuming the finished run says so and exits 0, with no new note.
        out.again()
            .args(&["resume", RUN, "--state-dir", ST])
            .run()
            .success()
            .stdout_contains("already finished: succeeded")
            .stderr_not_contains("torn");
    }
}

#[test]
fn a_journal_damaged_in_the_middle_is_a_clear_error_not_a_panic() {
    let crashed = run_args(Test::new().file(RB, CHAIN))
        .env("RUNBOOK_CRASH_AT", "after:6")
        .run();
    assert!(crashed.killed());
    let path = journal_path(crashed.path(), RUN);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // Line 3 (a's step_started) cut in half; later lines intact.
    let half = lines[2].len() / 2;
    lines[2].truncate(half);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let out = crashed
        .again()
        .args(&["resume", RUN, "--state-dir", ST])
        .run();
    assert!(
        matches!(out.code, Some(2 | 4)),
        "exit {:?}\n{}",
        out.code,
        out.stderr
    );
    let out = out
        .stderr_contains("line 3")
        .stderr_contains(RUN)
        .stderr_not_contains("panicked");
    assert_eq!(lines_at(out.path(), "log"), ["a", "b"], "nothing ran again");

    // Not even half a line of an event: an unknown event kind in the middle.
    let mut lines2 = lines.clone();
    lines2[2] = r#"{"event":"no_such_event","at":"2026-01-01T00:00:00.000Z"}"#.into();
    std::fs::write(&path, lines2.join("\n") + "\n").unwrap();
    let out = out.again().args(&["resume", RUN, "--state-dir", ST]).run();
    assert!(
        matches!(out.code, Some(2 | 4)),
        "exit {:?}\n{}",
        out.code,
        out.stderr
    );
    let out = out
        .stderr_contains("line 3")
        .stderr_not_contains("panicked");

    // `status` of that run is an error too, not a panic.
    let out = out.again().args(&["status", RUN, "--state-dir", ST]).run();
    assert!(
        matches!(out.code, Some(2 | 4)),
        "exit {:?}\n{}",
        out.code,
        out.stderr
    );
    let out = out.stderr_not_contains("panicked");
    // `rollback` likewise.
    let out = out
        .again()
        .args(&["rollback", RUN, "--state-dir", ST])
        .run();
    assert!(
        matches!(out.code, Some(2 | 4)),
        "exit {:?}\n{}",
        out.code,
        out.stderr
    );
    out.stderr_not_contains("panicked");
}

// ---------------------------------------------------------------------------
// Locks between processes

/// One step that says it holds the lock (`held-<run id>`) and waits for
/// `release`, both in `$WORK`.
const LOCKED: &str = r#"
version: 1
name: locked
params:
  env: { type: string, default: staging }
lock: "deploy-{{ params.env }}"
steps:
  - id: hold
    shell: |
      cd "$WORK"
      echo "ran $RUNBOOK_RUN_ID" >> log
      touch "held-$RUNBOOK_RUN_ID"
      bash ./wait_for.sh release
"#;

/// A command started from its own directory against `work`'s runbook and
/// state dir (steps `cd "$WORK"`).
fn in_work(work: &Path, args: &[&str]) -> Test {
    let mut full = Vec::new();
    for a in args {
        full.push(match *a {
            "RB" => work.join(RB).to_string_lossy().into_owned(),
            "ST" => work.join(ST).to_string_lossy().into_owned(),
            other => other.to_string(),
        });
    }
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    Test::new().env("WORK", work.to_str().unwrap()).args(&refs)
}

#[test]
fn same_lock_key_is_refused_naming_the_holder_other_keys_run_and_resume_of_a_live_run_exits_4() {
    let first = Test::new().file(RB, LOCKED).file("wait_for.sh", WAIT_FOR);
    let work = first.path().to_path_buf();
    let mut first = first
        .env("WORK", work.to_str().unwrap())
        .args(&["run", RB, "--state-dir", ST, "--run-id", "holder-1"])
        .spawn();
    first.wait_for_file("held-holder-1", Duration::from_secs(60));

    // Same key: refused at once (the first run is still there, holding it).
    let refused = in_work(
        &work,
        &["run", "RB", "--state-dir", "ST", "--run-id", "second"],
    )
    .run();
    let refused = refused.code(4).stderr_contains("holder-1");
    assert!(!work.join("held-second").exists());
    assert!(!work
        .join(ST)
        .join("runs")
        .join("second")
        .join("journal.jsonl")
        .exists());
    drop(refused);

    // `resume` of the live run: another process owns it.
    in_work(&work, &["resume", "holder-1", "--state-dir", "ST"])
        .run()
        .code(4)
        .stderr_not_contains("panicked");
    // `status` shows it as running.
    let st = in_work(
        &work,
        &[
            "status",
            "holder-1",
            "--state-dir",
            "ST",
            "--format",
            "json",
        ],
    )
    .run()
    .success();
    let v: Json = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(v["status"], "running");
    assert_eq!(step(&v, "hold")["status"], "running");

    // Another key is not blocked.
    let other = in_work(
        &work,
        &[
            "run",
            "RB",
            "--state-dir",
            "ST",
            "--run-id",
            "other",
            "--param",
            "env=production",
        ],
    )
    .spawn();
    assert!(
        poll_until(Duration::from_secs(60), || work.join("held-other").exists()),
        "a run with another lock key was blocked"
    );

    std::fs::write(work.join("release"), "").unwrap();
    other.wait().success();
    let first = first.wait().success();
    // The key is free again.
    let _ = in_work(
        &work,
        &["run", "RB", "--state-dir", "ST", "--run-id", "third"],
    )
    .run()
    .success();
    assert_eq!(
        lines_at(first.path(), "log"),
        ["ran holder-1", "ran other", "ran third"]
    );
}

#[test]
fn a_lock_held_by_a_killed_process_is_released_and_the_run_resumes() {
    let t = Test::new().file(RB, LOCKED).file("wait_for.sh", WAIT_FOR);
    let work = t.path().to_path_buf();
    let mut victim = t
        .env("WORK", work.to_str().unwrap())
        .args(&["run", RB, "--state-dir", ST, "--run-id", "victim"])
        .spawn();
    victim.wait_for_file("held-victim", Duration::from_secs(60));
    victim.signal(libc::SIGKILL);
    let dead = victim.wait();
    assert_eq!(dead.signal, Some(libc::SIGKILL));
    // Its step is an orphan waiting for `release`; let it go.
    std::fs::write(work.join("release"), "").unwrap();

    // The kernel dropped the flock with the process: the same key is free.
    in_work(
        &work,
        &["run", "RB", "--state-dir", "ST", "--run-id", "next"],
    )
    .run()
    .success();
    // The killed run is `stopped`, and resumes (its step runs again).
    let st = in_work(
        &work,
        &["status", "victim", "--state-dir", "ST", "--format", "json"],
    )
    .run()
    .success();
    let v: Json = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(v["status"], "stopped");
    in_work(&work, &["resume", "victim", "--state-dir", "ST"])
        .run()
        .success();
    let log = lines_at(dead.path(), "log");
    assert_eq!(count(&log, "ran victim"), 2, "{log:?}");
    assert_eq!(count(&log, "ran next"), 1, "{log:?}");
}

// ---------------------------------------------------------------------------
// `runbook rollback` and `runbook resume` of finished runs

/// `x` and `y` start together; `x` waits until the journal has recorded
/// `y`'s end, so completion order is y, x (the reverse of file order), then
/// z. Each records an output its rollback prints. The unwind follows the
/// plan's order (z, y, x), not the completion order, which timing decides.
const OUTPUTS: &str = r#"
version: 1
name: outputs
concurrency: 4
steps:
  - id: x
    needs: []
    shell: |
      j="st/runs/$RUNBOOK_RUN_ID/journal.jsonl"
      for _ in $(seq 1 3000); do
        grep -q '"event":"step_finished","step":"y"' "$j" && break
        sleep 0.02
      done
      echo x >> log
      echo "val=x-out" >> "$RUNBOOK_OUTPUT"
    rollback: { shell: "echo undo-x {{ step.outputs.val }} {{ step.status }} >> log" }
  - id: y
    needs: []
    shell: |
      echo y >> log
      echo "val=y-out" >> "$RUNBOOK_OUTPUT"
    rollback: { shell: "echo undo-y {{ step.outputs.val }} >> log" }
  - id: z
    needs: [x, y]
    shell: |
      echo z >> log
      echo "val=z-out" >> "$RUNBOOK_OUTPUT"
    rollback: { shell: "echo undo-z {{ step.outputs.val }} >> log" }
finally:
  - id: fin
    shell: echo fin >> log
"#;

#[test]
fn rollback_of_a_succeeded_run_undoes_in_the_plans_order_with_recorded_outputs() {
    let out = Test::new()
        .file(RB, OUTPUTS)
        .file("wait_for.sh", WAIT_FOR)
        .args(&["run", RB, "--state-dir", ST, "--run-id", RUN])
        .run()
        .success();
    assert_eq!(lines_at(out.path(), "log"), ["y", "x", "z", "fin"]);

    // Resuming a finished run only reports it.
    let out = resume(out, RUN)
        .success()
        .stdout_contains("already finished: succeeded");
    assert_eq!(lines_at(out.path(), "log").len(), 4, "resume ran something");

    let out = rollback_args(out.again()).run();
    // A rollback that undid everything exits 0 (it used to exit 1, so
    // `runbook rollback X && page "rolled back"` never paged).
    let out = out.code(0);
    assert_eq!(
        lines_at(out.path(), "log"),
        [
            "y",
            "x",
            "z",
            "fin",
            "undo-z z-out",
            "undo-y y-out",
            "undo-x x-out succeeded",
            "fin"
        ],
        "the plan's unwind order, whatever the completion order; then finally again"
    );
    let (status, out) = common::status_json(out, ST, RUN);
    assert_eq!(status["status"], "rolled_back");
    for id in ["x", "y", "z"] {
        assert_eq!(step(&status, id)["status"], "succeeded");
        assert_eq!(step(&status, id)["rollback"]["status"], "succeeded");
    }

    // A second rollback has nothing left to do.
    let out = rollback_args(out.again())
        .run()
        .code(0)
        .stdout_contains("every rollback it owed has succeeded");
    // Resume of the rolled-back run reports it with the rollback's exit code.
    let out = resume(out, RUN)
        .code(0)
        .stdout_contains("already finished: rolled_back");
    assert_eq!(lines_at(out.path(), "log").len(), 8);
}

#[test]
fn rollback_of_a_cleanly_unwound_run_does_nothing_and_a_crashed_run_is_sent_to_resume() {
    let failed = run_args(
        Test::new()
            .file(RB, UNWIND)
            .file(&format!("{ST}/flags.json"), "{}"),
    )
    .run()
    .code(1);
    let log_before = lines_at(failed.path(), "log");
    let failed = rollback_args(failed.again())
        .run()
        .code(0)
        .stdout_contains("every rollback it owed has succeeded");
    assert_eq!(lines_at(failed.path(), "log"), log_before);
    resume(failed, RUN)
        .code(1)
        .stdout_contains("already finished: rolled_back");

    // A crashed run: `rollback` sends the operator to `resume`.
    let crashed = run_args(Test::new().file(RB, CHAIN))
        .env("RUNBOOK_CRASH_AT", "after:3")
        .run();
    assert!(crashed.killed());
    let crashed = rollback_args(crashed.again())
        .run()
        .code(2)
        .stderr_contains("resume");
    assert_eq!(lines_at(crashed.path(), "log"), ["a"]);

    // Unknown run ids are usage errors.
    crashed
        .again()
        .args(&["rollback", "nope", "--state-dir", ST])
        .run()
        .code(2)
        .stderr_contains("nope");
}

// ---------------------------------------------------------------------------
// `runbook status`

#[test]
fn status_lists_runs_and_shows_one_runs_steps() {
    let retry = r#"
version: 1
name: statusbook
steps:
  - id: first
    shell: echo first >> log
    rollback: { shell: echo undo-first >> log }
  - id: flaky
    retry: { attempts: 3, delay: 10ms }
    shell: |
      n=$(cat flaky.count 2>/dev/null || echo 0)
      n=$((n+1)); echo $n > flaky.count
      [ "$n" -ge 2 ]
      echo flaky >> log
    rollback: { shell: echo undo-flaky >> log }
  - id: last
    shell: |
      echo last >> log
      [ ! -e fail-last ]
"#;
    let t = Test::new().file("statusbook.yaml", retry);
    let out = t
        .args(&[
            "run",
            "statusbook.yaml",
            "--state-dir",
            ST,
            "--run-id",
            "good",
        ])
        .run()
        .success();
    std::fs::write(out.path().join("flaky.count"), "0").unwrap();
    std::fs::write(out.path().join("fail-last"), "").unwrap();
    let out = out
        .again()
        .args(&[
            "run",
            "statusbook.yaml",
            "--state-dir",
            ST,
            "--run-id",
            "bad",
        ])
        .run()
        .code(1);
    let out = out
        .again()
        .file(RB, CHAIN)
        .args(&["run", RB, "--state-dir", ST, "--run-id", "crashed"])
        .env("RUNBOOK_CRASH_AT", "after:3")
        .run();
    assert!(out.killed());

    // The list, as JSON.
    let listed = out
        .again()
        .args(&["status", "--state-dir", ST, "--format", "json"])
        .run()
        .success();
    let runs: Json = serde_json::from_str(&listed.stdout).expect("JSON");
    let runs = runs.as_array().expect("a list of runs");
    let find = |id: &str| {
        runs.iter()
            .find(|r| r["run_id"] == id)
            .unwrap_or_else(|| panic!("no run {id} in {runs:#?}"))
    };
    for (id, runbook, status) in [
        ("good", "statusbook", "succeeded"),
        ("bad", "statusbook", "rolled_back"),
        ("crashed", "chain", "stopped"),
    ] {
        let r = find(id);
        assert_eq!(r["runbook"], runbook, "{r:#}");
        assert_eq!(r["status"], status, "{r:#}");
        assert!(
            r["started_at"].as_str().is_some_and(|s| s.len() >= 19),
            "{r:#}"
        );
        if status == "stopped" {
            assert!(r["duration_ms"].is_null(), "{r:#}");
        } else {
            assert!(r["duration_ms"].is_u64(), "{r:#}");
        }
    }
    // Oldest first.
    let order: Vec<&str> = runs.iter().filter_map(|r| r["run_id"].as_str()).collect();
    assert_eq!(order, ["good", "bad", "crashed"]);

    // The list, as text: a header, then one line per run.
    let text = listed
        .again()
        .args(&["status", "--state-dir", ST])
        .run()
        .success();
    let lines: Vec<&str> = text.stdout.lines().collect();
    for col in ["run", "runbook", "status", "started", "duration"] {
        assert!(lines[0].contains(col), "header {:?}", lines[0]);
    }
    for (id, runbook, status) in [
        ("good", "statusbook", "succeeded"),
        ("bad", "statusbook", "rolled_back"),
        ("crashed", "chain", "stopped"),
    ] {
        let line = lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_else(|| panic!("no line for {id}:\n{}", text.stdout));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1], runbook, "{line}");
        assert_eq!(cols[2], status, "{line}");
        assert!(cols[3].starts_with("20"), "started: {line}");
        assert_eq!(cols.len(), 5, "{line}");
        if status == "stopped" {
            assert_eq!(cols[4], "-", "{line}");
        }
    }

    // One run, as JSON: steps with status, attempts and rollbacks.
    let (bad, out) = common::status_json(text, ST, "bad");
    assert_eq!(bad["run_id"], "bad");
    assert_eq!(bad["status"], "rolled_back");
    assert_eq!(step(&bad, "first")["status"], "succeeded");
    assert_eq!(step(&bad, "first")["attempts"], 1);
    assert_eq!(step(&bad, "first")["rollback"]["status"], "succeeded");
    assert_eq!(step(&bad, "flaky")["status"], "succeeded");
    assert_eq!(step(&bad, "flaky")["attempts"], 2);
    assert_eq!(step(&bad, "last")["status"], "failed");
    assert_eq!(step(&bad, "last")["attempts"], 1);
    let (crashed, out) = common::status_json(out, ST, "crashed");
    assert_eq!(crashed["status"], "stopped");
    assert_eq!(step(&crashed, "a")["status"], "succeeded");
    assert_eq!(step(&crashed, "b")["status"], "not_started");

    // One run, as text: a line per step with status and attempts.
    let text = out
        .again()
        .args(&["status", "bad", "--state-dir", ST])
        .run()
        .success();
    assert!(text.stdout.contains("bad"), "{}", text.stdout);
    assert!(text.stdout.contains("rolled_back"), "{}", text.stdout);
    let row = |id: &str| -> Vec<String> {
        text.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_else(|| panic!("no row for {id}:\n{}", text.stdout))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(row("first")[1], "succeeded");
    assert_eq!(row("flaky")[1], "succeeded");
    assert!(
        row("flaky")[2].starts_with('2'),
        "attempts: {:?}",
        row("flaky")
    );
    assert_eq!(row("last")[1], "failed");
    assert!(row("first").contains(&"succeeded".to_string()));

    // An unknown run is a usage error.
    text.again()
        .args(&["status", "nope", "--state-dir", ST])
        .run()
        .code(2);
}
