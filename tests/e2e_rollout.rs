#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! End to end: runbooks/production-rollout.yaml (seed 000) against a real
//! Redis (flags), a real Prometheus (gates, over backfilled data) and a local
//! HTTP service (health checks, escalation webhook), with two approvers
//! answering from other processes.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::http_server::{HttpServer, Reply};
use common::redis::Redis;
use common::services::Prometheus;

/// Window A of tests/fixtures/metrics/production.om is healthy; in window B
/// the canary's latency breaches. Off the minute grid, clear of the switch:
/// the canary latency gate compares the last 30 minutes, which must lie in
/// window B for its medians to differ.
const HEALTHY_AT: &str = "1700000617";
const BREACH_AT: &str = "1700005417";

/// The service being rolled out: `/health`, and a webhook whose requests the
/// server records.
struct Service {
    url: String,
    server: HttpServer,
}

impl Service {
    fn start() -> Service {
        let server = HttpServer::builder()
            .reply(
                "GET /health",
                Reply::status(200).json(r#"{"status":"healthy"}"#),
            )
            .reply("POST /hooks/*", Reply::status(204))
            .fallback(Reply::status(404).json("{}"))
            .start();
        Service {
            url: server.base_url(),
            server,
        }
    }

    /// The JSON bodies posted to the webhook, in order.
    fn hooks(&self) -> Vec<serde_json::Value> {
        self.server
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.starts_with("/hooks/"))
            .map(|r| serde_json::from_str(&r.body).unwrap_or_default())
            .collect()
    }
}

struct Rollout {
    dir: tempfile::TempDir,
}

impl Rollout {
    fn new() -> Rollout {
        let dir = tempfile::Builder::new()
            .prefix("runbook-e2e-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("runbooks")).unwrap();
        std::fs::write(
            dir.path().join("runbooks/production-rollout.yaml"),
            common::read_repo_file("runbooks/production-rollout.yaml"),
        )
        .unwrap();
        // The team's keys: the runbook counts only approvals they sign.
        let mut signers = String::new();
        // release-bot starts the run: it proves who it is too.
        for who in ["engineering-manager", "devops-lead", "release-bot"] {
            let key = dir.path().join(who);
            let made = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", who, "-f"])
                .arg(&key)
                .output()
                .expect("ssh-keygen runs (openssh-client)");
            assert!(made.status.success(), "{made:?}");
            let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
            let mut parts = public.split_whitespace();
            signers.push_str(&format!(
                "{who} {} {}\n",
                parts.next().unwrap(),
                parts.next().unwrap()
            ));
        }
        std::fs::write(dir.path().join("runbooks/allowed_signers"), signers).unwrap();
        Rollout { dir }
    }

    fn runbook(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_runbook"));
        c.current_dir(self.dir.path())
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUNBOOK_USER", "release-bot")
            .env("ROLLOUT_WEBHOOK_TOKEN", "hook-secret-5e1f")
            .env_remove("RUNBOOK_STATE_DIR")
            // The per-user default state dir, inside the test's directory.
            .env("XDG_STATE_HOME", self.dir.path().join(".xdg-state"));
        c
    }

    /// Starts the rollout, answers its approval from two other processes,
    /// and returns (exit code, stdout).
    fn run(
        &self,
        redis: &Redis,
        prom: &Prometheus,
        svc: &Service,
        metrics_at: &str,
    ) -> (i32, String) {
        let params = Self::params(redis, prom, svc, metrics_at);
        let mut args = vec![
            "run",
            "runbooks/production-rollout.yaml",
            "--run-id",
            "rollout1",
            "--report",
            "report.json",
            "--key",
            "release-bot",
        ];
        for p in &params {
            args.push("--param");
            args.push(p);
        }
        let child = self
            .runbook(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        for who in ["engineering-manager", "devops-lead"] {
            self.approve(who);
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), stdout)
    }

    /// Approves once the run waits on the approval (bounded polling).
    fn approve(&self, who: &str) {
        self.approve_with(who, |args| self.runbook(args));
    }

    /// Approves as `who` through `command` (where and how it runs), once
    /// the run waits on the approval (bounded polling).
    fn approve_with(&self, who: &str, command: impl Fn(&[&str]) -> Command) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = command(&[
                "approve",
                "rollout1",
                "approve_production",
                "--as",
                who,
                "--comment",
                "metrics look fine",
                "--key",
                who,
            ])
            .output()
            .unwrap();
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "could not approve as {who}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The params of a run against these services.
    fn params(redis: &Redis, prom: &Prometheus, svc: &Service, metrics_at: &str) -> Vec<String> {
        vec![
            "environment=production".to_string(),
            "revision=v2.4.0".into(),
            "deploy_tool=echo".into(),
            format!("service_url={}", svc.url),
            format!("redis_url={}", redis.url()),
            format!("prometheus_url={}", prom.url),
            format!("webhook_url={}/hooks/rollout", svc.url),
            "gate_interval=1m".into(),
            "internal_samples=3".into(),
            "canary_samples=3".into(),
            "staged_samples=3".into(),
            format!("metrics_at={metrics_at}"),
        ]
    }

    /// `runbook ARGS` on machine `name` (a directory of its own holding
    /// only that person's key), against the team's database.
    fn on(&self, name: &str, url: &str, args: &[&str]) -> Command {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for key in ["engineering-manager", "devops-lead", "release-bot"] {
            if name.starts_with(key) {
                std::fs::copy(self.dir.path().join(key), dir.join(key)).unwrap();
            }
        }
        let mut c = self.runbook(args);
        c.current_dir(dir).env("RUNBOOK_STATE_DIR", url);
        c
    }

    fn report(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.path().join("report.json")).unwrap())
            .unwrap()
    }

    fn state_files(&self) -> Vec<PathBuf> {
        fn walk(p: &std::path::Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), out);
                } else {
                    out.push(e.path());
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        out
    }
}

fn fixture() -> PathBuf {
    common::repo_root().join("tests/fixtures/metrics/production.om")
}

const LEGACY: &str = r#"{"stage":"off","percent":0,"legacy":true}"#;

#[test]
fn happy_path_reaches_full_rollout() {
    let redis = Redis::start();
    let prom = Prometheus::start(&fixture());
    let svc = Service::start();
    redis.set("flags:request_isolation", LEGACY);
    let r = Rollout::new();
    let (code, out) = r.run(&redis, &prom, &svc, HEALTHY_AT);
    assert_eq!(code, 0, "{out}");
    let flag = redis.get_json("flags:request_isolation").unwrap();
    assert_eq!(flag["stage"], "full");
    assert_eq!(flag["percent"], 100);
    assert_eq!(flag["revision"], "v2.4.0");
    assert_eq!(
        redis.get_json("flags:websocket_isolation").unwrap()["percent"],
        100
    );
    let report = r.report();
    assert_eq!(report["status"], "succeeded");
    let approval = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "approve_production")
        .unwrap();
    assert_eq!(approval["status"], "succeeded");
    // Both decisions are proven by the keys the allowed signers name.
    let decisions = approval["approvals"].as_array().unwrap();
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    assert!(decisions
        .iter()
        .all(|d| d["verified"] == true
            && d["key"].as_str().is_some_and(|k| k.starts_with("SHA256:"))));
    // The release channel got the outcome; nobody was paged.
    let hooks = svc.hooks();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0]["status"], "succeeded");
    // The webhook token never reached the output or the state dir.
    assert!(!out.contains("hook-secret-5e1f"));
    for f in r.state_files() {
        let text = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&text).contains("hook-secret-5e1f"),
            "secret in {}",
            f.display()
        );
    }
}

#[test]
fn canary_breach_restores_every_flag() {
    let redis = Redis::start();
    let prom = Prometheus::start(&fixture());
    let svc = Service::start();
    redis.set("flags:request_isolation", LEGACY);
    let r = Rollout::new();
    let (code, out) = r.run(&redis, &prom, &svc, BREACH_AT);
    assert_eq!(code, 1, "{out}");
    // Every flag is back where it started: the old value, and no new key.
    assert_eq!(
        redis.get("flags:request_isolation").as_deref(),
        Some(LEGACY),
        "{out}"
    );
    assert!(!redis.exists("flags:websocket_isolation"), "{out}");
    let report = r.report();
    assert_eq!(report["status"], "rolled_back");
    let steps = report["steps"].as_array().unwrap();
    let step = |id: &str| steps.iter().find(|s| s["id"] == id).unwrap();
    assert_eq!(step("gate_canary_latency")["status"], "failed");
    assert_eq!(step("stage_staged")["status"], "not_started");
    for id in [
        "stage_canary",
        "websocket_canary",
        "stage_internal",
        "flags_off",
        "deploy_backend",
    ] {
        assert_eq!(step(id)["rollback"]["status"], "succeeded", "{id}: {out}");
    }
    // The on-call was paged with the failing step, then the outcome posted.
    let hooks = svc.hooks();
    assert_eq!(hooks.len(), 2, "{hooks:?}");
    assert_eq!(hooks[0]["severity"], "P1");
    assert_eq!(hooks[0]["failed_step"], "gate_canary_latency");
    assert_eq!(hooks[1]["status"], "rolled_back");
}

/// The spec's team mode, end to end: the seed rollout started detached on
/// one machine against PostgreSQL, approved (signed) by two people from two
/// others, its first machine's engine killed mid-rollout, resumed from a
/// fourth; no step that had finished ran again.
#[test]
fn team_mode_rollout_survives_the_death_of_the_machine_that_started_it() {
    let redis = Redis::start();
    let prom = Prometheus::start(&fixture());
    let svc = Service::start();
    let pg = common::postgres::Postgres::start();
    let url = pg.database("team");
    let r = Rollout::new();
    // The deploy tool logs what it is asked and holds the load test until
    // told, so the run is killed at a known place: mid-rollout, the
    // internal and canary stages done.
    let log = r.dir.path().join("deploys.log");
    let go = r.dir.path().join("go");
    let tool = r.dir.path().join("deploy_tool.sh");
    std::fs::write(
        &tool,
        format!(
            "echo \"$@\" >> {log}\nif [ \"$1\" = load-test ]; then\n  for _ in $(seq 1 1200); do [ -e {go} ] && exit 0; sleep 0.05; done\n  exit 1\nfi\n",
            log = log.display(),
            go = go.display()
        ),
    )
    .unwrap();
    let mut params = Rollout::params(&redis, &prom, &svc, HEALTHY_AT);
    params[2] = format!("deploy_tool=bash {}", tool.display());
    let mut args = vec![
        "run",
        "../runbooks/production-rollout.yaml",
        "--run-id",
        "rollout1",
        "--detach",
        "--lease",
        "2s",
        "--key",
        "release-bot",
    ];
    for p in &params {
        args.push("--param");
        args.push(p);
    }
    let started = r.on("release-bot-ci-runner", &url, &args).output().unwrap();
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&started.stdout).trim(), "rollout1");

    // Two people approve, each from their own machine, each signing.
    for who in ["engineering-manager", "devops-lead"] {
        r.approve_with(who, |args| r.on(&format!("{who}-laptop"), &url, args));
    }

    let status = |machine: &str| -> serde_json::Value {
        let out = r
            .on(machine, &url, &["status", "rollout1", "--format", "json"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let step_status = |s: &serde_json::Value, id: &str| -> String {
        s["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|st| st["id"] == id)
            .and_then(|st| st["status"].as_str())
            .unwrap_or("")
            .to_string()
    };
    // Watched from a third machine until the load test runs.
    let deadline = Instant::now() + Duration::from_secs(120);
    let holder = loop {
        let s = status("devops-lead-laptop");
        if step_status(&s, "load_test") == "running" {
            break s["holder"]["pid"].as_i64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the load test never started: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The first machine dies.
    unsafe {
        libc::kill(i32::try_from(holder).unwrap(), libc::SIGKILL);
    }
    let finished_before = pg.psql(
        "team",
        "SELECT count(*) FROM runbook_events WHERE run_id = 'rollout1' AND record::json->>'event' = 'step_finished'",
    );

    // A fourth machine takes over once the lease has run out.
    std::fs::write(&go, "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let resumed = loop {
        let out = r
            .on(
                "release-bot-spare-runner",
                &url,
                &[
                    "resume",
                    "rollout1",
                    "--lease",
                    "2s",
                    "--key",
                    "release-bot",
                ],
            )
            .output()
            .unwrap();
        if out.status.code() != Some(4) {
            break out;
        }
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("is being run by process"), "{said}");
        assert!(Instant::now() < deadline, "never took over: {said}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let said = String::from_utf8_lossy(&resumed.stdout).into_owned()
        + &String::from_utf8_lossy(&resumed.stderr);
    assert_eq!(resumed.status.code(), Some(0), "{said}");
    let s = status("engineering-manager-laptop");
    assert_eq!(s["status"], "succeeded", "{s:#}");
    assert!(
        finished_before.parse::<i64>().unwrap() >= 10,
        "{finished_before}"
    );

    // No step that finished under the first engine started under the second.
    let rerun = pg.psql(
        "team",
        "SELECT string_agg(DISTINCT s.record::json->>'step', ',') FROM runbook_events f JOIN runbook_events s
           ON s.run_id = f.run_id AND s.record::json->>'step' = f.record::json->>'step'
          WHERE f.run_id = 'rollout1' AND f.epoch = 1 AND f.record::json->>'event' = 'step_finished'
            AND s.epoch = 2 AND s.record::json->>'event' = 'step_started'",
    );
    assert_eq!(rerun, "", "finished steps ran again: {rerun}");
    let deploys = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        deploys.matches("--service backend --revision").count(),
        1,
        "{deploys}"
    );
    assert_eq!(
        deploys.matches("--service auth --revision").count(),
        1,
        "{deploys}"
    );
    assert_eq!(
        deploys.matches("load-test").count(),
        2,
        "the load test ran again once: {deploys}"
    );
    let flag = redis.get_json("flags:request_isolation").unwrap();
    assert_eq!(flag["stage"], "full");
    // Both decisions were proven, and the channel heard the outcome once.
    let approvals = s["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["id"] == "approve_production")
        .unwrap()["approvals"]
        .clone();
    assert_eq!(approvals.as_array().map(Vec::len), Some(2), "{approvals:#}");
    assert!(approvals
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["verified"] == true));
    assert_eq!(svc.hooks().len(), 1, "{:?}", svc.hooks());
}
