//! `http:` steps end to end: the real binary against a tiny HTTP server that
//! each test starts on 127.0.0.1:0.
//!
//! The server (std only, one thread per connection, `Connection: close`) has
//! a few canned routes and records every request it got, so tests assert what
//! was sent as well as what the step made of the answer. Its accept loop is
//! bounded in time and stops when the `Server` is dropped; the only sleeping
//! route (`/slow/MS`) is bounded too and wakes up when the server stops.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{report, step, Output, Test};
use serde_json::{json, Value as Json};

// ---------------------------------------------------------------------------
// The test server.

#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct State {
    requests: Mutex<Vec<Request>>,
    /// `/flaky` answers 503 to this many requests, then 200.
    flaky_failures: usize,
    flaky_seen: AtomicUsize,
    stop: AtomicBool,
}

struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

/// The longest a server lives, whatever the test does.
const SERVER_LIFETIME: Duration = Duration::from_secs(120);
/// The longest `/slow/MS` sleeps.
const MAX_SLOW: Duration = Duration::from_secs(20);

impl Server {
    fn start() -> Server {
        Server::with_flaky(0)
    }

    fn with_flaky(flaky_failures: usize) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            flaky_failures,
            flaky_seen: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        let accept = std::thread::spawn(move || {
            let deadline = Instant::now() + SERVER_LIFETIME;
            while !st.stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let st = st.clone();
                        std::thread::spawn(move || handle(stream, &st));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            addr,
            state,
            accept: Some(accept),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    fn requests_to(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn read_request(stream: &mut TcpStream) -> Option<Request> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    for _ in 0..200 {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
        .min(1 << 20);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn respond(stream: &mut TcpStream, code: u16, content_type: &str, body: &[u8], extra: &str) {
    let reason = match code {
        200 => "OK",
        201 => "Created",
        302 => "Found",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Whatever",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn handle(mut stream: TcpStream, st: &State) {
    let _ = stream.set_nonblocking(false);
    let Some(req) = read_request(&mut stream) else {
        return;
    };
    st.requests.lock().unwrap().push(req.clone());
    const JSON: &str = "application/json";
    let path = req.path.split('?').next().unwrap_or("").to_string();
    match path.as_str() {
        "/health" => respond(
            &mut stream,
            200,
            JSON,
            br#"{"status":"ok","version":"1.2.3","checks":{"db":1,"cache":[1,2]}}"#,
            "",
        ),
        "/fail" => respond(
            &mut stream,
            503,
            "text/plain",
            b"service unavailable: the database is down",
            "",
        ),
        "/flaky" => {
            let n = st.flaky_seen.fetch_add(1, Ordering::SeqCst);
            if n < st.flaky_failures {
                respond(&mut stream, 503, "text/plain", b"warming up", "");
            } else {
                respond(&mut stream, 200, JSON, br#"{"status":"ok"}"#, "");
            }
        }
        "/echo" => {
            let ct = req
                .header("content-type")
                .unwrap_or("text/plain")
                .to_string();
            respond(&mut stream, 200, &ct, req.body.as_bytes(), "");
        }
        "/headers" => {
            let map: serde_json::Map<String, Json> = req
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Json::String(v.clone())))
                .collect();
            respond(
                &mut stream,
                200,
                JSON,
                Json::Object(map).to_string().as_bytes(),
                "",
            );
        }
        "/created" => respond(&mut stream, 201, "text/plain", b"created", ""),
        "/big" => respond(&mut stream, 200, "text/plain", &vec![b'a'; 2 << 20], ""),
        "/redirect" => respond(&mut stream, 302, "text/plain", b"", "Location: /health\r\n"),
        "/loop" => respond(&mut stream, 302, "text/plain", b"", "Location: /loop\r\n"),
        p if p.starts_with("/slow/") => {
            let ms: u64 = p["/slow/".len()..].parse().unwrap_or(0);
            let until = Instant::now() + Duration::from_millis(ms).min(MAX_SLOW);
            while Instant::now() < until && !st.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            respond(&mut stream, 200, "text/plain", b"finally", "");
        }
        _ => respond(&mut stream, 404, "text/plain", b"no such route", ""),
    }
}

/// A port nothing listens on: bound once, then released.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address").port()
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
    let srv = Server::start();
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
    let srv = Server::start();
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
    let srv = Server::start();
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
    let srv = Server::start();
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
    let srv = Server::start();
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
    let srv = Server::start();
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
    let srv = Server::start();
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
    let srv = Server::start();
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
    let srv = Server::with_flaky(2);
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
    let srv = Server::with_flaky(5);
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
    let port = closed_port();
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
    // An https:// URL to a plain-HTTP server: the TLS handshake fails.
    let srv = Server::start();
    let url = srv.url("/health").replacen("http://", "https://", 1);
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
    let srv = Server::start();
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
    let srv = Server::start();
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
    let srv = Server::start();
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
    let srv = Server::start();
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
    let srv = Server::start();
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
