//! `prepare_events`: raw monthly CSV (gzipped or not) → clean Parquet partitioned by day, with
//! rejected rows quarantined. The PySpark step of the seed, on polars. See
//! [`crate::dataset::prepare`].

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    BoxFuture, CheckContext, ConfigProblem, Error, OperatorConfig, TaskContext, TaskResult,
};
use crate::dataset::prepare::{Options, expand, prepare};

/// Config of `prepare_events` (these keys are a contract).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PrepareEventsConfig {
    /// A file or a glob of `.csv` / `.csv.gz` files, e.g. `data/raw/2019-Oct.csv.gz`.
    pub(crate) input: String,
    /// The output folder: `event_date=YYYY-MM-DD/part-*.parquet`, plus `_quarantine.csv`.
    pub(crate) output: PathBuf,
    /// Keep only the first N clean events of each day, by event time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rows_per_day: Option<u64>,
}

impl OperatorConfig for PrepareEventsConfig {
    const NAME: &'static str = "prepare_events";
    const SUMMARY: &'static str = "cleans raw event files into Parquet partitioned by day";

    fn check(&self, _cx: &CheckContext<'_>) -> Vec<ConfigProblem> {
        match self.rows_per_day {
            Some(0) => vec![ConfigProblem::at(
                "rows_per_day",
                "`rows_per_day` must be at least 1",
            )],
            _ => Vec::new(),
        }
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, Error>> {
        Box::pin(async move {
            let pattern = ctx.resolve(std::path::Path::new(&self.input));
            let inputs = expand(&pattern.to_string_lossy())?;
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
            let (_cancel_on_drop, cancelled) = ctx.stop_guard();
            let report = tokio::task::spawn_blocking(move || prepare(&opts, &cancelled))
                .await
                .map_err(|e| Error::fatal(format!("the preparation stopped: {e}")))??;
            ctx.log.info(&format!(
                "read {} rows, wrote {}, removed {} duplicates, rejected {:?}",
                report.rows_read, report.rows_written, report.duplicates_removed, report.rejected
            ));
            TaskResult::output(&report)
        })
    }
}
