//! `http:` steps. (Being implemented.)

use super::{Cx, Executor, Outputs};
use crate::providers::BoxFuture;
use crate::runbook::Action;

pub struct HttpExec;

impl Executor for HttpExec {
    fn run<'a>(
        &'a self,
        _action: &'a Action,
        _cx: &'a Cx<'a>,
    ) -> BoxFuture<'a, Result<Outputs, String>> {
        Box::pin(async move { Err("`http` steps are not implemented yet".to_string()) })
    }
}
