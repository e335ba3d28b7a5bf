#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! Signed approvals end to end: keys made by the real `ssh-keygen`, one
//! held by a real `ssh-agent`, an allowed-signers file, and the binary run,
//! approved and verified as an operator would.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{log, report, step, Running, Test};
use serde_json::Value as Json;

const WAITING: &str = "st/runs/r1/approvals/approve/waiting.json";

const ROLLOUT: &str = r#"
version: 1
name: signed
allowed_signers: allowed_signers
steps:
  - id: approve
    approval:
      approvers: [engineering-manager, devops-lead]
      required: 2
  - id: after
    shell: echo after >> log
"#;

/// `ssh-keygen -t KIND -f DIR/NAME` (with a passphrase when given); the
/// public key's line.
fn keygen(dir: &Path, name: &str, kind: &str, passphrase: &str) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", passphrase, "-C", name, "-f"])
        .arg(dir.join(name))
        .output()
        .expect("ssh-keygen runs (openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.join(format!("{name}.pub")))
        .unwrap()
        .trim()
        .to_string()
}

/// A test dir with the runbook, keys for the two approvers and a third
/// (`mallory`, in no file), and the allowed signers naming the two.
fn team(yaml: &str) -> Test {
    let t = Test::new().file("rb.yaml", yaml);
    let dir = t.path().to_path_buf();
    let em = keygen(&dir, "em", "ed25519", "");
    let dl = keygen(&dir, "dl", "ecdsa", "");
    let dave = keygen(&dir, "dave", "ed25519", "");
    keygen(&dir, "mallory", "ed25519", "");
    let line = |who: &str, key: &str| {
        let mut parts = key.split_whitespace();
        format!(
            "{who} {} {}\n",
            parts.next().unwrap(),
            parts.next().unwrap()
        )
    };
    std::fs::write(
        dir.join("allowed_signers"),
        line("engineering-manager", &em) + &line("devops-lead", &dl) + &line("dave", &dave),
    )
    .unwrap();
    t
}

fn start(t: Test) -> Running {
    let mut running = t
        .args(&[
            "run",
            "rb.yaml",
            "--state-dir",
            "st",
            "--report",
            "report.json",
            "--run-id",
            "r1",
            "--as",
            "dave",
            "--key",
            "dave",
        ])
        .spawn();
    running.wait_for_file(WAITING, Duration::from_secs(60));
    running
}

fn approve(r: &Running, who: &str, extra: &[&str]) -> common::Output {
    let mut args = vec!["approve", "r1", "approve", "--as", who, "--state-dir", "st"];
    args.extend_from_slice(extra);
    r.beside().args(&args).run()
}

#[test]
fn two_signed_approvals_pass_and_verify_offline() {
    let running = start(team(ROLLOUT));
    approve(
        &running,
        "engineering-manager",
        &["--key", "em", "--comment", "looks good"],
    )
    .success();
    approve(&running, "devops-lead", &["--key", "dl"]).success();
    let out = running.wait().success();
    assert_eq!(log(&out), ["after"]);
    let r = report(&out);
    let approvals = step(&r, "approve")["approvals"].as_array().unwrap().clone();
    assert_eq!(approvals.len(), 2, "{approvals:#?}");
    for a in &approvals {
        assert_eq!(a["verified"], true, "{a:#}");
        assert!(a["key"].as_str().unwrap().starts_with("SHA256:"), "{a:#}");
        assert!(a["signature"]
            .as_str()
            .unwrap()
            .contains("BEGIN SSH SIGNATURE"));
        assert!(
            a["os_user"].as_str().is_some_and(|u| !u.is_empty()),
            "{a:#}"
        );
        assert!(a["host"].as_str().is_some_and(|h| !h.is_empty()), "{a:#}");
    }
    let shown = out
        .again()
        .args(&["status", "r1", "--state-dir", "st"])
        .run()
        .success();
    assert!(
        shown.stdout.contains("(signed, key SHA256:"),
        "{}",
        shown.stdout
    );
    let v = shown
        .again()
        .args(&["verify", "r1", "--state-dir", "st"])
        .run()
        .success();
    assert!(
        v.stdout.contains("2 signed decision(s) checked, 0 failed"),
        "{}",
        v.stdout
    );
    assert!(
        v.stdout
            .contains("verified  approve approved by engineering-manager"),
        "{}",
        v.stdout
    );

    // Against a file where engineering-manager has another key, the same
    // journal no longer proves that approval.
    let dir = v.path().to_path_buf();
    let mallory = std::fs::read_to_string(dir.join("mallory.pub")).unwrap();
    let dl_line = std::fs::read_to_string(dir.join("allowed_signers"))
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let mut parts = mallory.split_whitespace();
    std::fs::write(
        dir.join("other_signers"),
        format!(
            "engineering-manager {} {}\n{dl_line}\n",
            parts.next().unwrap(),
            parts.next().unwrap()
        ),
    )
    .unwrap();
    let v = v
        .again()
        .args(&[
            "verify",
            "r1",
            "--state-dir",
            "st",
            "--allowed-signers",
            "other_signers",
        ])
        .run()
        .code(1);
    assert!(
        v.stdout
            .contains("FAILED    approve approved by engineering-manager"),
        "{}",
        v.stdout
    );
}

#[test]
fn unsigned_wrong_key_and_another_principal_are_refused_and_do_not_count() {
    let running = start(team(ROLLOUT));
    approve(&running, "engineering-manager", &[])
        .code(2)
        .stderr_contains("counts only signed decisions");
    approve(&running, "engineering-manager", &["--key", "mallory"])
        .code(2)
        .stderr_contains("refused");
    // devops-lead's key does not make its holder the engineering manager.
    approve(&running, "engineering-manager", &["--key", "dl"])
        .code(2)
        .stderr_contains("refused");
    approve(&running, "devops-lead", &["--key", "dl"]).success();
    approve(
        &running,
        "devops-lead",
        &["--key", "dl", "--reject", "--comment", "stop"],
    )
    .success();
    let out = running.wait().code(1);
    let r = report(&out);
    let by: Vec<&str> = step(&r, "approve")["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["by"].as_str())
        .collect();
    assert_eq!(by, ["devops-lead", "devops-lead"]);
}

/// A decision file signed for another run, dropped into this run's
/// mailbox, is journaled as refused and does not count.
#[test]
fn a_decision_replayed_from_another_run_is_refused() {
    let running = start(team(ROLLOUT));
    let dir = running.path().to_path_buf();
    approve(&running, "engineering-manager", &["--key", "em"]).success();
    // The signed file as `approve` wrote it, now consumed into done/.
    let done = dir.join("st/runs/r1/approvals/approve/done");
    let mut signed = Json::Null;
    let consumed = common::poll_until(Duration::from_secs(30), || {
        signed = std::fs::read_dir(&done)
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .unwrap_or(Json::Null);
        signed.is_object()
    });
    assert!(consumed, "the decision was never consumed");
    let files: Vec<(&str, String)> = ["allowed_signers", "em", "dl", "dave"]
        .into_iter()
        .map(|f| (f, std::fs::read_to_string(dir.join(f)).unwrap()))
        .collect();
    drop(running);
    // A second run of the same runbook: same step, another run id.
    let mut second = Test::new().file("rb.yaml", ROLLOUT).args(&[
        "run",
        "rb.yaml",
        "--state-dir",
        "st",
        "--run-id",
        "r2",
        "--as",
        "dave",
        "--key",
        "dave",
        "--report",
        "report.json",
    ]);
    for (f, text) in &files {
        second = second.file(f, text);
    }
    let mut second = second.spawn();
    second.wait_for_file(
        "st/runs/r2/approvals/approve/waiting.json",
        Duration::from_secs(60),
    );
    let mailbox = second.path().join("st/runs/r2/approvals/approve");
    std::fs::write(
        mailbox.join("replayed.tmp"),
        serde_json::to_vec(&signed).unwrap(),
    )
    .unwrap();
    std::fs::rename(
        mailbox.join("replayed.tmp"),
        mailbox.join("00000000000000000001-replayed.json"),
    )
    .unwrap();
    let mut refused = Json::Null;
    let seen = common::poll_until(Duration::from_secs(30), || {
        let out = second
            .beside()
            .args(&["status", "r2", "--state-dir", "st", "--format", "json"])
            .run();
        let s: Json = serde_json::from_str(&out.stdout).unwrap_or(Json::Null);
        refused = s["steps"][0]["refused_approvals"].clone();
        refused.is_array()
    });
    assert!(seen, "the replayed decision was not refused");
    assert!(
        refused[0]["why"]
            .as_str()
            .unwrap()
            .contains("other content"),
        "{refused:#}"
    );
    second.signal(libc::SIGINT);
    let out = second.wait();
    let r = report(&out);
    assert!(step(&r, "approve")["approvals"].is_null(), "{r:#}");
}

/// An `ssh-agent` killed when the test ends, passing or not.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_key_held_by_ssh_agent_and_a_passphrase_from_askpass_sign() {
    let t = team(ROLLOUT);
    let dir = t.path().to_path_buf();
    // devops-lead's key again, passphrase-protected.
    std::fs::remove_file(dir.join("dl")).unwrap();
    std::fs::remove_file(dir.join("dl.pub")).unwrap();
    let dl = keygen(&dir, "dl", "ecdsa", "s3cret phrase");
    let mut parts = dl.split_whitespace();
    let others: String = std::fs::read_to_string(dir.join("allowed_signers"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("devops-lead "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        dir.join("allowed_signers"),
        format!(
            "{others}devops-lead {} {}\n",
            parts.next().unwrap(),
            parts.next().unwrap()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("askpass.sh"), "#!/bin/sh\necho 's3cret phrase'\n").unwrap();
    Command::new("chmod")
        .args(["+x"])
        .arg(dir.join("askpass.sh"))
        .status()
        .unwrap();
    // engineering-manager's key lives in an agent; `--key` names the public half.
    let sock = dir.join("agent.sock");
    let _agent = Agent(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(common::poll_until(Duration::from_secs(10), || sock.exists()));
    let added = Command::new("ssh-add")
        .arg(dir.join("em"))
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    std::fs::remove_file(dir.join("em")).unwrap();

    let running = start(t);
    running
        .beside()
        .args(&[
            "approve",
            "r1",
            "approve",
            "--as",
            "engineering-manager",
            "--key",
            "em.pub",
            "--state-dir",
            "st",
        ])
        .env("SSH_AUTH_SOCK", sock.to_str().unwrap())
        .run()
        .success();
    running
        .beside()
        .args(&[
            "approve",
            "r1",
            "approve",
            "--as",
            "devops-lead",
            "--key",
            "dl",
            "--state-dir",
            "st",
        ])
        .env("SSH_ASKPASS", dir.join("askpass.sh").to_str().unwrap())
        .env("SSH_ASKPASS_REQUIRE", "force")
        .run()
        .success();
    let out = running.wait().success();
    assert_eq!(log(&out), ["after"]);
}

#[test]
fn a_proven_starter_cannot_approve_and_a_wrong_key_cannot_start() {
    let t = team(ROLLOUT);
    let out = t
        .args(&[
            "run",
            "rb.yaml",
            "--state-dir",
            "st",
            "--run-id",
            "r0",
            "--as",
            "devops-lead",
            "--key",
            "em",
        ])
        .run()
        .code(2)
        .stderr_contains("--key does not prove that you are devops-lead");
    assert!(log(&out).is_empty());
    let mut running = out
        .again()
        .file("rb.yaml", &ROLLOUT.replace("required: 2", "required: 1"))
        .args(&[
            "run",
            "rb.yaml",
            "--state-dir",
            "st",
            "--report",
            "report.json",
            "--run-id",
            "r1",
            "--as",
            "engineering-manager",
            "--key",
            "em",
        ])
        .spawn();
    running.wait_for_file(WAITING, Duration::from_secs(60));
    approve(&running, "engineering-manager", &["--key", "em"])
        .code(2)
        .stderr_contains("started this run");
}

#[test]
fn validate_names_approvers_without_a_key_and_plan_says_identities_are_signed() {
    let t = team(&ROLLOUT.replace(
        "[engineering-manager, devops-lead]",
        "[engineering-manager, devops-lead, cfo, cto]",
    ));
    let out = t.args(&["validate", "rb.yaml"]).run().code(2);
    assert!(
        out.stderr
            .contains("the allowed signers have no key for cfo, cto"),
        "{}",
        out.stderr
    );
    assert!(
        out.errors().contains(&("E052".to_string(), 8)),
        "{:?}",
        out.errors()
    );
    let plan = team(ROLLOUT).args(&["plan", "rb.yaml"]).run().success();
    assert!(plan.stdout.contains("identities signed"), "{}", plan.stdout);
    let plan = Test::new()
        .file(
            "rb.yaml",
            &ROLLOUT.replace("allowed_signers: allowed_signers\n", ""),
        )
        .args(&["plan", "rb.yaml"])
        .run()
        .success();
    assert!(
        plan.stdout.contains("identities claimed"),
        "{}",
        plan.stdout
    );
}

/// Found by review: without a proven starter, anyone could start a run as
/// someone else and then approve it with their own key; and a templated
/// path let the starter choose whose keys count.
#[test]
fn a_signed_runbook_needs_a_proven_starter_and_a_fixed_signers_path() {
    let out = team(ROLLOUT)
        .args(&["run", "rb.yaml", "--state-dir", "st", "--as", "dave"])
        .run()
        .code(2)
        .stderr_contains("start it with --as NAME --key PATH");
    assert!(log(&out).is_empty());
    let templated = ROLLOUT.replace(
        "allowed_signers: allowed_signers",
        "params:\n  f: { type: string, default: allowed_signers }\nallowed_signers: \"{{ params.f }}\"",
    );
    let out = Test::new()
        .file("rb.yaml", &templated)
        .args(&["validate", "rb.yaml"])
        .run()
        .code(2);
    assert!(
        out.stderr.contains("must be a fixed path"),
        "{}",
        out.stderr
    );
}
