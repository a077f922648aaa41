//! `generate_events`: writes a month of the e-commerce dataset, generated, in its exact format
//! (the local profile's stand-in for downloading it). See [`crate::dataset::generate`].

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    BoxFuture, CheckContext, ConfigProblem, Error, OperatorConfig, TaskContext, TaskResult,
};
use crate::dataset::generate::{Dirt, Options, write_month_until};
use crate::spec::{Month, is_template};

/// Config of `generate_events`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerateEventsConfig {
    /// The month to generate, `YYYY-MM` (usually `{{ partition.key }}`).
    pub(crate) month: String,
    /// Lines per day, exactly (dirt included).
    pub(crate) rows_per_day: u64,
    /// The folder the file is written to, named as the dataset names it (`2019-Oct.csv.gz`).
    pub(crate) output: PathBuf,
    /// The same seed gives the same file.
    #[serde(default)]
    pub(crate) seed: u64,
    /// Rate of each kind of dirt real files have (duplicate lines, rows without a session,
    /// malformed lines), e.g. `0.01`; 0 for a clean file.
    #[serde(default)]
    pub(crate) dirt: f64,
}

fn month(s: &str) -> Result<Month, String> {
    s.parse()
}

impl OperatorConfig for GenerateEventsConfig {
    const NAME: &'static str = "generate_events";
    const SUMMARY: &'static str = "generates a month of the e-commerce dataset in its exact format";

    fn check(&self, _cx: &CheckContext<'_>) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if !is_template(&self.month)
            && let Err(e) = month(&self.month)
        {
            out.push(ConfigProblem::at("month", e));
        }
        if !(0.0..=0.2).contains(&self.dirt) {
            out.push(ConfigProblem::at(
                "dirt",
                format!("`dirt` is a rate between 0 and 0.2, not {}", self.dirt),
            ));
        }
        if self.rows_per_day == 0 {
            out.push(ConfigProblem::at(
                "rows_per_day",
                "`rows_per_day` must be at least 1",
            ));
        }
        out
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, Error>> {
        Box::pin(async move {
            let m = month(&self.month).map_err(Error::fatal)?;
            let opts = Options {
                rows_per_day: self.rows_per_day,
                seed: self.seed,
                dirt: (self.dirt > 0.0).then(|| Dirt::at(self.dirt)),
            };
            let out = ctx.resolve(&self.output);
            ctx.log.info(&format!(
                "generating {} ({} rows a day) into {}",
                m.name(),
                self.rows_per_day,
                out.display()
            ));
            let (_cancel_on_drop, cancelled) = ctx.stop_guard();
            let stats =
                tokio::task::spawn_blocking(move || write_month_until(m, &opts, &out, &cancelled))
                    .await
                    .map_err(|e| Error::fatal(format!("the generator stopped: {e}")))?
                    .map_err(|e| Error::transient(format!("writing the month: {e}")))?;
            ctx.log.info(&format!(
                "wrote {} ({} rows, {} bytes)",
                stats.path.display(),
                stats.rows,
                stats.bytes
            ));
            TaskResult::output(&stats)
        })
    }
}
