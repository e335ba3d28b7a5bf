#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! The plan fingerprint: `sha256:` + 64 hex digits over the runbook's text,
//! the resolved params without the secret ones, and the engine version.
//! `plan` prints it (text and JSON), `run` prints it at start, journals it
//! in the header and puts it in the `--report`.

mod common;

use common::{journal_header, plan_json, report, Test};

const RB: &str = "rb.yaml";
const SECRET: &str = "hunter2-fingerprint-secret";

const YAML: &str = "version: 1
name: fingerprinted
params:
  image: { type: string, default: app-v1 }
  replicas: { type: integer, default: 2 }
  token: { type: string, default: default-token-value, secret: true }
steps:
  - id: deploy
    shell: echo deploying {{ params.image }} x{{ params.replicas }}
  - id: check
    shell: echo token length {{ params.token | length }}
";

fn param_args(params: &[&str]) -> Vec<String> {
    params
        .iter()
        .flat_map(|p| ["--param".to_string(), p.to_string()])
        .collect()
}

/// The fingerprint `plan --format json` gives for `yaml` with `params`.
fn json_fingerprint(yaml: &str, params: &[&str]) -> String {
    let plan = plan_json(Test::new().file(RB, yaml), RB, params);
    let fp = plan["fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("no fingerprint in {plan:#}"))
        .to_string();
    assert_well_formed(&fp);
    fp
}

/// The fingerprint on the `Fingerprint:` line of the text plan.
fn text_fingerprint(yaml: &str, params: &[&str]) -> String {
    let args = param_args(params);
    let mut all = vec!["plan", RB];
    all.extend(args.iter().map(String::as_str));
    let out = Test::new().file(RB, yaml).args(&all).run().success();
    assert!(!out.stdout.contains(SECRET), "{}", out.stdout);
    let fp = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Fingerprint: "))
        .unwrap_or_else(|| panic!("no `Fingerprint:` line:\n{}", out.stdout))
        .trim()
        .to_string();
    assert_well_formed(&fp);
    fp
}

fn assert_well_formed(fp: &str) {
    let hex = fp
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("{fp} does not start with sha256:"));
    assert_eq!(hex.len(), 64, "{fp}");
    assert!(
        hex.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{fp} is not lowercase hex"
    );
}

#[test]
fn text_and_json_plans_show_the_same_fingerprint() {
    for params in [&[][..], &["image=app-v2"], &["replicas=5", "token=x"]] {
        assert_eq!(
            text_fingerprint(YAML, params),
            json_fingerprint(YAML, params),
            "{params:?}"
        );
    }
}

#[test]
fn it_is_stable_for_the_same_input() {
    assert_eq!(
        json_fingerprint(YAML, &["image=a"]),
        json_fingerprint(YAML, &["image=a"])
    );
    // Giving a param its default value resolves to the same params.
    assert_eq!(
        json_fingerprint(YAML, &[]),
        json_fingerprint(YAML, &["image=app-v1"])
    );
}

#[test]
fn a_non_secret_param_changes_it() {
    let base = json_fingerprint(YAML, &[]);
    let image = json_fingerprint(YAML, &["image=app-v2"]);
    let replicas = json_fingerprint(YAML, &["replicas=3"]);
    assert_ne!(base, image);
    assert_ne!(base, replicas);
    assert_ne!(image, replicas);
}

#[test]
fn the_file_text_changes_it() {
    let base = json_fingerprint(YAML, &[]);
    // A comment changes no step, but it is another text.
    let commented = format!("# reviewed\n{YAML}");
    assert_ne!(base, json_fingerprint(&commented, &[]));
    let edited = YAML.replace("echo deploying", "echo rolling out");
    assert_ne!(base, json_fingerprint(&edited, &[]));
}

#[test]
fn a_secret_param_does_not_change_it_and_never_shows() {
    let base = json_fingerprint(YAML, &[]);
    let with_secret = format!("token={SECRET}");
    assert_eq!(base, json_fingerprint(YAML, &[&with_secret]));
    assert_eq!(base, json_fingerprint(YAML, &["token=another"]));
    assert_eq!(
        text_fingerprint(YAML, &[&with_secret]),
        text_fingerprint(YAML, &[])
    );
    let out = Test::new()
        .file(RB, YAML)
        .args(&["plan", RB, "--format", "json", "--param", &with_secret])
        .run()
        .success();
    assert!(!out.stdout.contains(SECRET), "{}", out.stdout);
}

/// `run` prints the fingerprint at start, journals it in the header, and
/// the report holds it: all the value `plan` gives for the same params.
#[test]
fn run_journal_and_report_hold_the_plan_fingerprint() {
    let with_secret = format!("token={SECRET}");
    let params = ["image=app-v3", "replicas=4", with_secret.as_str()];
    let planned = json_fingerprint(YAML, &params);
    let args = param_args(&params);
    let mut all = vec![
        "run",
        RB,
        "--state-dir",
        "st",
        "--run-id",
        "fp1",
        "--report",
        "report.json",
    ];
    all.extend(args.iter().map(String::as_str));
    let out = Test::new()
        .file(RB, YAML)
        .args(&all)
        .run()
        .success()
        .stderr_contains(&format!("plan {planned}"));
    for (what, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(!text.contains(SECRET), "{what} shows the secret:\n{text}");
    }
    let header = journal_header(&out, "st", "fp1");
    assert_eq!(header["fingerprint"], planned.as_str(), "{header:#}");
    assert_eq!(report(&out)["fingerprint"], planned.as_str());
    let journal =
        std::fs::read_to_string(out.path().join("st/runs/fp1/journal.jsonl")).expect("journal");
    assert!(!journal.contains(SECRET), "the journal holds the secret");
    let report_text = std::fs::read_to_string(out.path().join("report.json")).expect("report");
    assert!(!report_text.contains(SECRET), "the report holds the secret");

    // Another value of the secret: same fingerprint at run time too.
    let out = Test::new()
        .file(RB, YAML)
        .args(&["run", RB, "--state-dir", "st", "--run-id", "fp2"])
        .args(&["--param", "image=app-v3", "--param", "replicas=4"])
        .args(&["--param", "token=something-else"])
        .run()
        .success();
    assert_eq!(
        journal_header(&out, "st", "fp2")["fingerprint"],
        planned.as_str()
    );
}

/// Crashes a run of `yaml` after its third journal write, resumes it, and
/// returns (the journaled fingerprint, the resume's output).
fn crash_and_resume(yaml: &str) -> (String, common::Output) {
    let crashed = Test::new()
        .file(RB, yaml)
        .env("RUNBOOK_CRASH_AT", "after:3")
        .args(&["run", RB, "--state-dir", "st", "--run-id", "c1"])
        .run();
    assert!(
        crashed.killed(),
        "RUNBOOK_CRASH_AT did not kill the run\n{}",
        crashed.stderr
    );
    let journaled = journal_header(&crashed, "st", "c1")["fingerprint"]
        .as_str()
        .expect("a fingerprint in the header")
        .to_string();
    let resumed = crashed
        .again()
        .args(&["resume", "c1", "--state-dir", "st"])
        .run();
    (journaled, resumed)
}

/// `resume` rebuilds the plan from the journaled runbook: it is the same plan.
#[test]
fn resume_continues_the_journaled_plan() {
    // No secret value in the text, so the journaled text is the text.
    let yaml = YAML
        .replace(", default: default-token-value", "")
        .replace("{{ params.token | length }}", "unset");
    let (journaled, resumed) = crash_and_resume(&yaml);
    assert_eq!(journaled, json_fingerprint(&yaml, &[]));
    resumed
        .success()
        .stderr_contains(&format!("plan {journaled})"));
}

/// Found by this file: the journal keeps the runbook's text with secret
/// values masked, so a `secret: true` param's default became `***` in it,
/// which is not YAML (an alias): `resume` refused the run ("no longer
/// validates"), and even a masking that parsed would hash to another plan.
#[test]
fn resume_failed_when_a_secret_default_was_masked_in_the_journal() {
    let (journaled, resumed) = crash_and_resume(YAML);
    assert_eq!(journaled, json_fingerprint(YAML, &[]));
    resumed
        .success()
        .stderr_contains(&format!("plan {journaled})"));
}
