//! A serde `Deserializer` over the spanned [`Node`] tree.
//!
//! Serde stops at the first error; authors want every error at once. Three
//! devices get us there without giving up derived types:
//! - unknown fields are recorded (with a did-you-mean) and skipped instead of
//!   failing, since `deserialize_struct` tells us the known field names;
//! - [`Checked<T>`] deserialises its part of the tree on its own and records a
//!   failure instead of propagating it, so one broken step does not hide the
//!   errors of the next;
//! - [`Spanned<T>`] and [`RawNode`] reach past serde's data model to the node
//!   itself, through a thread-local hand-off that only this deserializer fills.

use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::Deserialize;

use super::node::{Node, Span, Value};
use crate::diagnostics::{did_you_mean, Code, Diagnostic};

const SPANNED: &str = "$__runbook_spanned";
const RAW: &str = "$__runbook_raw_node";

thread_local! {
    static SINK: RefCell<Vec<Diagnostic>> = const { RefCell::new(Vec::new()) };
    static CURRENT_SPAN: Cell<Span> = Cell::new(Span::default());
    static RAW_STASH: RefCell<Option<Node>> = const { RefCell::new(None) };
}

/// A deserialisation error with the span of the node it concerns.
#[derive(Debug, Clone)]
pub struct DeError {
    pub code: Code,
    pub span: Option<Span>,
    pub message: String,
    pub help: Option<String>,
}

impl DeError {
    fn at(mut self, span: Span) -> Self {
        self.span.get_or_insert(span);
        self
    }

    pub fn into_diagnostic(self) -> Diagnostic {
        let mut d = Diagnostic::new(self.code, self.span.unwrap_or_default(), self.message);
        d.help = self.help;
        d
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            code: Code::InvalidValue,
            span: None,
            message: msg.to_string(),
            help: None,
        }
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError {
            code: Code::WrongType,
            span: None,
            message: format!("expected {}, found {}", expected(exp), describe(&unexp)),
            help: None,
        }
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError {
            code: Code::InvalidValue,
            span: None,
            message: format!(
                "invalid value {}, expected {}",
                describe(&unexp),
                expected(exp)
            ),
            help: None,
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            code: Code::InvalidValue,
            span: None,
            message: format!("`{variant}` is not one of {}", list(expected)),
            help: did_you_mean(variant, expected.iter().copied())
                .map(|s| format!("did you mean `{s}`?")),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            code: Code::MissingField,
            span: None,
            message: format!("missing required field `{field}`"),
            help: None,
        }
    }
}

/// What serde expected, in an author's words rather than Rust's (`u32`, `a sequence`).
fn expected(exp: &dyn de::Expected) -> String {
    let text = exp.to_string();
    match text.as_str() {
        "u8" | "u16" | "u32" | "u64" | "i8" | "i16" | "i32" | "i64" | "usize" => {
            "a whole number".into()
        }
        "f32" | "f64" => "a number".into(),
        "a sequence" => "a list".into(),
        "a map" => "a mapping".into(),
        _ => text,
    }
}

fn describe(u: &de::Unexpected<'_>) -> String {
    match u {
        de::Unexpected::Map => "a mapping".into(),
        de::Unexpected::Seq => "a list".into(),
        de::Unexpected::Unit => "null".into(),
        other => other.to_string(),
    }
}

fn list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn record(d: Diagnostic) {
    SINK.with(|s| s.borrow_mut().push(d));
}

/// Deserialises `node` into `T`, returning the fatal error if any. Non-fatal
/// diagnostics (unknown fields, failed `Checked` parts) are collected by
/// [`collect`].
pub fn from_node<T: DeserializeOwned>(node: &Node) -> Result<T, DeError> {
    T::deserialize(NodeDe { node }).map_err(|e| e.at(node.span))
}

/// Runs `f` collecting every diagnostic recorded while it deserialises.
pub(super) fn collect<R>(f: impl FnOnce() -> R) -> (R, Vec<Diagnostic>) {
    let saved = SINK.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let r = f();
    let got = SINK.with(|s| std::mem::replace(&mut *s.borrow_mut(), saved));
    (r, got)
}

/// A list with room for exactly its items, for `deserialize_with`. Serde's
/// own caps what it reserves up front and grows a long list by doubling: a
/// file of 10,000 steps held room for 16,384 while it was read.
pub(crate) fn exact_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: de::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(items)
        }
    }
    d.deserialize_seq(V(std::marker::PhantomData))
}

/// A value with the span it was written at.
#[derive(Clone, Debug)]
pub struct Spanned<T> {
    pub span: Span,
    pub value: T,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Spanned { span, value }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: PartialEq> PartialEq for Spanned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}
impl<T: Eq> Eq for Spanned<T> {}
impl<T: std::hash::Hash> std::hash::Hash for Spanned<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.value.hash(state);
    }
}
impl std::borrow::Borrow<str> for Spanned<String> {
    fn borrow(&self) -> &str {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Spanned<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_newtype_struct<D: de::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Self::Value, D::Error> {
                let span = CURRENT_SPAN.with(Cell::get);
                Ok(Spanned {
                    span,
                    value: T::deserialize(d)?,
                })
            }
        }
        d.deserialize_struct(SPANNED, &[], V(std::marker::PhantomData))
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Spanned<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(g)
    }
}

/// The subtree itself, for values whose meaning depends on their shape
/// (decided later, with spans to hand).
#[derive(Clone, Debug, PartialEq)]
pub struct RawNode(pub Node);

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawNode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawNode, E> {
                RAW_STASH
                    .with(|s| s.borrow_mut().take())
                    .map(RawNode)
                    .ok_or_else(|| E::custom("raw nodes only come from the runbook loader"))
            }
        }
        d.deserialize_struct(RAW, &[], V)
    }
}

/// Part of the file deserialised on its own: a failure is recorded and leaves
/// `None`, so the rest of the file is still checked.
#[derive(Clone, Debug)]
pub struct Checked<T>(pub Option<T>);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Checked<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let RawNode(node) = RawNode::deserialize(d)?;
        match from_node::<T>(&node) {
            Ok(v) => Ok(Checked(Some(v))),
            Err(e) => {
                record(e.into_diagnostic());
                Ok(Checked(None))
            }
        }
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Checked<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(g)
    }
}

struct NodeDe<'a> {
    node: &'a Node,
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Null => v.visit_unit(),
            Value::Bool(b) => v.visit_bool(*b),
            Value::Int(i) => v.visit_i64(*i),
            Value::Float(f) => v.visit_f64(*f),
            Value::Str(s) => v.visit_str(s),
            Value::Seq(items) => v.visit_seq(SeqDe {
                items: items.iter(),
            }),
            Value::Map(entries) => v.visit_map(MapDe {
                entries: entries.iter(),
                value: None,
                fields: None,
            }),
        };
        r.map_err(|e| e.at(self.node.span))
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Null => v.visit_none(),
            _ => v.visit_some(self),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Str(s) => v.visit_str(s),
            // A scalar written where text is expected is taken as its text:
            // `PORT: 8080` in an env map means the string "8080".
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
                v.visit_string(self.node.scalar_text())
            }
            _ => return self.deserialize_any(v),
        };
        r.map_err(|e: DeError| e.at(self.node.span))
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        if name == SPANNED {
            CURRENT_SPAN.with(|c| c.set(self.node.span));
            return v.visit_newtype_struct(self);
        }
        if name == RAW {
            RAW_STASH.with(|s| *s.borrow_mut() = Some(self.node.clone()));
            return v.visit_unit();
        }
        match &self.node.value {
            Value::Map(entries) => v
                .visit_map(MapDe {
                    entries: entries.iter(),
                    value: None,
                    fields: Some(fields),
                })
                .map_err(|e| e.at(self.node.span)),
            _ => Err(DeError {
                code: Code::WrongType,
                span: Some(self.node.span),
                message: format!("expected a mapping, found {}", self.node.kind_name()),
                help: None,
            }),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(s) => v
                .visit_enum(s.as_str().into_deserializer())
                .map_err(|e: DeError| e.at(self.node.span)),
            _ => Err(DeError {
                code: Code::WrongType,
                span: Some(self.node.span),
                message: format!("expected a name, found {}", self.node.kind_name()),
                help: None,
            }),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        bytes byte_buf unit unit_struct seq tuple tuple_struct map
    }
}

struct SeqDe<'a> {
    items: std::slice::Iter<'a, Node>,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'_> {
    type Error = DeError;
    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(node) => seed
                .deserialize(NodeDe { node })
                .map(Some)
                .map_err(|e| e.at(node.span)),
            None => Ok(None),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a Node>,
    fields: Option<&'static [&'static str]>,
}

impl<'de> de::MapAccess<'de> for MapDe<'_> {
    type Error = DeError;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        for (k, v) in self.entries.by_ref() {
            if let Some(fields) = self.fields {
                let name = k.scalar_text();
                if !fields.contains(&name.as_str()) {
                    let mut d = Diagnostic::new(
                        Code::UnknownField,
                        k.span,
                        format!("unknown field `{name}`"),
                    );
                    d.help = Some(match did_you_mean(&name, fields.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("expected one of {}", list(fields)),
                    });
                    record(d);
                    continue;
                }
            }
            self.value = Some(v);
            return seed
                .deserialize(NodeDe { node: k })
                .map(Some)
                .map_err(|e| e.at(k.span));
        }
        Ok(None)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DeError> {
        let node = self
            .value
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("value without key"))?;
        seed.deserialize(NodeDe { node })
            .map_err(|e| e.at(node.span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::node::{parse, Budget};

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct S {
        name: Spanned<String>,
        count: Option<u32>,
        items: Vec<Checked<Item>>,
    }

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Item {
        id: String,
        n: u32,
    }

    #[test]
    fn collects_unknown_fields_and_item_errors() {
        let n = parse(
            "name: x\ncout: 3\nitems:\n  - {id: a, n: 1}\n  - {id: b, n: nope}\n  - {id: c, n: 2, m: 1}\n",
            Budget::default(),
        )
        .unwrap();
        let (r, diags) = collect(|| from_node::<S>(&n));
        let s = r.unwrap();
        assert_eq!(s.name.span.start.line, 1);
        assert_eq!(s.name.span.start.col, 7);
        assert!(s.items[0].0.is_some());
        assert!(s.items[1].0.is_none());
        assert!(s.items[2].0.is_some());
        let codes: Vec<_> = diags.iter().map(|d| (d.code, d.span.start.line)).collect();
        assert_eq!(
            codes,
            vec![
                (Code::UnknownField, 2),
                (Code::WrongType, 5),
                (Code::UnknownField, 6)
            ]
        );
        assert_eq!(diags[0].help.as_deref(), Some("did you mean `count`?"));
    }
}
