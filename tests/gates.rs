#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! Three-valued, background and baseline-vs-canary gates (spec rev 2) end to
//! end: the real binary against a real Prometheus over
//! `tests/fixtures/metrics/rollout.om` (see its README: `api_error_ratio` is
//! 0.002 in the first hour but 0.05 at T0+1200 and 0.1 in the second;
//! `request_latency_p95` has a baseline, a canary like it in the first hour
//! and 1.5x slower in the second, and a `sparse` track of two points), and
//! `command` providers where the test must steer the value while a run goes
//! on. Replayed gates (`at` in the past) evaluate without waiting.

mod common;

use std::time::{Duration, Instant};

use common::services::Prometheus;
use common::{log, poll_until, repo_root, report, step, Output, Running, Test};
use serde_json::Value as Json;

const T0: u64 = 1_700_000_000;
const RESUME: &[&str] = &[
    "resume",
    "g1",
    "--state-dir",
    "st",
    "--report",
    "report.json",
];

fn prom() -> std::sync::Arc<Prometheus> {
    Prometheus::shared(&repo_root().join("tests/fixtures/metrics/rollout.om"))
}

fn runbook(providers: &str, steps: &str) -> Test {
    let yaml = format!("version: 1\nname: gates\nproviders:\n{providers}steps:\n{steps}");
    Test::new().file("rb.yaml", &yaml).args(&[
        "run",
        "rb.yaml",
        "--state-dir",
        "st",
        "--report",
        "report.json",
        "--run-id",
        "g1",
        "--as",
        "dave",
    ])
}

fn with_prom(steps: &str) -> Test {
    let p = prom();
    runbook(
        &format!("  prom: {{ kind: prometheus, url: \"{}\" }}\n", p.url),
        steps,
    )
}

fn with_command(steps: &str) -> Test {
    runbook("  cmd: { kind: command }\n", steps)
}

fn all(out: &Output) -> String {
    format!("{}{}", out.stdout, out.stderr)
}

fn has(out: &Output, needle: &str) {
    let text = all(out);
    assert!(text.contains(needle), "no {needle:?} in:\n{text}");
}

fn verdicts(r: &Json, id: &str) -> Vec<String> {
    step(r, id)["evaluations"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|e| e["verdict"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `condition` passes below 1 %, `failure_condition` fails above 8 %: the
/// blip of 5 % at T0+1200 is neither.
fn three_valued(at: u64, extra: &str) -> String {
    format!(
        "  - id: gate\n    metric:\n      query: api_error_ratio\n      condition: value < 0.01\n      failure_condition: value > 0.08\n      interval: 1m\n      samples: 1\n      at: {at}\n{extra}  - id: after\n    shell: echo after >> log\n"
    )
}

#[test]
fn three_values_pass_fail_and_inconclusive_against_prometheus() {
    let out = with_prom(&three_valued(T0 + 1817, "")).run().success();
    let r = report(&out);
    assert_eq!(verdicts(&r, "gate"), ["pass"]);
    let e = &step(&r, "gate")["evaluations"][0];
    assert_eq!(e["threshold"], "passes: value < 0.01; fails: value > 0.08");
    assert!(
        e["time"]
            .as_str()
            .unwrap()
            .starts_with("2023-11-14T22:43:37"),
        "{e}"
    );

    let out = with_prom(&three_valued(T0 + 4817, "")).run().code(1);
    has(&out, "value 0.1 meets failure_condition `value > 0.08`");
    assert_eq!(verdicts(&report(&out), "gate"), ["fail"]);
    // `status RUN_ID` lists the evaluation with its verdict and threshold.
    let shown = out
        .again()
        .args(&["status", "g1", "--state-dir", "st"])
        .run()
        .success();
    assert!(
        shown.stdout.contains(
            "evaluated 2023-11-14T23:33:37.000Z: value 0.1 -> fail [passes: value < 0.01; fails: value > 0.08]"
        ),
        "{}",
        shown.stdout
    );

    let fail = "      on_inconclusive: fail\n";
    let out = with_prom(&three_valued(T0 + 1237, fail)).run().code(1);
    has(
        &out,
        "value 0.05 meets neither `value < 0.01` nor `value > 0.08`",
    );
    has(&out, "1 inconclusive sample exceeds inconclusive_limit 0");
    assert_eq!(verdicts(&report(&out), "gate"), ["inconclusive"]);
    assert!(log(&out).is_empty());

    let pass = "      on_inconclusive: pass\n";
    let out = with_prom(&three_valued(T0 + 1237, pass)).run().success();
    assert_eq!(step(&report(&out), "gate")["outputs"]["inconclusive"], 1);
    assert_eq!(log(&out), ["after"]);

    // Tolerated: the limit counts them.
    let tolerated = "      on_inconclusive: fail\n      inconclusive_limit: 1\n";
    with_prom(&three_valued(T0 + 1237, tolerated))
        .run()
        .success();
}

/// Waits (bounded) until `status` shows gate waiting as a paused gate.
fn wait_paused(running: &Running) -> Json {
    let mut last = Json::Null;
    let ok = poll_until(Duration::from_secs(30), || {
        let out = running
            .beside()
            .args(&["status", "g1", "--state-dir", "st", "--format", "json"])
            .run();
        last = serde_json::from_str(&out.stdout).unwrap_or(Json::Null);
        last["waiting"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w["kind"] == "paused_gate"))
    });
    assert!(ok, "the gate never paused; last status: {last:#}");
    last
}

fn paused_gate(extra: &str) -> String {
    three_valued(
        T0 + 1237,
        &format!("      approvers: [alice, bob]\n      timeout: 1h\n{extra}"),
    )
}

#[test]
fn an_inconclusive_gate_pauses_until_approved_or_rejected() {
    let running = with_prom(&paused_gate("")).spawn();
    let status = wait_paused(&running);
    let w = &status["waiting"][0];
    assert_eq!(w["step"], "gate");
    assert!(
        w["evaluations"][1]
            .as_str()
            .unwrap()
            .contains("value 0.05 (inconclusive"),
        "{w:#}"
    );
    assert!(w["approve_command"]
        .as_str()
        .unwrap()
        .starts_with("runbook approve g1 gate --as"));
    let text = running
        .beside()
        .args(&["status", "g1", "--state-dir", "st"])
        .run()
        .success();
    assert!(
        text.stdout.contains("runbook approve g1 gate"),
        "{}",
        text.stdout
    );
    // The starter cannot pass his own gate.
    running
        .beside()
        .args(&["approve", "g1", "gate", "--as", "dave", "--state-dir", "st"])
        .run()
        .code(2);
    running
        .beside()
        .args(&[
            "approve",
            "g1",
            "gate",
            "--as",
            "alice",
            "--state-dir",
            "st",
        ])
        .run()
        .success();
    let out = running.wait().success();
    let gate = step(&report(&out), "gate").clone();
    assert_eq!(gate["outputs"]["approved_by"], serde_json::json!(["alice"]));
    assert_eq!(gate["approvals"][0]["by"], "alice");
    assert_eq!(log(&out), ["after"]);

    let running = with_prom(&paused_gate("")).spawn();
    wait_paused(&running);
    running
        .beside()
        .args(&[
            "approve",
            "g1",
            "gate",
            "--as",
            "bob",
            "--reject",
            "--comment",
            "too noisy",
            "--state-dir",
            "st",
        ])
        .run()
        .success();
    let out = running.wait().code(1);
    has(&out, "rejected by bob: too noisy");
    assert!(log(&out).is_empty());
}

#[test]
fn kill_9_during_a_paused_gate_then_resume_keeps_its_evaluations() {
    let running = with_prom(&paused_gate("")).spawn();
    wait_paused(&running);
    running.signal(libc::SIGKILL);
    let out = running.wait();
    assert!(out.killed());
    let resumed = out.again().args(RESUME).spawn();
    wait_paused(&resumed);
    resumed
        .beside()
        .args(&["approve", "g1", "gate", "--as", "bob", "--state-dir", "st"])
        .run()
        .success();
    let out = resumed.wait().success();
    // The evaluation before the crash was not taken again.
    assert_eq!(verdicts(&report(&out), "gate"), ["inconclusive"]);
    assert_eq!(log(&out), ["after"]);
}

/// A command gate whose answers come from `answers` one line a call
/// (`err` makes the provider fail), then the last line forever.
fn scripted(answers: &[&str], extra: &str) -> Test {
    let query = "n=$(cat calls 2>/dev/null || echo 0); n=$((n+1)); echo $n > calls; a=$(sed -n \"${n}p\" answers); [ -n \"$a\" ] || a=$(tail -n 1 answers); [ \"$a\" != err ] || { echo down >&2; exit 7; }; echo $a";
    with_command(&format!(
        "  - id: gate\n    metric:\n      query: '{}'\n      condition: value < 1\n      interval: 20ms\n{extra}  - id: after\n    shell: echo after >> log\n",
        query.replace('\'', "''")
    ))
    .file("answers", &(answers.join("\n") + "\n"))
}

#[test]
fn provider_errors_are_retried_up_to_error_limit() {
    let out = scripted(
        &["err", "err", "0.5", "0.5"],
        "      samples: 2\n      error_limit: 2\n",
    )
    .run()
    .success();
    has(
        &out,
        "error before sample 1/2: query failed: the command failed (exit code 7): down (error; 1 in a row, error_limit 2)",
    );
    has(&out, "(error; 2 in a row, error_limit 2)");
    let r = report(&out);
    assert_eq!(verdicts(&r, "gate"), ["error", "error", "pass", "pass"]);
    assert_eq!(step(&r, "gate")["outputs"]["errors"], 2);
    assert_eq!(step(&r, "gate")["outputs"]["samples"], 2);

    let out = scripted(&["err"], "      samples: 2\n      error_limit: 2\n")
        .run()
        .code(1);
    has(&out, "3 provider errors in a row exceed error_limit 2");
    assert!(log(&out).is_empty());
}

#[test]
fn unreachable_prometheus_is_an_error_not_a_failure() {
    let closed = common::raw_tcp::free_port();
    let out = runbook(
        &format!("  prom: {{ kind: prometheus, url: \"http://127.0.0.1:{closed}\" }}\n"),
        "  - id: gate\n    metric:\n      query: up\n      condition: value == 1\n      interval: 20ms\n      error_limit: 1\n",
    )
    .run()
    .code(1);
    has(&out, "2 provider errors in a row exceed error_limit 1");
    has(&out, "(error; 1 in a row, error_limit 1)");
    assert_eq!(verdicts(&report(&out), "gate"), ["error", "error"]);
}

#[test]
fn a_dry_run_breach_is_recorded_and_never_fails_the_run() {
    let out = with_prom(&three_valued(T0 + 4817, "      dry_run: true\n"))
        .run()
        .success();
    has(&out, "dry run: the gate would fail");
    let r = report(&out);
    let gate = step(&r, "gate");
    assert_eq!(gate["outputs"]["breaches"], 1);
    assert_eq!(gate["evaluations"][0]["verdict"], "fail");
    assert_eq!(gate["evaluations"][0]["dry_run"], true);
    assert_eq!(log(&out), ["after"]);
}

#[test]
fn initial_delay_comes_before_the_first_evaluation() {
    let started = Instant::now();
    scripted(&["0.5"], "      samples: 1\n      initial_delay: 400ms\n")
        .run()
        .success();
    assert!(started.elapsed() >= Duration::from_millis(400));
}

fn compare(at: u64, canary: &str, extra: &str) -> String {
    let range = if canary == "sparse" { "2m" } else { "30m" };
    format!(
        "  - id: latency\n    metric:\n      compare:\n        baseline: 'request_latency_p95{{track=\"baseline\"}}'\n        canary: 'request_latency_p95{{track=\"{canary}\"}}'\n        range: {range}\n        step: 1m\n{extra}      interval: 1m\n      samples: 1\n      at: {at}\n  - id: after\n    shell: echo after >> log\n"
    )
}

#[test]
fn baseline_against_canary_passes_fails_and_is_inconclusive_on_too_few_points() {
    let out = with_prom(&compare(T0 + 3000, "canary", "")).run().success();
    let r = report(&out);
    let e = &step(&r, "latency")["evaluations"][0];
    assert_eq!(e["verdict"], "pass", "{e:#}");
    assert!(e["p_value"].as_f64().unwrap() > 0.02, "{e:#}");
    assert!(
        (e["baseline_median"].as_f64().unwrap() - 0.2).abs() < 0.011,
        "{e:#}"
    );

    let out = with_prom(&compare(T0 + 7000, "canary", "")).run().code(1);
    let r = report(&out);
    let e = &step(&r, "latency")["evaluations"][0];
    assert_eq!(e["verdict"], "fail", "{e:#}");
    assert!(e["p_value"].as_f64().unwrap() < 0.001, "{e:#}");
    let change = step(&r, "latency")["outputs"]["value"].as_f64().unwrap();
    assert!((change - 0.5).abs() < 0.06, "relative change {change}");
    assert!(log(&out).is_empty());

    // A decrease passes a gate on increases only.
    let out = with_prom(&compare(
        T0 + 7000,
        "canary",
        "        direction: decrease\n",
    ))
    .run()
    .success();
    assert_eq!(verdicts(&report(&out), "latency"), ["pass"]);

    let out = with_prom(&compare(
        T0 + 700,
        "sparse",
        "      on_inconclusive: fail\n",
    ))
    .run()
    .code(1);
    has(&out, "too few points");
    assert_eq!(verdicts(&report(&out), "latency"), ["inconclusive"]);
}

/// A background guard over a long step: the guard reads `value` (the test
/// writes it), the long step writes its pid and sleeps.
fn guarded(value: &str) -> Test {
    with_command(
        "  - id: guard\n    metric:\n      query: cat value\n      condition: value < 1\n      interval: 50ms\n      error_limit: 0\n      background: { until: long }\n  - id: long\n    shell: echo $$ > long.tmp; mv long.tmp long.pid; sleep 30; echo done >> log\n    rollback: { shell: echo undo-long >> log }\n  - id: after\n    shell: echo after >> log\n",
    )
    .file("value", value)
}

#[test]
fn a_background_gate_breaching_during_a_long_step_kills_it_and_unwinds() {
    let mut running = guarded("0.1\n").spawn();
    running.wait_for_file("long.pid", Duration::from_secs(30));
    let pid: i32 = std::fs::read_to_string(running.path().join("long.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let breached = Instant::now();
    std::fs::write(running.path().join("value"), "5\n").unwrap();
    let out = running.wait().code(1);
    assert!(
        breached.elapsed() < Duration::from_secs(10),
        "the breach did not stop the run at once"
    );
    assert_eq!(log(&out), ["undo-long"]);
    assert!(
        unsafe { libc::kill(pid, 0) } != 0,
        "the long step's process still runs"
    );
    let r = report(&out);
    assert_eq!(step(&r, "guard")["status"], "failed");
    assert_eq!(step(&r, "long")["status"], "cancelled");
    has(&out, "value 5 does not satisfy `value < 1`");
}

#[test]
fn a_background_gate_passes_when_its_until_step_finishes() {
    let out = with_command(
        "  - id: guard\n    metric:\n      query: echo 0.1\n      condition: value < 1\n      interval: 50ms\n      background: { until: work }\n  - id: work\n    shell: sleep 0.4; echo work >> log\n  - id: after\n    shell: echo after >> log\n",
    )
    .run()
    .success();
    assert_eq!(log(&out), ["work", "after"]);
    let r = report(&out);
    assert_eq!(step(&r, "guard")["status"], "succeeded");
    let n = verdicts(&r, "guard").len();
    assert!(n >= 2, "the guard sampled {n} times while work ran");
}

#[test]
fn kill_9_during_a_background_gate_then_resume() {
    let wait_for_go = "echo $$ > long.tmp; mv long.tmp long.pid; for i in $(seq 600); do [ -e go ] && break; sleep 0.05; done; echo done >> log";
    let steps = format!(
        "  - id: guard\n    metric:\n      query: touch sampled; echo 0.1\n      condition: value < 1\n      interval: 50ms\n      background: {{ until: long }}\n  - id: long\n    shell: '{wait_for_go}'\n  - id: after\n    shell: echo after >> log\n"
    );
    let mut running = with_command(&steps).spawn();
    running.wait_for_file("long.pid", Duration::from_secs(30));
    running.signal(libc::SIGKILL);
    let out = running.wait();
    assert!(out.killed());
    let (status, out) = common::status_json(out, "st", "g1");
    let before = verdicts(&status, "guard").len();
    assert!(before >= 1, "{status:#}");
    std::fs::remove_file(out.path().join("long.pid")).unwrap();
    let mut resumed = out.again().args(RESUME).spawn();
    resumed.wait_for_file("long.pid", Duration::from_secs(30));
    std::fs::write(resumed.path().join("go"), "").unwrap();
    let out = resumed.wait().success();
    assert_eq!(log(&out), ["done", "after"]);
    let r = report(&out);
    assert_eq!(step(&r, "guard")["status"], "succeeded");
    assert!(verdicts(&r, "guard").len() > before, "{r:#}");
}

#[test]
fn plan_shows_what_each_gate_evaluates_and_a_background_gates_span() {
    let yaml = "version: 1\nname: gates\nproviders:\n  cmd: { kind: command }\nsteps:\n  - id: guard\n    metric:\n      query: echo 0.1\n      condition: value < 1\n      failure_condition: value > 2\n      approvers: [alice]\n      background: { until: work }\n  - id: work\n    shell: echo work\n";
    let plan = Test::new()
        .file("rb.yaml", yaml)
        .args(&["plan", "rb.yaml"])
        .run()
        .success();
    for line in [
        "in the background, every 30s until `work` finishes",
        "pass when: value < 1",
        "fail when: value > 2",
        "pauses for 1 approval(s) from alice",
        "provider errors (unreachable, not one number): up to 4 in a row tolerated",
    ] {
        assert!(
            plan.stdout.contains(line),
            "no {line:?} in:\n{}",
            plan.stdout
        );
    }
    let json = Test::new()
        .file("rb.yaml", yaml)
        .args(&["plan", "rb.yaml", "--format", "json"])
        .run()
        .success();
    let v: Json = serde_json::from_str(&json.stdout).unwrap();
    let gate = &v["steps"][0]["gate"];
    assert_eq!(gate["background_until"], "work", "{gate:#}");
    assert_eq!(gate["on_inconclusive"], "pause");
    assert_eq!(gate["pause"]["approvers"][0], "alice");
}

/// A gate's rev-2 settings that cannot work together are refused before
/// anything runs, each at its line.
#[test]
fn gate_settings_that_do_not_fit_are_refused_at_their_line() {
    let cases: &[(&str, &str, u32)] = &[
        ("      query: echo 1\n      condition: value < 1\n      on_inconclusive: pause\n", "E028", 10),
        ("      query: echo 1\n      condition: value < 1\n      failure_condition: value > 2\n      on_inconclusive: fail\n      approvers: [a]\n", "E028", 12),
        ("      query: echo 1\n      condition: value < 1\n      background: { until: nowhere }\n", "E028", 10),
        ("      query: echo 1\n      condition: value < 1\n      background: { until: guard }\n", "E028", 10),
        ("      query: echo 1\n      condition: value < 1\n      samples: 3\n      background: { until: work }\n", "E028", 10),
        ("      query: echo 1\n      compare: { baseline: a, canary: b }\n", "E028", 8),
        ("      compare: { baseline: a, canary: b, confidence: 2 }\n", "E027", 8),
        ("      condition: value < 1\n", "E012", 6),
        ("      query: echo 1\n      condition: value < 1\n      background: { until: work }\n    retry: { attempts: 3 }\n", "E026", 11),
    ];
    for (metric, code, line) in cases {
        let yaml = format!("version: 1\nname: bad\nproviders:\n  cmd: {{ kind: command }}\nsteps:\n  - id: guard\n    metric:\n{metric}  - id: work\n    shell: echo work\n");
        let out = Test::new()
            .file("rb.yaml", &yaml)
            .args(&["validate", "rb.yaml"])
            .run()
            .code(2);
        let errors = out.errors();
        assert!(
            errors.iter().any(|(c, l)| c == code && l == line),
            "{metric}: expected {code} at line {line}, got {errors:?}\n{}",
            out.stderr
        );
    }
}

// Regressions found by review, each named after the bug.

/// A background gate that never passed an evaluation never let its `until`
/// step start: a dry run that breaches, or one that tolerates inconclusive
/// evaluations, sampled forever.
#[test]
fn a_background_gate_that_goes_on_without_a_pass_lets_the_steps_after_it_start() {
    for (name, settings) in [
        ("dry run", "      dry_run: true\n"),
        (
            "tolerated inconclusive",
            "      failure_condition: value > 10\n      on_inconclusive: pass\n",
        ),
    ] {
        let out = with_command(&format!(
            "  - id: guard\n    metric:\n      query: echo 5\n      condition: value < 1\n{settings}      interval: 50ms\n      background: {{ until: work }}\n  - id: work\n    shell: echo work >> log\n"
        ))
        .run();
        assert_eq!(out.code, Some(0), "{name}:\n{}", all(&out));
        assert_eq!(log(&out), ["work"], "{name}");
    }
}

/// Resume opened a background gate again over steps that had finished
/// before the crash, and ran them a second time.
#[test]
fn resume_of_a_background_gate_does_not_run_finished_steps_again() {
    let wait_for_go = "echo $$ > slow.tmp; mv slow.tmp slow.pid; for i in $(seq 600); do [ -e go ] && break; sleep 0.05; done";
    let steps = format!(
        "  - id: guard\n    metric:\n      query: echo 0.1\n      condition: value < 1\n      interval: 50ms\n      background: {{ until: slow }}\n  - id: work\n    shell: echo work >> log\n  - id: slow\n    shell: '{wait_for_go}'\n"
    );
    let mut running = with_command(&steps).spawn();
    running.wait_for_file("slow.pid", Duration::from_secs(30));
    running.signal(libc::SIGKILL);
    let out = running.wait();
    std::fs::remove_file(out.path().join("slow.pid")).unwrap();
    std::fs::write(out.path().join("go"), "").unwrap();
    let out = out.again().args(RESUME).run().success();
    assert_eq!(log(&out), ["work"], "work ran again");
}

/// A paused background gate waited for a person after its `until` step
/// had finished.
#[test]
fn a_paused_background_gate_passes_when_its_until_step_finishes() {
    let mut running = with_command(
        "  - id: guard\n    metric:\n      query: cat value\n      condition: value < 1\n      failure_condition: value > 10\n      on_inconclusive: pause\n      interval: 50ms\n      background: { until: work }\n  - id: work\n    shell: 'touch started; for i in $(seq 600); do [ -e go ] && break; sleep 0.05; done; echo work >> log'\n",
    )
    .file("value", "0.5\n")
    .spawn();
    running.wait_for_file("started", Duration::from_secs(30));
    // Inconclusive from now on: the guard pauses while `work` runs.
    std::fs::write(running.path().join("value"), "5\n").unwrap();
    wait_paused(&running);
    std::fs::write(running.path().join("go"), "").unwrap();
    let out = running.wait();
    assert_eq!(out.code, Some(0), "{}", all(&out));
    assert_eq!(log(&out), ["work"]);
    assert_eq!(step(&report(&out), "guard")["status"], "succeeded");
}

/// A dry run killed mid-way counted every breach before the crash as one.
#[test]
fn a_resumed_dry_run_counts_every_breach() {
    let running = scripted(&["5"], "      samples: 50\n      dry_run: true\n").spawn();
    assert!(poll_until(Duration::from_secs(30), || {
        std::fs::read_to_string(running.path().join("calls"))
            .is_ok_and(|c| c.trim().parse::<u32>().is_ok_and(|n| n >= 3))
    }));
    running.signal(libc::SIGKILL);
    let out = running.wait();
    let out = out.again().args(RESUME).run().success();
    let r = report(&out);
    let o = &step(&r, "gate")["outputs"];
    assert_eq!(o["breaches"], 50, "{o}");
    assert_eq!(o["failures"], 50, "{o}");
    assert_eq!(o["samples"], 50, "{o}");
}

/// A background guard over real Prometheus, replayed across the moment the
/// api's error ratio jumps (T0+3600): its first evaluation passes, a later
/// one breaches while the long step runs, and the run unwinds at once.
#[test]
fn a_background_guard_on_prometheus_breaches_during_a_long_step() {
    let steps = format!(
        "  - id: guard\n    metric:\n      query: api_error_ratio\n      condition: value < 0.01\n      interval: 200ms\n      at: {}\n      background: {{ until: long }}\n  - id: long\n    shell: echo $$ > long.tmp; mv long.tmp long.pid; sleep 30; echo done >> log\n    rollback: {{ shell: echo undo-long >> log }}\n",
        T0 + 3599
    );
    let started = Instant::now();
    let out = with_prom(&steps).run().code(1);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the breach did not stop the long step"
    );
    assert_eq!(log(&out), ["undo-long"]);
    let r = report(&out);
    assert_eq!(step(&r, "long")["status"], "cancelled");
    let v = verdicts(&r, "guard");
    assert_eq!(v.first().map(String::as_str), Some("pass"), "{v:?}");
    assert_eq!(v.last().map(String::as_str), Some("fail"), "{v:?}");
    has(&out, "value 0.1 does not satisfy `value < 0.01`");
}
