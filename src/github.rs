//! Diagnostics as GitHub Actions workflow commands (`validate --format github`),
//! so a pull request shows each problem on the line it is about.
//!
//! The Actions runner reads every line a step prints and obeys any that
//! starts with `::`. A diagnostic carries text a runbook author controls (a
//! key, a value, a file name), so one raw line break in it would let that
//! author start a command of their own (`::add-mask::`, `::stop-commands::`,
//! `::error::` on another file). Everything printed here therefore goes
//! through GitHub's own escaping: [`escape_data`] for a command's message
//! (`%`, `\r`, `\n`) and [`escape_property`] for `file=`, `title=` and the
//! like (also `:` and `,`, which end a property). No line this module
//! returns contains a raw line break.
//!
//! Positions: [`Span`](crate::spec::Span) is 1-based and half-open; GitHub's
//! `endColumn` is the last column of the range, so it is the span's end
//! column minus one, and it is given only for a range on one line.

use std::fmt::Write as _;

use crate::diagnostics::{Diagnostic, Severity};

/// The workflow command for one diagnostic of `file`:
/// `::error file=F,line=L,col=C,endLine=..,endColumn=..,title=runbook E010::MESSAGE`,
/// with the help and notes on lines of their own inside the (escaped) message.
pub fn annotation(file: &str, d: &Diagnostic) -> String {
    let command = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let start = d.span.start;
    let (line, col) = (start.line.max(1), start.col.max(1));
    let mut props = format!("file={},line={line},col={col}", escape_property(file));
    let end = d.span.end;
    if end.line >= line {
        let _ = write!(props, ",endLine={}", end.line);
        if end.line == line && end.col > col {
            let _ = write!(props, ",endColumn={}", end.col - 1);
        }
    }
    let _ = write!(
        props,
        ",title={}",
        escape_property(&format!("runbook {}", d.code))
    );
    let mut message = d.message.clone();
    if let Some(help) = &d.help {
        let _ = write!(message, "\nhelp: {help}");
    }
    for note in &d.notes {
        let _ = write!(message, "\nnote: {note}");
    }
    format!("::{command} {props}::{}", escape_data(&message))
}

/// A workflow command for a problem that is about no line of a file.
pub fn error(title: &str, message: &str) -> String {
    format!(
        "::error title={}::{}",
        escape_property(title),
        escape_data(message)
    )
}

/// A command's message: `%`, `\r` and `\n` as `%25`, `%0D`, `%0A`.
pub fn escape_data(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
    out
}

/// A command's property value: as [`escape_data`], and `:` and `,` as `%3A`, `%2C`.
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::Code;
    use crate::spec::Span;

    fn span(line: u32, col: u32, end_line: u32, end_col: u32) -> Span {
        Span::range(line, col, end_line, end_col)
    }

    #[test]
    fn escaping_follows_github() {
        let cases: &[(&str, &str, &str)] = &[
            ("plain", "plain", "plain"),
            ("50% done", "50%25 done", "50%25 done"),
            ("a\nb\r\nc", "a%0Ab%0D%0Ac", "a%0Ab%0D%0Ac"),
            ("x: y, z", "x: y, z", "x%3A y%2C z"),
            ("%0A", "%250A", "%250A"),
            ("::error::x", "::error::x", "%3A%3Aerror%3A%3Ax"),
        ];
        for (text, data, property) in cases {
            assert_eq!(escape_data(text), *data, "data {text:?}");
            assert_eq!(escape_property(text), *property, "property {text:?}");
        }
    }

    #[test]
    fn a_diagnostic_becomes_one_command() {
        let cases: &[(Diagnostic, &str)] = &[
            (
                Diagnostic::new(Code::UnknownField, span(3, 5, 3, 9), "unknown field `neds`")
                    .with_help("did you mean `needs`?"),
                "::error file=dir/x.yaml,line=3,col=5,endLine=3,endColumn=8,title=runbook E010::unknown field `neds`%0Ahelp: did you mean `needs`?",
            ),
            (
                Diagnostic::warning(Code::InvalidValue, span(4, 3, 6, 1), "odd")
                    .with_note("50% of it"),
                "::warning file=dir/x.yaml,line=4,col=3,endLine=6,title=runbook E013::odd%0Anote: 50%25 of it",
            ),
            (
                Diagnostic::new(Code::Io, Span::default(), "cannot read"),
                "::error file=dir/x.yaml,line=1,col=1,title=runbook E001::cannot read",
            ),
            (
                Diagnostic::new(
                    Code::UnknownField,
                    span(2, 1, 2, 2),
                    "unknown field `a\n::warning::x`\r\n::add-mask::y",
                ),
                "::error file=dir/x.yaml,line=2,col=1,endLine=2,endColumn=1,title=runbook E010::unknown field `a%0A::warning::x`%0D%0A::add-mask::y",
            ),
        ];
        for (d, want) in cases {
            let got = annotation("dir/x.yaml", d);
            assert_eq!(got, *want);
            assert!(!got.contains(['\n', '\r']), "{got:?}");
        }
    }

    #[test]
    fn a_file_name_cannot_end_the_properties_or_the_line() {
        let d = Diagnostic::new(Code::Io, span(1, 1, 1, 2), "m");
        assert_eq!(
            annotation("a,b:c\n::x.yaml", &d),
            "::error file=a%2Cb%3Ac%0A%3A%3Ax.yaml,line=1,col=1,endLine=1,endColumn=1,title=runbook E001::m"
        );
        assert_eq!(
            error("runbook validate", "no runbook in a\n::b"),
            "::error title=runbook validate::no runbook in a%0A::b"
        );
    }
}
