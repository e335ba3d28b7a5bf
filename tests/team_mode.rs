#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! Team mode against a real PostgreSQL: `--state-dir postgres://...`.
//!
//! Each "machine" is a working directory of its own (a `Test` with its own
//! temp dir) that shares nothing with the others but the database URL, so
//! whatever passes between them went through the database. Leases are
//! short (1-2 s) so that takeovers happen inside a test; nothing waits a
//! fixed time where it can poll for a state instead.

mod common;

use std::time::Duration;

use common::postgres::Postgres;
use common::{kill_points, on_two_workers, poll_until, Running, Test, WAIT_FOR};

/// A machine: a working directory of its own, on the database.
fn machine(url: &str) -> Test {
    Test::new()
        .env("RUNBOOK_STATE_DIR", url)
        .file("wait_for.sh", WAIT_FOR)
}

fn status_json(url: &str, run: &str) -> serde_json::Value {
    let out = machine(url)
        .args(&["status", run, "--format", "json"])
        .run()
        .success();
    serde_json::from_str(&out.stdout).unwrap()
}

/// The run's status JSON, or null while it does not exist (yet).
fn status_or_null(url: &str, run: &str) -> serde_json::Value {
    let out = machine(url)
        .args(&["status", run, "--format", "json"])
        .run();
    serde_json::from_str(&out.stdout).unwrap_or_default()
}

fn wait_for_status(url: &str, run: &str, want: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ok = poll_until(Duration::from_secs(60), || {
        let out = machine(url)
            .args(&["status", run, "--format", "json"])
            .run();
        if out.code != Some(0) {
            return false;
        }
        last = serde_json::from_str(&out.stdout).unwrap_or_default();
        last["status"] == want
    });
    assert!(ok, "run {run} never became {want}: {last:#}");
    last
}

fn step_status(s: &serde_json::Value, id: &str) -> String {
    s["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["id"] == id)
        .map(|st| st["status"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// Steps that append `STEP-MACHINE` to `log`; `b` then waits for
/// `go-MACHINE`. A resumed run keeps the directory it started in when that
/// exists (here: one host plays every machine), so each engine says which
/// machine it is through `$MACHINE`.
const LONG: &str = r#"
version: 1
name: long
steps:
  - id: a
    shell: echo a-$MACHINE >> log
  - id: b
    needs: [a]
    shell: |
      echo b-$MACHINE >> log
      bash ./wait_for.sh go-$MACHINE
  - id: c
    needs: [b]
    shell: echo c-$MACHINE >> log
"#;

fn lines(t: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(t.join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_run_is_watched_approved_and_followed_from_other_machines() {
    let pg = Postgres::start();
    let url = pg.database("watched");
    let rb = r#"
version: 1
name: approved-elsewhere
steps:
  - id: build
    shell: echo built
  - id: sign_off
    needs: [build]
    approval: { approvers: [alice, bob], required: 2 }
  - id: ship
    needs: [sign_off]
    shell: echo shipped
"#;
    let run = machine(&url)
        .file("rb.yaml", rb)
        .args(&["run", "rb.yaml", "--run-id", "w1", "--as", "carol"])
        .spawn();
    let s = wait_for_status(&url, "w1", "running");
    assert_eq!(s["holder"]["pid"], run.pid(), "{s:#}");
    poll_until(Duration::from_secs(30), || {
        status_json(&url, "w1")["waiting"]
            .as_array()
            .is_some_and(|w| !w.is_empty())
    });
    // The printed command names the database without its password.
    let waiting = &status_json(&url, "w1")["waiting"][0];
    assert!(
        waiting["approve_command"].as_str().unwrap().contains(&url),
        "{waiting:#}"
    );
    // Followed live from one machine, served as a web page from another.
    let follow = machine(&url).args(&["logs", "w1", "--follow"]).spawn();
    let listen = format!("127.0.0.1:{}", common::raw_tcp::free_port());
    let _server = machine(&url).args(&["serve", "--listen", &listen]).spawn();
    let mut page = String::new();
    let served = poll_until(Duration::from_secs(30), || {
        page =
            common::services::http_request("GET", &format!("http://{listen}/api/runs"), &[], None)
                .map(|(_, _, body)| body)
                .unwrap_or_default();
        page.contains("\"w1\"")
    });
    assert!(served, "serve never listed the run: {page}");
    machine(&url)
        .args(&["approve", "w1", "sign_off", "--as", "alice"])
        .run()
        .success();
    // A wrong person is refused by the rules the waiting engine published.
    machine(&url)
        .args(&["approve", "w1", "sign_off", "--as", "mallory"])
        .run()
        .code(2);
    machine(&url)
        .args(&["approve", "w1", "sign_off", "--as", "bob"])
        .run()
        .success();
    let out = run.wait().success();
    assert!(out.stdout.contains("shipped") || out.stderr.contains("ship: succeeded"));
    let followed = follow.wait().success();
    assert!(
        followed.stdout.contains("[ship] shipped"),
        "{}",
        followed.stdout
    );
    // A third machine follows the whole story from the events table.
    let logs = machine(&url).args(&["logs", "w1"]).run().success();
    assert!(logs.stdout.contains("[ship] shipped"), "{}", logs.stdout);
    assert!(logs.stdout.contains("approved by alice"), "{}", logs.stdout);
    let s = status_json(&url, "w1");
    assert_eq!(s["status"], "succeeded");
    let by: Vec<&str> = s["steps"][1]["approvals"]
        .as_array()
        .map(|d| d.iter().filter_map(|x| x["by"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(by, ["alice", "bob"], "{s:#}");
}

/// Starts LONG on a machine of its own with a short lease; returns once
/// step `b` runs there.
fn start_long(url: &str, run_id: &str, lease: &str) -> Running {
    let mut run = machine(url)
        .env("MACHINE", "m1")
        .file("rb.yaml", LONG)
        .args(&["run", "rb.yaml", "--run-id", run_id, "--lease", lease])
        .spawn();
    let ok = poll_until(Duration::from_secs(30), || {
        lines(run.path()).len() == 2 || run.exited()
    });
    assert!(ok && !run.exited(), "step b never started");
    run
}

fn psql_count(pg: &Postgres, db: &str, sql: &str) -> i64 {
    pg.psql(db, sql).parse().unwrap()
}

/// Starts `command` again and again until it gets in (`got_in`), each try
/// before then refused at once (exit 4, saying `refused`): a `resume`
/// waiting for a lease to run out, a run for a lock. Returns it running.
fn again_until_in(
    command: impl Fn() -> Test,
    refused: &str,
    mut got_in: impl FnMut(&Running) -> bool,
) -> Running {
    for _ in 0..100 {
        let mut r = command().spawn();
        let settled = poll_until(Duration::from_secs(20), || r.exited() || got_in(&r));
        assert!(settled, "it neither got in nor exited");
        if !r.exited() {
            return r;
        }
        let out = r.wait().code(4);
        assert!(out.stderr.contains(refused), "{}", out.stderr);
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("it never got in");
}

/// `resume` as machine `name` until it takes the run over; returns it
/// running, with step b started again.
fn take_over(url: &str, run_id: &str, name: &str) -> Running {
    again_until_in(
        || {
            machine(url)
                .env("MACHINE", name)
                .args(&["resume", run_id, "--lease", "2s"])
        },
        "is being run by process",
        |r| {
            let s = status_json(url, run_id);
            s["holder"]["pid"] == r.pid() && step_status(&s, "b") == "running"
        },
    )
}

#[test]
fn kill_9_of_the_holder_then_resume_elsewhere_takes_over_once_the_lease_ends() {
    let pg = Postgres::start();
    let url = pg.database("takeover");
    let first = start_long(&url, "k1", "2s");
    let first_pid = first.pid();
    first.signal(libc::SIGKILL);
    // Its directory stays: the run's steps go on running there.
    let first_dir = first.wait();

    // At once: the lease is still held, and the refusal names the holder.
    let refused = machine(&url)
        .args(&["resume", "k1", "--lease", "2s"])
        .run()
        .code(4);
    assert!(
        refused.stderr.contains(&format!("process {first_pid} on ")),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("lease"), "{}", refused.stderr);

    // Once it ran out, another machine takes the run over.
    let site = first_dir;
    let second = take_over(&url, "k1", "m2");
    std::fs::write(site.path().join("go-m2"), "").unwrap();
    let out = second.wait().success();
    // a finished on the dead machine and never ran again; b ran again.
    assert_eq!(lines(site.path()), ["a-m1", "b-m1", "b-m2", "c-m2"]);
    assert!(!out.stdout.contains("a: started"), "{}", out.stdout);
    let s = status_json(&url, "k1");
    assert_eq!(s["status"], "succeeded");
    assert_eq!(s["holder"], serde_json::Value::Null);
    assert_eq!(
        psql_count(
            &pg,
            "takeover",
            "SELECT max(epoch) FROM runbook_events WHERE run_id = 'k1'"
        ),
        2
    );
}

#[test]
fn an_engine_stopped_past_its_lease_is_fenced_when_it_wakes_and_writes_nothing() {
    let pg = Postgres::start();
    let url = pg.database("fenced");
    let old = start_long(&url, "f1", "1s");
    old.signal(libc::SIGSTOP);
    // Past the lease, another machine takes over and runs b again.
    let new = take_over(&url, "f1", "m2");
    let epoch_one = "SELECT count(*) FROM runbook_events WHERE run_id = 'f1' AND epoch = 1";
    let before = psql_count(&pg, "fenced", epoch_one);
    // The old engine wakes with b's wait over: it must stop without
    // writing or starting anything.
    std::fs::write(old.path().join("go-m1"), "").unwrap();
    old.signal(libc::SIGCONT);
    let out = old.wait().code(4);
    assert!(
        out.stderr.contains("taken over by process"),
        "{}",
        out.stderr
    );
    assert_eq!(
        psql_count(&pg, "fenced", epoch_one),
        before,
        "the fenced engine wrote"
    );
    assert_eq!(lines(out.path()), ["a-m1", "b-m1", "b-m2"]);
    std::fs::write(out.path().join("go-m2"), "").unwrap();
    new.wait().success();
    assert_eq!(lines(out.path()), ["a-m1", "b-m1", "b-m2", "c-m2"]);
    assert_eq!(status_json(&url, "f1")["status"], "succeeded");
}

#[test]
fn a_cancel_from_another_machine_unwinds_the_run() {
    let pg = Postgres::start();
    let url = pg.database("cancelled");
    let run = start_long(&url, "c1", "2s");
    machine(&url)
        .args(&["cancel", "c1"])
        .run()
        .success()
        .stdout_contains("asked run c1");
    let out = run.wait().code(130);
    assert!(out.stdout.contains("run interrupted"), "{}", out.stdout);
    assert_eq!(status_json(&url, "c1")["status"], "interrupted");
}

#[test]
fn the_database_restarted_mid_run_the_engine_waits_then_goes_on() {
    let mut pg = Postgres::start();
    let url = pg.database("restarted");
    let run = start_long(&url, "d1", "30s");
    pg.stop();
    // b ends while the database is down: its result cannot be journaled,
    // so c must not start until the database is back.
    std::fs::write(run.path().join("go-m1"), "").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        lines(run.path()),
        ["a-m1", "b-m1"],
        "c ran without a journal"
    );
    pg.start_again();
    let out = run.wait().success();
    assert!(
        out.stderr.contains("the database is unreachable"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("the database is back"),
        "{}",
        out.stderr
    );
    assert_eq!(lines(out.path()), ["a-m1", "b-m1", "c-m1"]);
    assert_eq!(status_json(&url, "d1")["status"], "succeeded");
}

#[test]
fn an_unreachable_database_at_start_exits_4_naming_it_without_the_password() {
    let port = common::raw_tcp::free_port();
    let url = format!("postgres://deployer:hunter2-secret@127.0.0.1:{port}/runs");
    let out = machine(&url)
        .file("rb.yaml", LONG)
        .args(&["run", "rb.yaml"])
        .run()
        .code(4);
    assert!(
        out.stderr
            .contains(&format!("postgres://deployer@127.0.0.1:{port}/runs")),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
    assert!(lines(out.path()).is_empty(), "a step ran");
    let out = machine(&url).args(&["status"]).run().code(4);
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
}

/// Each run appends `start ID` and `end ID` to `$ORDER` around a short
/// sleep, holding one queued lock.
const QUEUED: &str = r#"
version: 1
name: queued
lock: { key: "shared-{{ params.env }}", wait: 5m }
params:
  env: { type: string, default: prod }
steps:
  - id: work
    shell: |
      echo "start $RUNBOOK_RUN_ID" >> "$ORDER"
      # The first run holds the key until the test has seen the second queued.
      if [ "$RUNBOOK_RUN_ID" = q00 ]; then
        for i in $(seq 3000); do [ -e "$GO" ] && break; sleep 0.02; done
      fi
      sleep 0.05
      echo "end $RUNBOOK_RUN_ID" >> "$ORDER"
"#;

/// `runs` runs from `at_once` processes at a time, each started once the
/// one before it is in the queue: they must start in that order and never
/// overlap. `state` is the database URL or a state dir.
fn runs_take_a_queued_lock_in_order(state: &str, runs: usize, at_once: usize) {
    let order = tempfile::NamedTempFile::new().unwrap();
    let order_path = order.path().display().to_string();
    let go = tempfile::tempdir().unwrap();
    let go_path = go.path().join("go").display().to_string();
    let mut live: std::collections::VecDeque<Running> = std::collections::VecDeque::new();
    let (mut saw_queued, mut saw_second_queued) = (false, false);
    for k in 0..runs {
        if live.len() == at_once {
            live.pop_front().unwrap().wait().success();
        }
        let id = format!("q{k:02}");
        let run = machine(state)
            .env("ORDER", &order_path)
            .env("GO", &go_path)
            .file("rb.yaml", QUEUED)
            .args(&["run", "rb.yaml", "--run-id", &id, "--lease", "5s"])
            .spawn();
        // In the queue (or past it) before the next one asks.
        let ok = poll_until(Duration::from_secs(60), || {
            let out = machine(state)
                .args(&["status", &id, "--format", "json"])
                .run();
            let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
            if s["status"] == "queued" {
                saw_queued = true;
                saw_second_queued |= k == 1;
                assert!(
                    s["queue_position"].as_u64().is_some_and(|p| p >= 1),
                    "{s:#}"
                );
            }
            matches!(
                s["status"].as_str(),
                Some("queued" | "running" | "succeeded")
            )
        });
        assert!(ok, "run {id} never reached the queue");
        if k == 1 {
            // q00 holds the key until now: q01 was queued, and was seen so.
            assert!(saw_second_queued, "q01 was not seen queued behind q00");
            std::fs::write(&go_path, "").unwrap();
        }
        live.push_back(run);
    }
    for run in live {
        run.wait().success();
    }
    assert!(saw_queued, "no run was ever seen queued");
    let text = std::fs::read_to_string(order.path()).unwrap();
    let got: Vec<&str> = text.lines().collect();
    let want: Vec<String> = (0..runs)
        .flat_map(|k| [format!("start q{k:02}"), format!("end q{k:02}")])
        .collect();
    assert_eq!(got, want, "runs overlapped or left their order");
}

#[test]
fn fifty_runs_from_five_processes_take_one_queued_lock_in_order_never_overlapping() {
    let pg = Postgres::start();
    let url = pg.database("queue");
    runs_take_a_queued_lock_in_order(&url, 50, 5);
}

#[test]
fn a_state_dir_queues_runs_for_a_lock_in_order_too() {
    let state = tempfile::tempdir().unwrap();
    runs_take_a_queued_lock_in_order(&state.path().display().to_string(), 12, 4);
}

#[test]
fn a_queued_run_that_waits_past_its_wait_exits_4_and_leaves_nothing() {
    let pg = Postgres::start();
    let url = pg.database("waited");
    let rb = |wait: &str| {
        format!(
            "version: 1\nname: w\nlock: {{ key: k, wait: {wait} }}\nsteps:\n  - id: hold\n    shell: bash ./wait_for.sh go\n"
        )
    };
    let holder = machine(&url)
        .file("rb.yaml", &rb("1m"))
        .args(&["run", "rb.yaml", "--run-id", "holder"])
        .spawn();
    wait_for_status(&url, "holder", "running");
    let out = machine(&url)
        .file("rb.yaml", &rb("1s"))
        .args(&["run", "rb.yaml", "--run-id", "late"])
        .run()
        .code(4);
    assert!(
        out.stderr.contains("queued for lock `k`: place 1"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("was still held by run holder after waiting 1s"),
        "{}",
        out.stderr
    );
    // Refused before it started: the id is free again, nothing is listed.
    let list = machine(&url)
        .args(&["status", "--format", "json"])
        .run()
        .success();
    assert!(!list.stdout.contains("late"), "{}", list.stdout);
    // A plain `lock: k` is refused at once, naming the holder.
    machine(&url)
        .file(
            "rb.yaml",
            "version: 1\nname: w\nlock: k\nsteps:\n  - id: x\n    shell: 'true'\n",
        )
        .args(&["run", "rb.yaml"])
        .run()
        .code(4)
        .stderr_contains("is held by run holder");
    std::fs::write(holder.path().join("go"), "").unwrap();
    holder.wait().success();
}

/// Three steps with rollbacks, each appending `NAME-MACHINE` to `log`.
const CHAIN: &str = r#"
version: 1
name: chain
steps:
  - id: a
    shell: echo a-$MACHINE >> log
    rollback: { shell: echo undo-a-$MACHINE >> log }
  - id: b
    shell: echo b-$MACHINE >> log
    rollback: { shell: echo undo-b-$MACHINE >> log }
  - id: c
    shell: echo c-$MACHINE >> log
    rollback: { shell: echo undo-c-$MACHINE >> log }
"#;

fn finished_steps(pg: &Postgres, db: &str) -> Vec<String> {
    let out = pg.psql(
        db,
        "SELECT string_agg(record::json->>'step', ' ' ORDER BY seq) FROM runbook_events
          WHERE record::json->>'event' = 'step_finished'",
    );
    out.split_whitespace().map(str::to_string).collect()
}

/// The durable tests' crash-point sweep against the database: the engine
/// killed (SIGKILL) before and after each record it writes, then resumed
/// from another machine once its lease ran out. A step whose end was
/// committed before the crash never runs again; one that was running runs
/// again once at most; the run ends succeeded.
#[test]
fn crash_anywhere_in_a_chain_on_postgres_then_resume_elsewhere_runs_each_step_once() {
    let pg = Postgres::start();
    let clean = pg.database("clean");
    machine(&clean)
        .env("MACHINE", "m1")
        .file("rb.yaml", CHAIN)
        .args(&["run", "rb.yaml", "--run-id", "r1"])
        .run()
        .success();
    let events: usize = pg
        .psql(
            "clean",
            "SELECT count(*) FROM runbook_events WHERE record::json->>'event' <> 'spawned'",
        )
        .parse()
        .unwrap();
    assert!(events >= 8, "{events} events");
    on_two_workers(&kill_points(events), |&(when, n)| {
        let db = format!("p_{when}_{n}");
        let url = pg.database(&db);
        let label = format!("{when}:{n}");
        let crashed = machine(&url)
            .env("MACHINE", "m1")
            .env("RUNBOOK_CRASH_AT", &label)
            .file("rb.yaml", CHAIN)
            .args(&["run", "rb.yaml", "--run-id", "r1", "--lease", "1s"])
            .run();
        assert!(crashed.killed(), "{label}: not killed: {}", crashed.stderr);
        let site = crashed.path().to_path_buf();
        let done_at_crash = finished_steps(&pg, &db);
        let log_at_crash = lines(&site);
        // Resumed from another machine; a run that never committed
        // its journal is started again under the same id.
        let mut out = None;
        for _ in 0..100 {
            let o = machine(&url)
                .env("MACHINE", "m2")
                .args(&["resume", "r1", "--lease", "1s"])
                .run();
            if o.code != Some(4) {
                out = Some(o);
                break;
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        let out = out.unwrap_or_else(|| panic!("{label}: never taken over"));
        if out.code == Some(2) && out.stderr.contains("no run `r1`") {
            assert!(log_at_crash.is_empty(), "{label}: {log_at_crash:?}");
            let mut ran_again = false;
            for _ in 0..100 {
                let again = machine(&url)
                    .env("MACHINE", "m2")
                    .file("rb.yaml", CHAIN)
                    .args(&["run", "rb.yaml", "--run-id", "r1", "--lease", "1s"])
                    .run();
                if again.code == Some(0) {
                    assert_eq!(lines(again.path()), ["a-m2", "b-m2", "c-m2"], "{label}");
                    ran_again = true;
                    break;
                }
                assert!(
                    again.stderr.contains("already exists"),
                    "{label}: {}",
                    again.stderr
                );
                std::thread::sleep(Duration::from_millis(150));
            }
            assert!(ran_again, "{label}: the id never became free again");
            return;
        }
        assert_eq!(out.code, Some(0), "{label}: {}\n{}", out.stdout, out.stderr);
        let log = lines(&site);
        for step in ["a", "b", "c"] {
            let ran = log
                .iter()
                .filter(|l| l.starts_with(&format!("{step}-")))
                .count();
            if done_at_crash.iter().any(|d| d == step) {
                let before = log_at_crash
                    .iter()
                    .filter(|l| l.starts_with(&format!("{step}-")))
                    .count();
                assert_eq!(ran, before, "{label}: {step} ran again: {log:?}");
                assert_eq!(ran, 1, "{label}: {step}: {log:?}");
            } else {
                assert!(
                    (1..=2).contains(&ran),
                    "{label}: {step} ran {ran} times: {log:?}"
                );
            }
        }
        assert!(
            !log.iter().any(|l| l.starts_with("undo")),
            "{label}: {log:?}"
        );
        assert_eq!(status_json(&url, "r1")["status"], "succeeded", "{label}");
    });
}

#[test]
fn a_queued_run_whose_engine_dies_gives_up_its_place_when_its_lease_ends() {
    let pg = Postgres::start();
    let url = pg.database("deadqueue");
    let rb = "version: 1\nname: q\nlock: { key: k, wait: 2m }\nsteps:\n  - id: hold\n    shell: bash ./wait_for.sh go\n";
    let holder = machine(&url)
        .file("rb.yaml", rb)
        .args(&["run", "rb.yaml", "--run-id", "holder"])
        .spawn();
    wait_for_status(&url, "holder", "running");
    let doomed = machine(&url)
        .file("rb.yaml", rb)
        .args(&["run", "rb.yaml", "--run-id", "doomed", "--lease", "1s"])
        .spawn();
    let s = wait_for_status(&url, "doomed", "queued");
    assert_eq!(s["queue_position"], 1, "{s:#}");
    let next = machine(&url)
        .file("rb.yaml", rb)
        .file("go", "")
        .args(&["run", "rb.yaml", "--run-id", "next"])
        .spawn();
    let s = wait_for_status(&url, "next", "queued");
    assert_eq!(s["queue_position"], 2, "{s:#}");
    doomed.signal(libc::SIGKILL);
    let _ = doomed.wait();
    // Its place goes with its lease: `next` moves up, then gets the key
    // when the holder ends.
    let moved = poll_until(Duration::from_secs(30), || {
        status_json(&url, "next")["queue_position"] == 1
    });
    assert!(moved, "{:#}", status_json(&url, "next"));
    std::fs::write(holder.path().join("go"), "").unwrap();
    holder.wait().success();
    next.wait().success();
    assert_eq!(status_json(&url, "doomed")["status"], "stopped");
}

#[test]
fn a_run_finished_on_one_machine_is_rolled_back_from_another() {
    let pg = Postgres::start();
    let url = pg.database("rollback");
    let first = machine(&url)
        .env("MACHINE", "m1")
        .file("rb.yaml", CHAIN)
        .args(&["run", "rb.yaml", "--run-id", "r1"])
        .run()
        .success();
    machine(&url)
        .env("MACHINE", "m2")
        .args(&["rollback", "r1", "--yes"])
        .run()
        .success();
    assert_eq!(
        lines(first.path()),
        [
            "a-m1",
            "b-m1",
            "c-m1",
            "undo-c-m2",
            "undo-b-m2",
            "undo-a-m2"
        ]
    );
    assert_eq!(status_json(&url, "r1")["status"], "rolled_back");
}

#[test]
fn a_database_that_accepts_but_never_answers_is_exit_4_in_bounded_time() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and holds every connection, saying nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    let url = format!("postgres://runbook@127.0.0.1:{port}/runs");
    let started = std::time::Instant::now();
    let out = machine(&url).args(&["status"]).run().code(4);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(out.stderr.contains("no answer within"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------
// Regressions found by an adversarial review of team mode

#[test]
fn regression_a_lapsed_lease_is_not_revived_so_a_lock_is_never_held_twice() {
    let pg = Postgres::start();
    let url = pg.database("lapsed");
    let rb = "version: 1\nname: l\nlock: prod-db\nsteps:\n  - id: hold\n    shell: bash ./wait_for.sh go-$MACHINE\n  - id: after\n    needs: [hold]\n    shell: echo after-$MACHINE >> log\n";
    let mut x = machine(&url)
        .env("MACHINE", "x")
        .file("rb.yaml", rb)
        .args(&["run", "rb.yaml", "--run-id", "x", "--lease", "1s"])
        .spawn();
    wait_for_status(&url, "x", "running");
    x.signal(libc::SIGSTOP);
    // Once x's lease ran out its lock is free: y takes it.
    let y = again_until_in(
        || {
            machine(&url)
                .env("MACHINE", "y")
                .file("rb.yaml", rb)
                .args(&["run", "rb.yaml", "--run-id", "y"])
        },
        "is held by run x",
        |_| status_or_null(&url, "y")["status"] == "running",
    );
    // x wakes with its step done: it must not go on without its lock.
    std::fs::write(x.path().join("go-x"), "").unwrap();
    x.signal(libc::SIGCONT);
    let _ = &mut x;
    let out = x.wait().code(4);
    assert!(out.stderr.contains("ran out"), "{}", out.stderr);
    assert!(
        !lines(out.path()).contains(&"after-x".to_string()),
        "x acted without its lock"
    );
    std::fs::write(y.path().join("go-y"), "").unwrap();
    let done = y.wait().success();
    assert_eq!(lines(done.path()), ["after-y"]);
}

#[test]
fn regression_resume_reads_the_journal_again_once_it_holds_the_run() {
    let pg = Postgres::start();
    let url = pg.database("toctou");
    let rb = "version: 1\nname: t\nsecrets:\n  token: { file: token }\nsteps:\n  - id: deploy\n    shell: |\n      echo deploy >> log\n      bash ./wait_for.sh go\n";
    let run = machine(&url)
        .file("rb.yaml", rb)
        .file("token", "s3cr3t-token")
        .args(&["run", "rb.yaml", "--run-id", "t1", "--lease", "2s"])
        .spawn();
    wait_for_status(&url, "t1", "running");
    // A resume that has read the journal, then waits on the secret (a
    // FIFO), while the run finishes and lets its lease go.
    let token = run.path().join("token");
    std::fs::remove_file(&token).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&token)
        .status()
        .unwrap();
    assert!(made.success());
    let resume = machine(&url).args(&["resume", "t1"]).spawn();
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(run.path().join("go"), "").unwrap();
    let first = run.wait().success();
    std::fs::write(&token, "s3cr3t-token").unwrap();
    let out = resume.wait();
    // Either it saw the run finished, or it refused: never a second deploy.
    assert!(
        out.code == Some(0) && out.stdout.contains("already finished")
            || out.code == Some(4) && out.stderr.contains("moved on"),
        "{:?}\n{}\n{}",
        out.code,
        out.stdout,
        out.stderr
    );
    assert_eq!(lines(first.path()), ["deploy"]);
}

#[test]
fn regression_a_fenced_engine_leaves_the_new_holders_waiting_approval_alone() {
    let pg = Postgres::start();
    let url = pg.database("mailbox");
    let rb = "version: 1\nname: m\nsteps:\n  - id: ok\n    approval: { approvers: [alice] }\n  - id: after\n    needs: [ok]\n    shell: echo after-$MACHINE >> log\n";
    let old = machine(&url)
        .env("MACHINE", "m1")
        .file("rb.yaml", rb)
        .args(&[
            "run", "rb.yaml", "--run-id", "m1", "--lease", "1s", "--as", "carol",
        ])
        .spawn();
    poll_until(Duration::from_secs(30), || {
        status_or_null(&url, "m1")["waiting"]
            .as_array()
            .is_some_and(|w| !w.is_empty())
    });
    old.signal(libc::SIGSTOP);
    let new = again_until_in(
        || {
            machine(&url)
                .env("MACHINE", "m2")
                .args(&["resume", "m1", "--lease", "2s"])
        },
        "is being run by process",
        |r| status_or_null(&url, "m1")["holder"]["pid"] == r.pid(),
    );
    poll_until(Duration::from_secs(30), || {
        status_or_null(&url, "m1")["waiting"]
            .as_array()
            .is_some_and(|w| !w.is_empty())
    });
    old.signal(libc::SIGCONT);
    // (Its directory stays: the run's steps run there.)
    let site = old.wait().code(4);
    // The new holder's mailbox still answers.
    machine(&url)
        .args(&["approve", "m1", "ok", "--as", "alice"])
        .run()
        .success();
    new.wait().success();
    assert_eq!(lines(site.path()), ["after-m2"]);
    assert_eq!(status_json(&url, "m1")["status"], "succeeded");
}

#[test]
fn regression_cancel_of_a_queued_run_ends_it_without_running_anything() {
    let pg = Postgres::start();
    let url = pg.database("qcancel");
    let rb = "version: 1\nname: q\nlock: { key: k, wait: 2m }\nsteps:\n  - id: hold\n    shell: echo ran-$RUNBOOK_RUN_ID >> log; bash ./wait_for.sh go\n";
    let holder = machine(&url)
        .file("rb.yaml", rb)
        .args(&["run", "rb.yaml", "--run-id", "holder"])
        .spawn();
    wait_for_status(&url, "holder", "running");
    let queued = machine(&url)
        .file("rb.yaml", rb)
        .args(&["run", "rb.yaml", "--run-id", "waiter", "--lease", "1s"])
        .spawn();
    wait_for_status(&url, "waiter", "queued");
    machine(&url).args(&["cancel", "waiter"]).run().success();
    let out = queued.wait().code(130);
    assert!(
        out.stderr.contains("cancelled while it waited"),
        "{}",
        out.stderr
    );
    assert!(lines(out.path()).is_empty());
    let list = machine(&url)
        .args(&["status", "--format", "json"])
        .run()
        .success();
    assert!(!list.stdout.contains("waiter"), "{}", list.stdout);
    std::fs::write(holder.path().join("go"), "").unwrap();
    holder.wait().success();
}

#[test]
fn regression_a_password_in_the_query_under_any_spelling_is_never_shown() {
    let port = common::raw_tcp::free_port();
    for url in [
        format!("postgres://deployer@127.0.0.1:{port}/runs?pass%77ord=hunter3-secret"),
        format!("postgres://deployer@127.0.0.1:{port}/runs?password=hunter3-secret"),
        format!("postgres://deployer:hunter3%2dsecret@127.0.0.1:{port}/runs"),
    ] {
        let out = machine(&url).args(&["status"]).run().code(4);
        assert!(!out.stderr.contains("hunter3"), "{url}: {}", out.stderr);
        assert!(
            out.stderr
                .contains(&format!("postgres://deployer@127.0.0.1:{port}/runs")),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn regression_an_engine_cut_off_past_its_lease_stops_by_its_own_clock() {
    let mut pg = Postgres::start();
    let url = pg.database("cutoff");
    let run = start_long(&url, "x1", "2s");
    pg.stop();
    // It cannot reach the database to learn anything: its own clock says
    // the lease is gone, so its steps stop and nothing more starts.
    let started = std::time::Instant::now();
    let out = run.wait().code(4);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(out.stderr.contains("ran out"), "{}", out.stderr);
    assert_eq!(lines(out.path()), ["a-m1", "b-m1"]);
    pg.start_again();
    let second = take_over(&url, "x1", "m2");
    std::fs::write(out.path().join("go-m2"), "").unwrap();
    second.wait().success();
    assert_eq!(lines(out.path()), ["a-m1", "b-m1", "b-m2", "c-m2"]);
}

/// The tables are migrated once: a later command finds them current and
/// leaves them alone, and tables a newer runbook migrated are refused, not
/// written in a shape this one does not know.
#[test]
fn a_current_schema_is_left_alone_and_a_newer_one_is_refused() {
    let pg = Postgres::start();
    let url = pg.database("schema");
    let migrations = "SELECT count(*) FROM runbook_migrations";
    machine(&url).args(&["status"]).run().success();
    let applied = psql_count(&pg, "schema", migrations);
    assert!(applied >= 1, "no migration recorded");
    machine(&url).args(&["status"]).run().success();
    assert_eq!(psql_count(&pg, "schema", migrations), applied);
    pg.psql(
        "schema",
        "INSERT INTO runbook_migrations (version, description) VALUES (999, 'from a newer runbook')",
    );
    machine(&url)
        .args(&["status"])
        .run()
        .code(4)
        .stderr_contains("newer than this runbook knows");
}
