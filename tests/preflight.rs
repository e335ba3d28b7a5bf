#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! Pre-flight: templates that depend only on params, vars, secrets and env
//! are rendered and type-checked before anything runs. A bad value is a
//! diagnostic at the template's file:line:col, exit 2, nothing run and no
//! state dir created; `plan` reports the same (for params and vars) and
//! exits 2; `validate` knows no values, so only unknown filters and tests
//! (E064) fail it. Templates that read `steps.*` wait for the run.
//!
//! Every runbook here marks what ran: each step writes `ran-<id>` in the
//! test directory, so "nothing ran" is a directory listing.

mod common;

use common::{line_of, lines_containing, read_repo_file, Output, Test};

const RB: &str = "rb.yaml";
const DEMO: &str = "examples/demo/rollout.yaml";

/// Files a run must not leave behind when pre-flight refuses it.
fn assert_nothing_ran(out: &Output, what: &str) {
    let dir = out.path();
    let ran: Vec<String> = std::fs::read_dir(dir)
        .expect("read the test directory")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ran-"))
        .collect();
    assert!(ran.is_empty(), "{what}: steps ran: {ran:?}\n{}", out.stderr);
    for left in [
        "st",
        common::DEFAULT_STATE_DIR,
        "st/flags.json",
        ".runbook-demo",
    ] {
        assert!(
            !dir.join(left).exists(),
            "{what}: a refused run left {left} behind\n{}",
            out.stderr
        );
    }
}

fn cmd_args<'a>(cmd: &'a str, file: &'a str, params: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![cmd, file];
    if cmd == "run" {
        args.extend(["--state-dir", "st"]);
    }
    for p in params {
        args.extend(["--param", p]);
    }
    args
}

/// One row: a runbook, the params it runs with, the diagnostics (code, and
/// a text whose first line in the file is where it must point) that `plan`
/// and `run` report, and whether `plan` sees them too (it does not know env).
struct Case {
    name: &'static str,
    yaml: &'static str,
    params: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    /// `(code, text on the line it points at)`, in order.
    errors: &'static [(&'static str, &'static str)],
    plan_sees_it: bool,
}

const HEADER: &str = "version: 1
name: preflight
params:
  attempts: { type: integer, default: 2 }
  samples: { type: integer, default: 2 }
  base: { type: string, default: \"http://127.0.0.1:9\" }
  mode: { type: string, default: fast }
  wait: { type: string, default: 1s }
  token: { type: string, default: hunter2-token, secret: true }
providers:
  cmd: { kind: command }
";

const CASES: &[Case] = &[
    Case {
        name: "retry attempts below 1",
        yaml: "steps:
  - id: first
    shell: touch ran-first
  - id: retried
    shell: touch ran-retried
    retry: { attempts: \"{{ params.attempts }}\", delay: 10ms }
",
        params: &["attempts=0"],
        env: &[],
        errors: &[("E027", "attempts: \"{{ params.attempts }}\"")],
        plan_sees_it: true,
    },
    Case {
        name: "metric samples below 1",
        yaml: "steps:
  - id: first
    shell: touch ran-first
  - id: gate
    metric:
      query: echo 0
      condition: value < 1
      interval: 10ms
      samples: \"{{ params.samples }}\"
",
        params: &["samples=-3"],
        env: &[],
        errors: &[("E027", "samples: \"{{ params.samples }}\"")],
        plan_sees_it: true,
    },
    Case {
        name: "metric samples that are not a number",
        yaml: "steps:
  - id: first
    shell: touch ran-first
  - id: gate
    metric:
      query: echo 0
      condition: value < 1
      interval: 10ms
      samples: \"{{ params.mode }}\"
",
        params: &[],
        env: &[],
        errors: &[("E027", "samples: \"{{ params.mode }}\"")],
        plan_sees_it: true,
    },
    Case {
        name: "http url that is not http",
        yaml: "steps:
  - id: first
    shell: touch ran-first
  - id: probe
    http:
      url: \"{{ params.base }}/health\"
",
        params: &["base=ftp://files.example.test"],
        env: &[],
        errors: &[("E066", "url: \"{{ params.base }}/health\"")],
        plan_sees_it: true,
    },
    Case {
        name: "http url that is not a url",
        yaml: "steps:
  - id: first
    shell: touch ran-first
  - id: probe
    http:
      url: \"{{ params.base }}\"
",
        params: &["base=not a url"],
        env: &[],
        errors: &[("E066", "url: \"{{ params.base }}\"")],
        plan_sees_it: true,
    },
    Case {
        name: "when that errors with these params",
        yaml: "steps:
  - id: first
    shell: touch ran-first
  - id: maybe
    when: \"params.mode.speed == 1\"
    shell: touch ran-maybe
",
        params: &[],
        env: &[],
        errors: &[("E065", "when: \"params.mode.speed == 1\"")],
        plan_sees_it: true,
    },
    Case {
        name: "timeout from a var built from a param",
        yaml: "vars:
  step_timeout: \"{{ params.wait }}x\"
steps:
  - id: first
    shell: touch ran-first
  - id: slow
    shell: touch ran-slow
    timeout: \"{{ vars.step_timeout }}\"
",
        params: &[],
        env: &[],
        errors: &[("E025", "timeout: \"{{ vars.step_timeout }}\"")],
        plan_sees_it: true,
    },
    Case {
        name: "a rollback body's retry delay",
        yaml: "steps:
  - id: first
    shell: touch ran-first
    rollback:
      shell: touch ran-undo
      retry: { attempts: 2, delay: \"{{ params.mode }}\" }
",
        params: &[],
        env: &[],
        errors: &[("E025", "delay: \"{{ params.mode }}\"")],
        plan_sees_it: true,
    },
    Case {
        name: "timeout from env: run knows env, plan does not",
        yaml: "steps:
  - id: first
    shell: touch ran-first
  - id: slow
    shell: touch ran-slow
    timeout: \"{{ env.PREFLIGHT_TIMEOUT }}\"
",
        params: &[],
        env: &[("PREFLIGHT_TIMEOUT", "eventually")],
        errors: &[("E025", "timeout: \"{{ env.PREFLIGHT_TIMEOUT }}\"")],
        plan_sees_it: false,
    },
    Case {
        name: "several errors, in file order",
        yaml: "steps:
  - id: first
    shell: touch ran-first
    timeout: \"{{ params.wait }}s\"
  - id: second
    shell: touch ran-second
    retry: { attempts: \"{{ params.attempts }}\" }
",
        params: &["attempts=0"],
        env: &[],
        errors: &[
            ("E025", "timeout: \"{{ params.wait }}s\""),
            ("E027", "attempts: \"{{ params.attempts }}\""),
        ],
        plan_sees_it: true,
    },
];

fn test_for(yaml: &str, env: &[(&str, &str)]) -> Test {
    let mut t = Test::new().file(RB, yaml);
    for (k, v) in env {
        t = t.env(k, v);
    }
    t
}

/// `(code, line)` expected for a case, the lines looked up in its text.
fn expected(text: &str, errors: &[(&str, &str)]) -> Vec<(String, u32)> {
    errors
        .iter()
        .map(|(code, at)| (code.to_string(), line_of(text, at)))
        .collect()
}

#[test]
fn bad_values_are_refused_before_anything_runs() {
    for case in CASES {
        let yaml = format!("{HEADER}{}", case.yaml);
        let want = expected(&yaml, case.errors);

        // validate knows no values: these runbooks are valid.
        test_for(&yaml, case.env)
            .args(&["validate", RB])
            .run()
            .code(0);

        let out = test_for(&yaml, case.env)
            .args(&cmd_args("plan", RB, case.params))
            .run();
        if case.plan_sees_it {
            let out = out.code(2).stdout_eq("");
            assert_eq!(out.errors(), want, "{}: plan\n{}", case.name, out.stderr);
        } else {
            let out = out.code(0);
            assert_eq!(out.errors(), [], "{}: plan", case.name);
        }

        let out = test_for(&yaml, case.env)
            .args(&cmd_args("run", RB, case.params))
            .run()
            .code(2);
        assert_eq!(out.errors(), want, "{}: run\n{}", case.name, out.stderr);
        assert!(
            !out.stderr.contains("plan sha256:"),
            "{}: a refused run must not announce a plan\n{}",
            case.name,
            out.stderr
        );
        assert_nothing_ran(&out, case.name);
    }
}

#[test]
fn demo_rollout_with_a_bad_gate_interval() {
    let text = read_repo_file(DEMO);
    let interval_lines = lines_containing(&text, "interval: \"{{ params.gate_interval }}\"");
    assert_eq!(interval_lines.len(), 3, "the demo has three gates");
    let want: Vec<(String, u32)> = interval_lines
        .iter()
        .map(|&l| ("E025".to_string(), l))
        .collect();

    let out = Test::new()
        .repo_file(DEMO)
        .args(&["plan", DEMO, "--param", "gate_interval=soon"])
        .run()
        .code(2)
        .stdout_eq("")
        .stderr_contains("gives `soon`, which is not a duration")
        .stderr_contains(&format!("--> {DEMO}:{}:", interval_lines[0]));
    assert_eq!(out.errors(), want, "plan");

    let out = Test::new()
        .repo_file(DEMO)
        .args(&["run", DEMO, "--param", "gate_interval=soon"])
        .args(&["--state-dir", "st"])
        .run()
        .code(2)
        .stderr_contains(&format!("--> {DEMO}:{}:", interval_lines[0]));
    assert_eq!(out.errors(), want, "run");
    // The demo's first step makes .runbook-demo and starts a server.
    assert_nothing_ran(&out, "demo run");
}

#[test]
fn unknown_filter_fails_validate_plan_and_run_at_its_line() {
    let yaml = "version: 1
name: filters
params:
  image: { type: string, default: app }
steps:
  - id: first
    shell: touch ran-first
  - id: tag
    shell: echo {{ params.image | upcase }} > ran-tag
";
    let line = line_of(yaml, "upcase");
    for cmd in ["validate", "plan", "run"] {
        let out = Test::new()
            .file(RB, yaml)
            .args(&cmd_args(cmd, RB, &[]))
            .run()
            .code(2)
            .stderr_contains("unknown filter `upcase`");
        assert_eq!(out.errors(), [("E064".to_string(), line)], "{cmd}");
        assert_nothing_ran(&out, cmd);
    }
}

#[test]
fn unknown_test_fails_validate() {
    let yaml = "version: 1
name: tests
params:
  n: { type: integer, default: 2 }
steps:
  - id: first
    when: \"params.n is evenish\"
    shell: touch ran-first
";
    let out = Test::new()
        .file(RB, yaml)
        .args(&["validate", RB])
        .run()
        .code(2);
    assert_eq!(
        out.errors(),
        [("E064".to_string(), line_of(yaml, "evenish"))]
    );
}

/// A template reading `steps.*` cannot be checked before the run: it must
/// not be refused up front, and fails (or not) only when its step comes.
#[test]
fn templates_reading_steps_wait_for_the_run() {
    let yaml = format!(
        "{HEADER}steps:
  - id: first
    shell: |
      touch ran-first
      echo t=soon >> \"$RUNBOOK_OUTPUT\"
      echo url=ftp://x >> \"$RUNBOOK_OUTPUT\"
  - id: timed
    shell: touch ran-timed
    timeout: \"{{{{ steps.first.outputs.t }}}}\"
    continue_on_failure: true
  - id: probe
    needs: [first]
    http:
      url: \"{{{{ steps.first.outputs.url }}}}\"
    continue_on_failure: true
  - id: last
    needs: [timed, probe]
    shell: touch ran-last
"
    );
    Test::new()
        .file(RB, &yaml)
        .args(&["plan", RB])
        .run()
        .code(0);
    let out = Test::new()
        .file(RB, &yaml)
        .args(&["run", RB, "--state-dir", "st", "--report", "report.json"])
        .run()
        .code(0);
    assert!(out.path().join("ran-first").exists(), "{}", out.stdout);
    assert!(out.path().join("ran-last").exists(), "{}", out.stdout);
    assert!(!out.path().join("ran-timed").exists(), "{}", out.stdout);
    let report = common::report(&out);
    for id in ["timed", "probe"] {
        assert_eq!(
            common::step(&report, id)["status"],
            "failed",
            "{id} fails when it comes: {report:#}"
        );
    }
}

/// A `when` reading `steps.*` is decided when its step comes, not up front.
#[test]
fn when_reading_steps_waits_for_the_run() {
    let yaml = format!(
        "{HEADER}steps:
  - id: first
    shell: |
      touch ran-first
      echo t=soon >> \"$RUNBOOK_OUTPUT\"
  - id: cond
    when: \"steps.first.outputs.t.speed == 1\"
    shell: touch ran-cond
"
    );
    Test::new()
        .file(RB, &yaml)
        .args(&["plan", RB])
        .run()
        .code(0);
    let out = Test::new()
        .file(RB, &yaml)
        .args(&["run", RB, "--state-dir", "st", "--report", "report.json"])
        .run()
        .code(1);
    assert!(out.path().join("ran-first").exists(), "{}", out.stdout);
    assert!(!out.path().join("ran-cond").exists(), "{}", out.stdout);
    let report = common::report(&out);
    let cond = common::step(&report, "cond");
    assert_eq!(cond["status"], "failed", "{report:#}");
    assert!(
        cond["error"]
            .as_str()
            .unwrap_or_default()
            .contains("`when` failed"),
        "{report:#}"
    );
}

/// Found by this file: a step whose `when` could not be evaluated failed
/// and unwound the run even with `continue_on_failure: true`, and its
/// dependents never started (the spec: with `continue_on_failure`, "a
/// failure is recorded and does not unwind the run").
#[test]
fn failed_when_ignored_continue_on_failure() {
    let yaml = format!(
        "{HEADER}steps:
  - id: first
    shell: |
      touch ran-first
      echo t=soon >> \"$RUNBOOK_OUTPUT\"
    rollback: {{ shell: touch ran-undo-first }}
  - id: cond
    when: \"steps.first.outputs.t.speed == 1\"
    shell: touch ran-cond
    continue_on_failure: true
  - id: last
    shell: touch ran-last
"
    );
    let out = Test::new()
        .file(RB, &yaml)
        .args(&["run", RB, "--state-dir", "st", "--report", "report.json"])
        .run();
    let report = common::report(&out);
    assert_eq!(
        common::step(&report, "cond")["status"],
        "failed",
        "{report:#}"
    );
    assert!(
        out.path().join("ran-last").exists(),
        "the step after a continue_on_failure step did not run:\n{}",
        out.stdout
    );
    assert!(
        !out.path().join("ran-undo-first").exists(),
        "the run unwound:\n{}",
        out.stdout
    );
    assert_eq!(out.code, Some(0), "{}", out.stdout);
}

/// Found by this file: a pre-flight error for a template that reads a
/// secret showed the value it rendered whenever that value was not the
/// secret itself (`{{ secrets.x | upper }}`, a number computed from it), and
/// a `secret: true` param did not count as a secret at all, so
/// `{{ params.token | upper }}` printed the token in capitals.
#[test]
fn preflight_errors_showed_values_derived_from_secrets() {
    let yaml = format!(
        "{HEADER}secrets:
  api_key: {{ env: PREFLIGHT_API_KEY }}
  pin: {{ env: PREFLIGHT_PIN }}
steps:
  - id: first
    shell: touch ran-first
    timeout: \"{{{{ params.token | upper }}}}\"
  - id: second
    shell: touch ran-second
    timeout: \"{{{{ secrets.api_key | upper }}}}\"
  - id: third
    shell: touch ran-third
    timeout: \"{{{{ secrets.api_key }}}}\"
  - id: fourth
    shell: touch ran-fourth
    retry: {{ attempts: \"{{{{ secrets.pin | int - 10 }}}}\" }}
"
    );
    let want = expected(
        &yaml,
        &[
            ("E025", "params.token | upper"),
            ("E025", "secrets.api_key | upper"),
            ("E025", "timeout: \"{{ secrets.api_key }}\""),
            ("E027", "secrets.pin | int - 10"),
        ],
    );
    let out = Test::new()
        .file(RB, &yaml)
        .env("PREFLIGHT_API_KEY", "sk-live-abc")
        .env("PREFLIGHT_PIN", "7")
        .args(&["run", RB, "--state-dir", "st"])
        .args(&["--param", "token=hunter2-given"])
        .run()
        .code(2);
    assert_eq!(out.errors(), want, "{}", out.stderr);
    assert_nothing_ran(&out, "secrets");
    let lower = out.stderr.to_lowercase();
    for leaked in ["hunter2", "sk-live-abc", "gives -3", "gives `-3`"] {
        assert!(
            !lower.contains(leaked),
            "a value derived from a secret is shown ({leaked}):\n{}",
            out.stderr
        );
    }
}

/// Found by review: approver names are printed in `status`, journaled and
/// pasted from the command `status` prints. One read from a secret leaked
/// it in every error; a control character could fake the printed command; a
/// leading `-` made the printed `--as NAME` an option. (approvers, param, code).
#[test]
fn approver_names_that_cannot_be_shown_or_typed_are_refused_before_the_run() {
    let cases: &[(&str, &str, &str)] = &[
        (r#"["{{ secrets.tok }}"]"#, "", "E051"),
        (
            r#"["{{ params.who }}"]"#,
            "who=x\r    approve: runbook approve R g --as bob; touch pwned #",
            "E051",
        ),
        (r#"["{{ params.who }}"]"#, "who=ali\u{202e}ce", "E051"),
        (r#"["--reject", "bob"]"#, "", "E051"),
        (r#"["{{ params.who }}"]"#, "who=  ", "E065"),
    ];
    for (approvers, param, code) in cases {
        let yaml = format!(
            "version: 1\nname: a\nparams:\n  who: {{ type: string, default: bob }}\nsecrets:\n  tok: {{ env: APPROVER_TOKEN }}\nsteps:\n  - id: g\n    approval: {{ approvers: {approvers} }}\n  - id: after\n    shell: touch ran\n"
        );
        let mut args = vec!["run", "a.yaml"];
        if !param.is_empty() {
            args.extend(["--param", param]);
        }
        let out = Test::new()
            .file("a.yaml", &yaml)
            .env("APPROVER_TOKEN", "hunter2-approver")
            .args(&args)
            .run()
            .code(2)
            .stderr_contains(&format!("error[{code}]"))
            .stderr_not_contains("hunter2");
        assert!(!out.path().join("ran").exists(), "{approvers}");
        assert!(
            !out.stderr.contains('\r'),
            "a raw CR reached the terminal: {:?}",
            out.stderr
        );
    }
}
