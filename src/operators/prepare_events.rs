//! `prepare_events`: raw monthly CSV (gzipped or not) → clean Parquet partitioned by day, with
//! rejected rows quarantined. The PySpark step of the seed, on polars. See
//! [`crate::dataset::prepare`].

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    BoxFuture, CheckContext, ConfigProblem, OperatorConfig, OperatorError, TaskContext, TaskResult,
};
use crate::dataset::prepare::{Options, PrepareError, expand, prepare};

/// Config of `prepare_events` (these keys are a contract).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrepareEventsConfig {
    /// A file or a glob of `.csv` / `.csv.gz` files, e.g. `data/raw/2019-Oct.csv.gz`.
    pub input: String,
    /// The output folder: `event_date=YYYY-MM-DD/part-*.parquet`, plus `_quarantine.csv`.
    pub output: PathBuf,
    /// Keep only the first N clean events of each day, by event time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_per_day: Option<u64>,
}

impl OperatorConfig for PrepareEventsConfig {
    const NAME: &'static str = "prepare_events";
    const SUMMARY: &'static str = "cleans raw event files into Parquet partitioned by day";

    fn check(&self, _cx: &CheckContext<'_>) -> Vec<ConfigProblem> {
        match self.rows_per_day {
            Some(0) => vec![ConfigProblem {
                key: Some("rows_per_day".into()),
                message: "`rows_per_day` must be at least 1".into(),
            }],
            _ => Vec::new(),
        }
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, OperatorError>> {
        Box::pin(async move {
            let pattern = ctx.resolve(std::path::Path::new(&self.input));
            let inputs = expand(&pattern.to_string_lossy())
                .map_err(|e| OperatorError::fatal(e.to_string()))?;
            let opts = Options {
                inputs,
                output: ctx.resolve(&self.output),
                rows_per_day: self.rows_per_day,
            };
            ctx.log.info(&format!(
                "preparing {} file(s) into {}",
                opts.inputs.len(),
                opts.output.display()
            ));
            let (_cancel_on_drop, cancelled) = super::CancelOnDrop::new();
            let report = tokio::task::spawn_blocking(move || prepare(&opts, &cancelled))
                .await
                .map_err(|e| OperatorError::fatal(format!("the preparation stopped: {e}")))?
                .map_err(|e| match e {
                    // A bad file stays bad on a retry.
                    PrepareError::NotGzip { .. }
                    | PrepareError::BadHeader { .. }
                    | PrepareError::Truncated { .. }
                    | PrepareError::NoInput(_)
                    | PrepareError::Cancelled => OperatorError::fatal(e.to_string()),
                    other => OperatorError::retryable(other.to_string()),
                })?;
            ctx.log.info(&format!(
                "read {} rows, wrote {}, removed {} duplicates, rejected {:?}",
                report.rows_read, report.rows_written, report.duplicates_removed, report.rejected
            ));
            let value =
                serde_json::to_value(&report).map_err(|e| OperatorError::fatal(e.to_string()))?;
            Ok(TaskResult::Success(value))
        })
    }
}
