//! The one minijinja environment every template and expression goes through.
//!
//! Strict undefined behaviour (a typo is an error, never an empty string), no
//! auto-escaping (we render shell and URLs, not HTML), and two filters of our
//! own: `quote` for shell-quoting and `tojson`. A string that is exactly one
//! `{{ ... }}` renders to its expression's value with its type, so numbers and
//! maps survive templating. Plans render with [`Symbol`]s standing in for
//! values only known at run time, so a preview never contacts anything.
//!
//! Split by concern: this file is the environment and the render entry
//! points; `limits` the load-time checks on tokens, `filters` our filters
//! and the filter/test names `validate` asks about, `budget` the
//! evaluation budgets and the render worker.

use std::fmt;
use std::sync::{Arc, OnceLock};

use minijinja::value::{Object, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};

// The render worker's allocator accounting is another `unsafe` place:
// `GlobalAlloc` cannot be implemented without it.
#[allow(unsafe_code)]
pub mod budget;
mod derived;
mod filters;
mod limits;

pub use filters::{filters_and_tests, knows, shell_quote};
pub use limits::{check_limits, LimitError};

use filters::{quote_filter, safe_filter};

/// Names a template may use at the top level.
pub const ROOTS: &[&str] = &[
    "params", "vars", "env", "secrets", "steps", "run", "step", "value",
];

/// Keys of `run` in the context.
pub const RUN_KEYS: &[&str] = &["id", "name", "status", "failed_step", "error", "started_at"];

/// Minijinja's own global functions, which are not context reads.
pub const GLOBAL_FUNCTIONS: &[&str] = &[
    "range",
    "dict",
    "namespace",
    "debug",
    "lipsum",
    "cycler",
    "joiner",
];

pub fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        // Shell scripts are rendered under the name `script.sh`: every value
        // written into them is shell-quoted unless marked safe (`| quote`
        // already quoted it; `| safe` is the author asking for raw code).
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".sh") {
                AutoEscape::Custom("shell")
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(|out, state, value| {
            // Booleans print as YAML and JSON write them, not Python's True.
            if value.kind() == minijinja::value::ValueKind::Bool {
                let text = if value.is_true() { "true" } else { "false" };
                return out.write_str(text).map_err(Error::from);
            }
            derived::note_value(value);
            if crate::shell_values::collecting() {
                // A shell script: every value becomes data (see shell_values).
                let text = match value.as_str() {
                    Some(s) => s.to_string(),
                    None => value.to_string(),
                };
                let text = crate::shell_values::placeholder(value, text)?;
                return out.write_str(&text).map_err(Error::from);
            }
            minijinja::escape_formatter(out, state, value)
        });
        env.set_recursion_limit(budget::RECURSION_LIMIT);
        env.set_fuel(Some(budget::FUEL));
        env.add_filter("quote", quote_filter);
        env.add_filter("safe", safe_filter);
        env
    })
}

/// The expression inside a string that is exactly one `{{ ... }}`.
pub fn sole_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    if inner.contains("}}") || inner.contains("{{") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

/// Whether a string has any template syntax at all (plain strings skip the engine).
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// Renders a template string to text.
pub fn render_str(source: &str, ctx: &Value) -> Result<String, Error> {
    if !is_template(source) {
        return Ok(source.to_string());
    }
    check_limits(source, false).map_err(LimitError::into_error)?;
    let (src, ctx) = (source.to_string(), ctx.clone());
    budget::on_worker(move || {
        derived::noting(&src, false, &ctx, || {
            let t = environment().template_from_str(&src)?;
            budget::render_capped(&t, &ctx).map_err(|e| name_undefined(e, &src, false, &ctx))
        })
    })
}

/// minijinja's strict-undefined error says "undefined value" without saying
/// which: find the first name the template reads that does not resolve.
fn name_undefined(e: Error, source: &str, expression: bool, ctx: &Value) -> Error {
    if e.kind() != ErrorKind::UndefinedError {
        return e;
    }
    let Ok(names) = reads(source, expression) else {
        return e;
    };
    for name in names {
        // Check each prefix: `steps.a.outputs.url` fails at its first missing part.
        let mut path = String::new();
        for part in name.split('.') {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(part);
            let resolved = compile_expression(&path).and_then(|x| x.eval(ctx));
            if !resolved.is_ok_and(|v| !v.is_undefined()) {
                return Error::new(ErrorKind::UndefinedError, format!("`{path}` is undefined"));
            }
        }
    }
    e
}

/// Renders a shell script (or a `command` metric query): every value
/// reaches the shell as data, through an environment variable
/// ([`crate::shell_values`]). `shell` is false for an interpreter that is
/// not a POSIX shell.
pub fn render_shell(
    source: &str,
    ctx: &Value,
    shell: bool,
) -> Result<crate::shell_values::Script, Error> {
    if !is_template(source) {
        return Ok(crate::shell_values::Script {
            text: source.to_string(),
            values: Vec::new(),
            display: source.to_string(),
        });
    }
    check_limits(source, false).map_err(LimitError::into_error)?;
    let (src, ctx) = (source.to_string(), ctx.clone());
    // The values are collected on the thread that renders: the worker.
    budget::on_worker(move || {
        derived::noting(&src, false, &ctx, || {
            crate::shell_values::render(
                || {
                    let t = environment().template_from_named_str("script.sh", &src)?;
                    budget::render_capped(&t, &ctx)
                        .map_err(|e| name_undefined(e, &src, false, &ctx))
                },
                shell,
            )
        })
    })
}

/// Whether an interpreter's program is a POSIX shell (values can be data).
pub fn is_shell(interpreter: &[String]) -> bool {
    let program = interpreter.first().map_or("", String::as_str);
    let name = program.rsplit('/').next().unwrap_or(program);
    matches!(
        name,
        "sh" | "bash" | "dash" | "zsh" | "ksh" | "mksh" | "ash" | "busybox"
    )
}

/// Renders a string keeping the type of a sole expression.
pub fn render_value(source: &str, ctx: &Value) -> Result<Value, Error> {
    if let Some(expr) = sole_expression(source) {
        let (expr, ctx) = (expr.to_string(), ctx.clone());
        return budget::on_worker(move || {
            derived::noting(&expr, true, &ctx, || {
                let v = compile_expression(&expr)?
                    .eval(&ctx)
                    .map_err(|err| name_undefined(err, &expr, true, &ctx))?;
                budget::check_value(&v)?;
                derived::note_value(&v);
                Ok(v)
            })
        });
    }
    render_str(source, ctx).map(Value::from)
}

/// Compiles a standalone expression (`when`, `condition`, a sole `{{ ... }}`).
///
/// minijinja 2.x panics ("empty lexer stack") on an expression with a `}}` at
/// bracket depth 0 followed by more input, e.g. `a }} b`: the `}}` closes a
/// variable block that was never opened. Such a `}}` is never valid in an
/// expression, so it is refused here as a syntax error before minijinja sees it.
fn compile_expression<'s>(expr: &'s str) -> Result<minijinja::Expression<'s, 's>, Error> {
    check_limits(expr, true).map_err(LimitError::into_error)?;
    if has_stray_variable_end(expr) {
        return Err(Error::new(
            ErrorKind::SyntaxError,
            "unexpected `}}`: an expression is written without `{{ }}`",
        ));
    }
    let env: &'s Environment<'s> = environment();
    env.compile_expression(expr)
}

/// Whether `expr` has a `}}` (or `-}}`, `+}}`) outside string literals and
/// brackets, where minijinja's lexer would read it as the end of a variable block.
fn has_stray_variable_end(expr: &str) -> bool {
    let b = expr.as_bytes();
    let mut depth: isize = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                // Skip the string literal; an unterminated one ends lexing.
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'-' | b'+' if depth == 0 && b[i + 1..].starts_with(b"}}") => return true,
            b'}' if depth == 0 && b[i + 1..].starts_with(b"}") => return true,
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    false
}

/// Evaluates an expression (`when`, `condition`) to a boolean.
pub fn eval_bool(expr: &str, ctx: &Value) -> Result<bool, Error> {
    let (owned, c) = (expr.to_string(), ctx.clone());
    let v = budget::on_worker(move || {
        compile_expression(&owned)?
            .eval(&c)
            .map_err(|err| name_undefined(err, &owned, true, &c))
    })?;
    if v.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            format!("`{expr}` is undefined"),
        ));
    }
    Ok(v.is_true())
}

/// Renders every string inside a JSON value (keys untouched), typed where a
/// string is a sole expression.
pub fn render_json(v: &serde_json::Value, ctx: &Value) -> Result<serde_json::Value, Error> {
    use serde_json::Value as J;
    Ok(match v {
        J::String(s) if is_template(s) => {
            let out = render_value(s, ctx)?;
            serde_json::to_value(&out)
                .map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))?
        }
        J::Array(items) => J::Array(
            items
                .iter()
                .map(|i| render_json(i, ctx))
                .collect::<Result<_, _>>()?,
        ),
        J::Object(map) => J::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_json(v, ctx)?)))
                .collect::<Result<_, Error>>()?,
        ),
        other => other.clone(),
    })
}

/// Dotted names a template or expression reads from its context.
pub fn reads(source: &str, expression: bool) -> Result<Vec<String>, Error> {
    let env = environment();
    let mut names: Vec<String> = if expression {
        let compiled = compile_expression(source)?;
        match limits::slices_as_items(source, true) {
            Some(rewritten) => compile_expression(&rewritten)?
                .undeclared_variables(true)
                .into_iter()
                .collect(),
            None => compiled.undeclared_variables(true).into_iter().collect(),
        }
    } else {
        check_limits(source, false).map_err(LimitError::into_error)?;
        let compiled = env.template_from_str(source)?;
        match limits::slices_as_items(source, false) {
            Some(rewritten) => env
                .template_from_str(&rewritten)?
                .undeclared_variables(true)
                .into_iter()
                .collect(),
            None => compiled.undeclared_variables(true).into_iter().collect(),
        }
    };
    names.sort();
    Ok(names)
}

/// A value known only at run time, rendered as `<path>` in previews.
#[derive(Clone)]
pub struct Symbol(pub String);

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.0)
    }
}

impl Object for Symbol {
    /// Plain, so a symbol inside JSON (a request body, a flag value)
    /// serialises as its `<path>` text like everywhere else, not as `{}`.
    fn repr(self: &Arc<Self>) -> minijinja::value::ObjectRepr {
        minijinja::value::ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = match key.as_str() {
            Some(s) => s.to_string(),
            None => key.to_string(),
        };
        Some(Value::from_object(Symbol(format!("{}.{}", self.0, key))))
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result
    where
        Self: Sized + 'static,
    {
        write!(f, "<{}>", self.0)
    }

    fn is_true(self: &Arc<Self>) -> bool {
        true
    }
}

pub fn symbol(path: impl Into<String>) -> Value {
    Value::from_object(Symbol(path.into()))
}

/// Whether a rendered value contains a run-time symbol.
pub fn is_symbolic(v: &Value) -> bool {
    v.downcast_object_ref::<Symbol>().is_some()
        || v.to_string().contains('<') && v.to_string().contains('>')
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    #[test]
    fn quote_makes_one_word() {
        assert_eq!(shell_quote("abc"), "abc");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("x'; rm -rf / #"), r"'x'\''; rm -rf / #'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn shell_scripts_pass_values_as_data_unless_safe() {
        let ctx = context! { params => context! { x => "a; rm -rf /", n => 3 } };
        let s = render_shell("echo {{ params.x }}", &ctx, true).unwrap();
        assert_eq!(s.text, r#"echo "${RUNBOOK_VALUE_1}""#);
        assert_eq!(s.display, r"echo 'a; rm -rf /'");
        assert_eq!(s.values[0].1, "a; rm -rf /");
        let s = render_shell("echo {{ params.x | quote }}", &ctx, true).unwrap();
        assert_eq!(s.text, r#"echo "${RUNBOOK_VALUE_1}""#);
        assert_eq!(s.values[0].1, "a; rm -rf /");
        let s = render_shell("echo {{ params.n }}", &ctx, true).unwrap();
        assert_eq!(s.display, "echo 3");
        assert_eq!(
            render_shell("{{ params.x | safe }}", &ctx, true)
                .unwrap()
                .text,
            "a; rm -rf /"
        );
        assert_eq!(render_str("{{ params.x }}", &ctx).unwrap(), "a; rm -rf /");
    }

    #[test]
    fn booleans_render_lowercase() {
        let ctx = context! { params => context! { on => true, off => false } };
        assert_eq!(
            render_str("{{ params.on }}/{{ params.off }}", &ctx).unwrap(),
            "true/false"
        );
        assert_eq!(
            render_shell("[ {{ params.on }} = true ]", &ctx, true)
                .unwrap()
                .display,
            "[ true = true ]"
        );
    }

    #[test]
    fn sole_expression_keeps_type() {
        let ctx = context! { params => context! { n => 10 } };
        let v = render_value("{{ params.n }}", &ctx).unwrap();
        assert_eq!(v, Value::from(10));
        let v = render_value("n={{ params.n }}", &ctx).unwrap();
        assert_eq!(v.as_str(), Some("n=10"));
    }

    #[test]
    fn undefined_is_an_error_naming_what() {
        let ctx = context! { params => context! { n => 10 } };
        let e = render_str("x {{ params.n }} {{ params.m }}", &ctx).unwrap_err();
        assert_eq!(e.detail(), Some("`params.m` is undefined"));
        let e = eval_bool("params.n > 1 and steps.a.ok", &ctx).unwrap_err();
        assert_eq!(e.detail(), Some("`steps` is undefined"));
    }

    #[test]
    fn reads_lists_dotted_names() {
        let r = reads("{{ steps.a.outputs.url }} {{ params.x | quote }}", false).unwrap();
        assert_eq!(
            r,
            vec!["params.x".to_string(), "steps.a.outputs.url".to_string()]
        );
    }

    /// Found by fuzzing: `when: a }} b` panicked inside minijinja's lexer.
    #[test]
    fn stray_closing_braces_in_expression_are_an_error_not_a_panic() {
        for expr in [
            "a }} b",
            "a -}} b",
            "a }}}} b",
            "a }} }}",
            "x == \"y\" }} {{ z",
            "a }}",
        ] {
            assert!(reads(expr, true).is_err(), "{expr}");
            assert!(eval_bool(expr, &Value::UNDEFINED).is_err(), "{expr}");
        }
        // Braces inside brackets or strings are not a block end.
        assert!(reads("{'a': {'b': 1}} == x", true).is_ok());
        assert!(reads("x == '}} y'", true).is_ok());
        assert!(reads("x == \"a\\\"}}\"", true).is_ok());
        let v = crate::validate::validate_text(
            "version: 1\nname: t\nsteps:\n  - id: a\n    when: a }} b\n    shell: x\n",
        );
        assert!(v.runbook.is_none());
        assert_eq!(
            v.diagnostics[0].code,
            crate::diagnostics::Code::ExpressionSyntax
        );
    }

    #[test]
    fn symbols_render_as_paths() {
        let ctx = context! { steps => symbol("steps") };
        assert_eq!(
            render_str("curl {{ steps.deploy.outputs.url | quote }}", &ctx).unwrap(),
            "curl '<steps.deploy.outputs.url>'"
        );
    }
}
