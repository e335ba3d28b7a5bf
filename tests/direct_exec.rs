#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! A script that is one simple command runs without bash, and behaves
//! exactly as under bash: for each script of a corpus, the step run as it
//! is (direct) and with `interpreter: [bash, -eo, pipefail, -c]` set (so
//! bash runs it) give the same exit code, stdout, stderr and outputs.
//! `env` output is compared as a sorted set: the order of an environment
//! is not behaviour.

mod common;

use common::Test;

/// (script, whether its stdout is compared sorted).
const CORPUS: &[(&str, bool)] = &[
    ("true", false),
    ("true --help", false),
    ("false", false),
    ("exit", false),
    ("exit 3", false),
    ("sleep 0.01", false),
    ("env", true),
    ("/usr/bin/env", true),
    ("printenv PWD SHLVL _", false),
    ("bin/show-env", true),
    ("mytool one two", false),
    ("./with-shebang a b", false),
    ("./no-shebang", false),
    ("./not-executable", false),
    ("no-such-command x", false),
    ("cat no-such-file", false),
    ("ls -1 listing", false),
    ("/usr/bin/printf %s:%s café ünï", false),
    ("sh -c true", false),
];

fn setup(t: Test) -> Test {
    t.file(
        "bin/mytool",
        "#!/bin/sh\necho \"mytool $# $*\"; echo \"tool=$1\" >> \"$RUNBOOK_OUTPUT\"\n",
    )
    .file("bin/show-env", "#!/bin/sh\nexec env\n")
    .file(
        "with-shebang",
        "#!/bin/sh\necho \"args: $*\"; echo err >&2; echo \"k=v\" >> \"$RUNBOOK_OUTPUT\"; exit 4\n",
    )
    .file("no-shebang", "echo run by a shell\n")
    .file("not-executable", "#!/bin/sh\necho never\n")
    .file("listing/b", "")
    .file("listing/a", "")
}

fn chmod_x(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    for f in ["bin/mytool", "bin/show-env", "with-shebang", "no-shebang"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// What one run of `script` did: (stdout lines, stderr lines, exit code,
/// outputs), from the JSON log.
type Observed = (
    Vec<String>,
    Vec<String>,
    serde_json::Value,
    serde_json::Value,
);

/// Runs `script` directly and under bash in one test dir (so paths agree),
/// with the same run id and a state dir each; the state dir's name is
/// written as `st` in what is compared.
fn both(script: &str, sorted: bool) -> (Observed, Observed) {
    let t = setup(Test::new());
    chmod_x(t.path());
    let (direct, t) = observe(t, script, false, sorted);
    let (bash, _) = observe(t, script, true, sorted);
    (direct, bash)
}

fn observe(t: Test, script: &str, bash: bool, sorted: bool) -> (Observed, Test) {
    let interpreter = if bash {
        "    interpreter: [bash, -eo, pipefail, -c]\n"
    } else {
        ""
    };
    let yaml = format!(
        "version: 1\nname: d\nsteps:\n  - id: s\n    shell: {}\n    continue_on_failure: true\n    env: {{ PATH: \"bin:/usr/bin:/bin\", OLDPWD: /nonexistent }}\n{interpreter}",
        serde_json::to_string(script).unwrap()
    );
    let state = if bash { "st-bash" } else { "st-direct" };
    let out = t
        .file("d.yaml", &yaml)
        .args(&["run", "d.yaml", "--log-format", "json", "--run-id", "r"])
        .args(&["--state-dir", state])
        .run()
        .success();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut finished = serde_json::Value::Null;
    for line in out.stdout.replace(state, "st").lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let data = &v["data"];
        match data["event"].as_str() {
            Some("output") if data["stream"] == "stdout" => {
                stdout.push(data["line"].as_str().unwrap().to_string());
            }
            Some("output") => stderr.push(data["line"].as_str().unwrap().to_string()),
            Some("step_finished") => finished = data.clone(),
            _ => {}
        }
    }
    if sorted {
        stdout.sort();
    }
    (
        (
            stdout,
            stderr,
            finished["extra"]["exit_code"].clone(),
            finished["outputs"].clone(),
        ),
        out.again(),
    )
}

#[test]
fn simple_commands_behave_as_under_bash() {
    let mut differ = Vec::new();
    for (script, sorted) in CORPUS {
        let (direct, bash) = both(script, *sorted);
        if direct != bash {
            differ.push(format!(
                "{script:?}:\n  direct: {direct:?}\n  bash:   {bash:?}"
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    // The corpus exercises what it claims.
    let ((_, _, code, outputs), _) = both("./with-shebang a b", false);
    assert_eq!(code, 4);
    assert_eq!(outputs["k"], "v");
    let ((_, stderr, code, _), _) = both("no-such-command x", false);
    assert_eq!(code, 127);
    assert!(
        stderr[0].contains("no-such-command: command not found"),
        "{stderr:?}"
    );
}

/// Proof that no shell runs: with no bash on the step's `PATH`, a simple
/// command still runs, and a script that needs a shell cannot start.
#[test]
fn simple_commands_need_no_shell() {
    let yaml = "version: 1\nname: d\nsteps:\n  - id: simple\n    shell: mytool direct\n    env: { PATH: bin }\n  - id: builtin\n    shell: \"true\"\n    env: { PATH: bin }\n  - id: needs_shell\n    shell: mytool a; mytool b\n    env: { PATH: bin }\n";
    let t = setup(Test::new()).file("d.yaml", yaml);
    chmod_x(t.path());
    let out = t.args(&["run", "d.yaml"]).run().code(1);
    assert!(
        out.stdout.contains("[simple] mytool 1 direct"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("builtin: succeeded"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("needs_shell: failed (cannot start `bash`"),
        "{}",
        out.stdout
    );
}
