#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! The README's first command: the demo runs anywhere and does what it says.

mod common;

use common::Test;

fn flags(out: &common::Output) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(
            out.path()
                .join(common::DEFAULT_STATE_DIR)
                .join("flags.json"),
        )
        .unwrap(),
    )
    .unwrap()
}

#[test]
fn demo_rolls_out_then_a_breach_restores_every_flag() {
    let out = Test::new()
        .repo_file("examples/demo/rollout.yaml")
        .args(&[
            "run",
            "examples/demo/rollout.yaml",
            "--param",
            "gate_interval=50ms",
        ])
        .run()
        .success();
    assert_eq!(
        flags(&out)["new_checkout"]["percent"],
        100,
        "{}",
        out.stdout
    );
    let before = flags(&out);

    // Same state dir: the breach run starts from the finished rollout and
    // must put every flag back exactly there.
    let out = out
        .again()
        .args(&[
            "run",
            "examples/demo/rollout.yaml",
            "--param",
            "gate_interval=50ms",
            "--param",
            "breach=true",
        ])
        .run()
        .code(1);
    assert!(out.stdout.contains("gate_canary: failed"), "{}", out.stdout);
    assert!(out.stdout.contains("value 0.07"), "{}", out.stdout);
    assert_eq!(flags(&out), before);
    // The local target was stopped.
    let pid = std::fs::read_to_string(out.path().join(".runbook-demo/server.pid")).unwrap();
    // Gone, or a zombie nobody reaped yet (its parent shell has exited).
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    let state = stat.rsplit(") ").next().and_then(|r| r.chars().next());
    assert!(
        matches!(state, None | Some('Z') | Some('X')),
        "the demo's server is still running: {stat}"
    );
}

#[test]
fn demo_breach_from_nothing_leaves_no_flag() {
    let out = Test::new()
        .repo_file("examples/demo/rollout.yaml")
        .args(&[
            "run",
            "examples/demo/rollout.yaml",
            "--param",
            "gate_interval=50ms",
            "--param",
            "breach=true",
        ])
        .run()
        .code(1);
    assert_eq!(flags(&out), serde_json::json!({}), "{}", out.stdout);
}
