//! The one minijinja environment every template and expression goes through.
//!
//! Strict undefined behaviour (a typo is an error, never an empty string), no
//! auto-escaping (we render shell and URLs, not HTML), and two filters of our
//! own: `quote` for shell-quoting and `tojson`. A string that is exactly one
//! `{{ ... }}` renders to its expression's value with its type, so numbers and
//! maps survive templating. Plans render with [`Symbol`]s standing in for
//! values only known at run time, so a preview never contacts anything.

use std::fmt;
use std::sync::{Arc, OnceLock};

use minijinja::value::{Object, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};

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

/// Shell-quotes a value. In a shell script every value is already data, so
/// there it is the value itself (one word, exactly as given).
fn quote_filter(v: Value) -> Value {
    if crate::shell_values::collecting() {
        return v;
    }
    Value::from_safe_string(match v.as_str() {
        Some(s) => shell_quote(s),
        None => shell_quote(&v.to_string()),
    })
}

/// `| safe`: in a shell script, the one way to write a value as code.
fn safe_filter(v: &Value) -> Value {
    let text = match v.as_str() {
        Some(s) => s.to_string(),
        None => v.to_string(),
    };
    if crate::shell_values::collecting() {
        Value::from_object(crate::shell_values::Code(text))
    } else {
        Value::from_safe_string(text)
    }
}

/// POSIX shell single-quoting: the result is always one word, never code.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'_' | b'.' | b'/' | b':' | b'=' | b',' | b'@' | b'+' | b'%'
                )
        })
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
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
        let t = environment().template_from_str(&src)?;
        budget::render_capped(&t, &ctx).map_err(|e| name_undefined(e, &src, false, &ctx))
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
        crate::shell_values::render(
            || {
                let t = environment().template_from_named_str("script.sh", &src)?;
                budget::render_capped(&t, &ctx).map_err(|e| name_undefined(e, &src, false, &ctx))
            },
            shell,
        )
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
            let v = compile_expression(&expr)?
                .eval(&ctx)
                .map_err(|err| name_undefined(err, &expr, true, &ctx))?;
            budget::check_value(&v)?;
            Ok(v)
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
        compile_expression(source)?
            .undeclared_variables(true)
            .into_iter()
            .collect()
    } else {
        check_limits(source, false).map_err(LimitError::into_error)?;
        env.template_from_str(source)?
            .undeclared_variables(true)
            .into_iter()
            .collect()
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

/// The filters and tests a template (or expression) applies, by name:
/// `(name, is_test)`. minijinja looks them up only when it renders, so an
/// unknown one passes compilation; this lets `validate` name it.
pub fn filters_and_tests(source: &str, expression: bool) -> Vec<(String, bool)> {
    use minijinja::machinery::{tokenize, Token, WhitespaceConfig};
    use minijinja::syntax::SyntaxConfig;
    let tokens: Vec<Token<'_>> = tokenize(
        source,
        expression,
        SyntaxConfig,
        WhitespaceConfig::default(),
    )
    .map_while(Result::ok)
    .map(|(t, _)| t)
    .collect();
    let mut found = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let next = |k: usize| match tokens.get(i + k) {
            Some(Token::Ident(n)) => Some(*n),
            _ => None,
        };
        match t {
            Token::Pipe => found.extend(next(1).map(|n| (n.to_string(), false))),
            Token::Ident("filter")
                if matches!(tokens.get(i.wrapping_sub(1)), Some(Token::BlockStart)) =>
            {
                found.extend(next(1).map(|n| (n.to_string(), false)));
            }
            Token::Ident("is") => {
                let name = match next(1) {
                    Some("not") => next(2),
                    other => other,
                };
                found.extend(name.map(|n| (n.to_string(), true)));
            }
            _ => {}
        }
    }
    found
}

/// Whether the environment knows a filter (`is_test`: a test) of this name.
pub fn knows(name: &str, is_test: bool) -> bool {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static SEEN: OnceLock<Mutex<HashMap<(String, bool), bool>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Mutex::default);
    let key = (name.to_string(), is_test);
    if let Some(&k) = seen.lock().ok().as_ref().and_then(|m| m.get(&key)) {
        return k;
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return false;
    }
    // Asking the environment is the only public lookup: an unknown name
    // fails with its own error kind, whatever the arguments.
    let probe = if is_test {
        format!("{{{{ none is {name} }}}}")
    } else {
        format!("{{{{ none | {name} }}}}")
    };
    let unknown = ErrorKind::UnknownFilter;
    let known = match environment().render_str(&probe, ()) {
        Ok(_) => true,
        Err(e) => !(e.kind() == unknown || e.kind() == ErrorKind::UnknownTest),
    };
    if let Ok(mut m) = seen.lock() {
        m.insert(key, known);
    }
    known
}

/// A template that breaks a load-time limit: too large, nested or chained too
/// deep, or loading another template. Found by scanning tokens, before
/// minijinja parses (its parser and compiler recurse on the expression tree,
/// so a long enough chain would overflow the stack there).
#[derive(Debug, Clone, PartialEq)]
pub struct LimitError {
    /// `include`, `import`, `extends` or `from`: the template loads another one.
    pub loads_template: bool,
    pub message: String,
    /// 1-based line and column inside the template, when known.
    pub at: Option<(usize, usize)>,
}

impl LimitError {
    /// The message with where in the template, e.g. `... (line 1, column 9 of the template)`.
    pub fn describe(&self) -> String {
        match self.at {
            Some((l, c)) => format!("{} (line {l}, column {c} of the template)", self.message),
            None => self.message.clone(),
        }
    }

    fn into_error(self) -> Error {
        Error::new(ErrorKind::SyntaxError, self.describe())
    }
}

/// Checks a template (or, with `expression`, a bare expression) against the
/// load-time budgets in [`budget`] and refuses `include`/`import`/`extends`.
pub fn check_limits(source: &str, expression: bool) -> Result<(), LimitError> {
    use minijinja::machinery::{tokenize, Token, WhitespaceConfig};
    use minijinja::syntax::SyntaxConfig;
    if source.len() > budget::MAX_SOURCE_BYTES {
        return Err(LimitError {
            loads_template: false,
            message: format!(
                "template is {} bytes, over the limit of {} bytes",
                source.len(),
                budget::MAX_SOURCE_BYTES
            ),
            at: None,
        });
    }
    if !expression && !is_template(source) {
        return Ok(());
    }
    if expression && has_stray_variable_end(source) {
        // minijinja's lexer panics on it; compiling reports the syntax error.
        return Ok(());
    }
    let (mut depth, mut chain) = (0usize, 0usize);
    let mut after_block_start = false;
    let tokens = tokenize(
        source,
        expression,
        SyntaxConfig,
        WhitespaceConfig::default(),
    );
    for (token, span) in tokens.map_while(Result::ok) {
        let at = Some((span.start_line as usize, span.start_col as usize + 1));
        let block_start = matches!(token, Token::BlockStart);
        match token {
            Token::VariableStart | Token::BlockStart | Token::VariableEnd | Token::BlockEnd => {
                (depth, chain) = (0, 0);
            }
            Token::Ident(name @ ("include" | "import" | "extends" | "from"))
                if after_block_start =>
            {
                return Err(LimitError {
                    loads_template: true,
                    message: format!(
                        "`{{% {name} %}}` loads another template, and a runbook has none to load"
                    ),
                    at,
                });
            }
            Token::ParenOpen | Token::BracketOpen | Token::BraceOpen => {
                depth += 1;
                chain += 1;
                if depth > budget::MAX_NESTING {
                    return Err(LimitError {
                        loads_template: false,
                        message: format!(
                            "expression nests brackets more than {} deep",
                            budget::MAX_NESTING
                        ),
                        at,
                    });
                }
            }
            Token::ParenClose | Token::BracketClose | Token::BraceClose => {
                depth = depth.saturating_sub(1);
            }
            Token::Pipe
            | Token::Dot
            | Token::Tilde
            | Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::FloorDiv
            | Token::Pow
            | Token::Mod
            | Token::Eq
            | Token::Ne
            | Token::Gt
            | Token::Gte
            | Token::Lt
            | Token::Lte
            | Token::Ident("and" | "or" | "not" | "is" | "in" | "if" | "else") => chain += 1,
            _ => {}
        }
        if chain > budget::MAX_CHAIN {
            return Err(LimitError {
                loads_template: false,
                message: format!(
                    "expression chains more than {} operators, filters or lookups",
                    budget::MAX_CHAIN
                ),
                at,
            });
        }
        after_block_start = block_start;
    }
    Ok(())
}

/// Evaluation budgets: every render runs on a worker thread of its own
/// (never on an async executor's thread), with fuel, a recursion limit, an
/// output cap and, when the binary installs [`budget::Alloc`], a memory cap.
/// See docs/engine.md, "Template budgets".
// The render worker's allocator accounting is the one other `unsafe`:
// `GlobalAlloc` cannot be implemented without it.
#[allow(unsafe_code)]
pub mod budget {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::{Cell, RefCell};
    use std::io;
    use std::sync::mpsc;

    use minijinja::value::Value;
    use minijinja::{Error, ErrorKind, Template};

    /// Largest template source, in bytes.
    pub const MAX_SOURCE_BYTES: usize = 128 * 1024;
    /// Deepest bracket nesting inside one expression.
    pub const MAX_NESTING: usize = 32;
    /// Most operators, filters, tests and lookups in one `{{ }}` or `{% %}`.
    pub const MAX_CHAIN: usize = 256;
    /// Instructions one render may execute.
    pub const FUEL: u64 = 1_000_000;
    /// Deepest macro/call recursion.
    pub const RECURSION_LIMIT: usize = 64;
    /// Most bytes one render may produce.
    pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
    /// Most heap one render may hold at once.
    pub const MAX_MEMORY_BYTES: usize = 64 * 1024 * 1024;
    /// The render worker's stack.
    const WORKER_STACK: usize = 16 * 1024 * 1024;

    thread_local! {
        /// Memory budget left on this thread; `usize::MAX` when not rendering.
        static LEFT: Cell<usize> = const { Cell::new(usize::MAX) };
        /// What to do if this worker's render runs out of memory.
        static ON_OVER: RefCell<Option<Box<dyn FnOnce()>>> = const { RefCell::new(None) };
        /// This thread's render worker.
        static WORKER: RefCell<Option<mpsc::Sender<Job>>> = const { RefCell::new(None) };
    }

    type Job = Box<dyn FnOnce() + Send>;

    /// The global allocator of the `runbook` binary: the system allocator,
    /// charging allocations made while a render runs against its memory
    /// budget. A render that would go over never gets the memory: its
    /// worker reports the error and stops for good (a Rust thread cannot be
    /// cancelled, and an allocation cannot fail without aborting).
    pub struct Alloc;

    fn charge(n: usize) {
        let left = LEFT.get();
        if left == usize::MAX {
            return;
        }
        match left.checked_sub(n) {
            Some(l) => LEFT.set(l),
            None => over_budget(),
        }
    }

    fn credit(n: usize) {
        let left = LEFT.get();
        if left != usize::MAX {
            LEFT.set(left.saturating_add(n).min(usize::MAX - 1));
        }
    }

    #[cold]
    fn over_budget() -> ! {
        LEFT.set(usize::MAX);
        if let Some(report) = ON_OVER.with(|o| o.borrow_mut().take()) {
            report();
        }
        loop {
            std::thread::park();
        }
    }

    // SAFETY: every call is forwarded to `System` unchanged; the accounting
    // touches only const-initialised thread-locals and never unwinds.
    unsafe impl GlobalAlloc for Alloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            charge(layout.size());
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            charge(layout.size());
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            credit(layout.size());
            // SAFETY: `ptr` came from `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if new_size > layout.size() {
                charge(new_size - layout.size());
            } else {
                credit(layout.size() - new_size);
            }
            // SAFETY: forwarded unchanged.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    fn spawn_worker() -> Option<mpsc::Sender<Job>> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("runbook-template".into())
            .stack_size(WORKER_STACK)
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .ok()?;
        Some(tx)
    }

    /// Runs `f` on this thread's render worker under the budgets and waits
    /// for it; on a multi-threaded tokio runtime the wait gives up the
    /// executor thread, so timers, signals and other steps go on meanwhile.
    pub(super) fn on_worker<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        // (result, whether the worker lives on)
        let (tx, rx) = mpsc::sync_channel::<(Result<T, Error>, bool)>(1);
        let over = tx.clone();
        let job: Job = Box::new(move || {
            ON_OVER.with(|o| {
                *o.borrow_mut() = Some(Box::new(move || {
                    let _ = over.try_send((Err(memory_error()), false));
                }));
            });
            LEFT.set(MAX_MEMORY_BYTES);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            LEFT.set(usize::MAX);
            ON_OVER.with(|o| o.borrow_mut().take());
            let r = r.unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "template rendering panicked",
                ))
            });
            let _ = tx.try_send((r.map_err(explain), true));
        });
        let sent = WORKER.with(|w| {
            let mut w = w.borrow_mut();
            if w.is_none() {
                *w = spawn_worker();
            }
            match w.as_ref().map(|s| s.send(job)) {
                Some(Ok(())) => true,
                _ => {
                    *w = None;
                    false
                }
            }
        });
        if !sent {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "cannot start a template worker thread",
            ));
        }
        let wait = || rx.recv();
        let got = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        match got {
            Ok((r, true)) => r,
            Ok((r, false)) => {
                WORKER.with(|w| w.borrow_mut().take());
                r
            }
            Err(_) => {
                WORKER.with(|w| w.borrow_mut().take());
                Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "the template worker stopped",
                ))
            }
        }
    }

    fn memory_error() -> Error {
        Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "template ran out of its memory budget ({} MiB)",
                MAX_MEMORY_BYTES >> 20
            ),
        )
    }

    /// Says which budget ran out, with its limit.
    fn explain(e: Error) -> Error {
        match e.kind() {
            ErrorKind::OutOfFuel => Error::new(
                ErrorKind::InvalidOperation,
                format!("template ran out of its evaluation budget ({FUEL} steps)"),
            ),
            _ => e,
        }
    }

    fn output_error() -> Error {
        Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "template output exceeds its budget of {} MiB",
                MAX_OUTPUT_BYTES >> 20
            ),
        )
    }

    /// The rendered text, refused once it passes [`MAX_OUTPUT_BYTES`].
    struct Capped(Vec<u8>);

    impl io::Write for Capped {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0.len() + buf.len() > MAX_OUTPUT_BYTES {
                return Err(io::Error::other("output budget"));
            }
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    pub(super) fn render_capped(t: &Template<'_, '_>, ctx: &Value) -> Result<String, Error> {
        let mut out = Capped(Vec::new());
        match t.render_captured_to(ctx, &mut out) {
            Ok(_) => Ok(String::from_utf8(out.0)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())),
            Err(e) if e.kind() == ErrorKind::WriteFailure => Err(output_error()),
            Err(e) => Err(e),
        }
    }

    /// A sole expression's value is output too.
    pub(super) fn check_value(v: &Value) -> Result<(), Error> {
        match v.as_str() {
            Some(s) if s.len() > MAX_OUTPUT_BYTES => Err(output_error()),
            _ => Ok(()),
        }
    }
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
