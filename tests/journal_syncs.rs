#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // a test fails loudly
//! Which journal records share an fsync, read from the `RUNBOOK_SYNC_LOG`
//! fault-injection hook (one line per sync, naming the records it made
//! durable). The rule: every record the engine acts on after (a step or
//! rollback starting, the run ending) is durable before the action, a
//! chain syncs each step's result before its dependent starts, and steps
//! that start together share one sync (group commit).

mod common;

use common::Test;

const LOG: &str = "syncs.log";

/// Runs `yaml` (expecting exit `code`) and returns its syncs, each as the
/// kinds of the records it made durable.
fn syncs(yaml: &str, code: i32) -> Vec<Vec<String>> {
    let t = Test::new().file("rb.yaml", yaml).state_dir("st");
    let log = t.path().join(LOG);
    let out = t
        .env("RUNBOOK_SYNC_LOG", &log.display().to_string())
        .args(&["run", "rb.yaml", "--run-id", "r1"])
        .run()
        .code(code);
    let text = std::fs::read_to_string(out.path().join(LOG)).unwrap_or_default();
    text.lines()
        .map(|l| l.split(' ').map(str::to_string).collect())
        .collect()
}

fn kinds(words: &[&str]) -> Vec<String> {
    words.iter().map(ToString::to_string).collect()
}

#[test]
fn a_chain_syncs_each_step_result_with_the_start_of_the_next() {
    let got = syncs(
        "version: 1\nname: chain\nsteps:\n  - id: a\n    shell: \"true\"\n  - id: b\n    shell: \"true\"\n  - id: c\n    shell: \"true\"\n",
        0,
    );
    assert_eq!(
        got,
        vec![
            kinds(&["header", "run_started", "step_started"]),
            kinds(&["step_finished", "step_started"]),
            kinds(&["step_finished", "step_started"]),
            kinds(&["step_finished", "run_finished"]),
        ]
    );
}

#[test]
fn steps_that_start_together_share_one_sync() {
    let mut yaml = String::from("version: 1\nname: wide\nconcurrency: 4\nsteps:\n");
    for id in ["a", "b", "c", "d"] {
        yaml.push_str(&format!(
            "  - id: {id}\n    needs: []\n    shell: \"true\"\n"
        ));
    }
    let got = syncs(&yaml, 0);
    assert_eq!(
        got.first(),
        Some(&kinds(&[
            "header",
            "run_started",
            "step_started",
            "step_started",
            "step_started",
            "step_started"
        ])),
        "{got:?}"
    );
    assert_eq!(
        got.len(),
        2,
        "one sync to start the four, one to end: {got:?}"
    );
}

#[test]
fn every_record_acted_on_is_durable_before_the_action() {
    // A failing chain with a rollback: the unwind, each rollback start and
    // the end are each the last record of a sync.
    let got = syncs(
        "version: 1\nname: undo\nsteps:\n  - id: a\n    shell: \"true\"\n    rollback:\n      shell: \"true\"\n  - id: b\n    shell: \"false\"\n",
        1,
    );
    let last: Vec<&str> = got
        .iter()
        .filter_map(|s| s.last().map(String::as_str))
        .collect();
    assert_eq!(
        last,
        [
            "step_started",
            "step_started",
            "unwind_started",
            "rollback_started",
            "run_finished"
        ],
        "{got:?}"
    );
}
