#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! Secrets never appear in any byte the engine writes: one runbook with a
//! secret from env (one line), a secret from a file (multi-line, PEM-like)
//! and `secret: true` params (an integer and a string), whose steps echo
//! them, write them to `$RUNBOOK_OUTPUT`, send them in an http step's URL,
//! fail with them in the error, and set a flag derived from one. It runs
//! succeeding, failing and unwinding, killed mid-run then resumed, rolled
//! back; then `status` (text and JSON), `plan` in every format, `--report`
//! and `--log-format json`. Every stdout, stderr, report and file under the
//! state dir is searched for each secret in each encoding. One test per
//! encoding, so each leak is its own failure.

mod common;

use common::http_server::{HttpServer, Reply};
use common::Test;
use std::sync::OnceLock;

const RB: &str = "rb.yaml";
const ST: &str = "st";
const TOKEN: &str = "Sx7/tok+3n=Q'z\"w&k";
const PEM: &str = "-----BEGIN TEST KEY-----\nMIIBsecretLineOne0123456789abc\nAAAAsecretLineTwo9876543210xyz\n-----END TEST KEY-----";
const PIN: &str = "987654";
const WORD: &str = "pa55-w0rd secret";

const YAML: &str = r#"version: 1
name: secrets
params:
  pin: { type: integer, secret: true, required: true }
  word: { type: string, secret: true, required: true }
  fail: { type: string, default: "no" }
  base: { type: string, required: true }
secrets:
  token: { env: RB_SEC_TOKEN }
  pem: { file: key.pem }
env:
  T: "{{ secrets.token }}"
  P: "{{ secrets.pem }}"
  N: "{{ params.pin }}"
  W: "{{ params.word }}"
steps:
  - id: echo
    shell: |
      echo "$T"; echo "$P"; echo "$N"; echo "$W"
      echo "$P" >&2
      { echo "t=$T"; echo "n=$N"; echo "w=$W"; } >> "$RUNBOOK_OUTPUT"
    rollback:
      shell: echo "undo $T $N" {{ secrets.token }} {{ params.word }}
  - id: direct
    shell: printf '%s\n' {{ secrets.token }} {{ secrets.pem }} {{ params.pin }} {{ params.word }}
  - id: call
    http:
      url: "{{ params.base }}?token={{ secrets.token }}&pin={{ params.pin }}&w={{ params.word }}"
  - id: flag
    flag:
      name: derived
      value: "{{ secrets.token | upper }}-{{ params.pin }}"
  - id: last
    shell: |
      if [ {{ params.fail }} = yes ]; then
        echo "failing with $T {{ params.pin }}" >&2
        exit 3
      fi
"#;

/// `(secret, encoding, text)` to look for.
fn needles() -> Vec<(&'static str, String, String)> {
    let mut n = Vec::new();
    for (name, v) in [("token", TOKEN), ("pem", PEM), ("pin", PIN), ("word", WORD)] {
        n.push((name, "raw".into(), v.to_string()));
        if v.contains('\n') {
            for (i, l) in v.lines().enumerate() {
                n.push((name, format!("line{}", i + 1), l.to_string()));
            }
        }
        let pct: String = v
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        n.push((name, "percent".into(), pct.clone()));
        n.push((name, "percent_lower".into(), pct.to_lowercase()));
        let json = serde_json::to_string(v).unwrap();
        n.push((name, "json".into(), json[1..json.len() - 1].to_string()));
        n.push((name, "base64".into(), base64(v.as_bytes())));
        n.push((
            name,
            "shell_quoted".into(),
            format!("'{}'", v.replace('\'', "'\\''")),
        ));
        n.push((name, "upper".into(), v.to_uppercase()));
    }
    // Drop encodings equal to the raw text (a pin percent-encodes to itself).
    let raws: Vec<(&str, String)> = n
        .iter()
        .filter(|(_, e, _)| e == "raw")
        .map(|(s, _, t)| (*s, t.clone()))
        .collect();
    n.retain(|(s, e, t)| e == "raw" || !raws.iter().any(|(rs, rt)| rs == s && rt == t));
    n
}

fn base64(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Every sink: `(name, bytes)`.
struct Sinks(Vec<(String, Vec<u8>)>);

fn params(base: &str, fail: &str) -> Vec<String> {
    let mut a = Vec::new();
    for p in [
        format!("pin={PIN}"),
        format!("word={WORD}"),
        format!("fail={fail}"),
        format!("base={base}"),
    ] {
        a.push("--param".to_string());
        a.push(p);
    }
    a
}

fn cmd(t: Test, args: &[String]) -> Test {
    t.file(RB, YAML)
        .file("key.pem", &format!("{PEM}\n"))
        .env("RB_SEC_TOKEN", TOKEN)
        .args(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn scenario() -> &'static Sinks {
    static S: OnceLock<Sinks> = OnceLock::new();
    S.get_or_init(|| {
        let srv = HttpServer::builder()
            .reply("/hook", Reply::status(200).text("ok"))
            .start();
        let base = srv.url("/hook");
        let mut sinks = Vec::new();
        let s = |v: &[&str]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        let mut t = Test::new();
        let mut record = |label: &str, out: &common::Output| {
            sinks.push((format!("{label}: stdout"), out.stdout.clone().into_bytes()));
            sinks.push((format!("{label}: stderr"), out.stderr.clone().into_bytes()));
        };
        let mut steps: Vec<(String, Vec<String>, Option<&str>)> = Vec::new();
        for (id, fail, extra) in [
            ("ok", "no", s(&["--report", "report-ok.json"])),
            (
                "okj",
                "no",
                s(&["--log-format", "json", "--report", "report-okj.json"]),
            ),
            ("bad", "yes", s(&["--report", "report-bad.json"])),
            ("badj", "yes", s(&["--log-format", "json"])),
        ] {
            let mut a = s(&["run", RB, "--state-dir", ST, "--run-id", id]);
            a.extend(extra);
            a.extend(params(&base, fail));
            steps.push((format!("run {id}"), a, None));
        }
        let mut a = s(&["run", RB, "--state-dir", ST, "--run-id", "crash"]);
        a.extend(params(&base, "no"));
        steps.push(("run crash (killed)".into(), a, Some("after:6")));
        let mut a = s(&["resume", "crash", "--state-dir", ST]);
        a.extend(params(&base, "no"));
        steps.push(("resume crash".into(), a.clone(), None));
        steps.push((
            "rollback ok".into(),
            s(&["rollback", "ok", "--state-dir", ST]),
            None,
        ));
        for id in ["ok", "okj", "bad", "badj", "crash"] {
            steps.push((
                format!("status {id}"),
                s(&["status", id, "--state-dir", ST]),
                None,
            ));
            steps.push((
                format!("status {id} json"),
                s(&["status", id, "--state-dir", ST, "--format", "json"]),
                None,
            ));
        }
        steps.push(("status".into(), s(&["status", "--state-dir", ST]), None));
        for f in ["text", "markdown", "json", "mermaid"] {
            let mut a = s(&["plan", RB, "--format", f]);
            a.extend(params(&base, "yes"));
            steps.push((format!("plan {f}"), a, None));
        }
        for (label, args, crash) in steps {
            let mut c = cmd(t, &args);
            if let Some(at) = crash {
                c = c.env("RUNBOOK_CRASH_AT", at);
            }
            let out = c.run();
            if label == "run crash (killed)" {
                assert!(
                    out.killed(),
                    "the crash point was not reached:\n{}\n{}",
                    out.stdout,
                    out.stderr
                );
            }
            record(&label, &out);
            t = out.again();
        }
        let dir = t.path().to_path_buf();
        let mut stack = vec![dir.join(ST)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(&dir).unwrap().display().to_string();
                    // The flag store holds what the runbook's flag step told
                    // it to hold (a value derived from a secret, here): the
                    // runbook's effect on the world, not the engine's record.
                    if rel == "st/flags.json" {
                        continue;
                    }
                    sinks.push((rel, std::fs::read(&p).unwrap_or_default()));
                }
            }
        }
        for r in ["report-ok.json", "report-okj.json", "report-bad.json"] {
            let bytes = std::fs::read(dir.join(r)).unwrap_or_else(|e| panic!("{r}: {e}"));
            sinks.push((r.to_string(), bytes));
        }
        assert!(
            !srv.requests().is_empty(),
            "the http step never called:\n{}",
            String::from_utf8_lossy(&sinks[0].1)
        );
        drop(t);
        Sinks(sinks)
    })
}

/// The sinks where `encoding` of some secret appears.
fn leaks(encoding: impl Fn(&str) -> bool) -> Vec<String> {
    let sinks = scenario();
    let mut found = Vec::new();
    for (secret, enc, needle) in needles() {
        if !encoding(&enc) {
            continue;
        }
        for (sink, bytes) in &sinks.0 {
            if memmem(bytes, needle.as_bytes()) {
                found.push(format!("{secret} ({enc}) in {sink}"));
            }
        }
    }
    found
}

fn memmem(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[allow(clippy::needless_pass_by_value)] // called with a fresh list each time
fn assert_none(what: &str, found: Vec<String>) {
    assert!(
        found.is_empty(),
        "{what}: {} leaks:\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn integer_secret_param_and_crashed_step_outputs_leak_raw() {
    assert_none("raw", leaks(|e| e == "raw"));
}

#[test]
fn multiline_secret_leaks_line_by_line() {
    assert_none("lines", leaks(|e| e.starts_with("line")));
}

#[test]
fn percent_encoded_secret_leaks_from_http_urls() {
    assert_none("percent-encoded", leaks(|e| e.starts_with("percent")));
}

#[test]
fn json_escaped_secrets_never_leak() {
    assert_none("JSON-escaped", leaks(|e| e == "json"));
}

#[test]
fn base64_secrets_never_leak() {
    assert_none("base64", leaks(|e| e == "base64"));
}

#[test]
fn shell_quoted_secrets_never_leak() {
    assert_none("shell-quoted", leaks(|e| e == "shell_quoted"));
}

#[test]
fn derived_upper_cased_secrets_never_leak() {
    assert_none("upper-cased", leaks(|e| e == "upper"));
}

#[test]
fn resume_refuses_without_the_secret_params_given_at_the_start() {
    let srv = HttpServer::builder()
        .reply("/hook", Reply::status(200).text("ok"))
        .start();
    let mut a: Vec<String> = ["run", RB, "--state-dir", ST, "--run-id", "r"]
        .iter()
        .map(ToString::to_string)
        .collect();
    a.extend(params(&srv.url("/hook"), "no"));
    let out = cmd(Test::new(), &a)
        .env("RUNBOOK_CRASH_AT", "after:4")
        .run();
    assert!(out.killed(), "{}", out.stdout);
    let out = cmd(
        out.again(),
        &["resume".into(), "r".into(), "--state-dir".into(), ST.into()],
    )
    .run()
    .code(2);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("pin") && said.contains("word"),
        "resume names the missing secret params: {said}"
    );
    // Only one given: still refused, naming the other.
    let out = cmd(
        out.again(),
        &[
            "resume".into(),
            "r".into(),
            "--state-dir".into(),
            ST.into(),
            "--param".into(),
            format!("pin={PIN}"),
        ],
    )
    .run()
    .code(2);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("word"), "{said}");
}

/// A waiting approval whose message and outputs hold secrets: `status`
/// (the list and the run, text and JSON) while it waits, the live view, the
/// report, the journal and its rejection show none of them, in any
/// encoding; the params show the secret ones as `***`.
#[test]
fn waiting_approvals_attempts_and_params_in_status_and_report_never_leak() {
    let yaml = r#"version: 1
name: waiting
params:
  word: { type: string, secret: true, required: true }
secrets:
  token: { env: RB_SEC_TOKEN }
steps:
  - id: echo
    retry: { attempts: 2, delay: 10ms }
    shell: |
      echo "w=$W" >> "$RUNBOOK_OUTPUT"
      [ -e again ] || { touch again; echo "first try {{ secrets.token }}" >&2; exit 1; }
    env: { W: "{{ params.word }}" }
  - id: gate
    approval:
      message: "ship {{ secrets.token }} with {{ params.word }}?"
      approvers: [bob]
"#;
    let mut running = Test::new()
        .file(RB, yaml)
        .env("RB_SEC_TOKEN", TOKEN)
        .args(&[
            "run",
            RB,
            "--state-dir",
            ST,
            "--run-id",
            "w",
            "--report",
            "report.json",
            "--param",
            &format!("word={WORD}"),
        ])
        .spawn();
    running.wait_for_file(
        "st/runs/w/approvals/gate/waiting.json",
        std::time::Duration::from_secs(30),
    );
    let dir = running.path().to_path_buf();
    let bin = env!("CARGO_BIN_EXE_runbook");
    let mut sinks: Vec<(String, Vec<u8>)> = Vec::new();
    let mut reject = String::new();
    for args in [
        vec!["status", "--state-dir", ST],
        vec!["status", "--state-dir", ST, "--format", "json"],
        vec!["status", "w", "--state-dir", ST],
        vec!["status", "w", "--state-dir", ST, "--format", "json"],
    ] {
        let out = std::process::Command::new(bin)
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if args.len() == 6 && args[1] == "w" {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["params"]["word"], "***", "{v:#}");
            assert_eq!(v["waiting"][0]["message"], "ship *** with ***?", "{v:#}");
            assert!(
                v["steps"][0]["attempt_log"][0]["error"].is_string(),
                "{v:#}"
            );
            reject = v["waiting"][0]["reject_command"]
                .as_str()
                .unwrap()
                .to_string();
        }
        sinks.push((args.join(" "), out.stdout));
    }
    let words: Vec<&str> = reject.split_whitespace().collect();
    let out = std::process::Command::new(bin)
        .args(&words[1..])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{reject}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = running.wait().code(1);
    sinks.push(("run stdout".into(), out.stdout.clone().into_bytes()));
    sinks.push(("run stderr".into(), out.stderr.clone().into_bytes()));
    sinks.push((
        "report".into(),
        std::fs::read(out.path().join("report.json")).unwrap(),
    ));
    sinks.push((
        "journal".into(),
        std::fs::read(out.path().join("st/runs/w/journal.jsonl")).unwrap(),
    ));
    let mut found = Vec::new();
    for (secret, enc, needle) in needles() {
        if secret != "token" && secret != "word" {
            continue;
        }
        for (sink, bytes) in &sinks {
            if memmem(bytes, needle.as_bytes()) {
                found.push(format!("{secret} ({enc}) in {sink}"));
            }
        }
    }
    assert_none("waiting, attempts, params", found);
}
