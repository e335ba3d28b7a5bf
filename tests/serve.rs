#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! `runbook serve` over plain HTTP: the JSON API and its status codes,
//! server-sent events (history, then live), answers from the page's own
//! origin only, escaping and the Content-Security-Policy. The server and the
//! run are the real binary, side by side in one test directory.

mod common;

use std::time::Duration;

use common::services::http_request;
use common::{log, Running, Test};
use serde_json::Value as Json;

const WAITING: &str = "st/runs/r1/approvals/gate/waiting.json";

const RB: &str = r#"
version: 1
name: served
params:
  note: { type: string, default: "<img src=x onerror=alert(1)>" }
steps:
  - id: before
    shell: echo '<script>alert("out")</script>'
  - id: gate
    approval: { approvers: [alice, bob], message: "ship {{ params.note }}?" }
  - id: after
    shell: echo after >> log
"#;

struct Served {
    run: Running,
    server: Running,
    base: String,
}

/// A run waiting on `gate`, and a server over its state dir.
fn served(auth: bool) -> Served {
    let mut run = Test::new()
        .file("rb.yaml", RB)
        .args(&[
            "run",
            "rb.yaml",
            "--state-dir",
            "st",
            "--run-id",
            "r1",
            "--as",
            "dave",
            "--report",
            "report.json",
        ])
        .spawn();
    run.wait_for_file(WAITING, Duration::from_secs(60));
    let (server, base) = run.serve_beside(auth.then_some("X-Forwarded-User"));
    Served { run, server, base }
}

fn post(base: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> (u16, Json) {
    let (code, _, text) = http_request("POST", &format!("{base}{path}"), headers, body).unwrap();
    (code, serde_json::from_str(&text).unwrap_or(Json::Null))
}

#[test]
fn the_api_answers_with_the_spec_codes_and_the_page_approves_same_origin_only() {
    let s = served(true);
    let (code, _, runs) = http_request("GET", &format!("{}/api/runs", s.base), &[], None).unwrap();
    assert_eq!(code, 200);
    let runs: Json = serde_json::from_str(&runs).unwrap();
    assert_eq!(runs[0]["run_id"], "r1");
    assert_eq!(runs[0]["name"], "served");
    assert_eq!(runs[0]["status"], "running");
    let (code, _, run) =
        http_request("GET", &format!("{}/api/runs/r1", s.base), &[], None).unwrap();
    assert_eq!(code, 200);
    let run: Json = serde_json::from_str(&run).unwrap();
    assert_eq!(run["waiting"][0]["label"], "gate");
    let (code, _, _) =
        http_request("GET", &format!("{}/api/runs/nope", s.base), &[], None).unwrap();
    assert_eq!(code, 404);

    let who = [("X-Forwarded-User", "alice")];
    // No identity: 403. Unknown run or step: 404. Not waiting: 409.
    assert_eq!(
        post(&s.base, "/api/runs/r1/steps/gate/approve", &[], None).0,
        403
    );
    assert_eq!(
        post(&s.base, "/api/runs/nope/steps/gate/approve", &who, None).0,
        404
    );
    assert_eq!(
        post(&s.base, "/api/runs/r1/steps/nope/approve", &who, None).0,
        404
    );
    assert_eq!(
        post(&s.base, "/api/runs/r1/steps/after/approve", &who, None).0,
        409
    );
    // Someone not listed, and the starter: 403.
    assert_eq!(
        post(
            &s.base,
            "/api/runs/r1/steps/gate/approve",
            &[("X-Forwarded-User", "mallory")],
            None
        )
        .0,
        403
    );
    assert_eq!(
        post(
            &s.base,
            "/api/runs/r1/steps/gate/approve",
            &[("X-Forwarded-User", "dave")],
            None
        )
        .0,
        403
    );
    // A cross-site request (a link or form elsewhere) cannot answer.
    let cross = [
        ("X-Forwarded-User", "alice"),
        ("Origin", "http://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
    ];
    assert_eq!(
        post(&s.base, "/api/runs/r1/steps/gate/approve", &cross, None).0,
        403
    );
    // The page's own origin, as the proxy's user: counted.
    let origin = s.base.clone();
    let same = [
        ("X-Forwarded-User", "alice"),
        ("Content-Type", "application/json"),
        ("Origin", origin.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    let (code, body) = post(
        &s.base,
        "/api/runs/r1/steps/gate/approve",
        &same,
        Some(r#"{"comment": "from the page"}"#),
    );
    assert_eq!(code, 200, "{body}");
    let out = s.run.wait().success();
    assert_eq!(log(&out), ["after"]);
    let r = common::report(&out);
    let gate = common::step(&r, "gate");
    assert_eq!(gate["approvals"][0]["by"], "alice");
    assert_eq!(gate["approvals"][0]["comment"], "from the page");
    // Finished: 409.
    assert_eq!(
        post(&s.base, "/api/runs/r1/steps/gate/approve", &who, None).0,
        409
    );
    drop(s.server);
}

#[test]
fn events_give_the_history_then_live_records_until_the_run_ends() {
    let s = served(true);
    let url = format!("{}/api/runs/r1/events", s.base);
    // A late subscriber: the run has been going a while.
    let events = std::thread::spawn(move || http_request("GET", &url, &[], None).unwrap());
    std::thread::sleep(Duration::from_millis(500));
    let (code, _) = post(
        &s.base,
        "/api/runs/r1/steps/gate/approve",
        &[("X-Forwarded-User", "bob")],
        None,
    );
    assert_eq!(code, 200);
    let (code, head, body) = events.join().unwrap();
    assert_eq!(code, 200);
    assert!(
        head.to_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    let records: Vec<Json> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let kinds: Vec<&str> = records.iter().filter_map(|r| r["event"].as_str()).collect();
    let at = |k: &str| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
    };
    assert!(at("step_started") < at("approval"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run_finished"), "{kinds:?}");
    s.run.wait().success();
}

#[test]
fn pages_escape_everything_set_a_strict_policy_and_are_read_only_without_a_header() {
    let s = served(false);
    let (code, head, page) =
        http_request("GET", &format!("{}/runs/r1", s.base), &[], None).unwrap();
    assert_eq!(code, 200);
    let head = head.to_lowercase();
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(head.contains("x-frame-options: deny"), "{head}");
    // Step output and a param reach the page as text, never as markup.
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(!page.contains("<img src=x"), "{page}");
    assert!(
        page.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{page}"
    );
    assert!(
        page.contains("&lt;script&gt;alert(&quot;out&quot;)&lt;/script&gt;"),
        "{page}"
    );
    // The approver sees the plan they would approve; read-only: no buttons.
    let (_, _, run) = http_request("GET", &format!("{}/api/runs/r1", s.base), &[], None).unwrap();
    let run: Json = serde_json::from_str(&run).unwrap();
    let fp = run["fingerprint"].as_str().unwrap().to_string();
    assert!(page.contains(&fp), "{page}");
    assert!(page.contains("read-only"), "{page}");
    // The step graph, drawn on the server: each step a box with its state.
    assert!(page.contains("<svg class=\"graph\""), "{page}");
    assert!(page.contains("<g data-step=\"gate\">"), "{page}");
    assert!(!page.contains("<form"), "{page}");
    assert_eq!(
        post(
            &s.base,
            "/api/runs/r1/steps/gate/approve",
            &[("X-Forwarded-User", "alice")],
            None
        )
        .0,
        403
    );
    let (code, _, list) = http_request("GET", &format!("{}/", s.base), &[], None).unwrap();
    assert_eq!(code, 200);
    assert!(list.contains("href=\"/runs/r1\""), "{list}");
    s.run.signal(libc::SIGINT);
    s.run.wait();
    drop(s.server);
}
