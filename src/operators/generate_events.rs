//! `generate_events`: writes a month of the e-commerce dataset, generated, in its exact format
//! (the local profile's stand-in for downloading it). See [`crate::dataset::generate`].

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    BoxFuture, CheckContext, ConfigProblem, OperatorConfig, OperatorError, TaskContext, TaskResult,
};
use crate::dataset::generate::{Dirt, Options, write_month_until};
use crate::spec::{Month, is_template};

/// Config of `generate_events`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateEventsConfig {
    /// The month to generate, `YYYY-MM` (usually `{{ partition.key }}`).
    pub month: String,
    /// Lines per day, exactly (dirt included).
    pub rows_per_day: u64,
    /// The folder the file is written to, named as the dataset names it (`2019-Oct.csv.gz`).
    pub output: PathBuf,
    /// The same seed gives the same file.
    #[serde(default)]
    pub seed: u64,
    /// Rate of each kind of dirt real files have (duplicate lines, rows without a session,
    /// malformed lines), e.g. `0.01`; 0 for a clean file.
    #[serde(default)]
    pub dirt: f64,
}

fn month(s: &str) -> Result<Month, String> {
    s.parse()
}

impl OperatorConfig for GenerateEventsConfig {
    const NAME: &'static str = "generate_events";
    const SUMMARY: &'static str = "generates a month of the e-commerce dataset in its exact format";

    fn check(&self, _cx: &CheckContext<'_>) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if !is_template(&self.month) {
            if let Err(e) = month(&self.month) {
                out.push(ConfigProblem {
                    key: Some("month".into()),
                    message: e,
                });
            }
        }
        if !(0.0..=0.2).contains(&self.dirt) {
            out.push(ConfigProblem {
                key: Some("dirt".into()),
                message: format!("`dirt` is a rate between 0 and 0.2, not {}", self.dirt),
            });
        }
        if self.rows_per_day == 0 {
            out.push(ConfigProblem {
                key: Some("rows_per_day".into()),
                message: "`rows_per_day` must be at least 1".into(),
            });
        }
        out
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, OperatorError>> {
        Box::pin(async move {
            let m = month(&self.month).map_err(OperatorError::fatal)?;
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
            let (_cancel_on_drop, cancelled) = super::CancelOnDrop::new();
            let stats =
                tokio::task::spawn_blocking(move || write_month_until(m, &opts, &out, &cancelled))
                    .await
                    .map_err(|e| OperatorError::fatal(format!("the generator stopped: {e}")))?
                    .map_err(|e| OperatorError::retryable(format!("writing the month: {e}")))?;
            ctx.log.info(&format!(
                "wrote {} ({} rows, {} bytes)",
                stats.path.display(),
                stats.rows,
                stats.bytes
            ));
            let value =
                serde_json::to_value(&stats).map_err(|e| OperatorError::fatal(e.to_string()))?;
            Ok(TaskResult::Success(value))
        })
    }
}
