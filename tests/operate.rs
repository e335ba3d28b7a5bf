#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! Operating a run from anywhere (spec rev 2): one state dir per user, found
//! from every working directory; `run --detach`; `logs [--follow]`;
//! `cancel` from another process and directory.
//!
//! Each test's binary gets `XDG_STATE_HOME` inside its test dir, so "the
//! user's state dir" here is `.xdg-state/runbook` there, shared by every
//! working directory the test uses.

mod common;

use std::time::Duration;

use common::{poll_until, Test, DEFAULT_STATE_DIR};

/// A run that holds a lock and waits, with a rollback that logs each time
/// it runs (into the directory the run was started in).
const SLOW: &str = r#"
version: 1
name: slow
lock: slow-lock
steps:
  - id: one
    shell: echo one-output
    rollback: { shell: echo undo-one >> undo.log }
  - id: wait
    shell: echo waiting; sleep 30
"#;

const QUICK: &str = r#"
version: 1
name: quick
steps:
  - id: hello
    shell: echo "hello from $(basename "$PWD")"
"#;

/// The run id `run --detach` printed, and the engine's pid from its note.
fn detached(out: &common::Output) -> (String, i32) {
    let id = out.stdout.trim().to_string();
    assert!(!id.is_empty() && !id.contains('\n'), "{}", out.stdout);
    let pid = out
        .stderr
        .split("(process ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {}", out.stderr));
    (id, pid)
}

/// Waits until run `id` in the test dir `dir` has journaled the output line `line`.
fn wait_for_output(dir: &std::path::Path, id: &str, line: &str) {
    let journal = dir
        .join(DEFAULT_STATE_DIR)
        .join("runs")
        .join(id)
        .join("journal.jsonl");
    let needle = format!("\"line\":\"{line}\"");
    assert!(
        poll_until(Duration::from_secs(20), || {
            std::fs::read_to_string(&journal).is_ok_and(|j| j.contains(&needle))
        }),
        "run {id} never printed {line:?}"
    );
}

/// Kills a detached engine a failing test left behind.
struct Reap(i32);

impl Drop for Reap {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
        }
    }
}

#[test]
fn runs_from_two_directories_share_the_user_state_dir() {
    let out = Test::new()
        .in_dir("a")
        .file("a/quick.yaml", QUICK)
        .args(&["run", "quick.yaml", "--run-id", "from-a"])
        .run()
        .success();
    let out = out
        .again()
        .in_dir("b")
        .file("b/quick.yaml", QUICK)
        .args(&["run", "quick.yaml", "--run-id", "from-b"])
        .run()
        .success();
    assert!(out
        .path()
        .join(DEFAULT_STATE_DIR)
        .join("runs/from-a")
        .is_dir());
    // From a third directory, both runs are there, and the default flag
    // file and locks live in the one state dir, not in a working directory.
    let status = out.again().in_dir("c").args(&["status"]).run().success();
    for id in ["from-a", "from-b"] {
        assert!(status.stdout.contains(id), "{}", status.stdout);
    }
    for dir in ["a", "b", "c"] {
        assert!(!status.path().join(dir).join(".runbook").exists());
    }
    let logs = status
        .again()
        .in_dir("c")
        .args(&["logs", "from-b"])
        .run()
        .success();
    assert!(
        logs.stdout.contains("[hello] hello from b"),
        "{}",
        logs.stdout
    );
}

/// `--detach`: the run survives in a session of its own; a lock taken in one
/// directory holds against a run from another; `cancel` from a third
/// unwinds it once; `logs --follow` ends with the run and its exit code.
#[test]
fn detached_run_is_locked_followed_and_cancelled_from_elsewhere() {
    let out = Test::new()
        .in_dir("a")
        .file("a/slow.yaml", SLOW)
        .args(&["run", "slow.yaml", "--detach"])
        .run()
        .success();
    let (id, pid) = detached(&out);
    let _reap = Reap(pid);
    assert!(
        out.stderr.contains(&format!("runbook logs {id} --follow")),
        "{}",
        out.stderr
    );
    // Its own session: the terminal's hangup cannot reach it.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap().split(' ').collect();
    assert_eq!(
        fields[3],
        pid.to_string(),
        "session id of the engine: {stat}"
    );

    let out = out
        .again()
        .in_dir("b")
        .file("b/slow.yaml", SLOW)
        .args(&["run", "slow.yaml"])
        .run()
        .code(4)
        .stderr_contains(&format!("lock `slow-lock` is held by run {id}"));

    // Wait until it is inside `wait`, so there is something to undo.
    let dir = out.path().to_path_buf();
    wait_for_output(&dir, &id, "waiting");
    let out = out
        .again()
        .in_dir("c")
        .args(&["cancel", &id])
        .run()
        .success()
        .stdout_contains(&format!("asked run {id} (process {pid}) to stop"));
    let logs = out
        .again()
        .in_dir("c")
        .args(&["logs", &id, "--follow"])
        .run()
        .code(130);
    for line in [
        "[one] one-output",
        "wait: cancelled",
        "one: rollback succeeded",
        "run interrupted",
    ] {
        assert!(
            logs.stdout.contains(line),
            "missing {line:?} in:\n{}",
            logs.stdout
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("a/undo.log")).unwrap(),
        "undo-one\n",
        "the rollback ran once"
    );
    // Once it has ended there is nothing to cancel.
    logs.again()
        .args(&["cancel", &id])
        .run()
        .code(4)
        .stderr_contains(&format!("run {id} is not running: it ended interrupted"));
}

#[test]
fn detached_run_followed_to_its_end() {
    let out = Test::new()
        .file("quick.yaml", QUICK)
        .args(&["run", "quick.yaml", "--detach", "--run-id", "bg"])
        .run()
        .success();
    let (id, pid) = detached(&out);
    let _reap = Reap(pid);
    assert_eq!(id, "bg");
    let logs = out
        .again()
        .args(&["logs", "bg", "--follow"])
        .run()
        .success();
    assert!(
        logs.stdout.contains("[hello] hello from "),
        "{}",
        logs.stdout
    );
    assert!(logs.stdout.contains("run succeeded"), "{}", logs.stdout);
    // Its own output (the plain view) is kept beside the runs.
    let own = std::fs::read_to_string(logs.path().join(DEFAULT_STATE_DIR).join("detached/bg.log"))
        .unwrap();
    assert!(own.contains("hello"), "{own}");
}

/// A detached run refused before it starts says why in the foreground, with
/// the exit code the refusal has, and prints no run id.
#[test]
fn detached_run_refused_says_why_in_the_foreground() {
    let needs_secret = r#"
version: 1
name: s
secrets:
  token: { env: OPERATE_TEST_TOKEN }
steps:
  - id: a
    shell: "true"
"#;
    let out = Test::new()
        .file("s.yaml", needs_secret)
        .args(&["run", "s.yaml", "--detach", "--run-id", "refused"])
        .run()
        .code(2)
        .stderr_contains("OPERATE_TEST_TOKEN");
    assert_eq!(out.stdout, "");
    assert!(!out
        .path()
        .join(DEFAULT_STATE_DIR)
        .join("runs/refused")
        .exists());
}

/// (args, exit code, text on stderr) for runs that cannot be followed or cancelled.
#[test]
fn logs_and_cancel_of_unknown_runs_are_usage_errors() {
    let cases: &[(&[&str], i32, &str)] = &[
        (&["logs", "nope"], 2, "no run `nope` in "),
        (&["cancel", "nope"], 2, "no run `nope` in "),
        (&["logs", "../x"], 2, "`../x` is not a run id"),
        (&["cancel", "../x"], 2, "`../x` is not a run id"),
    ];
    for (args, code, text) in cases {
        Test::new()
            .args(args)
            .run()
            .code(*code)
            .stderr_contains(text);
    }
}

/// Without `HOME` or `XDG_STATE_HOME` there is no default: exit 4 and how to name one.
#[test]
fn no_home_and_no_state_dir_is_exit_4() {
    Test::new()
        .env("XDG_STATE_HOME", "")
        .env("HOME", "")
        .args(&["status"])
        .run()
        .code(4)
        .stderr_contains("pass --state-dir DIR or set RUNBOOK_STATE_DIR");
}

/// A state dir that cannot be created is exit 4 with its path and the OS error.
#[test]
fn unusable_state_dir_is_exit_4_with_path_and_reason() {
    Test::new()
        .file("quick.yaml", QUICK)
        .file("blocker", "a file, not a directory")
        .env("XDG_STATE_HOME", "") // overridden below by --state-dir
        .args(&["run", "quick.yaml", "--state-dir", "blocker/state"])
        .run()
        .code(4)
        .stderr_contains("blocker/state is unusable: Not a directory");
}

/// kill -9 of a detached engine: `logs --follow` ends at once with the way
/// forward (exit 3), and `cancel` says there is nothing running to stop.
#[test]
fn detached_engine_killed_ends_follow_with_the_way_forward() {
    let short = SLOW.replace("sleep 30", "sleep 3");
    let out = Test::new()
        .file("slow.yaml", &short)
        .args(&["run", "slow.yaml", "--detach", "--run-id", "doomed"])
        .run()
        .success();
    let (_, pid) = detached(&out);
    wait_for_output(out.path(), "doomed", "waiting");
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    // The kernel drops its run lock once it is gone.
    assert!(poll_until(
        Duration::from_secs(10),
        || !std::path::Path::new(&format!("/proc/{pid}/stat")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    ));
    let logs = out
        .again()
        .args(&["logs", "doomed", "--follow"])
        .run()
        .code(3)
        .stderr_contains(
            "no engine holds it (the engine died?); `runbook resume doomed` continues it",
        );
    assert!(logs.stdout.contains("[wait] waiting"), "{}", logs.stdout);
    logs.again()
        .args(&["cancel", "doomed"])
        .run()
        .code(4)
        .stderr_contains("run doomed is not running: no engine holds it (it died?); `runbook resume doomed` continues it");
}

/// The issue's operator, end to end: start detached, see from another
/// directory what it waits for and the command that answers it, answer it
/// with exactly that command, follow it to its end.
#[test]
fn detached_run_waits_is_answered_from_elsewhere_and_followed_to_the_end() {
    let yaml = r#"
version: 1
name: gated
steps:
  - id: prepare
    shell: echo prepared
  - id: approve_release
    approval: { approvers: [lead], required: 1, timeout: 1h }
  - id: release
    shell: echo released
"#;
    let out = Test::new()
        .in_dir("ops")
        .file("ops/gated.yaml", yaml)
        .env("RUNBOOK_USER", "operator")
        .args(&["run", "gated.yaml", "--detach", "--run-id", "rel-1"])
        .run()
        .success();
    let (_, pid) = detached(&out);
    let _reap = Reap(pid);
    let mut t = out.again();
    let mut command = String::new();
    assert!(poll_until(Duration::from_secs(20), || {
        let status = t_status(&mut t);
        command = status["waiting"][0]["approve_command"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        !command.is_empty()
    }));
    assert!(
        command.starts_with("runbook approve rel-1 approve_release --as lead"),
        "{command}"
    );
    // Exactly the printed command, from a laptop's directory.
    let words: Vec<&str> = command.split_whitespace().skip(1).collect();
    let t = t.in_dir("laptop").args(&words).run().success().again();
    let logs = t
        .in_dir("elsewhere")
        .args(&["logs", "rel-1", "--follow"])
        .run()
        .success();
    for line in [
        "[prepare] prepared",
        "approve_release: approved by lead",
        "[release] released",
        "run succeeded",
    ] {
        assert!(
            logs.stdout.contains(line),
            "missing {line:?} in:\n{}",
            logs.stdout
        );
    }
}

/// `status --format json` of run rel-1 from a directory of its own; keeps the test dir.
fn t_status(t: &mut Test) -> serde_json::Value {
    let taken = std::mem::take(t);
    let out = taken
        .in_dir("watcher")
        .args(&["status", "rel-1", "--format", "json"])
        .run();
    let json = serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null);
    *t = out.again();
    json
}

/// Found by review: a second `cancel` stopped the unwind the first one
/// started. It is refused while the run unwinds; `--force` is the second Ctrl-C.
#[test]
fn a_second_cancel_does_not_stop_the_unwind_unless_forced() {
    let yaml = r#"
version: 1
name: slow-undo
steps:
  - id: one
    shell: echo one
    rollback: { shell: touch undo-started; sleep 2; touch undo-done }
  - id: wait
    shell: echo waiting; sleep 30
"#;
    let out = Test::new()
        .file("u.yaml", yaml)
        .args(&["run", "u.yaml", "--detach", "--run-id", "u"])
        .run()
        .success();
    let (_, pid) = detached(&out);
    let _reap = Reap(pid);
    let dir = out.path().to_path_buf();
    wait_for_output(&dir, "u", "waiting");
    let out = out.again().args(&["cancel", "u"]).run().success();
    assert!(poll_until(Duration::from_secs(20), || dir
        .join("undo-started")
        .exists()));
    let out = out
        .again()
        .args(&["cancel", "u"])
        .run()
        .code(4)
        .stderr_contains("run u is not cancelled: it is already unwinding. `runbook cancel u --force` stops it at once");
    let logs = out.again().args(&["logs", "u", "--follow"]).run().code(130);
    assert!(dir.join("undo-done").exists(), "{}", logs.stdout);

    // Forced, the second signal stops the unwind: unwind_incomplete, exit 3.
    let out = logs
        .again()
        .file("u.yaml", &yaml.replace("sleep 2", "sleep 20"))
        .args(&["run", "u.yaml", "--detach", "--run-id", "u2"])
        .run()
        .success();
    let (_, pid) = detached(&out);
    let _reap2 = Reap(pid);
    let _ = std::fs::remove_file(dir.join("undo-started"));
    wait_for_output(&dir, "u2", "waiting");
    let out = out.again().args(&["cancel", "u2"]).run().success();
    assert!(poll_until(Duration::from_secs(20), || dir
        .join("undo-started")
        .exists()));
    let out = out
        .again()
        .args(&["cancel", "u2", "--force"])
        .run()
        .success();
    out.again()
        .args(&["logs", "u2", "--follow"])
        .run()
        .code(3)
        .stdout_contains("unwind_incomplete");
}

/// Found by review: a detached run's params were on its command line, so a
/// secret param was readable by every local user (`ps`) for the whole run.
#[test]
fn a_detached_runs_params_are_not_on_its_command_line() {
    let yaml = "version: 1\nname: p\nparams:\n  pw: { type: string, secret: true, required: true }\nsteps:\n  - id: wait\n    shell: sleep 5\n";
    let out = Test::new()
        .file("p.yaml", yaml)
        .args(&[
            "run",
            "p.yaml",
            "--detach",
            "--param",
            "pw=hunter2-pw",
            "--run-id",
            "p",
        ])
        .run()
        .success();
    let (_, pid) = detached(&out);
    let _reap = Reap(pid);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("hunter2"),
        "{:?}",
        String::from_utf8_lossy(&cmdline)
    );
    // It got the param all the same: it is running, not refused.
    let out = out
        .again()
        .args(&["status", "p"])
        .run()
        .success()
        .stdout_contains("running");
    out.again().args(&["cancel", "p"]).run().success();
}

/// Commands that read no runs need no state dir: `validate` with no HOME;
/// an empty `RUNBOOK_STATE_DIR=` counts as unset.
#[test]
fn stateless_commands_need_no_home_and_an_empty_state_dir_variable_is_unset() {
    Test::new()
        .file("q.yaml", QUICK)
        .env("XDG_STATE_HOME", "")
        .env("HOME", "")
        .args(&["validate", "q.yaml"])
        .run()
        .success();
    Test::new()
        .env("RUNBOOK_STATE_DIR", "")
        .args(&["status"])
        .run()
        .success()
        .stdout_contains(".xdg-state/runbook");
}

/// Found by review: kill -9 of the engine left its running step's processes
/// behind, and `resume` ran the step again beside them. Resume now kills the
/// process group the dead engine's attempt left, before anything runs.
#[test]
fn resume_kills_what_a_dead_engine_left_running() {
    let yaml = "version: 1\nname: orphan\nsteps:\n  - id: long\n    on_resume: fail\n    shell: echo $$ > leader; echo started; sleep 30; echo done\n";
    let out = Test::new()
        .file("o.yaml", yaml)
        .args(&["run", "o.yaml", "--detach", "--run-id", "o"])
        .run()
        .success();
    let (_, pid) = detached(&out);
    let _reap = Reap(pid);
    wait_for_output(out.path(), "o", "started");
    let leader: i32 = std::fs::read_to_string(out.path().join("leader"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let group_alive = || unsafe { libc::kill(-leader, 0) } == 0;
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    assert!(poll_until(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
    }));
    // The orphan outlived its engine.
    assert!(group_alive(), "the step's group died with the engine");
    let out = out
        .again()
        .args(&["resume", "o"])
        .run()
        .code(1)
        .stderr_contains(
            "note: killed what `long` was running when the engine before this one died",
        );
    assert!(
        poll_until(Duration::from_secs(10), || !group_alive()),
        "the dead engine's step is still running"
    );
    assert!(!out.stdout.contains("[long] done"), "{}", out.stdout);
}

/// A run queued for a lock in a state dir died of the SIGINT that cancelled
/// it (the engine's handler came only once the run started). Now Ctrl-C or
/// `runbook cancel` takes it out of the queue: nothing runs, it exits 130
/// saying so, and it is not left listed.
#[test]
fn regression_a_queued_run_in_a_state_dir_died_of_its_cancel() {
    let rb = "version: 1\nname: q\nlock: { key: k, wait: 2m }\nsteps:\n  - id: hold\n    shell: echo ran-$RUNBOOK_RUN_ID >> log; bash ./wait_for.sh go\n";
    let mut holder = Test::new()
        .file("rb.yaml", rb)
        .file("wait_for.sh", common::WAIT_FOR)
        .args(&["run", "rb.yaml", "--state-dir", "st", "--run-id", "holder"])
        .spawn();
    holder.wait_for_file("log", Duration::from_secs(60));
    let status_of = |id: &str| {
        let out = holder
            .beside()
            .args(&["status", id, "--state-dir", "st", "--format", "json"])
            .run();
        serde_json::from_str::<serde_json::Value>(&out.stdout)
            .map(|v| v["status"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    for (id, by_cancel) in [("wsig", false), ("wcancel", true)] {
        let waiter = holder
            .beside()
            .args(&["run", "rb.yaml", "--state-dir", "st", "--run-id", id])
            .spawn();
        assert!(
            poll_until(Duration::from_secs(60), || status_of(id) == "queued"),
            "{id} never queued"
        );
        if by_cancel {
            holder
                .beside()
                .args(&["cancel", id, "--state-dir", "st"])
                .run()
                .success();
        } else {
            waiter.signal(libc::SIGINT);
        }
        waiter.wait().code(130).stderr_contains(&format!(
            "run {id} was cancelled while it waited for lock `k`; nothing ran"
        ));
        let list = holder
            .beside()
            .args(&["status", "--state-dir", "st", "--format", "json"])
            .run()
            .success();
        assert!(!list.stdout.contains(id), "{}", list.stdout);
    }
    std::fs::write(holder.path().join("go"), "").unwrap();
    let out = holder.wait().success();
    assert_eq!(
        std::fs::read_to_string(out.path().join("log")).unwrap(),
        "ran-holder\n"
    );
}
