#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! Regression tests for the smaller holes of the hostile-input issue, each
//! named after what it was.

mod common;

use common::Test;

const RB: &str = "rb.yaml";

#[test]
fn non_utf8_environment_variable_panicked_run() {
    let out = Test::new()
        .file(
            RB,
            "version: 1\nname: t\nsteps:\n  - id: a\n    shell: echo ran >> log\n",
        )
        // A variable whose value is the byte 0xff, set by a shell.
        .wrapped(&["sh", "-c", r#"BAD_BYTES="$(printf '\377')" exec "$0" "$@""#])
        .args(&["run", RB, "--state-dir", "st"])
        .run()
        .success()
        .stderr_contains("environment variable BAD_BYTES is not UTF-8");
    assert_eq!(
        std::fs::read_to_string(out.path().join("log")).unwrap_or_default(),
        "ran\n"
    );
}

#[test]
fn lock_file_names_carried_the_key_text() {
    let out = Test::new()
        .file(
            RB,
            "version: 1\nname: t\nparams:\n  tok: { default: hunter2-lock-key, secret: true }\nlock: \"deploy-{{ params.tok }}\"\nsteps:\n  - id: a\n    shell: ls st/locks > names\n",
        )
        .args(&["run", RB, "--state-dir", "st"])
        .run()
        .success();
    let names = std::fs::read_to_string(out.path().join("names")).unwrap_or_default();
    assert!(
        !names.is_empty(),
        "the lock file was not there while the run held it"
    );
    assert!(!names.contains("hunter2"), "{names}");
    assert!(!names.contains("deploy"), "{names}");
    assert!(
        names
            .trim()
            .strip_suffix(".lock")
            .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit())),
        "{names}"
    );
}

#[test]
fn approver_names_were_not_trimmed_and_could_be_empty() {
    for (args, code, says) in [
        (
            vec!["approve", "r1", "gate", "--as", ""],
            2,
            "--as needs a name",
        ),
        (
            vec!["approve", "r1", "gate", "--as", "   "],
            2,
            "--as needs a name",
        ),
        (vec!["run", RB, "--as", " "], 2, "--as needs a name"),
    ] {
        let out = Test::new()
            .file(
                RB,
                "version: 1\nname: t\nsteps:\n  - id: a\n    shell: echo a\n",
            )
            .args(&args)
            .run();
        assert_eq!(out.code, Some(code), "{args:?}\n{}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}\n{}", out.stderr);
    }
    // "alice " is alice: the report names the approver trimmed.
    let out = Test::new()
        .file(
            RB,
            "version: 1\nname: t\nsteps:\n  - id: gate\n    approval: { message: go?, allow_self_approval: true, timeout: 10s }\n",
        )
        .args(&[
            "run", RB, "--state-dir", "st", "--approve", "gate", "--as", "alice ", "--report",
            "r.json",
        ])
        .run()
        .success();
    let report = std::fs::read_to_string(out.path().join("r.json")).unwrap_or_default();
    assert!(report.contains("\"by\": \"alice\""), "{report}");
}

#[test]
fn control_characters_from_children_reached_the_terminal_raw() {
    let out = Test::new()
        .file(
            RB,
            "version: 1\nname: t\nsteps:\n  - id: a\n    shell: printf 'ok\\rHIDDEN \\033[31mred\\n'\n",
        )
        .args(&["run", RB, "--state-dir", "st"])
        .run()
        .success();
    assert!(!out.stdout.contains('\r'), "{:?}", out.stdout);
    assert!(!out.stdout.contains('\u{1b}'), "{:?}", out.stdout);
    assert!(
        out.stdout.contains(r"ok\rHIDDEN \u{1b}[31mred"),
        "{:?}",
        out.stdout
    );
}

/// Each case: a runbook, then the code and the line (by a needle) that
/// `validate` must report.
#[test]
fn approvers_subscripts_and_slices_escaped_the_template_checks() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "approvers read an undefined param",
            "version: 1\nname: t\nsteps:\n  - id: a\n    approval:\n      approvers: [\"{{ params.nope }}\"]\n",
            "E061",
            "params.nope",
        ),
        (
            "approvers with a syntax error",
            "version: 1\nname: t\nsteps:\n  - id: a\n    approval:\n      approvers: [alice, \"{{ 1 + }}\"]\n",
            "E060",
            "1 +",
        ),
        (
            "steps subscript of a step that may not have run",
            "version: 1\nname: t\nsteps:\n  - id: a\n    shell: echo a\n  - id: b\n    needs: []\n    shell: echo \"{{ steps['a'].stdout }}\"\n",
            "E062",
            "steps['a']",
        ),
        (
            "steps subscript even of an ancestor",
            "version: 1\nname: t\nsteps:\n  - id: a\n    shell: echo a\n  - id: b\n    needs: [a]\n    shell: echo \"{{ steps['a'].stdout }}\"\n",
            "E062",
            "steps['a']",
        ),
        (
            "a slice hid an undefined param",
            "version: 1\nname: t\nsteps:\n  - id: a\n    shell: echo \"{{ params.nope[0:3] }}\"\n",
            "E061",
            "params.nope",
        ),
        (
            "a slice hid a read of a later step",
            "version: 1\nname: t\nsteps:\n  - id: a\n    shell: echo \"{{ steps.b.stdout[1:] }}\"\n  - id: b\n    shell: echo b\n",
            "E062",
            "steps.b",
        ),
        (
            "steps as a whole",
            "version: 1\nname: t\nsteps:\n  - id: a\n    shell: echo a\n  - id: b\n    needs: [a]\n    shell: echo \"{{ steps | tojson }}\"\n",
            "E062",
            "steps | tojson",
        ),
    ];
    for (what, rb, code, needle) in cases {
        eprintln!("case: {what}");
        let line = common::line_of(rb, needle);
        Test::new()
            .file(RB, rb)
            .args(&["validate", RB])
            .run()
            .code(2)
            .stderr_contains(&format!("error[{code}]"))
            .stderr_contains(&format!("{RB}:{line}:"));
    }
}

#[test]
fn an_approver_that_renders_empty_is_refused_before_the_run() {
    let rb = "version: 1\nname: t\nparams:\n  who: { default: \"\" }\nsteps:\n  - id: first\n    shell: echo ran >> log\n  - id: a\n    approval:\n      approvers: [\"{{ params.who }}\"]\n";
    let out = Test::new()
        .file(RB, rb)
        .args(&["run", RB, "--state-dir", "st"])
        .run()
        .code(2)
        .stderr_contains("error[E065]")
        .stderr_contains("approvers[0]")
        .stderr_contains(&format!("{RB}:{}:", common::line_of(rb, "params.who }}")));
    assert!(!out.path().join("log").exists(), "a step ran");
}

#[test]
fn non_utf8_runbook_error_had_no_position() {
    let t = Test::new();
    std::fs::write(
        t.path().join(RB),
        b"version: 1\nname: t\nsteps:\n  - id: a\n    shell: echo caf\xe9 >> log\n",
    )
    .unwrap();
    let out = t
        .args(&["validate", RB])
        .run()
        .code(2)
        .stderr_contains("error[E005]")
        .stderr_contains(&format!("{RB}:5:20"))
        .stderr_contains("byte 0xe9 at offset 55");
    let out = out
        .again()
        .args(&["run", RB, "--state-dir", "st"])
        .run()
        .code(2)
        .stderr_contains(&format!("{RB}:5:20"));
    assert!(!out.path().join("log").exists(), "a step ran");
}

#[test]
fn secret_slices_and_transforms_were_printed() {
    let secret = "abcs3cr3tvalue";
    let rb = r#"version: 1
name: t
params:
  host: { default: "example.org" }
secrets:
  tok: { env: TOK }
steps:
  - id: b
    continue_on_failure: true
    http:
      url: "http://127.0.0.1:1/{{ secrets.tok[1:9] }}"
  - id: a
    shell: |
      echo "prefix {{ secrets.tok[0:6] }}"
      echo "rev {{ secrets.tok | reverse }}"
      echo "cat {{ 'X' ~ secrets.tok[2:] ~ 'Y' }} host {{ params.host }}"
      echo "{{ secrets.tok | replace('s3', 'zz') }}"
      echo "{{ secrets.tok[3:] | upper }}" >&2
      exit 1
"#;
    let out = Test::new()
        .file(RB, rb)
        .env("TOK", secret)
        .args(&["run", RB, "--state-dir", "st", "--report", "report.json"])
        .run()
        .code(1)
        .stdout_contains("prefix ***")
        .stdout_contains("host example.org");
    let derived = [
        "abcs3c".to_string(),
        secret.chars().rev().collect::<String>(),
        "Xcs3cr3tvalueY".to_string(),
        "abczzcr3tvalue".to_string(),
        "S3CR3TVALUE".to_string(),
        "bcs3cr3t".to_string(),
    ];
    let mut sinks = vec![
        ("stdout".to_string(), out.stdout.clone()),
        ("stderr".to_string(), out.stderr.clone()),
    ];
    for entry in walk(out.path()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        sinks.push((
            entry.display().to_string(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    for (name, text) in &sinks {
        if name.ends_with(RB) {
            continue;
        }
        for d in &derived {
            assert!(!text.contains(d.as_str()), "{name} holds {d:?}:\n{text}");
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn shell_length_expansion_failed_validation_without_saying_why() {
    let rb = "version: 1\nname: t\nsteps:\n  - id: a\n    shell: |\n      arr=(1 2)\n      echo ${#arr[@]}\n";
    Test::new()
        .file(RB, rb)
        .args(&["validate", RB])
        .run()
        .code(2)
        .stderr_contains("error[E060]")
        .stderr_contains("{% raw %}${#x}{% endraw %}");
    // The way the help gives works.
    let rb = "version: 1\nname: t\nsteps:\n  - id: a\n    shell: |\n      arr=(1 2)\n      echo {% raw %}${#arr[@]}{% endraw %} > n\n";
    let out = Test::new()
        .file(RB, rb)
        .args(&["run", RB, "--state-dir", "st"])
        .run()
        .success();
    assert_eq!(
        std::fs::read_to_string(out.path().join("n")).unwrap(),
        "2\n"
    );
}
