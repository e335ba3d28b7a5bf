//! How template values reach a shell script: as data, never as code.
//!
//! Quoting a value where it is inserted only protects a bare word; inside a
//! comment, double quotes, a heredoc or `$(( ))` the shell parses the quoted
//! text again. So, as GitHub's hardening guide asks for Actions, a value is
//! never written into the script: rendering leaves a placeholder per value,
//! then a small lexer of the rendered script finds each placeholder's shell
//! context and writes a reference to an environment variable
//! (`RUNBOOK_VALUE_1`, ...) in the form that context reads as one plain
//! string: `"${V}"` in a command, `${V}` inside double quotes, a comment or
//! an unquoted heredoc, `'"${V}"'` inside single quotes. The executor sets
//! those variables; what the script sees is exactly the value.
//!
//! Three contexts cannot take a reference: arithmetic (`$(( ))`, `(( ))`,
//! array subscripts, `[[ a -eq b ]]`) evaluates a variable's value as an
//! expression, so there a value must be a plain integer and is written as
//! one; a quoted heredoc expands nothing, so the value is written as is,
//! unless a line of it would end the heredoc; a heredoc delimiter cannot be
//! a value. Anything else is an error, never a silent insertion. Only
//! `| safe` writes text as code. The plan shows each value inline, quoted
//! for reading ([`Script::display`]).
//!
//! This file is the rendering side (the placeholders, [`render`], the
//! [`Script`] it returns); `lexer.rs` the lexer that finds each
//! placeholder's shell context, the one part that knows shell syntax.

use std::cell::RefCell;

use minijinja::value::Value;
use minijinja::{Error, ErrorKind};

mod lexer;
#[cfg(test)]
mod tests;

use lexer::Lexer;

/// Start and end of a placeholder in rendered text; private-use characters
/// that no filter changes, around a per-render nonce.
pub(super) const OPEN: char = '\u{E000}';
pub(super) const CLOSE: char = '\u{E001}';

/// The prefix of the variables that carry values into the script.
pub const VAR_PREFIX: &str = "RUNBOOK_VALUE_";

/// A rendered script: its text, the values it reads, and a version for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// What the shell runs.
    pub text: String,
    /// Environment variables the script reads its values from.
    pub values: Vec<(String, String)>,
    /// The script with each value written inline, quoted for its context.
    pub display: String,
}

/// Text written with `| safe`: the author asks for it to be code.
#[derive(Debug)]
pub(crate) struct Code(pub(crate) String);

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl minijinja::value::Object for Code {
    fn render(self: &std::sync::Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

struct Collector {
    nonce: String,
    values: Vec<String>,
    bytes: usize,
}

thread_local! {
    static COLLECTOR: RefCell<Option<Collector>> = const { RefCell::new(None) };
}

/// Whether a shell script is being rendered on this thread.
pub(crate) fn collecting() -> bool {
    COLLECTOR.with(|c| c.borrow().is_some())
}

/// What the formatter writes for a value while a script renders: code for
/// `| safe`, captured template output (it holds our nonce) as it is, and a
/// placeholder for everything else.
pub(crate) fn placeholder(value: &Value, text: String) -> Result<String, Error> {
    if let Some(code) = value.downcast_object_ref::<Code>() {
        return Ok(code.0.clone());
    }
    COLLECTOR.with(|c| {
        let mut c = c.borrow_mut();
        let Some(c) = c.as_mut() else {
            return Ok(text);
        };
        // Lower-cased, so a placeholder `{% filter upper %}` changed is found too.
        if text.to_ascii_lowercase().contains(&c.nonce) {
            // The output of a macro or a `{% set %}` block is the author's
            // text with placeholders in it, and minijinja marks it safe. Any
            // other value holding a placeholder was built from one (`s ~
            // params.x`, `format`, `{% filter %}`), so holds text nobody
            // can vouch for: refused, never inserted.
            if value.is_safe() && text.contains(&c.nonce) {
                return Ok(text);
            }
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "a value built from a macro's or a block's output (with `~`, `format` or a `{% filter %}`) cannot go into a shell script: write the parts as separate `{{ }}`",
            ));
        }
        // The values are the script's output too: they share its budget.
        c.bytes = c.bytes.saturating_add(text.len());
        if c.bytes > crate::template::budget::MAX_OUTPUT_BYTES {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "template output exceeds its budget of {} MiB",
                    crate::template::budget::MAX_OUTPUT_BYTES >> 20
                ),
            ));
        }
        c.values.push(text);
        Ok(format!("{OPEN}{}.{}{CLOSE}", c.nonce, c.values.len()))
    })
}

/// Renders `source` with `render` (which must use the shared environment)
/// and turns each value into a reference. `shell` is false for an
/// interpreter that is not a POSIX shell: there no value can be data, so a
/// value is an error.
pub fn render(
    render: impl FnOnce() -> Result<String, Error>,
    shell: bool,
) -> Result<Script, Error> {
    // Always with letters: `{% filter upper %}` must change every nonce,
    // or a render whose random hex happened to be all digits would pass a
    // placeholder through that the next render refuses (a flaky pre-flight).
    let nonce = format!("rb{:016x}", fastrand::u64(..));
    COLLECTOR.with(|c| {
        *c.borrow_mut() = Some(Collector {
            nonce: nonce.clone(),
            values: Vec::new(),
            bytes: 0,
        });
    });
    let rendered = render();
    let values = COLLECTOR
        .with(|c| c.borrow_mut().take())
        .map(|c| c.values)
        .unwrap_or_default();
    let rendered = rendered?;
    if values.is_empty() && !rendered.contains(OPEN) {
        return Ok(Script {
            display: rendered.clone(),
            text: rendered,
            values: Vec::new(),
        });
    }
    if !shell {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "this interpreter is not a POSIX shell, so a template value cannot be passed to it as data: read it from the environment (the step's `env:`) or write `| safe` to insert it as code",
        ));
    }
    Lexer::new(&rendered, &nonce, &values).run()
}
