//! `dashboard`: writes the business dashboard (see [`crate::dashboard`]) as one self-contained
//! HTML file: the REPORTING and PROCESSED tiles as they stand after the run, charts included,
//! nothing fetched when it is opened. The last task of the e-commerce pipelines.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    BoxFuture, CheckContext, ConfigProblem, Error, OperatorConfig, TaskContext, TaskResult,
};
use crate::connections::warehouse;
use crate::dashboard::{self, Period};
use crate::spec::is_template;

/// Config of `dashboard`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DashboardConfig {
    /// The HTML file to write (relative to the project unless absolute); default
    /// `<state directory>/dashboards/<dag>.html`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) output: Option<PathBuf>,
    /// The page's title (default: the DAG's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) title: Option<String>,
    /// The dates shown: `all` (default), a month (`2019-11`) or the last days of data (`7d`).
    #[serde(default = "default_period")]
    pub(crate) period: String,
    /// A named warehouse connection (default: the profile's warehouse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) connection: Option<String>,
}

fn default_period() -> String {
    "all".into()
}

impl OperatorConfig for DashboardConfig {
    const NAME: &'static str = "dashboard";

    fn uses_warehouse(_with: &crate::spec::Node) -> bool {
        true
    }
    const SUMMARY: &'static str = "writes the business dashboard (REPORTING and PROCESSED tiles) as a self-contained HTML file";

    fn check(&self, _cx: &CheckContext<'_>) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if !is_template(&self.period)
            && let Err(e) = self.period.parse::<Period>()
        {
            out.push(ConfigProblem::at("period", e));
        }
        out.extend(super::check_connection(self.connection.as_deref()));
        out
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, Error>> {
        Box::pin(async move {
            let period: Period = self.period.parse().map_err(Error::fatal)?;
            let path = match &self.output {
                Some(p) => ctx.resolve(p),
                None => ctx
                    .home
                    .join("dashboards")
                    .join(format!("{}.html", ctx.dag)),
            };
            let path = std::path::absolute(&path).unwrap_or(path);
            let wh = warehouse::open(ctx.profile, &ctx.home, Some(&ctx.query_tag()))?;
            let title = self.title.clone().unwrap_or_else(|| ctx.dag.clone());
            let d = dashboard::collect(wh.as_ref(), &title, period).await;
            let html = dashboard::page::render(&d, None);
            crate::sys::write_atomic(&path, html.as_bytes())
                .map_err(|e| Error::transient(format!("cannot write {}: {e}", path.display())))?;
            let empty: Vec<&str> = d
                .tiles
                .iter()
                .filter(|t| t.missing.is_some())
                .map(|t| t.id)
                .collect();
            ctx.log.info(&format!(
                "wrote the dashboard to {} ({} tiles{})",
                path.display(),
                d.tiles.len(),
                if empty.is_empty() {
                    String::new()
                } else {
                    format!("; without data yet: {}", empty.join(", "))
                }
            ));
            Ok(TaskResult::Success(serde_json::json!({
                "dashboard": path.display().to_string(),
                "tiles": d.tiles.len(),
                "tiles_without_data": empty,
                "period": period.to_string(),
                "bytes": html.len(),
            })))
        })
    }
}
