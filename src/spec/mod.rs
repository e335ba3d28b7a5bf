//! The runbook as written: YAML text -> spanned tree -> [`RunbookSpec`].
//!
//! Loading never fails outright: it returns whatever it could read plus every
//! diagnostic, so `validate` can report all problems of a file in one pass.
//!
//! The tree is dropped once the spec is read: it is the size of the spec
//! again, and validation needs only the ids of the steps that failed to
//! load, which are taken from it first.

mod de;
mod node;
mod types;

pub use de::{from_node, Checked, RawNode, Spanned};
pub use node::{parse, Budget, Node, Pos, Span, Value};
pub use types::*;

use crate::diagnostics::{Code, Diagnostic};

/// What loading a file produced.
#[derive(Debug)]
pub struct Loaded {
    pub spec: Option<RunbookSpec>,
    /// The `id` written in each step that failed to load, in `steps`,
    /// `on_failure` and `finally`.
    pub broken_ids: Vec<String>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses and deserialises `text` within the default input budget.
pub fn load(text: &str) -> Loaded {
    load_with(text, Budget::default())
}

pub fn load_with(text: &str, budget: Budget) -> Loaded {
    let root = match parse(text, budget) {
        Ok(root) => root,
        Err(d) => {
            return Loaded {
                spec: None,
                broken_ids: Vec::new(),
                diagnostics: vec![*d],
            }
        }
    };
    if !matches!(root.value, Value::Map(_)) {
        let d = Diagnostic::new(
            Code::WrongType,
            root.span,
            format!(
                "a runbook is a mapping with `version`, `name` and `steps`; found {}",
                root.kind_name()
            ),
        );
        return Loaded {
            spec: None,
            broken_ids: Vec::new(),
            diagnostics: vec![d],
        };
    }
    let (result, mut diagnostics) = de::collect(|| from_node::<RunbookSpec>(&root));
    let spec = match result {
        Ok(spec) => Some(spec),
        Err(e) => {
            diagnostics.push(e.into_diagnostic());
            None
        }
    };
    let broken_ids = spec
        .as_ref()
        .map_or_else(Vec::new, |s| broken_ids(s, &root));
    drop(root);
    Loaded {
        spec,
        broken_ids,
        diagnostics,
    }
}

/// The ids of the steps that failed to load, as written in `root`.
fn broken_ids(spec: &RunbookSpec, root: &Node) -> Vec<String> {
    let lists = [
        ("steps", &spec.steps),
        ("on_failure", &spec.on_failure),
        ("finally", &spec.finally),
    ];
    let mut ids = Vec::new();
    for (key, list) in lists {
        let written = match root.get(key).map(|l| &l.value) {
            Some(Value::Seq(items)) => items.as_slice(),
            _ => &[],
        };
        for (s, n) in list.iter().zip(written) {
            if s.0.is_none() {
                if let Some(id) = n.get("id").and_then(Node::as_str) {
                    ids.push(id.to_string());
                }
            }
        }
    }
    ids
}
