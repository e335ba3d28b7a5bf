//! A hostile value in every shell context: rendered with
//! `template::render_shell`, run by bash, and printed back exactly.
//!
//! The input is split at its first 0xFF byte into two values (UTF-8, lossy),
//! `a` and `b` (empty when there is no 0xFF). Fixed scripts (below) use them
//! as a bare word, in double and single quotes, `$'…'`, a comment, heredocs,
//! `$( )`, backticks, `[[ ]]`, `[ ]`, a case pattern, assignments, arrays,
//! an associative array, a here-string, `${x:-…}`, `for`, a subshell, a
//! group, a function's argument, `printf -v`, `| tojson`, and (apart, as
//! they accept only some values) arithmetic, a quoted heredoc and a
//! variable name. Each context prints what the shell saw with
//! `printf '%s\0'`. The rendered text runs as `bash -c TEXT` with only
//! `PATH` and the returned `RUNBOOK_VALUE_n` variables in its environment,
//! in a fresh empty directory, under a 10 s timeout.
//!
//! Checked: the main script renders for every value without a NUL byte and
//! refuses (with an error naming NUL) a value with one, since no process can
//! receive it; bash exits 0; every field printed is exactly the expected
//! bytes; the directory is still empty afterwards (payloads such as
//! `$(touch PWNED)` must stay data). The arithmetic script renders exactly
//! when `a` is a whole number (`-?[0-9]{1,18}`, surrounding whitespace
//! ignored) and then prints it; the quoted heredocs render exactly when no
//! line of `a` would end them; the name script renders exactly when `a` is a
//! plain variable name.
#![no_main]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use runbook::template::render_shell;

/// One context: its lines, and the fields it prints.
struct Case {
    label: &'static str,
    src: &'static str,
    want: Vec<String>,
}

/// `json` is `{{ a | tojson }}` rendered as plain text.
fn main_cases(a: &str, b: &str, json: &str) -> Vec<Case> {
    let s = |x: &str| x.to_string();
    let c = |label, src, want: Vec<String>| Case { label, src, want };
    vec![
        c("bare word", "p {{ a }}", vec![s(a)]),
        c("two bare values", "p {{ a }} {{ b }}", vec![s(a), s(b)]),
        c("concatenated", "p {{ a }}{{ b }}", vec![format!("{a}{b}")]),
        c("double quotes", "p \"{{ a }}\"", vec![s(a)]),
        c("double quotes, text around", "p \"<{{ a }}|{{ b }}>\"", vec![format!("<{a}|{b}>")]),
        c("single quotes", "p '{{ a }}'", vec![s(a)]),
        c("single quotes, text around", "p 'x{{ a }}y'", vec![format!("x{a}y")]),
        c("ansi-c quotes", "p $'\\t{{ a }}\\n'", vec![format!("\t{a}\n")]),
        c("comment", "# a comment: {{ a }} and {{ b }}\np comment", vec![s("comment")]),
        c("comment after a command", "p after # {{ a }}", vec![s("after")]),
        c("unquoted heredoc", "r <<EOF\n{{ a }}\n<{{ b }}>\nEOF", vec![format!("{a}\n<{b}>\n")]),
        c("expansion in a heredoc", "r <<EOF\n[$(printf '%s.' {{ a }})]\nEOF", vec![format!("[{a}.]\n")]),
        c("backticks in a heredoc", "r <<EOF\n[`printf '%s.' {{ a }}`]\nEOF", vec![format!("[{a}.]\n")]),
        c("command substitution", "x=$(printf '%s.' {{ a }}); p \"${x%.}\"", vec![s(a)]),
        c("quoted command substitution", "x=\"$(printf '%s.' \"{{ a }}\")\"; p \"${x%.}\"", vec![s(a)]),
        c("nested substitution", "x=\"$(printf '%s' \"$(printf '%s.' {{ a }})\")\"; p \"${x%.}\"", vec![s(a)]),
        c("pipe in a substitution", "x=\"$(printf '%s.' {{ a }} | { IFS= read -r -d '' y; printf '%s' \"$y\"; })\"; p \"${x%.}\"", vec![s(a)]),
        c("backticks", "x=`printf '%s.' {{ a }}`; p \"${x%.}\"", vec![s(a)]),
        c("[[ == ]]", "if [[ {{ a }} == {{ a }} ]]; then p eq; else p ne; fi", vec![s("eq")]),
        c("[[ == \"\" ]]", "if [[ {{ a }} == \"{{ b }}\" ]]; then p eq; else p ne; fi", vec![s(if a == b { "eq" } else { "ne" })]),
        c("[[ -z ]]", "if [[ -z {{ a }} ]]; then p empty; else p full; fi", vec![s(if a.is_empty() { "empty" } else { "full" })]),
        c("[[ =~ ]]", "if [[ {{ a }} =~ ^{{ a }}$ ]]; then p match; else p nomatch; fi", vec![s("match")]),
        c("[ = ]", "if [ {{ a }} = {{ a }} ]; then p eq; else p ne; fi", vec![s("eq")]),
        c("case word and pattern", "case {{ a }} in {{ a }}) p case;; *) p nocase;; esac", vec![s("case")]),
        c("case pattern vs other", "case x{{ a }} in x\"{{ b }}\") p same;; *) p differ;; esac", vec![s(if a == b { "same" } else { "differ" })]),
        c("assignment", "v={{ a }}; p \"$v\"", vec![s(a)]),
        c("assignment before a command", "v={{ a }} p \"{{ b }}\"", vec![s(b)]),
        c("declare", "declare w={{ a }}; p \"$w\"", vec![s(a)]),
        c("export", "export E={{ a }}; p \"$E\"", vec![s(a)]),
        c("array", "arr=({{ a }} {{ b }}); set -- \"${arr[@]}\"; p \"$#\" \"$@\"", vec![s("2"), s(a), s(b)]),
        c("array append", "arr+=({{ a }}); p \"${arr[2]}\"", vec![s(a)]),
        c("associative array", "declare -A m=([k]={{ a }}); p \"${m[k]}\"", vec![s(a)]),
        c("associative element", "m[j]={{ b }}; p \"${m[j]}\"", vec![s(b)]),
        c("here-string", "r <<< {{ a }}", vec![format!("{a}\n")]),
        c("tojson", "p {{ a | tojson }}", vec![s(json)]),
        c("tojson in double quotes", "p \"{{ a | tojson }}\"", vec![s(json)]),
        c("quote filter", "p {{ a | quote }}", vec![s(a)]),
        c("default in double quotes", "p \"${unset_var:-{{ a }}}\"", vec![s(a)]),
        c("default unquoted", "p ${unset_var:-{{ a }}}", vec![s(a)]),
        c("alternative value", "set_var=1; p \"${set_var:+{{ a }}}\"", vec![s(a)]),
        c("for loop", "for x in {{ a }}; do p \"$x\"; done", vec![s(a)]),
        c("subshell", "( p {{ a }} )", vec![s(a)]),
        c("group", "{ p {{ a }}; }", vec![s(a)]),
        c("function argument", "f() { p \"$1\"; }; f {{ a }}", vec![s(a)]),
        c("printf -v", "printf -v out '%s' {{ a }}; p \"$out\"", vec![s(a)]),
        c("if condition", "if test {{ a }} = {{ a }}; then p yes; fi", vec![s("yes")]),
        c("after &&", "true && p {{ a }}", vec![s(a)]),
        c("after ||", "false || p {{ a }}", vec![s(a)]),
        c("loop body", "for i in 1; do p {{ b }}; done", vec![s(b)]),
        c("template loop", "{% for x in [a, b] %}p {{ x }}\n{% endfor %}", vec![s(a), s(b)]),
        c("template if", "{% if a == b %}p same{% else %}p {{ a }}{% endif %}", vec![s(if a == b { "same" } else { a })]),
        // `<<` and `[[` inside `${ }` are text to bash (a value after
        // them was once written as code: see seeds/render/regress_brace_heredoc).
        c("heredoc syntax inside ${}", "p ${unset_var:-<<'E'}\np {{ a }}", vec![s("<<E"), s(a)]),
        c("[[ inside ${}", "p ${unset_var:-[[}\nr <<EOF\n{{ a }}\nEOF", vec![s("[["), format!("{a}\n")]),
        c("end", "p END", vec![s("END")]),
    ]
}

/// `p` prints each argument as a field; `r` prints its stdin (a heredoc,
/// a here-string) as one field, exactly, with the builtin `read`.
const PRELUDE: &str = "set -u\np() { printf '%s\\0' \"$@\"; }\nr() { IFS= read -r -d '' x; printf '%s\\0' \"$x\"; }\n";

fn is_integer(v: &str) -> Option<i64> {
    let t = v.trim();
    let digits = t.strip_prefix('-').unwrap_or(t);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

fn is_name(v: &str) -> bool {
    v.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Runs `text` with `values` in an empty directory: (status ok, stdout, stderr).
fn run(text: &str, values: &[(String, String)], dir: &Path) -> (bool, Vec<u8>, Vec<u8>) {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(text)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(values.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start bash: {e}"));
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut o = Vec::new();
        let mut e = Vec::new();
        if let Some(s) = out.as_mut() {
            let _ = s.read_to_end(&mut o);
        }
        if let Some(s) = err.as_mut() {
            let _ = s.read_to_end(&mut e);
        }
        let _ = tx.send((o, e));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok((o, e)) => {
            let status = child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
            (status.success(), o, e)
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the script did not finish in 10 s:\n{text}");
        }
    }
}

/// Runs a rendered script and checks it printed exactly `want`, left no file
/// behind and exited 0.
fn check(what: &str, text: &str, values: &[(String, String)], want: &[(&str, String)]) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (ok, out, err) = run(text, values, dir.path());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "{what}: the script created {left:?}\n--- script\n{text}\n--- values\n{values:?}"
    );
    let err = String::from_utf8_lossy(&err);
    assert!(
        ok,
        "{what}: bash failed: {err}\n--- script\n{text}\n--- values\n{values:?}"
    );
    let mut fields: Vec<&[u8]> = out.split(|&b| b == 0).collect();
    // The last field ends with a NUL: the piece after it is empty.
    assert_eq!(
        fields.pop(),
        Some(&b""[..]),
        "{what}: output not NUL-terminated: {out:?}"
    );
    for (k, (label, w)) in want.iter().enumerate() {
        let got = fields.get(k).copied();
        assert_eq!(
            got.map(String::from_utf8_lossy),
            Some(w.as_str().into()),
            "{what}: context `{label}` (field {k}) printed the wrong bytes\n--- stderr\n{err}\n--- script\n{text}\n--- values\n{values:?}"
        );
        assert_eq!(got, Some(w.as_bytes()), "{what}: `{label}`: bytes differ");
    }
    assert_eq!(
        fields.len(),
        want.len(),
        "{what}: extra output: {out:?}\n{err}"
    );
}

fuzz_target!(|data: &[u8]| {
    let (a, b) = match data.iter().position(|&x| x == 0xFF) {
        Some(k) => (&data[..k], &data[k + 1..]),
        None => (data, &b""[..]),
    };
    let (a, b) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
    let (a, b) = (a.as_ref(), b.as_ref());
    let ctx = minijinja::context! { a => a, b => b };
    let has_nul = a.contains('\0') || b.contains('\0');

    // The contexts that take any value.
    let json = runbook::template::render_str("{{ a | tojson }}", &ctx)
        .unwrap_or_else(|e| panic!("tojson: {e}"));
    let back: String = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
    assert_eq!(back, a, "tojson does not give the value back");
    let cases = main_cases(a, b, &json);
    let source: String =
        PRELUDE.to_string() + &cases.iter().map(|c| c.src).collect::<Vec<_>>().join("\n") + "\n";
    let want: Vec<(&str, String)> = cases
        .iter()
        .flat_map(|c| c.want.iter().map(|w| (c.label, w.clone())))
        .collect();
    match render_shell(&source, &ctx, true) {
        Ok(s) => {
            assert!(!has_nul, "a value with NUL rendered: {:?}", s.values);
            check("main script", &s.text, &s.values, &want);
        }
        Err(e) => {
            assert!(has_nul, "the main script did not render: {e:#}");
            assert!(
                e.to_string().contains("NUL"),
                "NUL refused without saying so: {e}"
            );
        }
    }

    // Arithmetic: only a whole number, written as its decimal value.
    let arith = PRELUDE.to_string()
        + "p \"$(( {{ a }} ))\"\nx=$(( {{ a }} + 0 )); p \"$x\"\n\
           if [[ {{ a }} -eq {{ a }} ]]; then p eq; fi\nn=({{ a }}); set -- \"${n[@]}\"; p \"$#\"\n";
    let r = render_shell(&arith, &ctx, true);
    match (is_integer(a), r) {
        (Some(n), Ok(s)) => {
            let want = [
                ("$(( ))", n.to_string()),
                ("+ 0", n.to_string()),
                ("-eq", "eq".to_string()),
                ("array of one", "1".to_string()),
            ];
            check("arithmetic", &s.text, &s.values, &want);
        }
        (None, Err(_)) => {}
        (Some(_), Err(e)) => panic!("the integer {a:?} was refused in arithmetic: {e:#}"),
        (None, Ok(s)) => panic!("{a:?} was accepted in arithmetic: {}", s.text),
    }

    // Quoted heredocs: the value goes in as is, unless a line would end them.
    let quoted = PRELUDE.to_string() + "r <<'QEOF'\n{{ a }}\nQEOF\nr <<-\"TEOF\"\n{{ a }}\nTEOF\n";
    let ends = a
        .split('\n')
        .any(|l| l == "QEOF" || l.trim_start_matches('\t') == "TEOF");
    match render_shell(&quoted, &ctx, true) {
        Ok(s) => {
            assert!(
                !ends && !a.contains('\0'),
                "{a:?} would end a quoted heredoc"
            );
            let stripped: String = a
                .split('\n')
                .map(|l| l.trim_start_matches('\t'))
                .collect::<Vec<_>>()
                .join("\n");
            let want = [
                ("<<'QEOF'", format!("{a}\n")),
                ("<<-\"TEOF\"", format!("{stripped}\n")),
            ];
            check("quoted heredocs", &s.text, &s.values, &want);
        }
        Err(e) => assert!(
            ends || a.contains('\0'),
            "{a:?} was refused in a quoted heredoc: {e:#}"
        ),
    }

    // A variable's name: only a plain name.
    let name = "printf -v {{ a }} '%s' x 2>/dev/null; printf '%s\\0' done\n";
    match render_shell(name, &ctx, true) {
        Ok(s) => {
            assert!(is_name(a), "{a:?} was accepted as a variable name");
            check(
                "name",
                &s.text,
                &s.values,
                &[("printf -v", "done".to_string())],
            );
        }
        Err(e) => assert!(!is_name(a), "the name {a:?} was refused: {e:#}"),
    }
});
