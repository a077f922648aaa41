//! Planning a run: which partition or interval it covers, its id, its dates, and the rendered
//! config of each task. `windsock render` and the executor use the same functions, so what
//! `render` prints is what a run executes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use crate::operators::{self, Operator};
use crate::spec::{DeCtx, Mode, Month, Node, Pipeline, Task, is_template};
use crate::state::{NewRun, RunRecord, Trigger};
use crate::template::{PartitionVars, RenderContext, TaskVars, Templates};

/// Where a run's files go and which profile it runs under.
#[derive(Debug, Clone)]
pub struct RunEnv {
    pub project_dir: PathBuf,
    pub home: PathBuf,
    pub profile: String,
}

impl RunEnv {
    pub fn log_path(&self, dag: &str, run_id: &str, task: &str, try_number: u32) -> PathBuf {
        self.home
            .join("logs")
            .join(dag)
            .join(run_id)
            .join(task)
            .join(format!("try-{try_number}.log"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("DAG `{dag}` has no partitions; use --date instead of --partition")]
    NotPartitioned { dag: String },
    #[error("DAG `{dag}` is partitioned monthly ({from}..{to}); use --partition instead of --date")]
    Partitioned { dag: String, from: Month, to: Month },
    #[error("partition `{key}` is outside DAG `{dag}`'s range {from}..{to}")]
    OutOfRange {
        dag: String,
        key: String,
        from: Month,
        to: Month,
    },
    #[error("{0}")]
    BadKey(String),
}

/// What one run covers.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    /// The partition key or logical date: unique per DAG for scheduled runs.
    pub run_key: String,
    pub partition: Option<Month>,
    pub logical_date: DateTime<Utc>,
    pub data_interval_start: DateTime<Utc>,
    pub data_interval_end: DateTime<Utc>,
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
}

impl RunPlan {
    /// The run of one monthly partition, given as `YYYY-MM`.
    pub fn for_partition(p: &Pipeline, key: &str) -> Result<RunPlan, PlanError> {
        let Some(parts) = &p.partitions else {
            return Err(PlanError::NotPartitioned { dag: p.dag.clone() });
        };
        let month: Month = key.parse().map_err(PlanError::BadKey)?;
        let range = parts.monthly;
        if month < range.from || month > range.to {
            return Err(PlanError::OutOfRange {
                dag: p.dag.clone(),
                key: key.to_string(),
                from: range.from,
                to: range.to,
            });
        }
        Ok(Self::month(month))
    }

    pub fn month(month: Month) -> RunPlan {
        RunPlan {
            run_key: month.to_string(),
            partition: Some(month),
            logical_date: midnight(month.first_day()),
            data_interval_start: midnight(month.first_day()),
            data_interval_end: midnight(month.next().first_day()),
        }
    }

    /// The run for a logical date: its interval runs to the next schedule tick (a day when the
    /// DAG has no schedule).
    pub fn for_date(p: &Pipeline, date: NaiveDate) -> Result<RunPlan, PlanError> {
        if let Some(parts) = &p.partitions {
            return Err(PlanError::Partitioned {
                dag: p.dag.clone(),
                from: parts.monthly.from,
                to: parts.monthly.to,
            });
        }
        Ok(Self::interval(p, midnight(date)))
    }

    /// The run for a date, ignoring partitions (for the start of a schedule).
    pub fn for_date_unchecked(date: NaiveDate) -> RunPlan {
        RunPlan {
            run_key: crate::state::ts(midnight(date)),
            partition: None,
            logical_date: midnight(date),
            data_interval_start: midnight(date),
            data_interval_end: midnight(date) + chrono::Duration::days(1),
        }
    }

    /// The run whose interval starts at `start`.
    pub fn interval(p: &Pipeline, start: DateTime<Utc>) -> RunPlan {
        let end = p
            .schedule
            .as_ref()
            .and_then(|s| s.next_after(start))
            .unwrap_or(start + chrono::Duration::days(1));
        RunPlan {
            run_key: crate::state::ts(start),
            partition: None,
            logical_date: start,
            data_interval_start: start,
            data_interval_end: end,
        }
    }

    /// The plan a stored run was created with.
    pub fn from_record(rec: &RunRecord) -> RunPlan {
        RunPlan {
            run_key: rec.run_key.clone(),
            partition: rec.partition.as_deref().and_then(|k| k.parse().ok()),
            logical_date: rec.logical_date,
            data_interval_start: rec.data_interval_start,
            data_interval_end: rec.data_interval_end,
        }
    }

    /// A run id that says what the run is: `DAG__TRIGGER__KEY`, plus the creation time for
    /// manual runs (which may repeat a key).
    pub fn run_id(&self, dag: &str, trigger: Trigger) -> String {
        let key = match self.partition {
            Some(m) => m.to_string(),
            None if self.logical_date.time() == chrono::NaiveTime::MIN => {
                self.logical_date.format("%Y-%m-%d").to_string()
            }
            None => self.logical_date.format("%Y-%m-%dT%H%M%S").to_string(),
        };
        match trigger {
            Trigger::Manual => format!(
                "{dag}__manual__{key}__{}",
                Utc::now().format("%Y%m%dT%H%M%S%.3f")
            ),
            _ => format!("{dag}__{trigger}__{key}"),
        }
    }

    pub fn new_run(&self, p: &Pipeline, trigger: Trigger, run_id: String) -> NewRun {
        NewRun {
            run_id,
            dag: p.dag.clone(),
            run_key: self.run_key.clone(),
            partition: self.partition.map(|m| m.to_string()),
            logical_date: self.logical_date,
            data_interval_start: self.data_interval_start,
            data_interval_end: self.data_interval_end,
            trigger,
            pipeline_file: p.file.display().to_string(),
            owner: None,
        }
    }

    /// The template context of one task's try.
    pub fn context(
        &self,
        p: &Pipeline,
        run_id: &str,
        task: &str,
        try_number: u32,
        upstream: BTreeMap<String, TaskVars>,
        env: &RunEnv,
    ) -> RenderContext {
        let data_dir = env.home.join("data");
        let iso = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        RenderContext {
            ds: self.logical_date.format("%Y-%m-%d").to_string(),
            ds_nodash: self.logical_date.format("%Y%m%d").to_string(),
            ts: iso(self.logical_date),
            logical_date: iso(self.logical_date),
            data_interval_start: iso(self.data_interval_start),
            data_interval_end: iso(self.data_interval_end),
            run_id: run_id.to_string(),
            dag: p.dag.clone(),
            task: task.to_string(),
            try_number,
            params: p.params.clone().into_iter().collect(),
            partition: self.partition.map(|m| PartitionVars {
                key: m.to_string(),
                name: m.name(),
                start: m.first_day().format("%Y-%m-%d").to_string(),
                end: m.next().first_day().format("%Y-%m-%d").to_string(),
                last_day: (m.next().first_day() - chrono::Duration::days(1))
                    .format("%Y-%m-%d")
                    .to_string(),
                days: m.days(),
            }),
            tasks: upstream,
            profile: env.profile.clone(),
            warehouse: crate::template::WarehouseVars {
                dialect: if env.profile == "cloud" {
                    "snowflake"
                } else {
                    "duckdb"
                }
                .to_string(),
            },
            data_dir: std::path::absolute(&data_dir)
                .unwrap_or_else(|_| data_dir.clone())
                .display()
                .to_string(),
        }
    }
}

/// A task whose templates could not be rendered or whose rendered config is not valid.
#[derive(Debug, Clone, thiserror::Error)]
#[error("task `{task}`: {path}: {message}")]
pub struct RenderError {
    pub task: String,
    pub path: String,
    pub message: String,
}

/// A task ready to run: its rendered `with:` block and the typed operator built from it.
pub struct PreparedTask {
    pub rendered: Node,
    pub operator: Box<dyn Operator>,
}

/// Renders every template string of the task's `with:` and reads the result into the operator's
/// config type.
pub fn prepare_task(
    templates: &Templates,
    p: &Pipeline,
    task: &Task,
    ctx: &RenderContext,
) -> Result<PreparedTask, RenderError> {
    let err = |path: &str, message: String| RenderError {
        task: task.name.clone(),
        path: path.to_string(),
        message,
    };
    let (operator, with) = task.for_profile(&ctx.profile);
    let entry = operators::lookup(operator)
        .ok_or_else(|| err("operator", format!("unknown operator `{operator}`")))?;
    let value = ctx.to_value();
    let rendered = with.map_strings("with", &mut |path, s| {
        if !is_template(s) {
            return Ok(None);
        }
        templates
            .render(s, &value)
            .map(Some)
            .map_err(|e| err(path, e.message))
    })?;
    let de = DeCtx::new(&p.file, Mode::Runtime);
    let operator = (entry.parse)(&de, &rendered, "with");
    let diags = de.into_diags();
    match operator {
        Some(op) if diags.is_empty() => Ok(PreparedTask {
            rendered,
            operator: op,
        }),
        _ => {
            let first = diags
                .0
                .first()
                .map(|d| d.message.clone())
                .unwrap_or_else(|| "invalid configuration".into());
            Err(err(
                "with",
                format!("after rendering, the configuration is invalid: {first}"),
            ))
        }
    }
}
