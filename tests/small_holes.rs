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
