#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! The page of `runbook serve` in a real browser: headless Chromium driven
//! over the WebDriver protocol (Debian's `chromium` and `chromium-driver`;
//! plain JSON over HTTP, so no client crate). The proxy's identity header
//! is set through the DevTools protocol, as oauth2-proxy would set it.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::raw_tcp::free_port;
use common::services::http_request;
use common::{log, poll_until, Test};
use serde_json::{json, Value as Json};

const RB: &str = r#"
version: 1
name: browsed
params:
  note: { type: string, default: "<img src=x onerror=alert(1)>" }
steps:
  - id: before
    shell: 'echo "<script>alert(1)</script>"; for i in $(seq 600); do [ -e go ] && break; sleep 0.05; done'
  - id: gate
    approval: { approvers: [alice, bob], message: "ship {{ params.note }}?" }
  - id: after
    shell: echo after >> log
"#;

/// The key of an element reference in WebDriver's answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver session on a chromedriver of our own; both end with it.
struct Browser {
    driver: Child,
    base: String,
    session: String,
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (Debian's chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        assert!(
            poll_until(Duration::from_secs(30), || http_request(
                "GET",
                &format!("{base}/status"),
                &[],
                None
            )
            .is_ok()),
            "chromedriver never answered"
        );
        let caps = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": {
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"]
        }}}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().expect("a session").to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Json>) -> Json {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let text = body.map(|b| b.to_string());
        let (_, _, out) = http_request(
            method,
            &url,
            &[("Content-Type", "application/json")],
            text.as_deref(),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let v: Json = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v["value"].clone()
    }

    fn cdp(&self, cmd: &str, params: &Json) {
        self.call(
            "POST",
            "/goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        );
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// The text of the first element `css` finds, if any.
    fn text(&self, css: &str) -> Option<String> {
        let found = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        let id = found[ELEMENT].as_str()?.to_string();
        self.call("GET", &format!("/element/{id}/text"), None)
            .as_str()
            .map(str::to_string)
    }

    fn click(&self, css: &str) {
        let found = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        let id = found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Json::as_str)
            .unwrap_or_else(|| panic!("no {css}"));
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http_request(
                "DELETE",
                &format!("{}/session/{}", self.base, self.session),
                &[],
                None,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn an_approver_sees_the_step_wait_live_approves_on_the_page_and_sees_the_run_finish() {
    let run = Test::new()
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
    let (server, site) = run.serve_beside(Some("X-Forwarded-User"));

    let browser = Browser::start();
    browser.cdp("Network.enable", &json!({}));
    browser.cdp(
        "Network.setExtraHTTPHeaders",
        &json!({ "headers": { "X-Forwarded-User": "alice" } }),
    );
    browser.go(&format!("{site}/runs/r1"));
    assert_eq!(
        browser.text("tr[data-step=\"before\"] .status").as_deref(),
        Some("running")
    );

    // The step before the approval ends: the page turns to waiting by itself.
    std::fs::write(run.path().join("go"), "").unwrap();
    let mut seen = None;
    assert!(
        poll_until(Duration::from_secs(30), || {
            seen = browser.text(".waiting h2");
            seen.as_deref() == Some("Waiting: gate")
        }),
        "the page never showed the wait: {seen:?}"
    );
    // Output and params are text on the page: no dialog opened.
    let page = browser.call("GET", "/source", None);
    let source = page.as_str().unwrap_or_default();
    assert!(
        source.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{source}"
    );
    let alert = browser.call("GET", "/alert/text", None);
    assert!(
        alert["error"] == "no such alert",
        "an alert opened: {alert}"
    );
    let shot = browser.call("GET", "/screenshot", None);
    let png = shot.as_str().unwrap_or_default();
    assert!(
        png.starts_with("iVBORw0KGgo") && png.len() > 4000,
        "not a screenshot: {} chars",
        png.len()
    );

    browser.click("button.approve");
    let mut status = None;
    assert!(
        poll_until(Duration::from_secs(30), || {
            status = browser.text("h1 .status");
            status.as_deref() == Some("succeeded")
        }),
        "the page never showed the run finish: {status:?}\n{}",
        browser.call("GET", "/source", None)
    );
    let out = run.wait().success();
    assert_eq!(log(&out), ["after"]);
    let r = common::report(&out);
    assert_eq!(common::step(&r, "gate")["approvals"][0]["by"], "alice");
    drop(browser);
    drop(server);
}
