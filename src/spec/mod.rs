//! The runbook as written: YAML text -> spanned tree -> [`RunbookSpec`].
//!
//! Loading never fails outright: it returns whatever it could read plus every
//! diagnostic, so `validate` can report all problems of a file in one pass.

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
    pub root: Option<Node>,
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
                root: None,
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
            root: Some(root),
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
    Loaded {
        spec,
        root: Some(root),
        diagnostics,
    }
}
