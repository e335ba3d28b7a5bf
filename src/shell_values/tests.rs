//! Tests of values in each shell context, through the whole path (template,
//! placeholder, lexer), so they sit beside both halves rather than in one.

use super::*;

fn render_with(source: &str, value: &str) -> Result<Script, Error> {
    let ctx = minijinja::context! { v => value };
    crate::template::render_shell(source, &ctx, true)
}

#[test]
fn contexts_get_their_reference_form() {
    let cases = [
        ("echo {{ v }}", "echo \"${RUNBOOK_VALUE_1}\""),
        ("echo \"a {{ v }} b\"", "echo \"a ${RUNBOOK_VALUE_1} b\""),
        ("echo 'a {{ v }} b'", "echo 'a '\"${RUNBOOK_VALUE_1}\"' b'"),
        (
            "# deploying {{ v }}\necho",
            "# deploying ${RUNBOOK_VALUE_1}\necho",
        ),
        (
            "cat <<EOF\n{{ v }}\nEOF\n",
            "cat <<EOF\n${RUNBOOK_VALUE_1}\nEOF\n",
        ),
        ("x=$(echo {{ v }})", "x=$(echo \"${RUNBOOK_VALUE_1}\")"),
        (
            "x=\"$(echo {{ v }})\"",
            "x=\"$(echo \"${RUNBOOK_VALUE_1}\")\"",
        ),
        ("echo `echo {{ v }}`", "echo `echo \"${RUNBOOK_VALUE_1}\"`"),
        ("echo ${x:-{{ v }}}", "echo ${x:-\"${RUNBOOK_VALUE_1}\"}"),
    ];
    for (src, want) in cases {
        let s = render_with(src, "$(touch PWN)").unwrap();
        assert_eq!(s.text, want, "{src}");
        assert_eq!(
            s.values,
            [("RUNBOOK_VALUE_1".to_string(), "$(touch PWN)".to_string())]
        );
    }
}

#[test]
fn arithmetic_takes_only_integers() {
    assert_eq!(
        render_with("echo $(( {{ v }} + 1 ))", "41").unwrap().text,
        "echo $(( 41 + 1 ))"
    );
    assert!(render_with("echo $(( {{ v }} + 1 ))", "a[$(touch x)]").is_err());
    assert!(render_with("(( n = {{ v }} ))", "x").is_err());
    assert!(render_with("a[{{ v }}]=1", "$(id)").is_err());
    assert!(render_with("[[ {{ v }} -eq 1 ]]", "a[$(id)]").is_err());
    assert_eq!(
        render_with("[[ {{ v }} == x ]]", "a b").unwrap().text,
        "[[ \"${RUNBOOK_VALUE_1}\" == x ]]"
    );
}

#[test]
fn quoted_heredocs_take_values_that_cannot_end_them() {
    let s = render_with("cat <<'EOF'\nv={{ v }}\nEOF\n", "$(id)").unwrap();
    assert_eq!(s.text, "cat <<'EOF'\nv=$(id)\nEOF\n");
    assert!(render_with("cat <<'EOF'\n{{ v }}\nEOF\n", "x\nEOF\ntouch PWN").is_err());
    assert!(render_with("cat <<'EOF'\n{{ v }}\nEOF\n", "EOF").is_err());
    assert!(render_with("cat <<{{ v }}\nx\n", "EOF").is_err());
}

#[test]
fn safe_is_code_and_tojson_is_data() {
    let s = render_with("{{ v | safe }}", "echo hi").unwrap();
    assert_eq!(s.text, "echo hi");
    let s = render_with("echo {{ v | tojson }}", "a'b").unwrap();
    assert_eq!(s.text, "echo \"${RUNBOOK_VALUE_1}\"");
    let back: String = serde_json::from_str(&s.values[0].1).unwrap();
    assert_eq!(back, "a'b");
}

#[test]
fn non_shell_interpreters_refuse_values() {
    let ctx = minijinja::context! { v => "x" };
    assert!(crate::template::render_shell("print({{ v }})", &ctx, false).is_err());
    assert!(crate::template::render_shell("print(1)", &ctx, false).is_ok());
}

/// Found while fuzzing: `<<'E'` inside `${x:-…}` was read as the start of a
/// quoted heredoc, so the next line's value was written into the script as
/// is, and bash (which reads no redirection inside `${ }`) ran it.
#[test]
fn heredoc_syntax_inside_parameter_expansion_is_not_a_heredoc() {
    let s = render_with("echo ${x:-<<'E'}\n{{ v }}\n", "touch PWN").unwrap();
    assert_eq!(s.text, "echo ${x:-<<'E'}\n\"${RUNBOOK_VALUE_1}\"\n");
    let s = render_with("echo \"${x:-<<E}\"\n{{ v }}\n", "touch PWN").unwrap();
    assert_eq!(s.text, "echo \"${x:-<<E}\"\n\"${RUNBOOK_VALUE_1}\"\n");
    // Nor is `[[` a test there: a heredoc after it is still seen.
    let s = render_with("echo ${x:-[[}\ncat <<'E'\n{{ v }}\nE\n", "$(id)").unwrap();
    assert_eq!(s.text, "echo ${x:-[[}\ncat <<'E'\n$(id)\nE\n");
    // A `$( )` inside `${ }` is commands again, heredocs included.
    let s = render_with("echo ${x:-$(cat <<'E'\n{{ v }}\nE\n)}", "$(id)").unwrap();
    assert_eq!(s.text, "echo ${x:-$(cat <<'E'\n$(id)\nE\n)}");
}

/// Found in CI: the injection corpus's `{% filter upper %}` test failed once
/// in a while with exit 1 instead of 2. A nonce of 16 random hex digits
/// is all decimal digits about once in 2,000 renders; `upper` then left it
/// alone, so that render (pre-flight) passed and the next (the step) failed.
#[test]
fn filter_upper_around_a_value_is_refused_on_every_render_not_only_most() {
    for _ in 0..2000 {
        assert!(render_with("echo {% filter upper %}{{ v }}{% endfilter %}", "x").is_err());
    }
}
