//! `load_table`: loads Parquet (or CSV) files into a warehouse table in one transaction —
//! the batch path beside streaming. `merge` upserts on a key, so loading the same month twice
//! leaves one copy.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    BoxFuture, CheckContext, ConfigProblem, Error, OperatorConfig, TaskContext, TaskResult,
};
use crate::connections::warehouse::{self, LoadMode, LoadSpec};
use crate::ident::{check_column, split_table};
use crate::spec::is_template;

/// Config of `load_table` (these keys are a contract).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoadTableConfig {
    /// A file, a folder (every Parquet file below it) or a glob of Parquet or CSV files.
    pub(crate) input: String,
    /// `SCHEMA.TABLE`; created from the input's columns when it does not exist.
    pub(crate) table: String,
    /// `append`, `replace` (the table's rows, not its definition) or `merge` (upsert on `key`).
    pub(crate) mode: LoadMode,
    /// The columns that identify a row, for `merge` (e.g. `[event_id]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) key: Vec<String>,
    /// A named warehouse connection (default: the profile's warehouse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) connection: Option<String>,
    /// Write new rows sorted by these columns (e.g. `[event_time, user_id]`), which clusters
    /// the table where the backend keeps per-block statistics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) order_by: Vec<String>,
}

impl OperatorConfig for LoadTableConfig {
    const NAME: &'static str = "load_table";

    fn uses_warehouse(_with: &crate::spec::Node) -> bool {
        true
    }
    const SUMMARY: &'static str = "loads Parquet or CSV files into a warehouse table";

    fn check(&self, _cx: &CheckContext<'_>) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if !is_template(&self.table)
            && let Err(e) = split_table(&self.table)
        {
            out.push(ConfigProblem::at("table", e));
        }
        if self.mode == LoadMode::Merge && self.key.is_empty() {
            out.push(ConfigProblem::at(
                "key",
                "`mode: merge` needs `key`, the columns that identify a row",
            ));
        }
        for k in self
            .key
            .iter()
            .chain(&self.order_by)
            .filter(|k| !is_template(k))
        {
            if let Err(e) = check_column(k) {
                out.push(ConfigProblem::at("key", e));
            }
        }
        out.extend(super::check_connection(self.connection.as_deref()));
        out
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, Error>> {
        Box::pin(async move {
            let input = ctx.resolve(std::path::Path::new(&self.input));
            let pattern = if input.is_dir() {
                format!("{}/**/*.parquet", input.display())
            } else {
                input.display().to_string()
            };
            let mut files: Vec<std::path::PathBuf> = glob::glob(&pattern)
                .map_err(|e| Error::fatal(format!("bad input pattern `{pattern}`: {e}")))?
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(Error::fatal(format!("no input file matches `{pattern}`")));
            }
            let wh = warehouse::open(ctx.profile, &ctx.home, Some(&ctx.query_tag()))?;
            let spec = LoadSpec {
                files,
                table: self.table.clone(),
                mode: self.mode,
                key: self.key.clone(),
                order_by: self.order_by.clone(),
            };
            ctx.log.info(&format!(
                "loading {} file(s) into {} ({:?})",
                spec.files.len(),
                spec.table,
                spec.mode
            ));
            let result = wh.load(&spec).await?;
            ctx.log.info(&format!(
                "{}: {} inserted, {} updated, {} in total",
                result.table, result.inserted, result.updated, result.total
            ));
            TaskResult::output(&result)
        })
    }
}
