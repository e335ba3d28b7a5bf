#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! Faults of the engine itself: a step task that panics
//! (`RUNBOOK_PANIC_IN_STEP`, built with the `fault-injection` feature) and a
//! journal that cannot be written (a full disk: a small tmpfs as the state
//! dir, in a private mount namespace).

mod common;

use common::log;

use common::{report, step, Test};

const RB: &str = "rb.yaml";

const CHAIN: &str = "version: 1
name: chain
steps:
  - id: a
    shell: echo a >> log
    rollback: { shell: echo undo-a >> log }
  - id: b
    shell: echo b >> log
    rollback: { shell: echo undo-b >> log }
  - id: c
    shell: echo c >> log
    rollback: { shell: echo undo-c >> log }
";

#[test]
fn a_panicking_step_fails_and_the_run_unwinds() {
    let out = Test::new()
        .file(RB, CHAIN)
        .env("RUNBOOK_PANIC_IN_STEP", "b")
        .env("RUST_BACKTRACE", "0")
        .args(&["run", RB, "--state-dir", "st", "--report", "report.json"])
        .run()
        .code(1)
        .stdout_contains("internal error");
    let log = log(&out);
    assert!(!log.contains(&"c".to_string()), "c ran: {log:?}");
    assert!(
        !log.contains(&"b".to_string()),
        "b's task panicked before it ran: {log:?}"
    );
    assert!(log.contains(&"undo-a".to_string()), "a not undone: {log:?}");
    assert!(
        !log.contains(&"undo-c".to_string()),
        "c was undone: {log:?}"
    );
    assert_eq!(log.first().map(String::as_str), Some("a"), "{log:?}");
    // b's rollback (its effects are unknown) may run, and would run first.
    if let Some(p) = log.iter().position(|l| l == "undo-b") {
        assert!(
            p < log.iter().position(|l| l == "undo-a").unwrap_or(0),
            "{log:?}"
        );
    }
    let rep = report(&out);
    assert_ne!(rep["status"], "succeeded", "{rep:#}");
    assert_eq!(rep["status"], "rolled_back", "{rep:#}");
    let b = step(&rep, "b");
    assert_eq!(b["status"], "failed", "{rep:#}");
    assert!(
        b["error"]
            .as_str()
            .unwrap_or_default()
            .contains("internal error"),
        "{rep:#}"
    );
    assert_eq!(step(&rep, "c")["status"], "not_started", "{rep:#}");
    assert_eq!(
        step(&rep, "a")["rollback"]["status"],
        "succeeded",
        "{rep:#}"
    );
}

/// A panic in a step that runs beside others: the others are cancelled or
/// finish, nothing new starts, and every started step is undone.
#[test]
fn a_panicking_step_in_a_parallel_branch_stops_the_run() {
    let yaml = "version: 1
name: branches
steps:
  - id: root
    shell: echo root >> log
    rollback: { shell: echo undo-root >> log }
  - id: left
    needs: [root]
    shell: echo left >> log
    rollback: { shell: echo undo-left >> log }
  - id: right
    needs: [root]
    shell: echo right >> log
  - id: join
    needs: [left, right]
    shell: echo join >> log
";
    let out = Test::new()
        .file(RB, yaml)
        .env("RUNBOOK_PANIC_IN_STEP", "right")
        .env("RUST_BACKTRACE", "0")
        .args(&["run", RB, "--state-dir", "st", "--report", "report.json"])
        .run()
        .code(1);
    let log = log(&out);
    assert!(!log.contains(&"join".to_string()), "{log:?}");
    assert_eq!(log.last().map(String::as_str), Some("undo-root"), "{log:?}");
    let rep = report(&out);
    assert_eq!(step(&rep, "right")["status"], "failed", "{rep:#}");
    assert_eq!(step(&rep, "join")["status"], "not_started", "{rep:#}");
    if log.contains(&"left".to_string()) {
        assert!(log.contains(&"undo-left".to_string()), "{log:?}");
    }
}

/// The shell that mounts a 256 KiB tmpfs on `$RUNBOOK_STATE_DIR` in a
/// private mount namespace and then runs the binary (`$0`) there.
const ON_TMPFS: &str = r#"mount -t tmpfs -o size=256k tmpfs "$RUNBOOK_STATE_DIR" || { echo "engine_faults: cannot mount a tmpfs (unshare -m; mount -t tmpfs) - this test needs root in a namespace-capable sandbox" >&2; exit 97; }
exec "$0" "$@""#;

#[test]
fn a_full_disk_stops_the_run_before_the_next_step() {
    // The first step fills the tmpfs, then prints more than the page the
    // journal already has (tmpfs allocates whole pages, so a small journal
    // could take a few more lines on a full disk).
    let yaml = r#"version: 1
name: full-disk
steps:
  - id: fill
    shell: |
      head -c 2M /dev/zero > "$RUNBOOK_STATE_DIR/fill" 2>/dev/null || true
      for i in $(seq 1 200); do echo "output line $i that the journal cannot keep any more"; done
  - id: after
    shell: echo wrote > marker
    rollback: { shell: echo undone > rollback-marker }
"#;
    let t = Test::new().file(RB, yaml).file("st/.keep", "");
    let state = t.path().join("st");
    let out = t
        .env("RUNBOOK_STATE_DIR", state.to_str().expect("utf-8 path"))
        .wrapped(&["unshare", "-m", "sh", "-c", ON_TMPFS])
        .args(&["run", RB, "--run-id", "full1"])
        .run();
    assert!(
        out.code != Some(97) && !out.stderr.contains("unshare: "),
        "cannot run the binary on a private tmpfs (unshare -m + mount -t tmpfs, as root): this test needs it and must not be skipped\n{}",
        out.stderr
    );
    let out = out
        .code(3)
        .stderr_contains("journal.jsonl")
        .stderr_contains("No space left on device")
        .stderr_contains("runbook resume full1");
    assert!(
        !out.path().join("marker").exists(),
        "the step after the journal failed ran:\n{}",
        out.stdout
    );
    assert!(!out.path().join("rollback-marker").exists());
    // The mount was private: nothing of it is left here.
    assert!(!state.join("fill").exists());
}
