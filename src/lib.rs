//! runbook: declarative runbooks, validated, previewed and executed.
//!
//! The flow runs one way, each stage its own type:
//! YAML text -> [`spec::RunbookSpec`] (as written, with spans) -> [`runbook::Runbook`]
//! (validated) -> [`plan::Plan`] (waves, previews, rollback order) -> a run.

pub mod cli;
pub mod diagnostics;
pub mod duration;
pub mod graph;
pub mod plan;
pub mod runbook;
pub mod schema;
pub mod spec;
pub mod template;
pub mod validate;
