#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! `http:` steps end to end: the real binary against the shared test HTTP
//! server (tests/common/http_server.rs), which each test starts on
//! 127.0.0.1:0 with the routes below and which records every request it
//! got, so tests assert what was sent as well as what the step made of the
//! answer.

mod common;

use std::time::{Duration, Instant};

use common::http_server::{HttpServer, Reply};
use common::raw_tcp::{free_port, RawServer};
use common::{report, step, Output, Test};
use serde_json::{json, Value as Json};

// ---------------------------------------------------------------------------
// The test server.

const HEALTH: &str = r#"{"status":"ok","version":"1.2.3","checks":{"db":1,"cache":[1,2]}}"#;

fn server() -> HttpServer {
    server_with_flaky(0)
}

/// The canned routes; `/flaky` answers 503 to the first `flaky_failures`
/// requests, then 200.
fn server_with_flaky(flaky_failures: usize) -> HttpServer {
    let mut flaky = vec![Reply::status(503).text("warming up"); flaky_failures];
    flaky.push(Reply::status(200).json(r#"{"status":"ok"}"#));
    HttpServer::builder()
        .reply("/health", Reply::status(200).json(HEALTH))
        .reply(
            "/fail",
            Reply::status(503).text("service unavailable: the database is down"),
        )
        .replies("/flaky", flaky)
        .handle("/echo", |req| {
            let ct = req.header("content-type").unwrap_or("text/plain");
            Reply::status(200)
                .header("Content-Type", ct)
                .body(req.body.clone())
        })
        .handle("/headers", |req| {
            let map: serde_json::Map<String, Json> = req
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Json::String(v.clone())))
                .collect();
            Reply::status(200).json(Json::Object(map).to_string())
        })
        .reply("/created", Reply::status(201).text("created"))
        .reply("/big", Reply::status(200).text(vec![b'a'; 2 << 20]))
        .reply(
            "/redirect",
            Reply::status(302).text("").header("Location", "/health"),
        )
        .reply(
            "/loop",
            Reply::status(302).text("").header("Location", "/loop"),
        )
        // `/slow/MS` answers after MS milliseconds.
        .handle("/slow/*", |req| {
            let ms = req.path["/slow/".len()..].split('?').next().unwrap_or("");
            let ms: u64 = ms.parse().unwrap_or(0);
            Reply::status(200)
                .text("finally")
                .delay(Duration::from_millis(ms))
        })
        .start()
}

// ---------------------------------------------------------------------------
// Driving the binary.

const RB: &str = "rb.yaml";

fn runbook(yaml: &str) -> Test {
    Test::new()
        .file(RB, yaml)
        .args(&["run", RB, "--state-dir", "st", "--report", "report.json"])
}

/// A runbook of the given steps (YAML list items, indented by two).
fn steps(body: &str) -> String {
    format!("version: 1\nname: http-test\nsteps:\n{body}")
}

/// The error the report records for a step (panics when there is none).
fn error_of(out: &Output, id: &str) -> String {
    let r = report(out);
    match step(&r, id)["error"].as_str() {
        Some(e) => e.to_string(),
        None => panic!(
            "step {id} has no error in the report: {r:#}\nstdout:\n{}",
            out.stdout
        ),
    }
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn status_code_list_and_class() {
    let srv = server();
    let yaml = steps(&format!(
        r#"  - id: code
    http: {{ url: "{h}", expect: {{ status: 200 }} }}
  - id: list
    http: {{ url: "{c}", method: post, expect: {{ status: [200, 201] }} }}
  - id: class
    http: {{ url: "{c}", expect: {{ status: 2xx }} }}
  - id: default_2xx
    http: {{ url: "{h}" }}
  - id: expect_failure
    http: {{ url: "{f}", expect: {{ status: [503] }} }}
"#,
        h = srv.url("/health"),
        c = srv.url("/created"),
        f = srv.url("/fail"),
    ));
    let out = runbook(&yaml).run().success();
    let r = report(&out);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(step(&r, "code")["outputs"]["status"], 200);
    assert_eq!(step(&r, "list")["outputs"]["status"], 201);
    assert_eq!(step(&r, "expect_failure")["outputs"]["status"], 503);
    assert_eq!(
        step(&r, "expect_failure")["outputs"]["body"],
        "service unavailable: the database is down"
    );
    let posts = srv.requests_to("/created");
    assert_eq!(posts[0].method, "POST");
    assert_eq!(posts[1].method, "GET");
    // The one-line summary of each request is in the run's output.
    assert!(out.stdout.contains("GET "), "{}", out.stdout);
    assert!(out.stdout.contains("-> 201 Created"), "{}", out.stdout);
}

#[test]
fn unexpected_status_fails_with_the_body() {
    let srv = server();
    let yaml = steps(&format!(
        "  - id: check\n    http: {{ url: \"{}\" }}\n",
        srv.url("/fail")
    ));
    let out = runbook(&yaml).run().code(1);
    let err = error_of(&out, "check");
    assert!(
        err.contains("unexpected status 503 Service Unavailable"),
        "{err}"
    );
    assert!(err.contains("expected 2xx"), "{err}");
    assert!(
        err.contains("service unavailable: the database is down"),
        "{err}"
    );
    assert!(
        out.stdout.contains("unexpected status 503"),
        "{}",
        out.stdout
    );

    // A code that is not in the list.
    let yaml = steps(&format!(
        "  - id: check\n    http: {{ url: \"{}\", expect: {{ status: [200, 204] }} }}\n",
        srv.url("/created")
    ));
    let out = runbook(&yaml).run().code(1);
    let err = error_of(&out, "check");
    assert!(err.contains("unexpected status 201 Created"), "{err}");
    assert!(err.contains("expected 200 or 204"), "{err}");
}

#[test]
fn body_contains_pass_and_mismatch() {
    let srv = server();
    let yaml = steps(&format!(
        "  - id: ok\n    http: {{ url: \"{u}\", expect: {{ body_contains: '\"status\":\"ok\"' }} }}\n",
        u = srv.url("/health")
    ));
    runbook(&yaml).run().success();

    let yaml = steps(&format!(
        "  - id: check\n    http: {{ url: \"{u}\", expect: {{ body_contains: maintenance }} }}\n",
        u = srv.url("/health")
    ));
    let out = runbook(&yaml).run().code(1);
    let err = error_of(&out, "check");
    assert!(err.contains("body mismatch"), "{err}");
    assert!(err.contains("does not contain \"maintenance\""), "{err}");
    assert!(
        err.contains("\"version\":\"1.2.3\""),
        "the body is quoted: {err}"
    );
}

#[test]
fn json_pointers_pass() {
    let srv = server();
    let yaml = format!(
        r#"version: 1
name: json
params:
  version: {{ type: string, default: "1.2.3" }}
steps:
  - id: check
    http:
      url: "{u}"
      expect:
        json:
          /status: ok
          /version: "{{{{ params.version }}}}"
          /checks/db: 1.0
          /checks/cache: [1, 2]
"#,
        u = srv.url("/health")
    );
    let out = runbook(&yaml).run().success();
    let r = report(&out);
    let o = &step(&r, "check")["outputs"];
    assert_eq!(o["json"]["version"], "1.2.3");
    assert_eq!(o["status"], 200);
    assert!(o["latency_ms"].is_u64(), "{o:#}");
    assert!(o["body"].as_str().unwrap().contains("\"status\":\"ok\""));
}

#[test]
fn json_pointer_mismatch_says_which_and_what() {
    let srv = server();
    let yaml = steps(&format!(
        r#"  - id: check
    http:
      url: "{u}"
      expect:
        json:
          /status: ok
          /version: "2.0.0"
          /missing/key: true
"#,
        u = srv.url("/health")
    ));
    let out = runbook(&yaml).run().code(1);
    let err = error_of(&out, "check");
    assert!(
        err.contains("JSON mismatch at `/version`: expected \"2.0.0\", found \"1.2.3\""),
        "{err}"
    );
    assert!(
        err.contains("JSON mismatch at `/missing/key`: expected true, found nothing"),
        "{err}"
    );
    assert!(
        !err.contains("`/status`"),
        "a passing pointer is not reported: {err}"
    );

    // A body that is not JSON at all.
    let yaml = steps(&format!(
        "  - id: check\n    http: {{ url: \"{u}\", expect: {{ json: {{ /status: ok }} }} }}\n",
        u = srv.url("/created")
    ));
    let out = runbook(&yaml).run().code(1);
    let err = error_of(&out, "check");
    assert!(err.contains("JSON mismatch"), "{err}");
    assert!(err.contains("is not JSON"), "{err}");
}

#[test]
fn max_latency_breach() {
    let srv = server();
    let yaml = steps(&format!(
        r#"  - id: fast
    http: {{ url: "{h}", expect: {{ max_latency: 5s }} }}
  - id: check
    http: {{ url: "{s}", expect: {{ max_latency: 50ms }} }}
"#,
        h = srv.url("/health"),
        s = srv.url("/slow/400"),
    ));
    let out = runbook(&yaml).run().code(1);
    let err = error_of(&out, "check");
    assert!(err.contains("too slow"), "{err}");
    assert!(err.contains("more than max_latency 50ms"), "{err}");
    assert_eq!(step(&report(&out), "fast")["status"], "succeeded");
}

#[test]
fn post_json_body_rendered_from_params() {
    let srv = server();
    let yaml = format!(
        r#"version: 1
name: post
params:
  image: {{ type: string, required: true }}
  percent: {{ type: integer, default: 10 }}
steps:
  - id: deploy
    http:
      url: "{u}"
      method: POST
      body:
        image: "{{{{ params.image }}}}"
        percent: "{{{{ params.percent }}}}"
        tags: [canary, "{{{{ params.image }}}}"]
      expect:
        json: {{ /percent: 10 }}
  - id: text
    http:
      url: "{u}"
      method: PUT
      headers: {{ Content-Type: text/plain }}
      body: "image={{{{ params.image }}}}"
"#,
        u = srv.url("/echo")
    );
    let out = runbook(&yaml)
        .args(&["--param", "image=web:2.4"])
        .run()
        .success();
    let got = srv.requests_to("/echo");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    let sent: Json = serde_json::from_str(&got[0].body).expect("the body is JSON");
    assert_eq!(
        sent,
        json!({"image": "web:2.4", "percent": 10, "tags": ["canary", "web:2.4"]})
    );
    assert_eq!(got[1].method, "PUT");
    assert_eq!(got[1].body, "image=web:2.4");
    assert_eq!(got[1].header("content-type"), Some("text/plain"));
    let r = report(&out);
    assert_eq!(step(&r, "deploy")["outputs"]["json"]["image"], "web:2.4");
}

#[test]
fn headers_from_a_secret_are_sent_and_masked() {
    let srv = server();
    let token = "s3cr3t-t0ken-value";
    let yaml = format!(
        r#"version: 1
name: secret
secrets:
  token: {{ env: API_TOKEN }}
steps:
  - id: call
    http:
      url: "{h}"
      headers:
        Authorization: "Bearer {{{{ secrets.token }}}}"
        X-Request-Source: runbook
  - id: denied
    http:
      url: "{f}"
      headers: {{ Authorization: "Bearer {{{{ secrets.token }}}}" }}
"#,
        h = srv.url("/headers"),
        f = srv.url("/fail"),
    );
    let out = runbook(&yaml).env("API_TOKEN", token).run().code(1);
    let got = srv.requests_to("/headers");
    assert_eq!(
        got[0].header("authorization"),
        Some("Bearer s3cr3t-t0ken-value")
    );
    assert_eq!(got[0].header("x-request-source"), Some("runbook"));
    assert!(got[0]
        .header("user-agent")
        .is_some_and(|ua| ua.starts_with("runbook/")));
    assert_eq!(
        srv.requests_to("/fail")[0].header("authorization"),
        Some("Bearer s3cr3t-t0ken-value")
    );

    // The server echoed the header back: the outputs show it masked.
    let r = report(&out);
    let body = step(&r, "call")["outputs"]["body"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(body.contains("Bearer ***"), "{body}");
    let everything = format!(
        "{}{}{}",
        out.stdout,
        out.stderr,
        std::fs::read_to_string(out.path().join("report.json")).unwrap()
    );
    assert!(
        !everything.contains(token),
        "the secret leaked:\n{everything}"
    );
    let err = error_of(&out, "denied");
    assert!(err.contains("unexpected status 503"), "{err}");
    assert!(!err.contains("Bearer"), "no header values in errors: {err}");
}

#[test]
fn retry_until_healthy() {
    let srv = server_with_flaky(2);
    let yaml = steps(&format!(
        r#"  - id: wait
    http: {{ url: "{u}", expect: {{ json: {{ /status: ok }} }} }}
    retry: {{ attempts: 5, delay: 50ms }}
"#,
        u = srv.url("/flaky")
    ));
    let out = runbook(&yaml).run().success();
    let r = report(&out);
    assert_eq!(step(&r, "wait")["attempts"], 3);
    assert_eq!(srv.requests_to("/flaky").len(), 3);
    assert!(
        out.stdout.contains("unexpected status 503"),
        "{}",
        out.stdout
    );

    // Not enough attempts: the last error is reported.
    let srv = server_with_flaky(5);
    let yaml = steps(&format!(
        "  - id: wait\n    http: {{ url: \"{u}\" }}\n    retry: {{ attempts: 2, delay: 10ms }}\n",
        u = srv.url("/flaky")
    ));
    let out = runbook(&yaml).run().code(1);
    let err = error_of(&out, "wait");
    assert!(err.contains("unexpected status 503"), "{err}");
    assert!(err.contains("warming up"), "{err}");
    assert_eq!(srv.requests_to("/flaky").len(), 2);
}

#[test]
fn connection_refused_is_clear() {
    let port = free_port();
    let yaml = steps(&format!(
        "  - id: check\n    http: {{ url: \"http://127.0.0.1:{port}/health\" }}\n"
    ));
    let out = runbook(&yaml).run().code(1);
    let err = error_of(&out, "check");
    assert!(
        err.contains(&format!("connection refused by 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(out.stdout.contains("connection refused"), "{}", out.stdout);
}

#[test]
fn tls_failure_is_clear() {
    // An https:// URL to a plain-HTTP server: the TLS handshake fails. The
    // server answers a plain `400 Bad Request` to the ClientHello, as a real
    // one does (see `RawServer::canned` for why this is not the shared server).
    let srv = RawServer::canned(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    let url = format!("https://127.0.0.1:{}/health", srv.port);
    let yaml = steps(&format!("  - id: check\n    http: {{ url: \"{url}\" }}\n"));
    let out = runbook(&yaml).run().code(1);
    let err = error_of(&out, "check");
    assert!(
        err.starts_with("TLS failure talking to 127.0.0.1:"),
        "{err}"
    );
}

#[test]
fn dns_failure_is_clear() {
    // `.invalid` never resolves (RFC 2606).
    let yaml = steps("  - id: check\n    http: { url: \"http://no-such-host.invalid/health\" }\n");
    let out = runbook(&yaml).run().code(1);
    let err = error_of(&out, "check");
    assert!(
        err.contains("DNS failure: cannot resolve host `no-such-host.invalid`"),
        "{err}"
    );
}

#[test]
fn step_timeout_stops_a_slow_request_at_once() {
    let srv = server();
    let yaml = steps(&format!(
        "  - id: check\n    http: {{ url: \"{u}\" }}\n    timeout: 500ms\n",
        u = srv.url("/slow/15000")
    ));
    let started = Instant::now();
    let out = runbook(&yaml).run().code(1);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "the run took {took:?}: the request was not abandoned at the timeout"
    );
    let err = error_of(&out, "check");
    assert!(err.contains("timed out"), "{err}");
    assert!(err.contains("500ms"), "{err}");
}

#[test]
fn outputs_feed_a_later_step() {
    let srv = server();
    let yaml = steps(&format!(
        r#"  - id: check
    http: {{ url: "{u}" }}
  - id: record
    shell: |
      echo "version={{{{ steps.check.outputs.json.version }}}} status={{{{ steps.check.outputs.status }}}}" > version.txt
"#,
        u = srv.url("/health")
    ));
    let out = runbook(&yaml).run().success();
    let text = std::fs::read_to_string(out.path().join("version.txt")).expect("version.txt");
    assert_eq!(text.trim(), "version=1.2.3 status=200");
}

#[test]
fn redirects_are_followed_but_bounded() {
    let srv = server();
    let yaml = steps(&format!(
        r#"  - id: moved
    http: {{ url: "{r}", expect: {{ json: {{ /status: ok }} }} }}
  - id: loop
    http: {{ url: "{l}" }}
"#,
        r = srv.url("/redirect"),
        l = srv.url("/loop"),
    ));
    let out = runbook(&yaml).run().code(1);
    assert_eq!(step(&report(&out), "moved")["status"], "succeeded");
    let err = error_of(&out, "loop");
    assert!(err.contains("too many redirects"), "{err}");
}

#[test]
fn large_bodies_are_capped() {
    let srv = server();
    let yaml = steps(&format!(
        "  - id: big\n    http: {{ url: \"{u}\" }}\n",
        u = srv.url("/big")
    ));
    let out = runbook(&yaml).run().success();
    let r = report(&out);
    let o = &step(&r, "big")["outputs"];
    assert_eq!(o["body"].as_str().unwrap().len(), 1 << 20);
    assert_eq!(o["json"], Json::Null);
    assert!(out.stdout.contains("body cut at 1 MiB"), "{}", out.stdout);
}

/// A response that fails its expectations is still the step's outputs: a
/// later step (after `continue_on_failure`) and the report can read it.
#[test]
fn failed_expectation_keeps_the_response() {
    let srv = server();
    let yaml = steps(&format!(
        "  - id: check\n    continue_on_failure: true\n    http: {{ url: \"{}\" }}\n  - id: after\n    shell: echo got {{{{ steps.check.outputs.status }}}} > seen\n",
        srv.url("/fail")
    ));
    let out = runbook(&yaml).run().success();
    let r = report(&out);
    assert_eq!(step(&r, "check")["status"], "failed");
    assert_eq!(step(&r, "check")["outputs"]["status"], 503);
    let seen = std::fs::read_to_string(out.path().join("seen")).unwrap();
    assert_eq!(seen.trim(), "got 503");
}
