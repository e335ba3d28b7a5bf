#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! `runbook validate`: every malformed file under tests/malformed is rejected
//! with the right code at the right line, and with nothing else; several
//! errors are reported in one run; warnings alone pass; `--format json` and
//! `--format github`; directories are walked for the runbooks in them.

mod common;

use std::collections::BTreeSet;

use common::{read_repo_file, repo_root, Test};

/// (file under tests/malformed, code, line). Each file breaks exactly one
/// rule, so each must produce exactly this one error.
const MALFORMED: &[(&str, &str, u32)] = &[
    // YAML and input budgets
    ("yaml_syntax.yaml", "E002", 7),
    ("yaml_unclosed_flow.yaml", "E002", 7),
    ("tab_indent.yaml", "E002", 6),
    ("multiple_documents.yaml", "E002", 8),
    ("unknown_alias.yaml", "E002", 6),
    ("alias_bomb.yaml", "E003", 11),
    ("too_deep.yaml", "E003", 5),
    ("duplicate_key.yaml", "E004", 8),
    // unknown fields
    ("unknown_field_top.yaml", "E010", 4),
    ("unknown_field_step.yaml", "E010", 8),
    ("unknown_field_rollback.yaml", "E010", 9),
    ("unknown_field_http.yaml", "E010", 10),
    ("unknown_field_expect.yaml", "E010", 10),
    ("unknown_field_metric.yaml", "E010", 11),
    ("unknown_field_approval.yaml", "E010", 9),
    ("unknown_field_flag.yaml", "E010", 9),
    ("unknown_field_provider.yaml", "E010", 5),
    ("unknown_field_param.yaml", "E010", 5),
    ("unknown_field_retry.yaml", "E010", 9),
    ("unknown_field_defaults.yaml", "E010", 6),
    ("unknown_field_lock.yaml", "E010", 6),
    // wrong types
    ("root_not_mapping.yaml", "E011", 2),
    ("wrong_type_version.yaml", "E011", 2),
    ("wrong_type_steps.yaml", "E011", 5),
    ("wrong_type_needs.yaml", "E011", 8),
    ("wrong_type_bool.yaml", "E011", 7),
    ("wrong_type_concurrency.yaml", "E011", 4),
    ("wrong_type_rollback.yaml", "E011", 7),
    ("wrong_type_samples.yaml", "E011", 11),
    ("empty_rollback_list.yaml", "E011", 7),
    // missing fields
    ("missing_version.yaml", "E012", 2),
    ("missing_name.yaml", "E012", 2),
    ("missing_steps.yaml", "E012", 2),
    ("missing_id.yaml", "E012", 7),
    ("missing_metric_condition.yaml", "E012", 9),
    ("missing_lock_key.yaml", "E012", 5),
    // values outside what is allowed
    ("bad_backoff.yaml", "E013", 7),
    ("bad_on_no_data.yaml", "E013", 11),
    ("param_bad_type.yaml", "E013", 5),
    ("provider_unknown_kind.yaml", "E013", 5),
    ("empty_enum.yaml", "E013", 5),
    ("empty_interpreter.yaml", "E013", 6),
    ("bad_http_status.yaml", "E013", 9),
    ("bad_http_status_class.yaml", "E013", 9),
    ("bad_http_method.yaml", "E013", 8),
    ("bad_http_url.yaml", "E013", 7),
    ("json_pointer_no_slash.yaml", "E013", 11),
    ("unsupported_version.yaml", "E014", 2),
    // ids, kinds and the graph
    ("invalid_id.yaml", "E020", 7),
    ("invalid_param_name.yaml", "E020", 5),
    ("invalid_secret_name.yaml", "E020", 5),
    ("duplicate_id.yaml", "E021", 9),
    ("duplicate_id_finally.yaml", "E021", 10),
    ("no_kind.yaml", "E022", 7),
    ("two_kinds.yaml", "E022", 5),
    ("rollback_no_kind.yaml", "E022", 8),
    ("unknown_need.yaml", "E023", 8),
    ("needs_in_finally.yaml", "E023", 9),
    ("needs_on_failure_step.yaml", "E023", 8),
    ("self_need.yaml", "E024", 8),
    ("cycle_two.yaml", "E024", 6),
    ("cycle_three.yaml", "E024", 9),
    // durations, retries, numbers
    ("bad_duration_timeout.yaml", "E025", 7),
    ("bad_duration_no_unit.yaml", "E025", 5),
    ("bad_duration_retry.yaml", "E025", 7),
    ("bad_duration_interval.yaml", "E025", 11),
    ("defaults_unused_bad_timeout.yaml", "E025", 5),
    ("bad_duration_lock_wait.yaml", "E025", 6),
    ("max_delay_lt_delay.yaml", "E026", 11),
    ("attempts_zero.yaml", "E027", 8),
    ("concurrency_zero.yaml", "E027", 4),
    ("samples_zero.yaml", "E027", 11),
    ("approval_required_zero.yaml", "E027", 8),
    ("failure_limit_ge_samples.yaml", "E027", 13),
    // parameters
    ("param_default_type.yaml", "E030", 5),
    ("param_enum_type.yaml", "E030", 7),
    ("param_default_not_in_enum.yaml", "E031", 8),
    // providers
    ("unknown_provider.yaml", "E040", 9),
    ("metric_no_provider.yaml", "E040", 7),
    ("provider_wrong_kind.yaml", "E041", 10),
    ("provider_ambiguous.yaml", "E042", 10),
    ("redis_no_url.yaml", "E043", 5),
    ("provider_bad_scheme.yaml", "E043", 5),
    // approvals
    ("approval_quorum.yaml", "E050", 9),
    ("approval_duplicate_approvers.yaml", "E050", 8),
    // templates and expressions
    ("template_syntax.yaml", "E060", 8),
    ("undefined_param.yaml", "E061", 8),
    ("undefined_var.yaml", "E061", 8),
    ("undefined_secret.yaml", "E061", 12),
    ("undefined_root.yaml", "E061", 6),
    ("defaults_undefined_template.yaml", "E061", 7),
    ("steps_unknown.yaml", "E061", 8),
    ("step_outside_rollback.yaml", "E061", 6),
    ("value_outside_condition.yaml", "E061", 9),
    ("var_reads_later_var.yaml", "E061", 5),
    ("run_unknown_key.yaml", "E061", 9),
    ("steps_not_ancestor.yaml", "E062", 10),
    ("steps_in_var.yaml", "E062", 5),
    ("rollback_reads_descendant.yaml", "E062", 8),
    ("finally_reads_later.yaml", "E062", 9),
    ("bad_when.yaml", "E063", 8),
    ("bad_condition.yaml", "E063", 10),
    ("when_with_braces.yaml", "E063", 8),
    // secrets
    ("secret_both.yaml", "E070", 5),
    ("secret_neither.yaml", "E070", 5),
    // one broken part is one error, not a cascade through what refers to it
    ("broken_step_no_cascade.yaml", "E011", 9),
    ("broken_param_no_cascade.yaml", "E013", 5),
    ("broken_provider_no_cascade.yaml", "E011", 5),
];

fn malformed_dir() -> std::path::PathBuf {
    repo_root().join("tests/malformed")
}

#[test]
fn malformed_files_are_rejected_with_their_code_and_line() {
    let mut failures = Vec::new();
    for &(file, code, line) in MALFORMED {
        let rel = format!("malformed/{file}");
        let out = Test::new()
            .file(&rel, &read_repo_file(&format!("tests/malformed/{file}")))
            .args(&["validate", &rel])
            .run();
        let mut problems = Vec::new();
        if out.code != Some(2) {
            problems.push(format!("exit code {:?}, expected 2", out.code));
        }
        if !out.stderr.contains(&format!("error[{code}]")) {
            problems.push(format!("no `error[{code}]`"));
        }
        if !out.stderr.contains(&format!("--> {rel}:{line}:")) {
            problems.push(format!("no `--> {rel}:{line}:`"));
        }
        let errors = out.errors();
        if errors != [(code.to_string(), line)] {
            problems.push(format!(
                "expected exactly one error ({code} at line {line}), got {errors:?}"
            ));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{file}: {}\n{}",
                problems.join("; "),
                out.stderr.trim_end()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} malformed files misreported:\n\n{}",
        failures.len(),
        MALFORMED.len(),
        failures.join("\n\n")
    );
}

#[test]
fn table_and_malformed_directory_agree() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(malformed_dir())
        .expect("read tests/malformed")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let in_table: BTreeSet<String> = MALFORMED.iter().map(|r| r.0.to_string()).collect();
    assert_eq!(
        in_table.len(),
        MALFORMED.len(),
        "a file is listed twice in MALFORMED"
    );
    let untested: Vec<_> = on_disk.difference(&in_table).collect();
    let missing: Vec<_> = in_table.difference(&on_disk).collect();
    assert!(
        untested.is_empty() && missing.is_empty(),
        "files without a row: {untested:?}; rows without a file: {missing:?}"
    );
    assert!(MALFORMED.len() >= 45, "keep at least 45 malformed files");
}

#[test]
fn malformed_files_say_what_they_break() {
    for &(file, _, _) in MALFORMED {
        let text = read_repo_file(&format!("tests/malformed/{file}"));
        assert!(
            text.starts_with("# "),
            "{file}: start with a `# ` comment saying which rule it breaks"
        );
    }
}

const SEVERAL: &str = r#"version: 1
name: several
params:
  environment: { type: string, enum: [staging, production], default: prod }
providers:
  flags: { kind: redis }
steps:
  - id: build
    shell: echo build
    timeout: 5 minutes
  - id: deploy
    neds: [build]
    shell: echo {{ params.enviroment }}
  - id: verify
    needs: [deploi]
    http:
      url: http://127.0.0.1:8080/
      method: FETCH
  - id: on
    flag: { name: new_checkout, value: true }
finally:
  - id: build
    shell: echo again
"#;

#[test]
fn several_independent_errors_are_reported_in_one_run() {
    let out = Test::new()
        .file("several.yaml", SEVERAL)
        .args(&["validate", "several.yaml"])
        .run()
        .code(2)
        .stderr_contains("invalid: several.yaml (8 errors)");
    let expected: Vec<(String, u32)> = [
        ("E031", 4),
        ("E043", 6),
        ("E025", 10),
        ("E010", 12),
        ("E061", 13),
        ("E023", 15),
        ("E013", 18),
        ("E021", 22),
    ]
    .iter()
    .map(|(c, l)| (c.to_string(), *l))
    .collect();
    assert_eq!(out.errors(), expected, "stderr:\n{}", out.stderr);
}

#[test]
fn diagnostics_show_the_source_line_a_caret_and_help() {
    Test::new()
        .file(
            "x.yaml",
            "version: 1\nname: x\nsteps:\n  - id: a\n    shell: echo a\n  - id: b\n    neds: [a]\n    shell: echo b\n",
        )
        .args(&["validate", "x.yaml"])
        .run()
        .code(2)
        .stderr_eq(
            "error[E010]: unknown field `neds`\n --> x.yaml:7:5\n  |\n7 |     neds: [a]\n  |     ^^^^\n  |\n  = help: did you mean `needs`?\n\ninvalid: x.yaml (1 error)\n",
        )
        .stdout_eq("");
}

#[test]
fn an_unclosed_flow_collection_says_where_it_opened() {
    let rel = "tests/malformed/yaml_unclosed_flow.yaml";
    Test::new()
        .repo_file(rel)
        .args(&["validate", rel])
        .run()
        .code(2)
        .stderr_contains("note: inside the `[` opened at line 6, column 12; is a `]` missing?");
}

#[test]
fn a_tab_is_pointed_at_where_it_is() {
    let rel = "tests/malformed/tab_indent.yaml";
    Test::new()
        .repo_file(rel)
        .args(&["validate", rel])
        .run()
        .code(2)
        .stderr_contains(&format!("--> {rel}:6:1\n"));
}

#[test]
fn warnings_alone_do_not_fail() {
    Test::new()
        .file(
            "warn.yaml",
            "version: 1\nname: warn\nparams:\n  image: { type: string, required: true, default: latest }\nsteps:\n  - id: a\n    shell: echo {{ params.image }}\n",
        )
        .args(&["validate", "warn.yaml"])
        .run()
        .success()
        .stdout_contains("ok: warn.yaml (1 steps)")
        .stderr_contains("warning[E013]: parameter `image` is required and has a default")
        .stderr_contains("--> warn.yaml:4:3")
        .stderr_not_contains("error[");
}

#[test]
fn a_valid_file_passes_quietly() {
    Test::new()
        .file(
            "ok.yaml",
            "version: 1\nname: ok\nsteps:\n  - id: a\n    shell: echo a\n",
        )
        .args(&["validate", "ok.yaml"])
        .run()
        .success()
        .stdout_eq("ok: ok.yaml (1 steps)\n")
        .stderr_eq("");
}

#[test]
fn several_files_are_checked_and_any_invalid_one_fails() {
    Test::new()
        .file(
            "ok.yaml",
            "version: 1\nname: ok\nsteps:\n  - id: a\n    shell: echo a\n",
        )
        .file("bad.yaml", SEVERAL)
        .args(&["validate", "ok.yaml", "bad.yaml"])
        .run()
        .code(2)
        .stdout_contains("ok: ok.yaml (1 steps)")
        .stderr_contains("invalid: bad.yaml (8 errors)");
}

#[test]
fn an_unreadable_file_is_invalid() {
    Test::new()
        .args(&["validate", "missing.yaml"])
        .run()
        .code(2)
        .stderr_contains("error[E001]")
        .stderr_contains("missing.yaml");
}

#[test]
fn validate_format_json_lists_every_diagnostic() {
    let out = Test::new()
        .file(
            "warn.yaml",
            "version: 1\nname: warn\nparams:\n  image: { type: string, required: true, default: latest }\nsteps:\n  - id: a\n    shell: echo {{ params.image }}\n",
        )
        .file("bad.yaml", SEVERAL)
        .args(&["validate", "--format", "json", "warn.yaml", "bad.yaml"])
        .run()
        .code(2);
    assert!(
        !out.stderr.contains("error["),
        "json output should not also render text diagnostics:\n{}",
        out.stderr
    );
    let json: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", out.stdout));
    let files = json.as_array().expect("an array, one entry per file");
    assert_eq!(files.len(), 2);

    assert_eq!(files[0]["file"], "warn.yaml");
    assert_eq!(files[0]["valid"], true);
    let warn = &files[0]["diagnostics"][0];
    assert_eq!(warn["severity"], "warning");
    assert_eq!(warn["code"], "E013");
    assert_eq!(warn["span"]["line"], 4);
    assert_eq!(warn["span"]["column"], 3);

    assert_eq!(files[1]["file"], "bad.yaml");
    assert_eq!(files[1]["valid"], false);
    let diags = files[1]["diagnostics"].as_array().expect("diagnostics");
    let got: Vec<(&str, u64)> = diags
        .iter()
        .map(|d| {
            (
                d["code"].as_str().expect("code"),
                d["span"]["line"].as_u64().expect("line"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("E031", 4),
            ("E043", 6),
            ("E025", 10),
            ("E010", 12),
            ("E061", 13),
            ("E023", 15),
            ("E013", 18),
            ("E021", 22)
        ]
    );
    assert!(diags.iter().all(|d| d["severity"] == "error"));
    let neds = &diags[3];
    assert_eq!(neds["message"], "unknown field `neds`");
    assert_eq!(neds["help"], "did you mean `needs`?");
    assert_eq!(neds["span"]["column"], 5);
}

#[test]
fn validate_format_json_of_a_valid_file_exits_zero() {
    let out = Test::new()
        .file(
            "ok.yaml",
            "version: 1\nname: ok\nsteps:\n  - id: a\n    shell: echo a\n",
        )
        .args(&["validate", "--format", "json", "ok.yaml"])
        .run()
        .success();
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(
        json,
        serde_json::json!([{ "file": "ok.yaml", "valid": true, "diagnostics": [] }])
    );
}

const OK: &str = "version: 1\nname: ok\nsteps:\n  - id: a\n    shell: echo a\n";
const WORKFLOW: &str = "name: ci\non: push\njobs:\n  test:\n    steps:\n      - run: make\n";
const INVALID: &str =
    "version: 1\nname: bad\nsteps:\n  - id: a\n    neds: [b]\n    shell: echo a\n";

/// `validate DIR` walks it in name order, takes the files that look like
/// runbooks, notes the YAML it skips, and keeps out of hidden directories,
/// `target` and `node_modules` (each holds an invalid runbook here, which
/// would fail the run if it were read). A symlink to a file is that file; one
/// to a directory is not followed (here it would loop).
#[test]
fn a_directory_is_walked_for_runbooks_in_name_order() {
    let t = Test::new()
        .file("rb/b.yaml", OK)
        .file("rb/a.yml", OK)
        .file("rb/sub/c.yaml", OK)
        .file("rb/sub/workflow.yml", WORKFLOW)
        .file("rb/ci.yml", WORKFLOW)
        .file("rb/notes.txt", INVALID)
        .file("rb/.git/x.yaml", INVALID)
        .file("rb/.hidden/x.yaml", INVALID)
        .file("rb/target/x.yaml", INVALID)
        .file("rb/node_modules/x.yaml", INVALID);
    std::os::unix::fs::symlink("b.yaml", t.path().join("rb/link.yaml")).unwrap();
    std::os::unix::fs::symlink("..", t.path().join("rb/sub/loop")).unwrap();
    t.args(&["validate", "rb"])
        .run()
        .success()
        .stdout_eq(
            "ok: rb/a.yml (1 steps)\nok: rb/b.yaml (1 steps)\nok: rb/link.yaml (1 steps)\nok: rb/sub/c.yaml (1 steps)\n",
        )
        .stderr_eq(
            "note: skipped rb/ci.yml: not a runbook (no top-level version: and steps:)\n\
             note: skipped rb/sub/workflow.yml: not a runbook (no top-level version: and steps:)\n",
        );
}

#[test]
fn files_and_directories_mix_in_the_order_given() {
    Test::new()
        .file("z.yaml", OK)
        .file("d/ok.yaml", OK)
        .file("d/bad.yaml", INVALID)
        .args(&["validate", "z.yaml", "d"])
        .run()
        .code(2)
        .stdout_eq("ok: z.yaml (1 steps)\nok: d/ok.yaml (1 steps)\n")
        .stderr_contains("error[E010]: unknown field `neds`")
        .stderr_contains("--> d/bad.yaml:5:5")
        .stderr_contains("invalid: d/bad.yaml (1 error)");
}

/// A file named on the command line is validated whatever it looks like.
#[test]
fn a_file_named_explicitly_is_always_validated() {
    Test::new()
        .file("ci.yml", WORKFLOW)
        .args(&["validate", "ci.yml"])
        .run()
        .code(2)
        .stderr_contains("error[E012]")
        .stderr_contains("invalid: ci.yml (")
        .stderr_not_contains("note: skipped");
}

/// Files written into a test's directory: (path, contents).
type Files = &'static [(&'static str, &'static str)];

/// Directories with no runbook fail with a message that says why: on
/// stderr, or as a workflow command on stdout with `--format github`.
#[test]
fn a_directory_without_runbooks_is_an_error() {
    const WHY: &str =
        "no runbook in d: no *.yaml or *.yml file under it has top-level version: and steps:";
    // (files in the directory, format)
    let cases: &[(Files, &str)] = &[
        (&[], "text"),
        (&[("d/ci.yml", WORKFLOW), ("d/readme.md", "# hi\n")], "text"),
        (&[("d/.git/x.yaml", OK), ("d/target/x.yaml", OK)], "json"),
        (&[], "github"),
    ];
    for (files, format) in cases {
        let mut t = Test::new();
        std::fs::create_dir_all(t.path().join("d")).unwrap();
        for (rel, text) in *files {
            t = t.file(rel, text);
        }
        let out = t.args(&["validate", "--format", format, "d"]).run().code(2);
        let (text, want) = if *format == "github" {
            (
                &out.stdout,
                format!("::error title=runbook validate::{WHY}\n"),
            )
        } else {
            (&out.stderr, format!("error: {WHY}\n"))
        };
        assert!(
            text.contains(&want),
            "{files:?} --format {format}: no {want:?}:\n--- stdout\n{}--- stderr\n{}",
            out.stdout,
            out.stderr
        );
    }
}

/// `--format github`: one workflow command per diagnostic on stdout, with
/// its position and code, and the usual summary lines.
#[test]
fn format_github_prints_one_annotation_per_diagnostic() {
    let warn = "version: 1\nname: warn\nparams:\n  image: { type: string, required: true, default: latest }\nsteps:\n  - id: a\n    shell: echo {{ params.image }}\n";
    // (file, contents, the whole of stdout)
    let cases: &[(&str, &str, &str)] = &[
        ("ok.yaml", OK, "ok: ok.yaml (1 steps)\n"),
        (
            "bad.yaml",
            INVALID,
            "::error file=bad.yaml,line=5,col=5,endLine=5,endColumn=8,title=runbook E010::unknown field `neds`%0Ahelp: did you mean `needs`?\n",
        ),
        (
            "warn.yaml",
            warn,
            "::warning file=warn.yaml,line=4,col=3,endLine=4,endColumn=7,title=runbook E013::parameter `image` is required and has a default; the default is never used\nok: warn.yaml (1 steps)\n",
        ),
        (
            "pct.yaml",
            "version: 1\nname: p\nsteps:\n  - id: a\n    shell: echo a\n    timeout: 5%\n",
            "::error file=pct.yaml,line=6,col=14,endLine=6,endColumn=15,title=runbook E025::`5%25` is not a duration; write e.g. `30s`, `5m`, `2h`, `1d`\n",
        ),
    ];
    for (file, contents, want) in cases {
        let out = Test::new()
            .file(file, contents)
            .args(&["validate", "--format", "github", file])
            .run();
        assert_eq!(out.stdout, *want, "{file}");
        assert!(
            !out.stderr.contains("-->"),
            "github output should not also render text diagnostics:\n{}",
            out.stderr
        );
    }
    Test::new()
        .file("bad.yaml", INVALID)
        .args(&["validate", "--format", "github", "bad.yaml"])
        .run()
        .code(2)
        .stderr_eq("invalid: bad.yaml (1 error)\n");
}

/// A runbook author controls the text of a diagnostic (here an unknown key
/// with a line break in it): on a GitHub runner a raw line break would
/// start a workflow command of the author's. Every command stays one line.
#[test]
fn format_github_keeps_a_crafted_message_on_one_line() {
    let out = Test::new()
        .file(
            "inj.yaml",
            "version: 1\nname: n\n\"bad\\n::warning::x\\r\\n::add-mask::y%0A\": 1\nsteps:\n  - id: a\n    shell: echo a\n",
        )
        .args(&["validate", "--format", "github", "inj.yaml"])
        .run()
        .code(2);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one command, one line:\n{}", out.stdout);
    assert!(
        lines[0].starts_with("::error file=inj.yaml,line=3,col=1,"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("::unknown field `bad%0A::warning::x%0D%0A::add-mask::y%250A`%0Ahelp: "),
        "{}",
        lines[0]
    );
    assert!(
        !out.stdout.contains('\r') && !out.stderr.contains('\r'),
        "{:?}",
        out.stdout
    );
}
