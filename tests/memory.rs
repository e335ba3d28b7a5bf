//! Memory flat in a runbook's size: what the binary holds per step (the
//! validated step, its plan, its run state, its template value) stays small,
//! and nothing keeps a second copy of every step.
//!
//! Measured as the growth of the binary's peak RSS from a short chain of
//! `true` steps to a long one, so the base (the binary, its threads) cancels
//! out. One test in its own binary: `getrusage(RUSAGE_CHILDREN)` is the peak
//! of every child this process waited for.

// `getrusage`: the peak RSS of a child that has exited.
#![allow(unsafe_code)]
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Test;

fn chain(steps: usize) -> String {
    let mut s = String::from("version: 1\nname: chain\nsteps:\n");
    for i in 0..steps {
        s.push_str(&format!("  - id: s{i}\n    shell: \"true\"\n"));
    }
    s
}

/// The largest peak RSS, in KiB, of the children waited for so far.
fn children_peak_kib() -> i64 {
    // SAFETY: `rusage` is plain data, and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    usage.ru_maxrss
}

fn peak_of(args: &[&str], steps: usize) -> i64 {
    Test::new()
        .file("chain.yaml", &chain(steps))
        .args(args)
        .run()
        .success();
    children_peak_kib()
}

#[test]
fn a_long_chain_takes_little_more_memory_than_a_short_one_and_its_report_too() {
    const SHORT: usize = 200;
    const LONG: usize = 3_000;
    let short = peak_of(&["run", "chain.yaml"], SHORT);
    let long = peak_of(&["run", "chain.yaml"], LONG);
    let per_step = (long - short).max(0) * 1024 / (LONG - SHORT) as i64;
    // 1.1 KiB a step now in this (debug) build: 10,000-step chains peak at
    // 23 MiB in a release build; 2.2 KiB and 33 MiB before a step's run
    // state boxed its rare fields, kept its times as milliseconds and
    // shared equal results, and the spec boxed a step's rare fields; 3.0
    // KiB and 40 MiB before the YAML tree
    // was dropped once read, steps without a retry shared one policy and a
    // step's template value was shared with the step before it when equal;
    // 87 MiB before the views shared the run state, the rare step kinds
    // were boxed, the run dropped its plan's preview and its records a
    // finished step's result. The bound leaves room for allocator noise,
    // not for another copy of every step. Lower it as the per-step cost
    // falls (most of what is left is read from the file: the spec's steps
    // and the validated ones, alive together while the file is checked).
    assert!(
        per_step <= 1_792,
        "peak RSS grew {} KiB from {SHORT} to {LONG} steps: {per_step} bytes a step",
        long - short
    );
    // The peak is the largest of every child so far: measured last, the
    // report's run shows what writing the report adds. Its text is ~500
    // bytes a step; the report as one JSON tree added 5.4 KiB a step.
    let report = peak_of(&["run", "chain.yaml", "--report", "report.json"], LONG);
    let per_step = (report - long).max(0) * 1024 / LONG as i64;
    assert!(
        per_step <= 2_048,
        "--report added {} KiB to the peak of {LONG} steps: {per_step} bytes a step",
        report - long
    );
}
