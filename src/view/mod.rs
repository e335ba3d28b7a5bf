//! Listeners that show or record a run: the live terminal view (indicatif),
//! plain timestamped lines for CI and pipes, JSON log lines, and the report.

mod json_log;
mod plain;
mod report;
mod terminal;

pub use json_log::JsonLog;
pub use plain::Plain;
pub use report::Report;
pub use terminal::Terminal;

use std::io::IsTerminal;
use std::time::Duration;

/// A line from a child or a param as a terminal can show it: control
/// characters (CR, ESC, ...) are written as `\r`, `\u{1b}`, so nothing a
/// step prints can move the cursor, rewrite a line or recolour the view.
pub(crate) fn printable(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut s = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if c.is_control() && c != '\t' {
            s.extend(c.escape_default());
        } else {
            s.push(c);
        }
    }
    std::borrow::Cow::Owned(s)
}

/// Whether what goes to stderr may be coloured: a terminal, and no `NO_COLOR`.
pub fn color_stderr() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

pub(crate) fn short(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        crate::duration::format(Duration::from_secs(d.as_secs()))
    }
}
