//! Diagnostics: a span, a stable code and a message, rendered with the source line.
//!
//! Codes are part of the contract (tests and editors match on them), so they
//! live in one enum with their numbers spelled out; renumbering is a breaking
//! change. Rendering goes through `annotate-snippets`, the renderer rustc
//! uses, so the text keeps the shape tools already parse: `error[E010]: ...`,
//! a `--> file:line:col` line, the source line with a caret underline, and
//! `= help:` / `= note:` lines. A diagnostic may carry secondary labels
//! (`first defined here`, each hop of a cycle), drawn under their own lines.
//! Spans are line/column pairs; they become byte ranges only here, clamped to
//! the source and to character boundaries, so no span can make rendering panic.

use std::fmt;
use std::ops::Range;

use annotate_snippets::{AnnotationKind, Level, Origin, Renderer, Snippet};
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
    NotUtf8 = "E005", "the file is not UTF-8";
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
    GateSettings = "E028", "a metric gate's settings do not fit together";
    ParamType = "E030", "a parameter's value does not match its type";
    ParamDefaultNotInEnum = "E031", "a parameter's default is not in its enum";
    UnknownParam = "E032", "an unknown parameter was given";
    MissingParam = "E033", "a required parameter was not given";
    UnknownProvider = "E040", "a step names a provider that is not declared";
    ProviderKind = "E041", "a provider has the wrong kind for the step";
    AmbiguousProvider = "E042", "no provider named and several could serve";
    ProviderConfig = "E043", "a provider's settings are incomplete";
    ApprovalQuorum = "E050", "an approval's quorum cannot be met";
    ApproverName = "E051", "an approver's name cannot be shown or typed as it is";
    AllowedSigners = "E052", "an allowed-signers file cannot be read, does not parse, or has no key for an approver";
    TemplateSyntax = "E060", "a template does not parse";
    UndefinedName = "E061", "a template reads a name that is not defined";
    NotAncestor = "E062", "a template reads a step that does not run before it";
    ExpressionSyntax = "E063", "an expression does not compile";
    UnknownFilter = "E064", "a template uses a filter or test that does not exist";
    RenderFailed = "E065", "a template fails to render once params are known";
    InvalidUrl = "E066", "a URL is malformed once params are known";
    TemplateLimit = "E067", "a template is too large, or nests or chains expressions too deep";
    TemplateLoad = "E068", "a template includes, imports or extends another template";
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
    /// Other places the diagnostic is about, each with a short label.
    pub labels: Vec<Label>,
}

/// A secondary span of a diagnostic: where the first of two duplicates is,
/// or one hop of a cycle.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Label {
    #[serde(serialize_with = "ser_span")]
    pub span: Span,
    pub message: String,
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
            labels: Vec::new(),
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

    /// Adds a secondary label at `span`.
    pub fn with_label(mut self, span: Span, message: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            message: message.into(),
        });
        self
    }

    /// Renders the diagnostic against `source`, the text of `file`; ANSI
    /// colors only when `color` is set.
    pub fn render(&self, file: &str, source: &str, color: bool) -> String {
        let level = match self.severity {
            Severity::Error => Level::ERROR,
            Severity::Warning => Level::WARNING,
        };
        let title = level.primary_title(&self.message).id(self.code.as_str());
        let mut group = match excerpt(source, self.span, &self.labels) {
            Some(ex) => {
                let primary = AnnotationKind::Primary.span(ex.primary);
                let secondary = ex
                    .labels
                    .into_iter()
                    .map(|(range, label)| AnnotationKind::Context.span(range).label(label));
                title.element(
                    Snippet::source(ex.text)
                        .line_start(ex.first_line)
                        .path(file)
                        .annotation(primary)
                        .annotations(secondary),
                )
            }
            // The span is not in the text (an empty file, a position past
            // its end): the location alone.
            None => title.element(
                Origin::path(file)
                    .line(self.span.start.line.max(1) as usize)
                    .char_column(self.span.start.col.max(1) as usize),
            ),
        };
        if let Some(help) = &self.help {
            group = group.element(Level::HELP.message(help));
        }
        for note in &self.notes {
            group = group.element(Level::NOTE.message(note));
        }
        let renderer = if color {
            Renderer::styled()
        } else {
            Renderer::plain()
        };
        let mut out = renderer.render(&[group]);
        out.push('\n');
        out
    }
}

/// The lines of `source` a diagnostic shows, with its spans as byte ranges
/// into them.
struct Excerpt<'a> {
    text: &'a str,
    /// Line number of the first line of `text`.
    first_line: usize,
    primary: Range<usize>,
    labels: Vec<(Range<usize>, &'a str)>,
}

/// Cuts the lines from the first to the last span out of `source`. A span is
/// drawn on its first line only (a block's span would otherwise mark every
/// line of it), without the line's trailing blanks. `None` when the primary
/// span's line is not in `source`; labels outside it are left out.
fn excerpt<'a>(source: &'a str, primary: Span, labels: &'a [Label]) -> Option<Excerpt<'a>> {
    let line_of = |span: Span| span.start.line.max(1) as usize;
    let lines_wanted = std::iter::once(primary)
        .chain(labels.iter().map(|l| l.span))
        .map(line_of);
    let first = lines_wanted.clone().min().unwrap_or(1);
    let last = lines_wanted.max().unwrap_or(1);
    // Byte offset of the start of each line from `first` to `last`.
    let mut starts = Vec::new();
    let mut offset = 0;
    for (i, line) in source.split_inclusive('\n').enumerate() {
        let number = i + 1;
        if number > last {
            break;
        }
        if number >= first {
            starts.push(offset);
        }
        offset += line.len();
    }
    let end_of_text = offset;
    let line_range = |number: usize| -> Option<Range<usize>> {
        let start = *starts.get(number.checked_sub(first)?)?;
        let end = starts
            .get(number + 1 - first)
            .copied()
            .unwrap_or(end_of_text);
        Some(start..end)
    };
    let range_of = |span: Span| -> Option<Range<usize>> {
        let number = line_of(span);
        let bounds = line_range(number)?;
        let line = source[bounds.clone()].trim_end_matches(['\n', '\r']);
        let shown = line.trim_end().len();
        let at_col = |col: u32| {
            let col = col.max(1) as usize - 1;
            line.char_indices().nth(col).map_or(line.len(), |(i, _)| i)
        };
        let start = at_col(span.start.col);
        let mut end = if span.end.line == span.start.line && span.end.col > span.start.col {
            at_col(span.end.col)
        } else {
            line.len()
        };
        // Trailing blanks (a block scalar's span ends on the next line) are
        // not worth underlining.
        if start < shown {
            end = end.min(shown);
        }
        Some(bounds.start + start..bounds.start + end.max(start))
    };
    let primary_range = range_of(primary)?;
    let text_start = *starts.first()?;
    let text_end = line_range(last).map_or(end_of_text, |r| r.end);
    let text = &source[text_start..text_end];
    let shift = |r: Range<usize>| r.start - text_start..r.end - text_start;
    Some(Excerpt {
        text,
        first_line: first,
        primary: shift(primary_range),
        labels: labels
            .iter()
            .filter_map(|l| Some((shift(range_of(l.span)?), l.message.as_str())))
            .collect(),
    })
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

    fn span(line: u32, col: u32, end_line: u32, end_col: u32) -> Span {
        Span::range(line, col, end_line, end_col)
    }

    #[test]
    fn renders_caret_under_span() {
        let src = "steps:\n  - id: a\n    neds: [b]\n";
        let d = Diagnostic::new(Code::UnknownField, span(3, 5, 3, 9), "unknown field `neds`")
            .with_help("did you mean `needs`?");
        let text = d.render("x.yaml", src, false);
        assert_eq!(
            text,
            "error[E010]: unknown field `neds`\n --> x.yaml:3:5\n  |\n3 |     neds: [b]\n  |     ^^^^\n  |\n  = help: did you mean `needs`?\n"
        );
    }

    #[test]
    fn secondary_labels_are_drawn_on_their_own_lines() {
        let src = "a: 1\nb: 2\na: 3\n";
        let d = Diagnostic::new(Code::DuplicateKey, span(3, 1, 3, 2), "duplicate key `a`")
            .with_label(span(1, 1, 1, 2), "first defined here");
        assert_eq!(
            d.render("x.yaml", src, false),
            "error[E004]: duplicate key `a`\n --> x.yaml:3:1\n  |\n1 | a: 1\n  | - first defined here\n2 | b: 2\n3 | a: 3\n  | ^\n"
        );
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["labels"][0]["span"]["line"], 1);
        assert_eq!(json["labels"][0]["span"]["column"], 1);
        assert_eq!(json["labels"][0]["message"], "first defined here");
        assert_eq!(json["span"]["line"], 3);
    }

    #[test]
    fn color_only_when_asked() {
        let d = Diagnostic::warning(Code::InvalidValue, span(1, 1, 1, 2), "odd");
        assert!(!d.render("x.yaml", "a: 1\n", false).contains('\x1b'));
        let colored = d.render("x.yaml", "a: 1\n", true);
        assert!(colored.contains('\x1b'), "{colored:?}");
        assert!(colored.contains("warning"), "{colored:?}");
    }

    /// Spans a renderer can meet from a broken file or a bug elsewhere: none
    /// may panic, and each still says where.
    #[test]
    fn odd_spans_render_without_panicking() {
        let cases: &[(&str, Span)] = &[
            ("", span(1, 1, 1, 2)),
            ("", Span::default()),
            ("a: 1\n", span(9, 3, 9, 4)),
            ("a: 1\n", span(1, 40, 1, 50)),
            ("a: 1\n", span(1, 3, 1, 1)),
            ("a: 1   \n", span(1, 6, 1, 7)),
            ("a: 1", span(1, 5, 1, 6)),
            ("é: ü\r\nb: 2\r\n", span(1, 2, 1, 4)),
            ("é: ü\r\nb: 2\r\n", span(1, 1, 2, 3)),
            ("\tkey: x\n", span(1, 1, 1, 2)),
            ("k: \"\u{1F600}\u{200D}\u{1F600}\"\n", span(1, 5, 1, 6)),
            ("a:\n  - b\n\n", span(3, 1, 3, 1)),
        ];
        for (src, sp) in cases {
            let d = Diagnostic::new(Code::YamlSyntax, *sp, "bad")
                .with_label(span(7, 7, 7, 8), "nowhere")
                .with_label(span(1, 100, 1, 101), "past the end");
            let text = d.render("x.yaml", src, false);
            let at = format!("x.yaml:{}:", sp.start.line.max(1));
            assert!(text.contains(&at), "{src:?} {sp:?}:\n{text}");
        }
    }
}
