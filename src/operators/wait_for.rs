//! `wait_for`: a sensor. Pokes a condition — a SQL query on the warehouse whose first column is
//! true (or a positive number), a file that exists, or a consumer group that has caught up with
//! a topic (`kafka_lag`) — every `poke_interval` until it holds or
//! `timeout` passes. Between pokes the task is `deferred`: it holds no slot and no thread (like
//! Airflow's deferrable sensors), and since that state is in the database a restarted scheduler
//! picks the sensor up where it was. With `soft_fail`, a timeout skips the task instead of
//! failing it.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    BoxFuture, CheckContext, ConfigProblem, Error, OperatorConfig, TaskContext, TaskResult,
};
use crate::connections::warehouse;
use crate::spec::Duration;

/// Config of `wait_for`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitForConfig {
    /// A query whose first column of the first row is true (or a number above 0) when ready,
    /// e.g. `select count(*) >= {{ tasks.stream_month.output.rows }} from RAW.EVENTS where …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sql: Option<String>,
    /// A file that must exist (relative to the project).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) file: Option<PathBuf>,
    /// A consumer group's lag on a topic at most `max_lag` (e.g. the landing has read everything
    /// the producer wrote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kafka_lag: Option<KafkaLag>,
    /// The wait between pokes.
    #[serde(default = "default_poke")]
    pub(crate) poke_interval: Duration,
    /// How long to keep poking, from the first poke.
    #[serde(default = "default_timeout")]
    pub(crate) timeout: Duration,
    /// On timeout, skip the task (and its downstream) instead of failing it.
    #[serde(default)]
    pub(crate) soft_fail: bool,
}

/// The `kafka_lag` condition.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KafkaLag {
    pub(crate) topic: String,
    pub(crate) group: String,
    /// Messages the group may still be behind by.
    #[serde(default)]
    pub(crate) max_lag: u64,
}

fn default_poke() -> Duration {
    Duration::from_secs(30)
}

fn default_timeout() -> Duration {
    Duration::from_secs(3600)
}

impl OperatorConfig for WaitForConfig {
    const NAME: &'static str = "wait_for";

    fn uses_warehouse(with: &crate::spec::Node) -> bool {
        with.get("sql").is_some()
    }
    const SUMMARY: &'static str = "waits for a SQL condition or a file, holding no slot meanwhile";

    fn check(&self, _cx: &CheckContext<'_>) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let conditions = [
            self.sql.is_some(),
            self.file.is_some(),
            self.kafka_lag.is_some(),
        ];
        if conditions.iter().filter(|c| **c).count() != 1 {
            out.push(ConfigProblem::whole(
                "`wait_for` takes exactly one of `sql`, `file` and `kafka_lag`",
            ));
        }
        if self.poke_interval.std().is_zero() {
            out.push(ConfigProblem::at(
                "poke_interval",
                "`poke_interval` must be above zero",
            ));
        }
        out
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, Error>> {
        Box::pin(run(self, ctx))
    }
}

fn truthy(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|x| x > 0.0),
        serde_json::Value::String(s) => {
            matches!(s.to_ascii_lowercase().as_str(), "true" | "t" | "1" | "yes")
        }
        _ => false,
    }
}

async fn run(cfg: &WaitForConfig, ctx: &TaskContext) -> Result<TaskResult, Error> {
    let now = chrono::Utc::now();
    let first_poke = ctx
        .deferred_state
        .as_ref()
        .and_then(|s| s.get("first_poke"))
        .and_then(|v| v.as_str())
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or(now);
    let pokes = ctx
        .deferred_state
        .as_ref()
        .and_then(|s| s.get("pokes"))
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
        + 1;
    let ready = if let Some(sql) = &cfg.sql {
        let wh = warehouse::open(ctx.profile, &ctx.home, Some(&ctx.query_tag()))?;
        let r = wh
            .query(sql)
            .await
            .map_err(|e| e.context("the sensor's query failed"))?;
        r.rows
            .first()
            .and_then(|row| row.first())
            .is_some_and(truthy)
    } else if let Some(file) = &cfg.file {
        ctx.resolve(file).exists()
    } else if let Some(k) = &cfg.kafka_lag {
        let settings = crate::connections::kafka::settings(ctx.profile, &ctx.home)?;
        let (topic, group) = (k.topic.clone(), k.group.clone());
        let lag = tokio::task::spawn_blocking(move || {
            crate::connections::kafka::consumer::group_lag(&settings, &topic, &group)
        })
        .await
        .map_err(|e| Error::fatal(format!("the lag check stopped: {e}")))??;
        ctx.log.info(&format!(
            "group {} is {lag} message(s) behind on {}",
            k.group, k.topic
        ));
        lag as u64 <= k.max_lag
    } else {
        false
    };
    let waited = (now - first_poke).to_std().unwrap_or_default();
    if ready {
        ctx.log
            .info(&format!("condition met after {pokes} poke(s)"));
        return Ok(TaskResult::Success(serde_json::json!({
            "pokes": pokes,
            "waited_seconds": waited.as_secs_f64(),
        })));
    }
    if waited >= cfg.timeout.std() {
        let msg = format!(
            "the condition did not hold within {} ({pokes} pokes)",
            cfg.timeout
        );
        return if cfg.soft_fail {
            Ok(TaskResult::Skipped(msg))
        } else {
            Err(Error::fatal(msg))
        };
    }
    ctx.log.info(&format!(
        "poke {pokes}: not yet; next in {}",
        cfg.poke_interval
    ));
    Ok(TaskResult::Defer {
        wait: cfg.poke_interval.std(),
        state: serde_json::json!({
            "first_poke": first_poke.to_rfc3339(),
            "pokes": pokes,
        }),
    })
}
