//! runbook: declarative runbooks, validated, previewed and executed.
//!
//! The flow runs one way, each stage its own type:
//! YAML text -> [`spec::RunbookSpec`] (as written, with spans) -> [`runbook::Runbook`]
//! (validated) -> [`plan::Plan`] (waves, previews, rollback order) -> a run.

pub mod analysis;
pub mod approvals;
pub mod broken_pipe;
pub mod cli;
pub mod cli_generate;
pub mod commands;
pub mod diagnostics;
pub mod duration;
pub mod engine;
pub mod error;
pub mod events;
pub mod fsutil;
pub mod github;
pub mod graph;
pub mod journal;
pub mod lock;
pub mod numbers;
pub mod operate;
pub mod plan;
pub mod process_group;
pub mod providers;
pub mod run_id;
pub mod runbook;
pub mod runbook_files;
pub mod runner;
pub mod schema;
pub mod secrets;
pub mod serve;
pub mod shell_values;
pub mod signing;
pub mod simple_command;
pub mod spec;
pub mod state;
pub mod state_dir;
pub mod status;
pub mod steps;
pub mod store;
pub mod template;
pub mod validate;
pub mod view;
