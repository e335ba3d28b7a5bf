#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! `metric:` steps end to end: the real binary against a real Prometheus
//! (started by `common::services` over `tests/fixtures/metrics/rollout.om`)
//! and against `command` providers.
//!
//! The fixture (see `tests/fixtures/metrics/README.md`) holds two hours of
//! data from T0 = 1700000000 (2023-11-14T22:13:20Z), one sample a minute:
//! the api's error rate is 0.2 % in the first hour and 10 % in the second;
//! `api_error_ratio` has one bad sample (0.05) at T0+1200; the `batch` job
//! exists only in the second hour; the `idle` job has no traffic (its error
//! ratio is 0/0 = NaN). Gates replay it with `at`, at times off the minute
//! grid; with `at` in the past, samples are evaluated without waiting, so
//! these tests take milliseconds however long their `interval`.

mod common;

use common::log;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::services::{BasicAuth, PromOptions, Prometheus};
use common::{poll_until, repo_root, report, step, Output, Test};
use serde_json::Value as Json;

const RB: &str = "rb.yaml";
const T0: u64 = 1_700_000_000;

/// The api's error rate over 5 minutes.
const ERROR_RATE: &str = r#"sum(rate(http_requests_total{job="api",code="500"}[5m])) / sum(rate(http_requests_total{job="api"}[5m]))"#;

fn fixture() -> PathBuf {
    repo_root().join("tests/fixtures/metrics/rollout.om")
}

fn prom() -> Arc<Prometheus> {
    Prometheus::shared(&fixture())
}

/// A runbook with one Prometheus provider `prom` at `url` and `steps`
/// (YAML list items, indented by two spaces).
fn with_prom(url: &str, steps: &str) -> String {
    format!(
        "version: 1\nname: gate\nproviders:\n  prom: {{ kind: prometheus, url: \"{url}\" }}\nsteps:\n{steps}"
    )
}

fn run(yaml: &str) -> Test {
    Test::new()
        .file(RB, yaml)
        .args(&["run", RB, "--state-dir", "st", "--report", "report.json"])
}

/// The gate's `steps.<id>.outputs`.
fn outputs<'a>(report: &'a Json, id: &str) -> &'a Json {
    &step(report, id)["outputs"]
}

fn all_output(out: &Output) -> String {
    format!("{}{}", out.stdout, out.stderr)
}

fn assert_contains(out: &Output, needle: &str) {
    let text = all_output(out);
    assert!(
        text.contains(needle),
        "output does not contain {needle:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.stdout,
        out.stderr
    );
}

fn assert_close(v: &Json, expected: f64) {
    let x = v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"));
    assert!(
        (x - expected).abs() < expected.abs() * 1e-6 + 1e-9,
        "{x} is not {expected}"
    );
}

// ---------------------------------------------------------------------------
// The fixture itself: if these fail, the gate tests below would be
// meaningless.

fn instant(prom: &Prometheus, q: &str, offset: u64) -> Option<f64> {
    let data = prom.query(q, (T0 + offset) as f64);
    let result = data["result"].as_array().expect("a vector");
    match result.as_slice() {
        [] => None,
        [one] => one["value"][1].as_str().and_then(|s| s.parse().ok()),
        many => panic!("{} series for {q}", many.len()),
    }
}

#[test]
fn fixture_has_the_windows_the_gates_rely_on() {
    let p = prom();
    let good = instant(&p, ERROR_RATE, 1817).expect("data in the first hour");
    assert!((good - 0.002).abs() < 1e-6, "{good}");
    let bad = instant(&p, ERROR_RATE, 4817).expect("data in the second hour");
    assert!((bad - 0.1).abs() < 1e-6, "{bad}");
    let batch = r#"sum(rate(http_requests_total{job="batch",code="500"}[5m])) / sum(rate(http_requests_total{job="batch"}[5m]))"#;
    assert_eq!(instant(&p, batch, 1817), None);
    let later = instant(&p, batch, 4817).expect("batch runs in the second hour");
    assert!((later - 0.005).abs() < 1e-6, "{later}");
    assert_eq!(instant(&p, "api_error_ratio", 1237), Some(0.05));
    assert_eq!(instant(&p, "api_error_ratio", 1297), Some(0.002));
}

// ---------------------------------------------------------------------------
// Prometheus gates.

#[test]
fn passing_gate_replays_several_samples_from_at() {
    let p = prom();
    // `at` as RFC 3339: T0+617. Six samples 5m apart stay in the healthy hour.
    let yaml = with_prom(
        &p.url,
        &format!(
            r#"  - id: gate
    metric:
      query: '{ERROR_RATE}'
      condition: value < 0.01
      at: "2023-11-14T22:23:37Z"
      interval: 5m
      samples: 6
"#
        ),
    );
    let started = Instant::now();
    let out = run(&yaml).run().success();
    // Replayed history is not waited for: 25 minutes of samples at once.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_contains(
        &out,
        "sample 1/6 at 2023-11-14T22:23:37.000Z: value 0.002 (pass)",
    );
    assert_contains(
        &out,
        "sample 6/6 at 2023-11-14T22:48:37.000Z: value 0.002 (pass)",
    );
    let r = report(&out);
    assert_eq!(step(&r, "gate")["status"], "succeeded");
    let o = outputs(&r, "gate");
    assert_close(&o["value"], 0.002);
    assert_eq!(o["samples"], 6);
    assert_eq!(o["failures"], 0);
}

#[test]
fn breaching_gate_fails_at_once_unwinds_and_shows_the_value() {
    let p = prom();
    let yaml = with_prom(
        &p.url,
        &format!(
            r#"  - id: deploy
    shell: echo deploy >> log
    rollback:
      shell: echo undo deploy >> log
  - id: gate
    metric:
      query: '{ERROR_RATE}'
      condition: value < 0.01
      at: {}
      interval: 1m
      samples: 5
    rollback:
      shell: echo undo gate >> log
  - id: after
    shell: echo after >> log
"#,
            T0 + 4217
        ),
    );
    let out = run(&yaml).run().code(1);
    assert_contains(
        &out,
        "gate failed at sample 1/5: value 0.1 does not satisfy `value < 0.01`",
    );
    assert_eq!(log(&out), ["deploy", "undo gate", "undo deploy"]);
    let r = report(&out);
    assert_eq!(r["status"], "rolled_back");
    assert_eq!(step(&r, "gate")["status"], "failed");
    assert!(
        step(&r, "gate")["error"]
            .as_str()
            .unwrap_or_default()
            .contains("value 0.1 "),
        "{r:#}"
    );
    assert_eq!(step(&r, "after")["status"], "not_started");
    // It stopped at the first bad sample: no sample 2.
    assert!(
        !all_output(&out).contains("sample 2/5"),
        "{}",
        all_output(&out)
    );
}

/// `api_error_ratio` from T0+1117, a minute apart: the third of five
/// samples (T0+1237) reads the one bad point.
fn blip_gate(url: &str, failure_limit: u32) -> String {
    with_prom(
        url,
        &format!(
            r#"  - id: gate
    metric:
      query: api_error_ratio{{job="api"}}
      condition: value < 0.01
      at: {}
      interval: 1m
      samples: 5
      failure_limit: {failure_limit}
"#,
            T0 + 1117
        ),
    )
}

#[test]
fn failure_limit_tolerates_one_bad_sample() {
    let p = prom();
    let out = run(&blip_gate(&p.url, 1)).run().success();
    assert_contains(
        &out,
        "sample 3/5 at 2023-11-14T22:33:57.000Z: value 0.05 (fail; 1 failed, failure_limit 1)",
    );
    assert_contains(
        &out,
        "sample 5/5 at 2023-11-14T22:35:57.000Z: value 0.002 (pass)",
    );
    let r = report(&out);
    let o = outputs(&r, "gate");
    assert_eq!(o["failures"], 1);
    assert_eq!(o["samples"], 5);
    assert_close(&o["value"], 0.002);

    // Without the allowance the same data fails the gate at the bad sample.
    let out = run(&blip_gate(&p.url, 0)).run().code(1);
    assert_contains(
        &out,
        "gate failed at sample 3/5: value 0.05 does not satisfy",
    );
    assert!(!all_output(&out).contains("sample 4/5"));
}

fn batch_gate(url: &str, on_no_data: &str, offset: u64) -> String {
    with_prom(
        url,
        &format!(
            r#"  - id: gate
    metric:
      query: 'sum(rate(http_requests_total{{job="batch",code="500"}}[5m])) / sum(rate(http_requests_total{{job="batch"}}[5m]))'
      condition: value < 0.01
      at: {}
      interval: 10m
      samples: 2
      on_no_data: {on_no_data}
"#,
            T0 + offset
        ),
    )
}

#[test]
fn no_data_fails_unless_on_no_data_is_pass() {
    let p = prom();
    // The batch job does not exist in the first hour.
    let out = run(&batch_gate(&p.url, "fail", 1817)).run().code(1);
    assert_contains(
        &out,
        "gate failed at sample 1/2: the query returned no data (on_no_data: fail)",
    );

    let out = run(&batch_gate(&p.url, "pass", 1817)).run().success();
    assert_contains(
        &out,
        "sample 1/2 at 2023-11-14T22:43:37.000Z: no data (pass)",
    );
    let r = report(&out);
    assert_eq!(outputs(&r, "gate")["value"], Json::Null);
    assert_eq!(outputs(&r, "gate")["failures"], 0);

    // In the second hour it has data, and the same gate reads it.
    let out = run(&batch_gate(&p.url, "fail", 4817)).run().success();
    assert_close(&outputs(&report(&out), "gate")["value"], 0.005);
}

#[test]
fn nan_is_no_data() {
    let p = prom();
    let idle = r#"sum(rate(http_requests_total{job="idle",code="500"}[5m])) / sum(rate(http_requests_total{job="idle"}[5m]))"#;
    let gate = |on_no_data: &str| {
        with_prom(
            &p.url,
            &format!(
                r#"  - id: gate
    metric:
      query: '{idle}'
      condition: value < 0.01
      at: {}
      on_no_data: {on_no_data}
"#,
                T0 + 1817
            ),
        )
    };
    let out = run(&gate("fail")).run().code(1);
    assert_contains(&out, "the query returned no data");
    run(&gate("pass")).run().success();
}

#[test]
fn several_series_are_a_clear_error() {
    let p = prom();
    let yaml = with_prom(
        &p.url,
        &format!(
            r#"  - id: gate
    metric:
      query: 'rate(http_requests_total{{job="api"}}[5m])'
      condition: value < 0.01
      error_limit: 0
      at: {}
"#,
            T0 + 1817
        ),
    );
    let out = run(&yaml).run().code(1);
    assert_contains(
        &out,
        "the query returned 2 series but a gate needs exactly one number",
    );
    assert_contains(&out, r#"{code="200", job="api"}, {code="500", job="api"}"#);
}

#[test]
fn prometheus_errors_are_shown() {
    let p = prom();
    let yaml = with_prom(
        &p.url,
        &format!(
            r#"  - id: gate
    metric:
      query: 'sum(rate(http_requests_total[5m]'
      condition: value < 0.01
      error_limit: 0
      at: {}
"#,
            T0 + 1817
        ),
    );
    let out = run(&yaml).run().code(1);
    assert_contains(&out, "prometheus answered HTTP 400: bad_data:");

    // Nothing listens: the error names the endpoint and the cause.
    let closed = common::raw_tcp::free_port();
    let yaml = with_prom(
        &format!("http://127.0.0.1:{closed}"),
        "  - id: gate\n    metric:\n      query: up\n      condition: value == 1\n      error_limit: 0\n",
    );
    let out = run(&yaml).run().code(1);
    assert_contains(
        &out,
        &format!("prometheus query to http://127.0.0.1:{closed}/api/v1/query failed"),
    );
}

/// The provider is built once, before the run: a header whose value cannot
/// be sent refuses the run before any step, without quoting the value.
#[test]
fn a_provider_header_that_cannot_be_sent_refuses_the_run() {
    let yaml = r#"version: 1
name: gate
secrets:
  token: { env: PROM_TOKEN }
providers:
  prom:
    kind: prometheus
    url: "http://127.0.0.1:9"
    headers:
      Authorization: "Bearer {{ secrets.token }}"
steps:
  - id: before
    shell: echo before >> log
  - id: gate
    needs: [before]
    metric:
      query: up
      condition: value == 1
"#;
    let out = run(yaml).env("PROM_TOKEN", "line1\nline2").run().code(2);
    assert_contains(
        &out,
        "provider `prom`: the value of header `Authorization` is not a valid header value",
    );
    assert!(log(&out).is_empty(), "no step ran");
    assert!(!all_output(&out).contains("line1"), "{}", all_output(&out));
}

#[test]
fn auth_header_rendered_from_a_secret_reaches_prometheus_and_is_masked() {
    // A server of its own that refuses requests without the right password.
    let auth = BasicAuth {
        user: "runbook".into(),
        password: "s3cret-token".into(),
        bcrypt: "$2b$04$Xd4gGcr9acuKkgvi5TQsXOLQhpJEmUlXN5zgfvM2KZYPXT.gCYqmu".into(),
    };
    let credentials = common::services::base64(b"runbook:s3cret-token");
    let p = Prometheus::start_with(
        &fixture(),
        &PromOptions {
            basic_auth: Some(auth),
        },
    );
    let yaml = format!(
        r#"version: 1
name: gate
secrets:
  prom_basic: {{ env: PROM_BASIC }}
providers:
  prom:
    kind: prometheus
    url: "{}"
    headers:
      Authorization: "Basic {{{{ secrets.prom_basic }}}}"
steps:
  - id: gate
    metric:
      query: '{ERROR_RATE}'
      condition: value < 0.01
      at: {}
"#,
        p.url,
        T0 + 1817
    );
    let out = run(&yaml).env("PROM_BASIC", &credentials).run().success();
    assert_close(&outputs(&report(&out), "gate")["value"], 0.002);
    assert_not_leaked(&out, &credentials);

    // The server does check it: a wrong password is refused.
    let wrong = common::services::base64(b"runbook:wrong-password");
    let out = run(&yaml).env("PROM_BASIC", &wrong).run().code(1);
    assert_contains(&out, "prometheus answered HTTP 401");
    assert_not_leaked(&out, &wrong);
}

/// `secret` appears nowhere: not in the output, the report, the state dir.
fn assert_not_leaked(out: &Output, secret: &str) {
    assert!(!all_output(out).contains(secret), "{}", all_output(out));
    fn walk(dir: &Path, secret: &str) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, secret);
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(secret),
                    "{} leaks the secret",
                    path.display()
                );
            }
        }
    }
    walk(out.path(), secret);
}

#[test]
fn templated_samples_and_at_from_params() {
    let p = prom();
    let yaml = format!(
        r#"version: 1
name: gate
params:
  soak_samples: {{ type: integer, default: 2 }}
  start: {{ type: integer, default: {} }}
providers:
  prom: {{ kind: prometheus, url: "{}" }}
steps:
  - id: gate
    metric:
      query: '{ERROR_RATE}'
      condition: value < 0.01
      at: "{{{{ params.start }}}}"
      interval: 2m
      samples: "{{{{ params.soak_samples }}}}"
"#,
        T0 + 617,
        p.url
    );
    let out = run(&yaml)
        .args(&["--param", "soak_samples=4"])
        .run()
        .success();
    assert_contains(&out, "sample 4/4 at 2023-11-14T22:29:37.000Z");
    assert_eq!(outputs(&report(&out), "gate")["samples"], 4);

    // The same gate replayed in the bad hour fails.
    let out = run(&yaml)
        .args(&["--param", "soak_samples=3", "--param"])
        .arg(&format!("start={}", T0 + 4217))
        .run()
        .code(1);
    assert_contains(&out, "gate failed at sample 1/3");
}

// ---------------------------------------------------------------------------
// `command` provider gates.

fn with_command(metric: &str) -> String {
    format!(
        "version: 1\nname: gate\nproviders:\n  sh: {{ kind: command }}\nsteps:\n  - id: gate\n    metric:\n{metric}"
    )
}

#[test]
fn command_gate_passes_and_breaches_sleeping_between_samples() {
    let yaml = with_command(
        "      query: echo 0.004\n      condition: value < 0.01\n      interval: 50ms\n      samples: 3\n",
    );
    let started = Instant::now();
    let out = run(&yaml).run().success();
    // Live samples (no `at`) are `interval` apart.
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_contains(
        &out,
        "sample 1/3: value 0.004 (pass) [value < 0.01]; next sample in 50ms",
    );
    assert_contains(&out, "sample 3/3: value 0.004 (pass) [value < 0.01]");
    let o = outputs(&report(&out), "gate").clone();
    assert_eq!(o["samples"], 3);
    assert_close(&o["value"], 0.004);

    let yaml = with_command(
        "      query: echo 0.5\n      condition: value < 0.01\n      interval: 50ms\n      samples: 3\n",
    );
    let out = run(&yaml).run().code(1);
    assert_contains(
        &out,
        "gate failed at sample 1/3: value 0.5 does not satisfy `value < 0.01`",
    );
    assert_eq!(report(&out)["status"], "rolled_back");
}

#[test]
fn command_gate_counts_failures_over_samples() {
    // The second of four samples is bad; a file counts the evaluations.
    let yaml = with_command(
        r#"      query: |
        n=$(( $(cat n 2>/dev/null || echo 0) + 1 )); echo $n > n
        if [ $n = 2 ]; then echo 0.5; else echo 0.001; fi
      condition: value < 0.01
      interval: 50ms
      samples: 4
      failure_limit: 1
"#,
    );
    let out = run(&yaml).run().success();
    assert_contains(
        &out,
        "sample 2/4: value 0.5 (fail; 1 failed, failure_limit 1)",
    );
    let o = outputs(&report(&out), "gate").clone();
    assert_eq!(o["failures"], 1);
    assert_eq!(o["samples"], 4);
}

#[test]
fn command_gate_garbage_empty_and_failing_commands() {
    let gate = |query: &str, on_no_data: &str| {
        with_command(&format!(
            "      query: '{query}'\n      condition: value < 1\n      on_no_data: {on_no_data}\n      error_limit: 0\n"
        ))
    };
    let out = run(&gate("echo hello", "pass")).run().code(1);
    assert_contains(&out, "the command printed `hello`, not a number");
    let out = run(&gate("true", "fail")).run().code(1);
    assert_contains(&out, "the query returned no data");
    run(&gate("true", "pass")).run().success();
    let out = run(&gate("echo broken >&2; exit 3", "pass")).run().code(1);
    assert_contains(&out, "the command failed (exit code 3): broken");
}

#[test]
fn command_gate_sees_params_quoted_and_the_evaluation_time() {
    let yaml = format!(
        r#"version: 1
name: gate
params:
  name: {{ type: string, default: "a b; echo pwned" }}
providers:
  sh: {{ kind: command }}
steps:
  - id: gate
    metric:
      query: |
        printf '%s|%s\n' {{{{ params.name }}}} "$RUNBOOK_METRIC_AT" > seen
        echo 0
      condition: value == 0
      at: {}
"#,
        T0 + 17
    );
    let out = run(&yaml).run().success();
    let seen = std::fs::read_to_string(out.path().join("seen")).unwrap();
    assert_eq!(seen, "a b; echo pwned|1700000017.000\n");
}

/// Whether `pid` is gone (or a zombie nobody reaped yet).
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                == Some("Z")
        }
    }
}

#[test]
fn timeout_kills_the_command_and_its_children() {
    let yaml = with_command(
        r#"      query: |
        sleep 600 & echo $! > child
        echo $$ > shell
        wait
      condition: value < 1
    timeout: 500ms
"#,
    );
    let started = Instant::now();
    let out = run(&yaml).run().code(1);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_contains(&out, "timed out");
    for f in ["child", "shell"] {
        let pid: i32 = std::fs::read_to_string(out.path().join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .trim()
            .parse()
            .unwrap();
        assert!(
            poll_until(Duration::from_secs(10), || dead(pid)),
            "{f} ({pid}) outlived the step"
        );
    }
}

#[test]
fn interrupt_ends_a_soak_that_is_sleeping_and_status_shows_the_sample() {
    // A day-long soak: the step sleeps between samples and must wake at once.
    let yaml = with_command(
        "      query: touch sampled; echo 0.001\n      condition: value < 0.01\n      interval: 1h\n      samples: 24\n",
    );
    let mut running = run(&yaml).args(&["--run-id", "soak"]).spawn();
    running.wait_for_file("sampled", Duration::from_secs(60));
    let dir = running.path().to_path_buf();
    let status = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
            .args(["status", "soak", "--state-dir", "st"])
            .current_dir(&dir)
            .env("NO_COLOR", "1")
            .output()
            .expect("run runbook status");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut shown = String::new();
    assert!(
        poll_until(Duration::from_secs(10), || {
            shown = status();
            shown.contains("sample 1/24: value 0.001 (pass) [value < 0.01]; next sample in 1h")
        }),
        "status does not show the sample:\n{shown}"
    );
    let sent = Instant::now();
    running.signal(libc::SIGINT);
    let out = running.wait().code(130);
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "the sleeping soak was not woken"
    );
    assert_eq!(step(&report(&out), "gate")["status"], "cancelled");
}
