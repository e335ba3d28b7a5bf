//! `approval:` steps. (Being implemented.)

use super::{Cx, Executor, Outputs};
use crate::providers::BoxFuture;
use crate::runbook::Action;

pub struct ApprovalExec;

impl Executor for ApprovalExec {
    fn run<'a>(
        &'a self,
        _action: &'a Action,
        _cx: &'a Cx<'a>,
    ) -> BoxFuture<'a, Result<Outputs, String>> {
        Box::pin(async move { Err("`approval` steps are not implemented yet".to_string()) })
    }
}

/// `runbook approve`: records a decision for a waiting approval step.
pub fn submit(
    _state_dir: &std::path::Path,
    _run_id: &str,
    _step: &str,
    _identity: Option<&str>,
    _reject: bool,
    _comment: Option<&str>,
) -> crate::cli::Exit {
    eprintln!("error: approvals are not implemented yet");
    crate::cli::Exit::Invalid
}
