//! `noop`: does nothing and succeeds. Useful to group dependencies and in tests.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BoxFuture, Error, OperatorConfig, TaskContext, TaskResult};

/// Config of `noop`: no keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoopConfig {}

impl OperatorConfig for NoopConfig {
    const NAME: &'static str = "noop";
    const SUMMARY: &'static str = "does nothing and succeeds";

    fn run<'a>(&'a self, _ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, Error>> {
        Box::pin(async { Ok(TaskResult::Success(serde_json::json!({}))) })
    }
}
