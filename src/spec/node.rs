//! The YAML layer: text -> a tree of [`Node`]s, each carrying its source span.
//!
//! We build our own small tree on top of `saphyr-parser`'s event stream rather
//! than deserialising straight from text, for three reasons: every value keeps
//! its position (so any later rule can point at it), the input budgets (size,
//! depth, alias expansion) are enforced here, in one place, while the tree is
//! built, and the serde layer in `de.rs` can keep going after one bad field so
//! that a single pass reports every error. See docs/decisions.md.
//!
//! Lists and mappings are trimmed to their length once read: grown by
//! pushing, a step's mapping of three keys held room for four, its `needs`
//! of one for four, and the tree lives as long as the spec is read from it.

use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle};

use crate::diagnostics::{Code, Diagnostic};

/// A position in the source: 1-based line and column (columns count characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// A half-open range of source positions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub start: Pos,
    pub end: Pos,
}

impl Span {
    /// From `line:col` up to (not including) `end_line:end_col`.
    pub fn range(line: u32, col: u32, end_line: u32, end_col: u32) -> Span {
        Span {
            start: Pos { line, col },
            end: Pos {
                line: end_line,
                col: end_col,
            },
        }
    }

    pub fn point(line: u32, col: u32) -> Span {
        let p = Pos { line, col };
        Span {
            start: p,
            end: Pos { line, col: col + 1 },
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.start.line, self.start.col)
    }
}

/// Limits that keep a hostile or broken file from exhausting the machine.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub max_bytes: usize,
    pub max_depth: usize,
    /// Nodes in the tree after aliases are expanded.
    pub max_nodes: usize,
    /// Bytes of scalar text in the tree after aliases are expanded. Without
    /// aliases this is under `max_bytes`; with them, a long string repeated
    /// through nested aliases would otherwise stay under `max_nodes` while
    /// asking for gigabytes. As much as a file may hold: 60 MB of text from
    /// a 685-byte file took 8.5 s to plan under the old 64 MiB (fuzzing).
    pub max_scalar_bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_bytes: 8 * 1024 * 1024,
            max_depth: 64,
            max_nodes: 2_000_000,
            max_scalar_bytes: 8 * 1024 * 1024,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub span: Span,
    pub value: Value,
}

impl Node {
    pub fn kind_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value of `key` in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The key node of `key` in a mapping node (for pointing at a field name).
    pub fn key(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, _)| k),
            _ => None,
        }
    }

    /// Converts to JSON, the shape values take in templates, flags and reports.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar_text(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// A scalar's text as written (for map keys that are numbers or booleans).
    pub fn scalar_text(&self) -> String {
        match &self.value {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Str(s) => s.clone(),
            Value::Seq(_) => "[...]".into(),
            Value::Map(_) => "{...}".into(),
        }
    }
}

fn pos(m: &saphyr_parser::Marker) -> Pos {
    Pos {
        line: u32::try_from(m.line()).unwrap_or(u32::MAX),
        col: u32::try_from(m.col() + 1).unwrap_or(u32::MAX),
    }
}

fn span(s: &saphyr_parser::Span) -> Span {
    Span {
        start: pos(&s.start),
        end: pos(&s.end),
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Int(i);
        }
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::Int(i);
        }
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(oct, 8) {
            return Value::Int(i);
        }
    }
    let looks_numeric = digits
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_numeric {
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(text.to_string())
}

struct Builder<'a> {
    text: &'a str,
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: std::collections::HashMap<usize, Anchored>,
    nodes: usize,
    scalar_bytes: usize,
    budget: Budget,
}

/// The keys of a mapping being built, to find a repeated one without comparing
/// every pair (that made a 1.7 MB mapping of 100,000 keys take 38 s to load).
/// Scalar keys are hashed by value, equal exactly when `Value`'s `==` says so;
/// lists, mappings and NaN as keys (rare) are compared one by one.
#[derive(Default)]
struct Keys {
    scalars: std::collections::HashMap<KeyId, usize>,
    others: Vec<usize>,
}

#[derive(PartialEq, Eq, Hash)]
enum KeyId {
    Null,
    Bool(bool),
    Int(i64),
    /// The bits of a float, with -0.0 as 0.0 (they are `==`).
    Float(u64),
    Str(String),
}

impl Keys {
    /// The index in `entries` of an earlier entry with the same key; if there
    /// is none, `key` is recorded as the key of the entry pushed next.
    fn find_or_insert(&mut self, entries: &[(Node, Node)], key: &Node) -> Option<usize> {
        let index = entries.len();
        let id = match &key.value {
            Value::Null => KeyId::Null,
            Value::Bool(b) => KeyId::Bool(*b),
            Value::Int(i) => KeyId::Int(*i),
            Value::Float(f) if !f.is_nan() => KeyId::Float(if *f == 0.0 { 0 } else { f.to_bits() }),
            Value::Str(s) => KeyId::Str(s.clone()),
            _ => {
                let first = self
                    .others
                    .iter()
                    .copied()
                    .find(|&i| entries[i].0.value == key.value);
                if first.is_none() {
                    self.others.push(index);
                }
                return first;
            }
        };
        match self.scalars.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(index);
                None
            }
        }
    }
}

/// An anchored node with its size, so an alias is charged to the budget
/// before it is copied.
struct Anchored {
    node: Node,
    nodes: usize,
    scalar_bytes: usize,
}

type BuildResult<T> = Result<T, Box<Diagnostic>>;

impl<'a> Builder<'a> {
    fn next(&mut self) -> BuildResult<(Event<'a>, Span)> {
        match self.parser.next_event() {
            Some(Ok((ev, sp))) => Ok((ev, span(&sp))),
            Some(Err(e)) => {
                let m = e.marker();
                let mut at = Span::point(
                    u32::try_from(m.line()).unwrap_or(u32::MAX),
                    u32::try_from(m.col() + 1).unwrap_or(u32::MAX),
                );
                // The scanner reports "found a tab" at the start of the plain
                // scalar it was reading, which can be lines above the tab.
                if e.info().contains("found a tab") {
                    at = tab_after(self.text, m.index()).unwrap_or(at);
                }
                Err(Box::new(Diagnostic::new(
                    Code::YamlSyntax,
                    at,
                    format!("invalid YAML: {}", e.info()),
                )))
            }
            None => Err(Box::new(Diagnostic::new(
                Code::YamlSyntax,
                Span::default(),
                "unexpected end of YAML input",
            ))),
        }
    }

    /// A syntax error inside a flow collection (`[...]`, `{...}`) that began
    /// on an earlier line is most often a missing `]` or `}`: say where the
    /// collection opened, since the parser only notices lines later.
    fn unclosed(&self, mut d: Box<Diagnostic>, start: Span, open: char) -> Box<Diagnostic> {
        let opened_here = self
            .text
            .lines()
            .nth((start.start.line as usize).saturating_sub(1))
            .and_then(|l| l.chars().nth((start.start.col as usize).saturating_sub(1)))
            == Some(open);
        if d.code == Code::YamlSyntax
            && d.notes.is_empty()
            && opened_here
            && d.span.start.line > start.start.line
        {
            let close = if open == '[' { ']' } else { '}' };
            d.notes.push(format!(
                "inside the `{open}` opened at line {}, column {}; is a `{close}` missing?",
                start.start.line, start.start.col
            ));
        }
        d
    }

    /// Charges `n` nodes holding `bytes` bytes of scalar text to the budget.
    fn tally(&mut self, n: usize, bytes: usize, at: Span) -> BuildResult<()> {
        self.nodes = self.nodes.saturating_add(n);
        self.scalar_bytes = self.scalar_bytes.saturating_add(bytes);
        let over = if self.nodes > self.budget.max_nodes {
            format!("{} values", self.budget.max_nodes)
        } else if self.scalar_bytes > self.budget.max_scalar_bytes {
            format!("{} bytes of text", self.budget.max_scalar_bytes)
        } else {
            return Ok(());
        };
        Err(Box::new(Diagnostic::new(
            Code::InputBudget,
            at,
            format!("the document expands to more than {over} (an alias bomb?)"),
        )))
    }

    fn node(&mut self, ev: Event<'a>, sp: Span, depth: usize) -> BuildResult<Node> {
        if depth > self.budget.max_depth {
            return Err(Box::new(Diagnostic::new(
                Code::InputBudget,
                sp,
                format!("nesting deeper than {} levels", self.budget.max_depth),
            )));
        }
        let (nodes_before, bytes_before) = (self.nodes, self.scalar_bytes);
        let (node, anchor) = match ev {
            Event::Alias(id) => {
                let (nodes, bytes) = self
                    .anchors
                    .get(&id)
                    .map(|a| (a.nodes, a.scalar_bytes))
                    .ok_or_else(|| {
                        Box::new(Diagnostic::new(Code::YamlSyntax, sp, "unknown alias"))
                    })?;
                // Charged before copying: an alias bomb stops at the budget,
                // not after building the copy that breaks it.
                self.tally(nodes, bytes, sp)?;
                let node = self.anchors[&id].node.clone();
                return Ok(Node { span: sp, ..node });
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.tally(1, text.len(), sp)?;
                let forced_str = tag
                    .as_ref()
                    .is_some_and(|t| t.handle == "tag:yaml.org,2002:" && t.suffix == "str")
                    || tag.as_ref().is_some_and(|t| t.suffix == "str");
                let value = if style == ScalarStyle::Plain && !forced_str {
                    resolve_plain(&text)
                } else {
                    Value::Str(text.into_owned())
                };
                (Node { span: sp, value }, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                self.tally(1, 0, sp)?;
                let mut items = Vec::new();
                let end = loop {
                    let (ev, isp) = self.next().map_err(|d| self.unclosed(d, sp, '['))?;
                    if matches!(ev, Event::SequenceEnd) {
                        break isp;
                    }
                    items.push(self.node(ev, isp, depth + 1)?);
                };
                items.shrink_to_fit();
                let span = Span {
                    start: sp.start,
                    end: end.end.max(sp.end),
                };
                (
                    Node {
                        span,
                        value: Value::Seq(items),
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, _) => {
                self.tally(1, 0, sp)?;
                let mut entries: Vec<(Node, Node)> = Vec::new();
                let mut keys = Keys::default();
                let mut merged: Vec<(Node, Node)> = Vec::new();
                let end = loop {
                    let (ev, ksp) = self.next().map_err(|d| self.unclosed(d, sp, '{'))?;
                    if matches!(ev, Event::MappingEnd) {
                        break ksp;
                    }
                    let key = self.node(ev, ksp, depth + 1)?;
                    let (ev, vsp) = self.next().map_err(|d| self.unclosed(d, sp, '{'))?;
                    let value = self.node(ev, vsp, depth + 1)?;
                    if key.as_str() == Some("<<") {
                        match value.value {
                            Value::Map(m) => merged.extend(m),
                            Value::Seq(maps) => {
                                for m in maps {
                                    if let Value::Map(m) = m.value {
                                        merged.extend(m);
                                    }
                                }
                            }
                            _ => {
                                return Err(Box::new(Diagnostic::new(
                                    Code::YamlSyntax,
                                    value.span,
                                    "a merge key `<<` needs a mapping or a list of mappings",
                                )))
                            }
                        }
                        continue;
                    }
                    if let Some(first) = keys.find_or_insert(&entries, &key) {
                        let (first, _) = &entries[first];
                        return Err(Box::new(
                            Diagnostic::new(
                                Code::DuplicateKey,
                                key.span,
                                format!("duplicate key `{}`", key.scalar_text()),
                            )
                            .with_label(first.span, "first defined here"),
                        ));
                    }
                    entries.push((key, value));
                };
                for (k, v) in merged {
                    if keys.find_or_insert(&entries, &k).is_none() {
                        entries.push((k, v));
                    }
                }
                entries.shrink_to_fit();
                let span = Span {
                    start: sp.start,
                    end: end.end.max(sp.end),
                };
                (
                    Node {
                        span,
                        value: Value::Map(entries),
                    },
                    anchor,
                )
            }
            other => {
                return Err(Box::new(Diagnostic::new(
                    Code::YamlSyntax,
                    sp,
                    format!("unexpected YAML event {other:?}"),
                )))
            }
        };
        if anchor != 0 {
            let anchored = Anchored {
                node: node.clone(),
                nodes: self.nodes - nodes_before,
                scalar_bytes: self.scalar_bytes - bytes_before,
            };
            self.anchors.insert(anchor, anchored);
        }
        Ok(node)
    }
}

/// The position of the first tab used as indentation at or after character
/// `from` of `text`.
fn tab_after(text: &str, from: usize) -> Option<Span> {
    let (mut line, mut col, mut leading) = (1u32, 1u32, true);
    for (i, c) in text.chars().enumerate() {
        match c {
            '\t' if leading && i >= from => return Some(Span::point(line, col)),
            '\n' => {
                line += 1;
                col = 0;
                leading = true;
            }
            ' ' | '\t' => {}
            _ => leading = false,
        }
        col += 1;
    }
    None
}

/// Parses one YAML document into a spanned tree, within `budget`.
pub fn parse(text: &str, budget: Budget) -> Result<Node, Box<Diagnostic>> {
    if text.len() > budget.max_bytes {
        return Err(Box::new(Diagnostic::new(
            Code::InputBudget,
            Span::point(1, 1),
            format!(
                "file is {} bytes, more than the limit of {} bytes",
                text.len(),
                budget.max_bytes
            ),
        )));
    }
    let mut b = Builder {
        text,
        parser: Parser::new_from_str(text),
        anchors: Default::default(),
        nodes: 0,
        scalar_bytes: 0,
        budget,
    };
    let mut root: Option<Node> = None;
    loop {
        let (ev, sp) = b.next()?;
        match ev {
            Event::StreamStart | Event::DocumentStart(_) | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => break,
            ev => {
                if root.is_some() {
                    return Err(Box::new(Diagnostic::new(
                        Code::YamlSyntax,
                        sp,
                        "a runbook file holds one YAML document; found a second",
                    )));
                }
                root = Some(b.node(ev, sp, 0)?);
            }
        }
    }
    Ok(root.unwrap_or(Node {
        span: Span::point(1, 1),
        value: Value::Null,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_resolve_by_core_schema() {
        let n = parse(
            "a: 1\nb: true\nc: '1'\nd: 1.5\ne: ~\nf: 10m\n",
            Budget::default(),
        )
        .unwrap();
        assert_eq!(n.get("a").unwrap().value, Value::Int(1));
        assert_eq!(n.get("b").unwrap().value, Value::Bool(true));
        assert_eq!(n.get("c").unwrap().value, Value::Str("1".into()));
        assert_eq!(n.get("d").unwrap().value, Value::Float(1.5));
        assert_eq!(n.get("e").unwrap().value, Value::Null);
        assert_eq!(n.get("f").unwrap().value, Value::Str("10m".into()));
        assert_eq!(n.get("f").unwrap().span.start, Pos { line: 6, col: 4 });
    }

    #[test]
    fn alias_bomb_is_a_budget_error() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&text, Budget::default()).unwrap_err();
        assert_eq!(err.code, Code::InputBudget);
    }

    /// Found by fuzzing (a timeout): each alias was copied, then counted, and
    /// only then checked, so the copy that broke the budget was built in full.
    /// Aliases are now charged with their anchor's size before copying,
    /// including aliases nested inside the anchor.
    #[test]
    fn aliases_are_charged_their_anchors_size_before_copying() {
        let text = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: &b [*a]\nc: *b\n";
        // root 1 + a (1 + 10) + b (1 + 1 + 10) + c (1 + 11) = 36
        let budget = |max_nodes| Budget {
            max_nodes,
            ..Budget::default()
        };
        assert!(parse(text, budget(36)).is_ok());
        let err = parse(text, budget(35)).unwrap_err();
        assert_eq!(err.code, Code::InputBudget);
        assert_eq!(err.span.start.line, 3);
    }

    /// Found while fixing the above: a long string repeated through nested
    /// aliases stayed under `max_nodes` while asking for gigabytes.
    #[test]
    fn long_string_alias_bomb_is_a_budget_error() {
        let mut text = format!("a0: &a0 [\"{}\"]\n", "x".repeat(1000));
        for i in 1..8 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                vec![format!("*a{p}"); 10].join(", ")
            ));
        }
        let err = parse(&text, Budget::default()).unwrap_err();
        assert_eq!(err.code, Code::InputBudget);
        assert!(err.message.contains("bytes of text"), "{}", err.message);
    }

    #[test]
    fn deep_nesting_is_a_budget_error() {
        let text = "[".repeat(200) + &"]".repeat(200);
        let err = parse(&text, Budget::default()).unwrap_err();
        assert_eq!(err.code, Code::InputBudget);
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let err = parse("a: 1\nb: 2\na: 3\n", Budget::default()).unwrap_err();
        assert_eq!(err.code, Code::DuplicateKey);
        assert_eq!(err.span.start.line, 3);
    }

    /// Found while benchmarking: duplicate keys were found by comparing every
    /// pair, so a mapping of 100,000 keys (1.7 MB) took 38 s to load.
    #[test]
    fn mapping_with_many_keys_loads_in_linear_time() {
        let mut text = String::from("m:\n");
        for i in 0..100_000 {
            text.push_str(&format!("  k{i}: {i}\n"));
        }
        let t = std::time::Instant::now();
        let n = parse(&text, Budget::default()).unwrap();
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(
            n.get("m").unwrap().get("k99999").unwrap().value,
            Value::Int(99_999)
        );
        text.push_str("  k500: again\n");
        let err = parse(&text, Budget::default()).unwrap_err();
        assert_eq!(err.code, Code::DuplicateKey);
        assert_eq!(err.span.start.line, 100_002);
        assert_eq!(err.labels.len(), 1, "{:?}", err.labels);
        assert_eq!(err.labels[0].span.start.line, 502);
        assert_eq!(err.labels[0].message, "first defined here");
    }

    #[test]
    fn duplicate_keys_compare_by_value() {
        for dup in [
            "1: a\n1: b\n",
            "0.0: a\n-0.0: b\n",
            "~: a\nnull: b\n",
            "true: a\nTrue: b\n",
        ] {
            let err = parse(dup, Budget::default()).unwrap_err();
            assert_eq!(err.code, Code::DuplicateKey, "{dup}");
        }
        for distinct in [
            "1: a\n'1': b\n",
            "1: a\n1.0: b\n",
            ".nan: a\n.nan: b\n",
            "[1]: a\n[2]: b\n",
        ] {
            assert!(parse(distinct, Budget::default()).is_ok(), "{distinct}");
        }
    }

    #[test]
    fn merge_keys_merge() {
        let n = parse(
            "base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n",
            Budget::default(),
        )
        .unwrap();
        let c = n.get("c").unwrap();
        assert_eq!(c.get("x").unwrap().value, Value::Int(1));
        assert_eq!(c.get("y").unwrap().value, Value::Int(3));
    }

    #[test]
    fn sixty_megabytes_of_alias_text_from_685_bytes_planned_for_seconds() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/seeds/regress_slow_alias_strings.yaml"
        );
        // The runbook is the input up to its first 0xFF (hostile values follow).
        let bytes = std::fs::read(path).expect("the fuzz input is checked in");
        let runbook = bytes.split(|&b| b == 0xFF).next().unwrap_or_default();
        let text = String::from_utf8_lossy(runbook);
        let started = std::time::Instant::now();
        let err = parse(&text, Budget::default()).unwrap_err();
        assert_eq!(err.code, Code::InputBudget);
        assert!(err.message.contains("bytes of text"), "{}", err.message);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
