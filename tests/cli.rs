#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)] // a test fails loudly
//! Command-line conventions (issue 13, part 5), through the real binary:
//! shell completions, the man page, help text on every argument with
//! examples per command, `--version` with the build's commit, broken pipes,
//! and run-id prefixes.
//!
//! The list of commands comes from the clap definition itself
//! (`runbook::cli::Cli`), so a command added later is held to the same
//! conventions without editing this file.

mod common;

use std::process::Command;

use clap::CommandFactory;
use common::{status_json, Output, Test};

/// Every subcommand's name, hidden ones (`man`) included.
fn subcommands() -> Vec<String> {
    runbook::cli::Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect()
}

/// The subcommands a user sees in `runbook --help` (and the man page lists).
fn visible_subcommands() -> Vec<String> {
    runbook::cli::Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// Completions

#[test]
fn bash_completion_registers_its_function() {
    let bin = env!("CARGO_BIN_EXE_runbook");
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"source <("$0" completions bash) && complete -p runbook"#)
        .arg(bin)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bash failed: {stdout}\n{stderr}");
    assert_eq!(stderr, "", "sourcing the script printed errors");
    assert!(
        stdout.contains("-F _runbook runbook"),
        "complete -p does not name the function: {stdout}"
    );
}

#[test]
fn bash_completion_completes_subcommands_and_flags() {
    // What a user's TAB would produce after `runbook ` and `runbook plan --fo`.
    let bin = env!("CARGO_BIN_EXE_runbook");
    let cases: &[(&str, &[&str])] = &[
        ("runbook ''", &["validate", "plan", "status", "completions"]),
        ("runbook plan --fo", &["--format"]),
        ("runbook completions ''", &["bash", "zsh", "fish"]),
    ];
    for (line, expected) in cases {
        let script = format!(
            r#"source <("$0" completions bash)
COMP_WORDS=({line}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
[ -z "${{COMP_WORDS[COMP_CWORD]}}" ] || true
_runbook runbook "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .arg(bin)
            .output()
            .expect("run bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = stdout.lines().collect();
        for want in *expected {
            assert!(
                words.contains(want),
                "completing `{line}` did not offer {want}: {words:?}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn completion_scripts_name_runbook_and_every_command() {
    // zsh and fish are not installed on the test machines (scripts/test.sh
    // does not install them), so their scripts are checked for shape, not
    // run: each opens as its shell expects and names every command.
    let cases = [
        ("bash", "_runbook()", "complete -F _runbook"),
        ("zsh", "#compdef runbook", "_runbook"),
        ("fish", "complete -c runbook", "__fish_runbook"),
    ];
    for (shell, opening, mentions) in cases {
        let out = Test::new().args(&["completions", shell]).run().success();
        let script = &out.stdout;
        assert!(
            script.lines().any(|l| l.starts_with(opening)),
            "{shell}: no line starts with {opening:?}:\n{script}"
        );
        assert!(script.contains(mentions), "{shell}: no {mentions:?}");
        for sub in visible_subcommands() {
            assert!(script.contains(&sub), "{shell}: command {sub} missing");
        }
        out.stderr_eq("");
    }
}

#[test]
fn completions_of_an_unknown_shell_is_a_usage_error() {
    Test::new()
        .args(&["completions", "tcsh"])
        .run()
        .code(2)
        .stderr_contains("invalid value 'tcsh'")
        .stdout_eq("");
}

// ---------------------------------------------------------------------------
// Man page

/// The first line of a roff page that is not the apostrophe preamble
/// roff-rs writes first (`.ie \n(.g .ds Aq \(aq` / `.el .ds Aq '`), which
/// only defines a string for the page to use.
fn title_line(roff: &str) -> &str {
    roff.lines()
        .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el ") && !l.starts_with(".\\\""))
        .unwrap_or("")
}

#[test]
fn man_page_is_roff_titled_runbook_listing_every_command() {
    let out = Test::new().arg("man").run().success().stderr_eq("");
    let title = title_line(&out.stdout);
    assert!(
        title.starts_with(".TH runbook 1 "),
        "first line is not a .TH for runbook(1): {title:?}"
    );
    assert!(title.contains(env!("CARGO_PKG_VERSION")), "{title}");
    for sub in visible_subcommands() {
        assert!(
            out.stdout.contains(&format!("runbook\\-{sub}(1)")),
            "the page does not list {sub}"
        );
    }
}

#[test]
fn man_page_of_each_command() {
    for sub in subcommands() {
        let out = Test::new().args(&["man", &sub]).run().success();
        let title = title_line(&out.stdout);
        assert!(
            title.starts_with(&format!(".TH runbook-{sub} 1 ")),
            "{sub}: {title:?}"
        );
        assert!(out.stdout.contains("Examples:"), "{sub}: no examples");
    }
    Test::new()
        .args(&["man", "nope"])
        .run()
        .code(2)
        .stderr_contains("there is no command `nope`; commands: validate, plan");
}

#[test]
fn man_pages_render_without_warnings() {
    // groff is installed by scripts/test.sh (groff-base); -ww turns on every
    // warning, -z renders without printing.
    for page in [None, Some("plan"), Some("approve")] {
        let mut t = Test::new().arg("man");
        if let Some(p) = page {
            t = t.arg(p);
        }
        let out = t.run().success();
        let path = out.path().join("page.1");
        std::fs::write(&path, &out.stdout).unwrap();
        let groff = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .output()
            .expect("run groff (scripts/test.sh installs groff-base)");
        assert!(groff.status.success(), "groff failed on {page:?}");
        assert_eq!(
            String::from_utf8_lossy(&groff.stderr),
            "",
            "groff warned on {page:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Help text

/// The entries of a help text's `Arguments:`, `Options:` and `Commands:`
/// sections that have no description, on their line or the next (clap puts
/// it on the next line when the entry is long or the help is long).
fn undocumented_entries(help: &str) -> Vec<String> {
    let lines: Vec<&str> = help.lines().collect();
    let mut section = "";
    let mut missing = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = line.trim_end_matches(':');
            continue;
        }
        if !matches!(section, "Arguments" | "Options" | "Commands") {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let entry = line.trim_start();
        let is_entry = (indent == 2 || indent == 6)
            && (entry.starts_with('-')
                || entry.starts_with('<')
                || entry.starts_with('[')
                || section == "Commands");
        if !is_entry {
            continue;
        }
        let same_line = entry
            .split_once("  ")
            .is_some_and(|(_, text)| !text.trim().is_empty());
        let next_line = lines.get(i + 1).is_some_and(|next| {
            let next_indent = next.len() - next.trim_start().len();
            // clap's next-line layout indents descriptions by 10.
            next_indent >= 10 && !next.trim().is_empty()
        });
        if !same_line && !next_line {
            missing.push(entry.to_string());
        }
    }
    missing
}

#[test]
fn help_parser_finds_an_undocumented_entry() {
    // The check below is only as good as this parser: it must see a bare
    // positional and a bare flag, in both of clap's layouts.
    let help = "Usage: x\n\nArguments:\n  <FILE>\n  <DOC>  documented\n\nOptions:\n      --bare\n      --long <V>\n          described below\n  -h, --help  Print help\n";
    assert_eq!(undocumented_entries(help), ["<FILE>", "--bare"]);
}

#[test]
fn every_command_documents_every_argument_and_has_examples() {
    let mut problems = Vec::new();
    for sub in subcommands() {
        for flag in ["-h", "--help"] {
            let out = Test::new().args(&[&sub, flag]).run().success();
            let help = &out.stdout;
            for entry in undocumented_entries(help) {
                problems.push(format!(
                    "runbook {sub} {flag}: `{entry}` has no description"
                ));
            }
            let examples: Vec<&str> = help
                .lines()
                .skip_while(|l| *l != "Examples:")
                .skip(1)
                .take_while(|l| l.starts_with("  "))
                .collect();
            if !examples
                .iter()
                .any(|l| l.contains(&format!("runbook {sub}")))
            {
                problems.push(format!(
                    "runbook {sub} {flag}: no `Examples:` section showing `runbook {sub}`"
                ));
            }
        }
    }
    let top = Test::new().arg("--help").run().success();
    for entry in undocumented_entries(&top.stdout) {
        problems.push(format!("runbook --help: `{entry}` has no description"));
    }
    assert!(
        top.stdout.contains("\nExamples:\n"),
        "runbook --help has no examples"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------
// Version

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    // Built from a git checkout (the CI's clone, a developer's tree) the
    // version names HEAD; from a tarball, `unknown`. build.rs reruns when
    // HEAD moves, so the binary under test is always HEAD's.
    let expected = match (
        git(&["rev-parse", "--short", "HEAD"]),
        git(&["log", "-1", "--format=%cs", "HEAD"]),
    ) {
        (Some(commit), Some(date)) => format!("({commit} {date})"),
        _ => "(unknown)".to_string(),
    };
    let want = format!("runbook {} {expected}\n", env!("CARGO_PKG_VERSION"));
    Test::new()
        .arg("--version")
        .run()
        .success()
        .stdout_eq(&want);
    Test::new().arg("-V").run().success().stdout_eq(&want);
}

// ---------------------------------------------------------------------------
// Broken pipes (docs/decisions.md, "Broken pipes")

/// One step that records the signals it was started with ignored (its
/// `SigIgn` mask from /proc), with a rollback.
const SIGNALS_RB: &str = r#"version: 1
name: signals
steps:
  - id: record
    shell: awk '/^SigIgn/ { print $2 }' /proc/self/status > sigign
    rollback:
      shell: echo undone > undone
"#;

/// A runbook whose plan is far larger than a pipe's buffer (64 KiB), so
/// the binary is still writing when a reader of its first line leaves.
fn big_runbook() -> String {
    let mut yaml = String::from("version: 1\nname: big\nsteps:\n");
    for i in 0..1500 {
        yaml.push_str(&format!(
            "  - id: step_{i:04}\n    shell: echo this is step number {i} of a long runbook\n"
        ));
    }
    yaml
}

/// A test dir with run `r1` of [`SIGNALS_RB`] in state dir `st`, succeeded.
fn finished_run() -> Output {
    Test::new()
        .file("rb.yaml", SIGNALS_RB)
        .file("big.yaml", &big_runbook())
        .args(&["run", "rb.yaml", "--run-id", "r1"])
        .state_dir("st")
        .run()
        .success()
}

#[test]
fn commands_that_only_print_die_of_sigpipe_quietly() {
    let cases: &[&[&str]] = &[
        &["schema"],
        &["schema", "--plan"],
        &["plan", "rb.yaml"],
        &["plan", "big.yaml", "--format", "json"],
        &["validate", "rb.yaml"],
        &["status"],
        &["status", "r1"],
        &["status", "r1", "--format", "json"],
        &["completions", "bash"],
        &["man"],
    ];
    let mut out = finished_run();
    for args in cases {
        out = out
            .again()
            .args(args)
            .state_dir("st")
            .run_into_closed_pipe()
            .died_of_sigpipe();
    }
}

#[test]
fn a_reader_that_leaves_after_one_line_stops_the_output_quietly() {
    // `runbook plan big.yaml | head -1`: the first line arrives, then the
    // binary dies of SIGPIPE with nothing on stderr.
    let cases: &[(&[&str], &str)] = &[
        (&["plan", "big.yaml"], "big"),
        (&["plan", "big.yaml", "--format", "json"], "{"),
        (&["plan", "big.yaml", "--format", "markdown"], "big"),
    ];
    for (args, first) in cases {
        let (line, out) = Test::new()
            .file("big.yaml", &big_runbook())
            .args(args)
            .run_reading_one_line();
        assert!(line.contains(first), "{args:?}: first line {line:?}");
        out.died_of_sigpipe();
    }
}

/// Whether SIGPIPE is in a /proc `SigIgn` mask (hex, bit N-1 for signal N).
fn ignores_sigpipe(mask: &str) -> bool {
    let bits = u64::from_str_radix(mask.trim(), 16).expect("SigIgn is hex");
    bits & (1 << (libc::SIGPIPE - 1)) != 0
}

#[test]
fn a_run_whose_stdout_reader_is_gone_still_runs_to_its_end() {
    // A run keeps SIGPIPE ignored: losing its output must not kill it
    // between two journal records. It finishes and journals as usual, and
    // its steps start with SIGPIPE at its default like any program.
    let out = Test::new()
        .file("rb.yaml", SIGNALS_RB)
        .args(&["run", "rb.yaml", "--run-id", "r1"])
        .state_dir("st")
        .run_into_closed_pipe()
        .success()
        .stderr_not_contains("panicked")
        .stderr_not_contains("failed printing");
    let mask = std::fs::read_to_string(out.path().join("sigign")).expect("the step ran");
    assert!(
        !ignores_sigpipe(&mask),
        "the step inherited SIGPIPE ignored: {mask}"
    );
    let (state, out) = status_json(out, "st", "r1");
    assert_eq!(state["status"], "succeeded", "{state:#}");

    // resume of a finished run and rollback print to stdout too; with the
    // reader gone they end as they would, with their usual exit codes.
    let out = out
        .again()
        .args(&["resume", "r1"])
        .state_dir("st")
        .run_into_closed_pipe()
        .success()
        .stderr_eq("");
    let out = out
        .again()
        .args(&["rollback", "r1", "--yes"])
        .state_dir("st")
        .run_into_closed_pipe()
        .success()
        .stderr_not_contains("panicked");
    assert!(
        out.path().join("undone").exists(),
        "the rollback did not run"
    );
    let out = out
        .again()
        .args(&["rollback", "r1", "--yes"])
        .state_dir("st")
        .run_into_closed_pipe()
        .success()
        .stderr_eq("");
    let (state, _) = status_json(out, "st", "r1");
    assert_eq!(state["status"], "rolled_back", "{state:#}");
}

/// Regression: with stderr gone too (`runbook run x 2>&1 | head -1`), the
/// engine's notes (`plan sha256:...`, the way forward) made `eprintln!`
/// panic mid-run. A failing run must still unwind and end as it would.
#[test]
fn a_run_whose_stdout_and_stderr_are_gone_still_unwinds_and_ends() {
    let yaml = "version: 1\nname: gone\nsteps:\n  - id: a\n    shell: touch made\n    rollback: { shell: touch undone }\n  - id: b\n    shell: exit 3\n";
    let out = Test::new()
        .file("gone.yaml", yaml)
        .args(&["run", "gone.yaml", "--run-id", "g"])
        .state_dir("st")
        .run_into_closed_pipes()
        .code(1);
    assert!(
        out.path().join("undone").exists(),
        "the rollback did not run"
    );
    let (state, _) = status_json(out, "st", "g");
    assert_eq!(state["status"], "rolled_back", "{state:#}");
}

#[test]
fn sigign_mask_parsing() {
    assert!(ignores_sigpipe("0000000000001000"));
    assert!(!ignores_sigpipe("0000000000000000"));
    assert!(!ignores_sigpipe("0000000000000004"));
}

// ---------------------------------------------------------------------------
// Run-id prefixes

#[test]
fn a_unique_prefix_of_a_run_id_names_that_run() {
    let yaml = "version: 1\nname: tiny\nsteps:\n  - id: go\n    shell: 'true'\n    rollback:\n      shell: 'true'\n";
    let run = |t: Test, id: &str| {
        t.args(&["run", "rb.yaml", "--run-id", id])
            .state_dir("st")
            .run()
            .success()
    };
    let mut out = run(Test::new().file("rb.yaml", yaml), "alpha-1");
    for id in ["alpha-2", "beta", "beta-1", "gamma-7"] {
        out = run(out.again(), id);
    }
    // (arguments, exit code, what stdout or stderr says)
    let ambiguous_alpha = "run id `alpha-` is ambiguous: 2 runs in";
    let cases: &[(&[&str], i32, &str)] = &[
        (&["status", "alpha-1"], 0, "run alpha-1  tiny"),
        (&["status", "alpha-2"], 0, "run alpha-2  tiny"),
        (&["status", "g"], 0, "run gamma-7  tiny"),
        (&["status", "gamma-"], 0, "run gamma-7  tiny"),
        // An exact id wins over the longer ids it begins.
        (&["status", "beta"], 0, "run beta  tiny"),
        (&["status", "beta-"], 0, "run beta-1  tiny"),
        (&["status", "alpha-"], 2, ambiguous_alpha),
        (
            &["status", "alpha-"],
            2,
            "start with it: alpha-1, alpha-2; give more of the id",
        ),
        (&["status", "a"], 2, "2 runs in"),
        (&["status", "b"], 2, "start with it: beta, beta-1;"),
        // Unknown and malformed ids keep their errors.
        (&["status", "zeta"], 2, "no run `zeta` in"),
        (&["status", "alpha-10"], 2, "no run `alpha-10` in"),
        (&["status", "a/b"], 2, "`a/b` is not a run id"),
        (
            &["resume", "gam"],
            0,
            "run gamma-7 already finished: succeeded",
        ),
        (&["resume", "alpha-"], 2, ambiguous_alpha),
        (&["resume", "zeta"], 2, "no run `zeta` in"),
        (&["approve", "gam", "go"], 2, "run `gamma-7`"),
        (&["approve", "alpha-", "go"], 2, ambiguous_alpha),
        (&["rollback", "alpha-"], 2, ambiguous_alpha),
        (&["rollback", "zeta"], 2, "no run `zeta` in"),
    ];
    for (args, code, says) in cases {
        out = out.again().args(args).state_dir("st").run().code(*code);
        if !out.stdout.contains(says) && !out.stderr.contains(says) {
            panic!(
                "runbook {args:?} does not say {says:?}\n--- stdout ---\n{}--- stderr ---\n{}",
                out.stdout, out.stderr
            );
        }
    }
    // `rollback beta-` unwinds beta-1 and leaves beta alone.
    let out = out
        .again()
        .args(&["rollback", "beta-", "--yes"])
        .state_dir("st")
        .run()
        .success();
    let (state, out) = status_json(out, "st", "beta-1");
    assert_eq!(state["status"], "rolled_back", "{state:#}");
    let (state, _) = status_json(out, "st", "beta");
    assert_eq!(state["status"], "succeeded", "{state:#}");
}
