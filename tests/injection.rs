#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! Injection corpus: hostile template values in every shell context a
//! runbook author writes. A value must reach the script as data: nothing it
//! holds may run (no `PWNED` file anywhere under the test dir), and where the
//! script can observe it, it sees exactly the value (written with
//! `printf '%s'` to `out/<context>` and compared byte for byte).
//!
//! Contexts that accept every payload share one runbook per payload (one
//! step each, ending in a failing step so rollback bodies, `on_failure` and
//! `finally` run too). Contexts that refuse some values (arithmetic, quoted
//! heredocs) or that are suspected to be unsafe run on their own.

mod common;

use common::{Output, Test};
use std::path::Path;

const RB: &str = "rb.yaml";

/// `(name, value)`. Every value that could run code tries to `touch PWNED`.
fn payloads() -> Vec<(&'static str, String)> {
    let long: String = "$(touch PWNED)'\"`touch PWNED`\\ ;* "
        .repeat(100 * 1024 / 36)
        .chars()
        .take(100 * 1024)
        .collect();
    vec![
        ("cmdsub", "$(touch PWNED)".into()),
        ("backticks", "`touch PWNED`".into()),
        ("squote_break", "'; touch PWNED; '".into()),
        ("dquote_break", "\"; touch PWNED; \"".into()),
        ("newline", "\n touch PWNED #".into()),
        ("ansic", "$'\\x27'; touch PWNED; $'\\x27'".into()),
        ("ifs", "${IFS}touch${IFS}PWNED".into()),
        ("glob_star", "*".into()),
        ("glob_qmark", "?".into()),
        ("opt_n", "-n".into()),
        ("opt_e", "-e".into()),
        ("heredoc_end", "EOF\ntouch PWNED".into()),
        ("heredoc_end_alone", "EOF".into()),
        ("subscript", "a[$(touch PWNED)]".into()),
        ("backslashes", "\\\\".into()),
        ("trailing_backslash", "x\\".into()),
        ("cr", "a\rb\r".into()),
        ("unicode", "héllo ☃ 𝄞 \u{200b}\u{202e}kcab".into()),
        ("long", long),
        ("empty", String::new()),
        ("spaces", "  lead and trail  ".into()),
        ("braces", "}} {{ 7*7 }} {% raw %}{{".into()),
        ("private_use", "\u{E000}0.1\u{E001}".into()),
        ("semicolon", "; touch PWNED".into()),
        ("redirect", "> PWNED".into()),
        ("integer", "42".into()),
    ]
}

/// Every file named PWNED* under `dir`.
fn pwned(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with("PWNED") {
                found.push(p.display().to_string());
            }
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    found
}

fn read_out(out: &Output, name: &str) -> Option<Vec<u8>> {
    std::fs::read(out.path().join("out").join(name)).ok()
}

/// What a context lets the script observe.
#[derive(Clone, Copy)]
enum Expect {
    /// `out/<name>` holds exactly the value.
    Exact,
    /// The value then a newline (heredocs, here-strings).
    Line,
    /// `<` value `>`.
    Wrapped,
    /// The value twice, `|` between.
    Twice,
    /// JSON that decodes to the value.
    Json,
    /// Nothing to observe; `out/<name>` exists.
    Ran,
    /// A quoted heredoc: refused when a line of the value is `EOF`
    /// (after stripping tabs when `bool`), else the value then a newline.
    QuotedHeredoc(bool),
}

struct Ctx {
    name: &'static str,
    /// A step body (YAML mapping lines, indented by 4) without `id`.
    step: &'static str,
    expect: Expect,
}

/// Contexts that take every value (quoted heredocs: every value that cannot end them).
const CONTEXTS: &[Ctx] = &[
    Ctx {
        name: "bare",
        step: "    shell: |\n      printf '%s' {{ params.x }} > out/bare\n",
        expect: Expect::Exact,
    },
    Ctx {
        name: "dquote",
        step: "    shell: |\n      printf '%s' \"<{{ params.x }}>\" > out/dquote\n",
        expect: Expect::Wrapped,
    },
    Ctx {
        name: "squote",
        step: "    shell: |\n      printf '%s' '<{{ params.x }}>' > out/squote\n",
        expect: Expect::Wrapped,
    },
    Ctx {
        name: "ansic",
        step: "    shell: |\n      printf '%s' $'<{{ params.x }}>' > out/ansic\n",
        expect: Expect::Wrapped,
    },
    Ctx {
        name: "comment",
        step: "    shell: |\n      # deploying {{ params.x }}\n      touch out/comment # and {{ params.x }}\n",
        expect: Expect::Ran,
    },
    Ctx {
        name: "heredoc",
        step: "    shell: |\n      cat > out/heredoc <<EOF\n      {{ params.x }}\n      EOF\n",
        expect: Expect::Line,
    },
    Ctx {
        name: "heredoc_quoted",
        step: "    shell: |\n      cat > out/heredoc_quoted <<'EOF'\n      {{ params.x }}\n      EOF\n",
        expect: Expect::QuotedHeredoc(false),
    },
    Ctx {
        name: "heredoc_dash",
        step: "    shell: |\n      cat > out/heredoc_dash <<-EOF\n      \t{{ params.x }}\n      \tEOF\n",
        expect: Expect::Line,
    },
    Ctx {
        name: "heredoc_dash_quoted",
        step: "    shell: |\n      cat > out/heredoc_dash_quoted <<-\"EOF\"\n      \t{{ params.x }}\n      \tEOF\n",
        expect: Expect::QuotedHeredoc(true),
    },
    Ctx {
        name: "heredoc_in_cmdsub",
        step: "    shell: |\n      v=$(cat <<EOF\n      {{ params.x }}\n      EOF\n      printf .)\n      printf '%s' \"${v%.}\" > out/heredoc_in_cmdsub\n",
        expect: Expect::Line,
    },
    Ctx {
        name: "cmdsub",
        step: "    shell: |\n      : $(printf '%s' {{ params.x }} > out/cmdsub)\n",
        expect: Expect::Exact,
    },
    Ctx {
        name: "cmdsub_dq",
        step: "    shell: |\n      v=\"$(printf '%s' {{ params.x }}; printf .)\"; printf '%s' \"${v%.}\" > out/cmdsub_dq\n",
        expect: Expect::Exact,
    },
    Ctx {
        name: "cmdsub_dq_dq",
        step: "    shell: |\n      v=\"$(printf '%s' \"<{{ params.x }}>\"; printf .)\"; printf '%s' \"${v%.}\" > out/cmdsub_dq_dq\n",
        expect: Expect::Wrapped,
    },
    Ctx {
        name: "backticks",
        step: "    shell: |\n      : `printf '%s' {{ params.x }} > out/backticks`\n",
        expect: Expect::Exact,
    },
    Ctx {
        name: "backticks_dq",
        step: "    shell: |\n      v=\"`printf '%s' {{ params.x }}; printf .`\"; printf '%s' \"${v%.}\" > out/backticks_dq\n",
        expect: Expect::Exact,
    },
    Ctx {
        name: "test_match",
        step: "    shell: |\n      if [[ \"zz$RAW\" == {{ params.x }} ]]; then exit 9; fi\n      [[ \"$RAW\" == {{ params.x }} ]]\n      [[ {{ params.x }} == \"$RAW\" ]]\n      [[ \"$RAW\" == \"{{ params.x }}\" ]]\n      printf '%s' {{ params.x }} > out/test_match\n",
        expect: Expect::Exact,
    },
    Ctx {
        name: "case",
        step: "    shell: |\n      case \"zz$RAW\" in {{ params.x }}) exit 9;; esac\n      case \"$RAW\" in\n        {{ params.x }}) printf '%s' {{ params.x }} > out/case;;\n        *) exit 8;;\n      esac\n",
        expect: Expect::Exact,
    },
    Ctx {
        name: "assign",
        step: "    shell: |\n      v={{ params.x }}; printf '%s' \"$v\" > out/assign\n",
        expect: Expect::Exact,
    },
    Ctx {
        name: "assign_local",
        step: "    shell: |\n      f() { local v={{ params.x }}; printf '%s' \"$v\" > out/assign_local; }; f\n",
        expect: Expect::Exact,
    },
    Ctx {
        name: "array",
        step: "    shell: |\n      a=({{ params.x }} {{ params.x }}); set -- \"${a[@]}\"; [ $# = 2 ]; printf '%s|%s' \"${a[0]}\" \"${a[1]}\" > out/array\n",
        expect: Expect::Twice,
    },
    Ctx {
        name: "default_expansion",
        step: "    shell: |\n      printf '%s' ${unset_var:-{{ params.x }}} > out/default_expansion\n",
        expect: Expect::Exact,
    },
    Ctx {
        name: "default_expansion_dq",
        step: "    shell: |\n      printf '%s' \"${unset_var:-{{ params.x }}}\" > out/default_expansion_dq\n",
        expect: Expect::Exact,
    },
    Ctx {
        name: "tojson",
        step: "    shell: |\n      printf '%s' {{ params.x | tojson }} > out/tojson\n",
        expect: Expect::Json,
    },
    Ctx {
        name: "quote",
        step: "    shell: |\n      printf '%s' {{ params.x | quote }} > out/quote\n",
        expect: Expect::Exact,
    },
    Ctx {
        name: "two_values",
        step: "    shell: |\n      printf '%s|%s' {{ params.x }} \"{{ params.x }}\" > out/two_values\n",
        expect: Expect::Twice,
    },
    Ctx {
        name: "macro",
        step: "    shell: |\n      {% macro m(v) %}printf '%s' {{ v }} > out/macro{% endmacro %}{{ m(params.x) }}\n",
        expect: Expect::Exact,
    },
    Ctx {
        name: "set_block",
        step: "    shell: |\n      {% set s %}{{ params.x }}{% endset %}printf '%s' {{ s }} > out/set_block\n",
        expect: Expect::Exact,
    },
    Ctx {
        name: "set_expr",
        step: "    shell: |\n      {% set s = params.x %}printf '%s' {{ s }} > out/set_expr\n",
        expect: Expect::Exact,
    },
    Ctx {
        name: "autoescape",
        step: "    shell: |\n      {% autoescape false %}printf '%s' {{ params.x }} > out/autoescape{% endautoescape %}\n",
        expect: Expect::Exact,
    },
    Ctx {
        name: "loop",
        step: "    shell: |\n      {% for v in [params.x, params.x] %}printf '%s|' {{ v }} >> out/loop_raw\n      {% endfor %}v=$(cat out/loop_raw; printf .); v=${v%.}; printf '%s' \"${v%|}\" > out/loop\n",
        expect: Expect::Twice,
    },
    Ctx {
        name: "env_runbook",
        step: "    shell: |\n      printf '%s' \"$RAW\" > out/env_runbook\n",
        expect: Expect::Exact,
    },
    Ctx {
        name: "env_step",
        step: "    env:\n      S: \"{{ params.x }}\"\n    shell: |\n      printf '%s' \"$S\" > out/env_step\n",
        expect: Expect::Exact,
    },
    Ctx {
        name: "metric_query",
        step: "    metric:\n      query: |\n        printf '%s' {{ params.x }} > out/metric_query; echo 0\n      condition: value == 0\n",
        expect: Expect::Exact,
    },
    Ctx {
        name: "rollback",
        step: "    shell: \"true\"\n    rollback:\n      shell: |\n        printf '%s' {{ params.x }} > out/rollback\n",
        expect: Expect::Exact,
    },
];

/// Steps after the contexts: a failure that unwinds, then `on_failure` and `finally`.
const TAIL: &str = "  - id: boom
    shell: exit 7
on_failure:
  - id: on_failure
    shell: |
      printf '%s' \"<{{ params.x }}>\" > out/on_failure
finally:
  - id: finally
    shell: |
      printf '%s' {{ params.x }} > out/finally
";

const HEAD: &str = "version: 1
name: injection
params:
  x: { type: string }
env:
  RAW: \"{{ params.x }}\"
providers:
  sh: { kind: command }
";

fn runbook(ctxs: &[&Ctx]) -> String {
    let mut y = format!("{HEAD}steps:\n  - id: prep\n    shell: mkdir -p out\n");
    for c in ctxs {
        y.push_str(&format!("  - id: {}\n{}", c.name, c.step));
    }
    y.push_str(TAIL);
    y
}

fn quoted_heredoc_refuses(value: &str, strip_tabs: bool) -> bool {
    value.split('\n').any(|l| {
        let l = if strip_tabs {
            l.trim_start_matches('\t')
        } else {
            l
        };
        l == "EOF"
    })
}

fn expected(expect: Expect, v: &str) -> Option<Vec<u8>> {
    Some(
        match expect {
            Expect::Exact => v.to_string(),
            Expect::Line | Expect::QuotedHeredoc(_) => format!("{v}\n"),
            Expect::Wrapped => format!("<{v}>"),
            Expect::Twice => format!("{v}|{v}"),
            Expect::Ran => String::new(),
            Expect::Json => return None,
        }
        .into_bytes(),
    )
}

fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() > 200 {
        format!(
            "{:?}... ({} bytes)",
            s.chars().take(200).collect::<String>(),
            b.len()
        )
    } else {
        format!("{s:?}")
    }
}

fn run_with(yaml: &str, x: &str) -> Output {
    Test::new()
        .file(RB, yaml)
        .args(&["run", RB, "--state-dir", "st", "--param"])
        .arg(&format!("x={x}"))
        .run()
}

/// Every payload through every context that takes it: no code runs, each
/// script sees exactly the value; then `plan` of the same shows it and runs nothing.
#[test]
fn every_context_sees_exactly_each_payload_and_runs_none_of_it() {
    let mut failures = Vec::new();
    for (pname, value) in payloads() {
        let ctxs: Vec<&Ctx> = CONTEXTS
            .iter()
            .filter(|c| match c.expect {
                Expect::QuotedHeredoc(tabs) => !quoted_heredoc_refuses(&value, tabs),
                _ => true,
            })
            .collect();
        let out = run_with(&runbook(&ctxs), &value);
        let hit = pwned(out.path());
        if !hit.is_empty() {
            failures.push(format!("{pname}: PWNED: {hit:?}"));
        }
        if out.code != Some(1) || !out.stdout.contains("boom") {
            failures.push(format!(
                "{pname}: the run should fail only at `boom` (exit 1), got {:?}\n{}\n{}",
                out.code,
                out.stdout
                    .lines()
                    .filter(|l| l.contains("fail"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                out.stderr
            ));
        }
        let mut names: Vec<&str> = ctxs.iter().map(|c| c.name).collect();
        names.extend(["on_failure", "finally"]);
        for name in names {
            let expect = match name {
                "on_failure" => Expect::Wrapped,
                "finally" => Expect::Exact,
                _ => ctxs
                    .iter()
                    .find(|c| c.name == name)
                    .map(|c| c.expect)
                    .unwrap(),
            };
            let Some(got) = read_out(&out, name) else {
                failures.push(format!("{pname}/{name}: out/{name} was not written"));
                continue;
            };
            match expected(expect, &value) {
                Some(want) if got != want => failures.push(format!(
                    "{pname}/{name}: saw {} instead of {}",
                    show(&got),
                    show(&want)
                )),
                Some(_) => {}
                None => match serde_json::from_slice::<String>(&got) {
                    Ok(back) if back == value => {}
                    other => failures.push(format!(
                        "{pname}/{name}: tojson did not decode back: {other:?} from {}",
                        show(&got)
                    )),
                },
            }
        }
        // The plan shows values inline for reading and runs nothing.
        let plan = out
            .again()
            .file(RB, &runbook(&ctxs))
            .args(&["plan", RB, "--param"])
            .arg(&format!("x={value}"))
            .run();
        if plan.code != Some(0) {
            failures.push(format!(
                "{pname}: plan exited {:?}: {}",
                plan.code, plan.stderr
            ));
        }
        std::fs::remove_dir_all(plan.path().join("out")).ok();
        if !pwned(plan.path()).is_empty() {
            failures.push(format!("{pname}: PWNED after plan"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A quoted heredoc takes a value as is, so a value with an `EOF` line would
/// end it early: the run is refused before anything runs.
#[test]
fn a_value_that_would_end_a_quoted_heredoc_is_refused() {
    for v in ["EOF\ntouch PWNED", "EOF", "x\nEOF", "\tEOF\ntouch PWNED"] {
        for c in CONTEXTS.iter().filter(|c| match c.expect {
            Expect::QuotedHeredoc(tabs) => quoted_heredoc_refuses(v, tabs),
            _ => false,
        }) {
            let out = run_with(&runbook(&[c]), v);
            assert_eq!(
                out.code,
                Some(2),
                "{}/{v:?}: {}\n{}",
                c.name,
                out.stdout,
                out.stderr
            );
            assert!(out.stderr.contains("heredoc"), "{}: {}", c.name, out.stderr);
            assert!(pwned(out.path()).is_empty(), "{}/{v:?}: PWNED", c.name);
            assert!(
                !out.path().join("out").exists(),
                "{}: something ran",
                c.name
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Arithmetic: only integers.

/// `(name, script)`: prints the value the arithmetic read to `out/<name>`.
const ARITH: &[(&str, &str)] = &[
    ("arith_expansion", "printf '%s' $(( {{ params.x }} )) > out/arith_expansion"),
    ("arith_expansion_dq", "printf '%s' \"$(( {{ params.x }} + 0 ))\" > out/arith_expansion_dq"),
    ("arith_command", "(( n = {{ params.x }}, 1 )); printf '%s' \"$n\" > out/arith_command"),
    ("subscript_assign", "declare -a a; a[{{ params.x }}]=v; printf '%s' \"${!a[*]}\" > out/subscript_assign"),
    ("subscript_read", "declare -a a; a[42]=42; a[5]=5; printf '%s' ${a[{{ params.x }}]} > out/subscript_read"),
    ("test_eq", "[[ {{ params.x }} -eq {{ params.x }} ]]; [[ $(( {{ params.x }} )) -eq {{ params.x }} ]]; printf '%s' $(( {{ params.x }} )) > out/test_eq"),
    ("c_for", "for (( i = 0; i < {{ params.x }}; i++ )); do :; done; printf '%s' \"$i\" > out/c_for"),
];

fn arith_runbook(script: &str) -> String {
    format!("{HEAD}steps:\n  - id: prep\n    shell: mkdir -p out\n  - id: a\n    shell: |\n      {script}\n")
}

#[test]
fn arithmetic_refuses_every_value_but_an_integer() {
    let mut failures = Vec::new();
    for (pname, value) in payloads() {
        if pname == "integer" {
            continue;
        }
        for (name, script) in ARITH {
            let out = run_with(&arith_runbook(script), &value);
            if !pwned(out.path()).is_empty() {
                failures.push(format!("{name}/{pname}: PWNED"));
            }
            if out.code != Some(2) || !out.stderr.contains("whole number") {
                failures.push(format!(
                    "{name}/{pname}: expected a template error (exit 2), got {:?}: {}",
                    out.code, out.stderr
                ));
            }
            if out.path().join("out").exists() {
                failures.push(format!("{name}/{pname}: a step ran"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn arithmetic_takes_integers_as_written() {
    for (value, want) in [("42", "42"), (" 5 ", "5")] {
        for (name, script) in ARITH {
            let out = run_with(&arith_runbook(script), value).success();
            assert_eq!(
                read_out(&out, name).map(|b| String::from_utf8_lossy(&b).into_owned()),
                Some(want.to_string()),
                "{name}/{value:?}"
            );
        }
    }
}

/// Found: `is_integer` accepts a leading zero, and bash reads `010` as
/// octal 8 (and `08` is an error), so the script does not see the number given.
#[test]
fn arithmetic_reads_a_leading_zero_integer_as_octal() {
    let out = run_with(&arith_runbook(ARITH[0].1), "010");
    let got = read_out(&out, ARITH[0].0).map(|b| String::from_utf8_lossy(&b).into_owned());
    assert!(
        out.code == Some(2) || got.as_deref() == Some("10"),
        "`$(( {{{{ x }}}} ))` with x=010 printed {got:?} (exit {:?}): the value given was ten",
        out.code
    );
}

// ---------------------------------------------------------------------------
// Shell arithmetic the lexer does not recognise: bash evaluates a variable's
// value as an expression there, so `a[$(cmd)]` runs `cmd` even when the value
// arrives as `"${RUNBOOK_VALUE_1}"`.

const HIDDEN_ARITH: &[(&str, &str)] = &[
    ("let_bare", "let n={{ params.x }}"),
    ("let_dq", "let \"n = {{ params.x }}\""),
    ("declare_i", "declare -i n={{ params.x }}"),
    ("old_arith", "echo $[ {{ params.x }} ]"),
    ("substring_offset", "s=abcdef; echo ${s:{{ params.x }}}"),
    (
        "substring_length",
        "s=abcdef; echo \"${s:0:{{ params.x }}}\"",
    ),
    (
        "subscript_dq_assign",
        "declare -a a; a[\"{{ params.x }}\"]=1",
    ),
    (
        "subscript_in_dq_read",
        "declare -a a=(1); echo \"${a[{{ params.x }}]}\"",
    ),
    ("compound_array_index", "a=([{{ params.x }}]=1)"),
    ("test_v", "[[ -v {{ params.x }} ]] || true"),
    ("printf_v", "printf -v {{ params.x }} %s x"),
];

/// Each hidden arithmetic context, alone, with `a[$(touch PWNED)]`. Those
/// listed in the panic run the value as code.
#[test]
fn values_in_arithmetic_the_lexer_misses_run_as_code() {
    let mut ran = Vec::new();
    for (name, script) in HIDDEN_ARITH {
        let out = run_with(&arith_runbook(script), "a[$(touch PWNED)]");
        if !pwned(out.path()).is_empty() {
            ran.push(format!("{name}: `{script}` (exit {:?})", out.code));
        }
    }
    assert!(
        ran.is_empty(),
        "a[$(touch PWNED)] ran as code in:\n{}",
        ran.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Composing values inside the template: the text of a `{% set %}` block or a
// macro holds the render's placeholders, and is trusted as the author's text.

const COMPOSED: &[(&str, &str, &str)] = &[
    // (name, script, what the script must print given value v, `{v}` for v)
    (
        "set_block_concat",
        "{% set s %}{{ params.x }}{% endset %}printf '%s' {{ s ~ params.x }} > out/o",
        "{v}{v}",
    ),
    (
        "macro_concat",
        "{% macro m(v) %}{{ v }}{% endmacro %}printf '%s' {{ m(params.x) ~ params.x }} > out/o",
        "{v}{v}",
    ),
    (
        "set_block_format",
        "{% set s %}pre-{{ params.x }}-{% endset %}printf '%s' {{ '%s%s' | format(s, params.x) }} > out/o",
        "pre-{v}-{v}",
    ),
    (
        "set_block_join",
        "{% set s %}{{ params.x }}{% endset %}printf '%s' {{ [s, params.x] | join('') }} > out/o",
        "{v}{v}",
    ),
    (
        "filter_block_replace",
        "{% filter replace('X', params.x) %}printf '%s' X{{ params.x }} > out/o{% endfilter %}",
        "{v}{v}",
    ),
];

#[test]
fn set_block_or_macro_output_concatenated_with_a_value_inserts_it_as_code() {
    let mut bad = Vec::new();
    for (name, script, want) in COMPOSED {
        for v in ["$(touch PWNED)", "; touch PWNED"] {
            let out = run_with(&arith_runbook(script), v);
            if !pwned(out.path()).is_empty() {
                bad.push(format!("{name} with {v:?}: PWNED (exit {:?})", out.code));
                continue;
            }
            // Either a clear refusal, or the value as data.
            if out.code == Some(0) {
                let got = read_out(&out, "o").unwrap_or_default();
                let want = want.replace("{v}", v);
                if got != want.as_bytes() {
                    bad.push(format!("{name} with {v:?}: printed {}", show(&got)));
                }
            } else if out.code != Some(2) {
                bad.push(format!(
                    "{name} with {v:?}: neither data nor a template error: exit {:?}\n{}",
                    out.code, out.stdout
                ));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// `{% filter upper %}` changes the text it wraps, placeholders included:
/// the script sees the upper-cased value or the run is a clear template error.
#[test]
fn filter_upper_block_passes_its_placeholder_text_as_the_value() {
    for (pname, value) in payloads() {
        let out = run_with(
            &arith_runbook("printf '%s' {% filter upper %}{{ params.x }}{% endfilter %} > out/o"),
            &value,
        );
        assert!(pwned(out.path()).is_empty(), "{pname}: PWNED");
        match out.code {
            Some(0) => assert_eq!(
                read_out(&out, "o").unwrap_or_default(),
                value.to_uppercase().into_bytes(),
                "{pname}"
            ),
            Some(2) => assert!(out.stderr.contains("error"), "{pname}: {}", out.stderr),
            c => panic!("{pname}: exit {c:?}\n{}\n{}", out.stdout, out.stderr),
        }
    }
}

// ---------------------------------------------------------------------------
// Scripts whose text the lexer reads differently from bash.

const CONFUSED: &[(&str, &str)] = &[
    // bash: `<<` inside `${x:-...}` is a word, not a heredoc.
    (
        "heredoc_word_in_parameter_default",
        "printf '%s' \"${u:-<<'EOF'}\" > out/d\n      printf '%s' {{ params.x }} > out/o\n      exit 0\n      EOF",
    ),
    // bash: the delimiter of `<<$'EOF'` is `EOF`.
    (
        "ansi_c_heredoc_delimiter",
        "cat > out/d <<$'EOF'\n      x\n      EOF\n      printf '%s' {{ params.x }} > out/o\n      exit 0\n      $EOF",
    ),
    // bash: `$[1<<2]` is arithmetic, not a heredoc.
    (
        "old_arith_shift",
        "n=$[1<<2]\n      printf '%s' {{ params.x }} > out/o\n      exit 0\n      2]",
    ),
    // bash: `<<<` is a here-string; the lexer sees its last two `<` as a heredoc.
    (
        "here_string_of_a_quoted_word",
        "cat <<< 'EOF' > out/d\n      printf '%s' {{ params.x }} > out/o\n      exit 0\n      EOF",
    ),
    // bash: `<<` inside single quotes is text; the lexer agrees.
    (
        "quoted_heredoc_marker_in_single_quotes",
        "echo '<<EOF' > out/d\n      printf '%s' {{ params.x }} > out/o",
    ),
];

#[test]
fn heredoc_markers_bash_does_not_read_as_heredocs_make_values_code() {
    let mut bad = Vec::new();
    for (name, script) in CONFUSED {
        for v in ["$(touch PWNED)", "*"] {
            let out = run_with(&arith_runbook(script), v);
            if !pwned(out.path()).is_empty() {
                bad.push(format!("{name} with {v:?}: PWNED (exit {:?})", out.code));
            } else if out.code == Some(0) {
                let got = read_out(&out, "o").unwrap_or_default();
                if got != v.as_bytes() {
                    bad.push(format!("{name} with {v:?}: printed {}", show(&got)));
                }
            } else if out.code != Some(2) {
                bad.push(format!(
                    "{name} with {v:?}: exit {:?}\n{}",
                    out.code, out.stdout
                ));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// ---------------------------------------------------------------------------
// NUL and other interpreters.

#[test]
fn a_nul_byte_in_a_value_is_refused_before_anything_runs() {
    let yaml = "version: 1
name: nul
params:
  x: { type: string, default: \"a\\u0000b\" }
steps:
  - id: first
    shell: touch ran-first
  - id: uses
    shell: printf '%s' {{ params.x }} > ran-uses
";
    let out = Test::new()
        .file(RB, yaml)
        .args(&["run", RB, "--state-dir", "st"])
        .run();
    assert_ne!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("NUL") || out.stdout.contains("NUL"),
        "the error names the NUL byte:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(!out.path().join("ran-first").exists(), "a step ran");
    assert!(!out.path().join("ran-uses").exists(), "a step ran");
    assert_eq!(out.code, Some(2), "{}", out.stderr);
}

#[test]
fn a_non_shell_interpreter_refuses_template_values_but_reads_env() {
    let refused = "version: 1
name: py
params:
  x: { type: string }
steps:
  - id: first
    shell: touch ran-first
  - id: py
    interpreter: [python3, -c]
    shell: print({{ params.x }})
";
    let out = run_with(refused, "__import__('os').system('touch PWNED')");
    assert!(
        matches!(out.code, Some(1 | 2)),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("not a POSIX shell"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(pwned(out.path()).is_empty());

    let env = "version: 1
name: py
params:
  x: { type: string }
steps:
  - id: py
    interpreter: [python3, -c]
    env:
      X: \"{{ params.x }}\"
    shell: |
      import os
      open('seen', 'w', newline='').write(os.environ['X'])
";
    for (pname, value) in payloads() {
        let out = run_with(env, &value);
        assert_eq!(out.code, Some(0), "{pname}: {}\n{}", out.stdout, out.stderr);
        assert_eq!(
            std::fs::read_to_string(out.path().join("seen")).unwrap(),
            value,
            "{pname}"
        );
        assert!(pwned(out.path()).is_empty(), "{pname}");
    }
}

/// Found: the refusal of a template value for a non-shell interpreter comes
/// only when the step starts (exit 1, after earlier steps ran and unwound),
/// while pre-flight refuses a non-integer in arithmetic before anything runs
/// (exit 2). Both depend only on params.
#[test]
fn python_interpreter_value_error_is_found_only_mid_run() {
    let yaml = "version: 1
name: py
params:
  x: { type: string }
steps:
  - id: first
    shell: touch ran-first
  - id: py
    interpreter: [python3, -c]
    shell: print({{ params.x }})
";
    let out = run_with(yaml, "1");
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    assert!(!out.path().join("ran-first").exists(), "`first` ran");
}

/// Found: `cat <<< {{ x }}` is refused ("a template value cannot be a
/// heredoc's delimiter"): the lexer skips the first `<` of `<<<` and reads
/// the other two as a heredoc.
#[test]
fn here_string_value_is_refused_as_a_heredoc_delimiter() {
    for (pname, value) in payloads() {
        let out = run_with(&arith_runbook("cat <<< {{ params.x }} > out/o"), &value);
        assert!(pwned(out.path()).is_empty(), "{pname}: PWNED");
        assert_eq!(out.code, Some(0), "{pname}: {}", out.stderr);
        assert_eq!(
            read_out(&out, "o").unwrap_or_default(),
            format!("{value}\n").into_bytes(),
            "{pname}"
        );
    }
}
