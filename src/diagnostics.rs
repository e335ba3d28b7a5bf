//! Diagnostics: a span, a stable code and a message, rendered with the source line.
//!
//! Codes are part of the contract (tests and editors match on them), so they
//! live in one enum with their numbers spelled out; renumbering is a breaking
//! change. Rendering is ours rather than a crate's so the text is stable and
//! exactly testable: `error[E010]: ...`, a `--> file:line:col` line, the source
//! line and a caret underline.

use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::spec::Span;

macro_rules! codes {
    ($($variant:ident = $code:literal, $summary:literal;)*) => {
        /// Every diagnostic code the tool emits. The number never changes meaning.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $($variant),* }

        impl Code {
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code),* }
            }
            pub fn summary(self) -> &'static str {
                match self { $(Code::$variant => $summary),* }
            }
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];
        }
    };
}

codes! {
    Io = "E001", "the file could not be read";
    YamlSyntax = "E002", "YAML syntax error";
    InputBudget = "E003", "input budget exceeded (size, nesting or alias expansion)";
    DuplicateKey = "E004", "a mapping repeats a key";
    UnknownField = "E010", "unknown field";
    WrongType = "E011", "a value has the wrong type";
    MissingField = "E012", "a required field is missing";
    InvalidValue = "E013", "a value is not one of those allowed";
    UnsupportedVersion = "E014", "unsupported format version";
    InvalidId = "E020", "an id does not match [a-z][a-z0-9_]*";
    DuplicateId = "E021", "two steps share an id";
    StepKind = "E022", "a step needs exactly one kind";
    UnknownNeed = "E023", "`needs` names a step that does not exist";
    Cycle = "E024", "the steps form a cycle";
    InvalidDuration = "E025", "a duration is malformed";
    InvalidRetry = "E026", "a retry policy is inconsistent";
    InvalidNumber = "E027", "a number is out of range";
    ParamType = "E030", "a parameter's value does not match its type";
    ParamDefaultNotInEnum = "E031", "a parameter's default is not in its enum";
    UnknownParam = "E032", "an unknown parameter was given";
    MissingParam = "E033", "a required parameter was not given";
    UnknownProvider = "E040", "a step names a provider that is not declared";
    ProviderKind = "E041", "a provider has the wrong kind for the step";
    AmbiguousProvider = "E042", "no provider named and several could serve";
    ProviderConfig = "E043", "a provider's settings are incomplete";
    ApprovalQuorum = "E050", "an approval's quorum cannot be met";
    TemplateSyntax = "E060", "a template does not parse";
    UndefinedName = "E061", "a template reads a name that is not defined";
    NotAncestor = "E062", "a template reads a step that does not run before it";
    ExpressionSyntax = "E063", "an expression does not compile";
    UnknownFilter = "E064", "a template uses a filter or test that does not exist";
    RenderFailed = "E065", "a template fails to render once params are known";
    InvalidUrl = "E066", "a URL is malformed once params are known";
    SecretSource = "E070", "a secret has no source or several";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    #[serde(serialize_with = "ser_span")]
    pub span: Span,
    pub message: String,
    pub help: Option<String>,
    pub notes: Vec<String>,
}

fn ser_span<S: serde::Serializer>(span: &Span, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("Span", 2)?;
    st.serialize_field("line", &span.start.line)?;
    st.serialize_field("column", &span.start.col)?;
    st.end()
}

impl Diagnostic {
    pub fn new(code: Code, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            span,
            message: message.into(),
            help: None,
            notes: Vec::new(),
        }
    }

    pub fn warning(code: Code, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::new(code, span, message)
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// Renders the diagnostic against `source`, the text of `file`.
    pub fn render(&self, file: &str, source: &str, color: bool) -> String {
        let (red, bold, blue, reset) = if color {
            match self.severity {
                Severity::Error => ("\x1b[1;31m", "\x1b[1m", "\x1b[1;34m", "\x1b[0m"),
                Severity::Warning => ("\x1b[1;33m", "\x1b[1m", "\x1b[1;34m", "\x1b[0m"),
            }
        } else {
            ("", "", "", "")
        };
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{red}{label}[{}]{reset}{bold}: {}{reset}",
            self.code, self.message
        );
        let line_no = self.span.start.line.max(1);
        let _ = writeln!(
            out,
            "  {blue}-->{reset} {file}:{}:{}",
            line_no,
            self.span.start.col.max(1)
        );
        if let Some(line) = source.lines().nth(line_no as usize - 1) {
            let width = line_no.to_string().len();
            let pad = " ".repeat(width);
            let start = self.span.start.col.max(1) as usize - 1;
            let line_chars = line.chars().count();
            let end = if self.span.end.line == self.span.start.line
                && self.span.end.col > self.span.start.col
            {
                self.span.end.col as usize - 1
            } else {
                line_chars.max(start + 1)
            };
            let mut len = end.saturating_sub(start).max(1);
            // Trailing blanks (a block scalar's span ends on the next line) are not worth underlining.
            let trimmed = line.trim_end().chars().count();
            if start < trimmed && start + len > trimmed {
                len = trimmed - start;
            }
            let _ = writeln!(out, "{pad} {blue}|{reset}");
            let _ = writeln!(out, "{blue}{line_no}{reset} {blue}|{reset} {line}");
            let lead: String = line
                .chars()
                .take(start)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(
                out,
                "{pad} {blue}|{reset} {lead}{red}{}{reset}",
                "^".repeat(len)
            );
        }
        if let Some(help) = &self.help {
            let _ = writeln!(out, "  = help: {help}");
        }
        for note in &self.notes {
            let _ = writeln!(out, "  = note: {note}");
        }
        out
    }
}

/// Diagnostics of one file, errors first then by position.
#[derive(Debug, Default)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn error(&mut self, code: Code, span: Span, message: impl Into<String>) -> &mut Diagnostic {
        self.items.push(Diagnostic::new(code, span, message));
        let last = self.items.len() - 1;
        &mut self.items[last]
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by(|a, b| {
            (a.span.start, a.code, &a.message).cmp(&(b.span.start, b.code, &b.message))
        });
        self.items.dedup();
        self.items
    }
}

/// The closest of `candidates` to `word`, if close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| {
            *d <= (c.len().max(word.len()) / 3).max(1) || c.starts_with(word) && word.len() >= 3
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("neds", ["id", "needs", "shell"]),
            Some("needs")
        );
        assert_eq!(did_you_mean("zzzzzz", ["id", "needs", "shell"]), None);
    }

    #[test]
    fn codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "{c} twice");
        }
    }

    #[test]
    fn renders_caret_under_span() {
        let src = "steps:\n  - id: a\n    neds: [b]\n";
        let d = Diagnostic::new(
            Code::UnknownField,
            Span {
                start: crate::spec::Pos { line: 3, col: 5 },
                end: crate::spec::Pos { line: 3, col: 9 },
            },
            "unknown field `neds`",
        )
        .with_help("did you mean `needs`?");
        let text = d.render("x.yaml", src, false);
        assert_eq!(
            text,
            "error[E010]: unknown field `neds`\n  --> x.yaml:3:5\n  |\n3 |     neds: [b]\n  |     ^^^^\n  = help: did you mean `needs`?\n"
        );
    }
}
