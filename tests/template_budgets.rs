#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! Rendering is bounded (spec, "Templates and expressions", rev 2): a
//! template nested or chained beyond a limit, or an evaluation past its
//! budget of time, steps, memory or output, is an error: exit 2 when found
//! before the run starts, a failed step during it; never a crash or a hang.
//! Each test is named after a reproduction that crashed or hung before.

mod common;

use std::time::{Duration, Instant};

use common::{report, step, Test};

const RB: &str = "rb.yaml";

fn chain(head: &str, link: &str, n: usize) -> String {
    let mut s = String::with_capacity(head.len() + link.len() * n);
    s.push_str(head);
    for _ in 0..n {
        s.push_str(link);
    }
    s
}

/// A runbook whose step `first` runs before `deep`, whose script is `expr`.
fn two_steps(expr: &str) -> String {
    format!(
        "version: 1\nname: t\nparams:\n  x:\n    type: string\n    default: a\nsteps:\n  - id: first\n    shell: echo first >> log\n  - id: deep\n    needs: [first]\n    shell: \"echo {{{{ {expr} }}}}\"\n"
    )
}

const LINKS: &[(&str, &str)] = &[
    ("params.x", " | upper"),
    ("params.x", " + 'a'"),
    ("params.x", " ~ 'a'"),
    ("params", ".a"),
    ("params", "['a']"),
    ("params.x", " and params.x"),
];

#[test]
fn nine_thousand_chained_filters_abort_run_after_earlier_steps() {
    for (head, link) in LINKS {
        let out = Test::new()
            .file(RB, &two_steps(&chain(head, link, 9_000)))
            .args(&["run", RB, "--state-dir", "st"])
            .run()
            .code(2)
            .stderr_contains("error[E067]")
            .stderr_contains("chains more than 256");
        assert!(
            !out.path().join("log").exists(),
            "`{link}`: a step ran before the template was refused"
        );
    }
}

#[test]
fn fifty_thousand_chained_operators_crash_validate_and_plan() {
    for (head, link) in LINKS {
        let yaml = two_steps(&chain(head, link, 50_000));
        for cmd in ["validate", "plan"] {
            Test::new()
                .file(RB, &yaml)
                .args(&[cmd, RB])
                .run()
                .code(2)
                .stderr_contains("error[E067]");
        }
    }
}

#[test]
fn deeply_nested_brackets_are_refused_before_parsing() {
    let expr = format!("{}params.x{}", "(".repeat(50_000), ")".repeat(50_000));
    Test::new()
        .file(RB, &two_steps(&expr))
        .args(&["validate", RB])
        .run()
        .code(2)
        .stderr_contains("error[E067]")
        .stderr_contains("nests brackets more than 32 deep");
}

#[test]
fn oversized_template_is_refused() {
    let yaml = two_steps(&format!("params.x ~ '{}'", "y".repeat(200_000)));
    Test::new()
        .file(RB, &yaml)
        .args(&["validate", RB])
        .run()
        .code(2)
        .stderr_contains("error[E067]")
        .stderr_contains("over the limit of 131072 bytes");
}

const DOUBLING: &str = r#"{% set s = namespace(v="x") %}{% for i in range(100) %}{% set s.v = s.v ~ s.v %}{% endfor %}{{ s.v }}"#;

#[test]
fn string_doubling_loop_grows_to_many_gigabytes() {
    let yaml = format!(
        "version: 1\nname: t\nsteps:\n  - id: first\n    shell: echo first >> log\n  - id: grow\n    needs: [first]\n    shell: 'echo {DOUBLING}'\n"
    );
    // Pre-flight renders it (it reads nothing the run decides): exit 2, before any step.
    for cmd in ["run", "plan"] {
        let out = Test::new()
            .file(RB, &yaml)
            .args(&[cmd, RB, "--state-dir", "st"])
            .run()
            .code(2)
            .stderr_contains("template ran out of its memory budget (64 MiB)");
        assert!(!out.path().join("log").exists());
    }
}

#[test]
fn string_doubling_loop_reading_steps_is_found_before_the_run() {
    // Reading `steps.first` defers pre-flight's render to the run, but the
    // plan the run builds previews the script (with `<steps.first.status>`
    // standing in), and that render blows the memory budget: found before
    // the run starts, so exit 2 and nothing ran.
    let tpl = DOUBLING.replace("{{ s.v }}", "{{ s.v }}{{ steps.first.status }}");
    let yaml = format!(
        "version: 1\nname: t\nsteps:\n  - id: first\n    shell: echo first >> log\n  - id: grow\n    needs: [first]\n    shell: 'echo {tpl}'\n  - id: after\n    needs: [grow]\n    shell: echo after >> log\n"
    );
    let out = Test::new()
        .file(RB, &yaml)
        .args(&["run", RB, "--state-dir", "st", "--report", "report.json"])
        .run()
        .code(2)
        .stderr_contains("memory budget");
    assert!(!out.path().join("log").exists(), "a step ran");
    assert!(!out.path().join("st").exists(), "the state dir was created");
}

#[test]
fn output_over_one_mebibyte_is_an_error() {
    let tpl = "{% for i in range(2000) %}{{ params.x }}{% endfor %}";
    let yaml = format!(
        "version: 1\nname: t\nparams:\n  x:\n    type: string\n    default: '{}'\nsteps:\n  - id: big\n    shell: 'echo {tpl}'\n",
        "z".repeat(1000)
    );
    Test::new()
        .file(RB, &yaml)
        .args(&["plan", RB])
        .run()
        .code(2)
        .stderr_contains("template output exceeds its budget of 1 MiB");
}

const NESTED: &str =
    "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}";

#[test]
fn nested_range_loops_in_vars_make_plan_hang() {
    let yaml = format!(
        "version: 1\nname: t\nvars:\n  spin: '{}'\nsteps:\n  - id: a\n    shell: echo {{{{ vars.spin | length }}}}\n",
        NESTED.replace("{{ i }}", "")
    );
    let started = Instant::now();
    Test::new()
        .file(RB, &yaml)
        .args(&["plan", RB])
        .run()
        .code(2)
        .stderr_contains("template ran out of its evaluation budget (1000000 steps)");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn nested_range_loops_ignore_the_step_timeout_and_sigterm() {
    let tpl = NESTED.replace("{{ i }}", "{% set y = steps.first.status %}");
    let yaml = format!(
        "version: 1\nname: t\nsteps:\n  - id: first\n    shell: echo first >> log\n  - id: spin\n    needs: [first]\n    timeout: 2s\n    shell: 'echo {tpl}'\n"
    );
    let started = Instant::now();
    let out = Test::new()
        .file(RB, &yaml)
        .args(&["run", RB, "--state-dir", "st", "--report", "report.json"])
        .spawn()
        .wait()
        .code(1);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the render was bounded"
    );
    let r = report(&out);
    let spin = step(&r, "spin");
    assert!(
        spin.to_string().contains("evaluation budget"),
        "the step's error names the budget: {spin:#}"
    );
}

#[test]
fn sigterm_during_a_long_render_is_acted_on() {
    // A render that keeps the step busy for the whole budget, then a slow
    // step: SIGTERM during the run still interrupts it.
    let tpl = "{% for i in range(90000) %}{% set y = steps.first.status %}{% endfor %}";
    let yaml = format!(
        "version: 1\nname: t\nsteps:\n  - id: first\n    shell: touch started\n  - id: spin\n    needs: [first]\n    shell: 'sleep 30 # {tpl}'\n"
    );
    let mut running = Test::new()
        .file(RB, &yaml)
        .args(&["run", RB, "--state-dir", "st"])
        .spawn();
    running.wait_for_file("started", Duration::from_secs(30));
    running.signal(libc::SIGTERM);
    let started = Instant::now();
    let out = running.wait();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_ne!(out.code, Some(0));
    assert_ne!(out.code, Some(134));
}

#[test]
fn include_import_extends_pass_validate() {
    for tag in [
        "{% include 'x.j2' %}",
        "{% import 'x.j2' as m %}",
        "{% extends 'x.j2' %}",
        "{% from 'x.j2' import m %}",
    ] {
        let yaml =
            format!("version: 1\nname: t\nsteps:\n  - id: a\n    shell: \"echo hi {tag}\"\n");
        let name = tag.split_whitespace().nth(1).unwrap();
        Test::new()
            .file(RB, &yaml)
            .args(&["validate", RB])
            .run()
            .code(2)
            .stderr_contains("error[E068]")
            .stderr_contains(&format!("`{{% {name} %}}` loads another template"))
            .stderr_contains("line 1, column 12 of the template")
            .stderr_contains("rb.yaml:5:");
    }
}

/// The render worker is started only for a runbook that renders: each
/// step prints the names of its parent's (the engine's) threads.
#[test]
fn the_template_worker_starts_only_for_a_runbook_with_templates() {
    let threads = "cat /proc/$PPID/task/*/comm";
    let plain = format!("version: 1\nname: t\nsteps:\n  - id: a\n    shell: '{threads}'\n");
    let templated = format!(
        "version: 1\nname: t\nvars:\n  who: '{{{{ run.id }}}}'\nsteps:\n  - id: a\n    shell: '{threads} # {{{{ vars.who }}}}'\n"
    );
    Test::new()
        .file(RB, &plain)
        .args(&["run", RB, "--state-dir", "st"])
        .run()
        .success()
        .stdout_contains("runbook")
        .stdout_not_contains("runbook-templat");
    Test::new()
        .file(RB, &templated)
        .args(&["run", RB, "--state-dir", "st"])
        .run()
        .success()
        .stdout_contains("runbook-templat");
}
