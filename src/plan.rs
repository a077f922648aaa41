//! Planning a run: which partition or interval it covers, its id, its dates, and the rendered
//! config of each task. `windsock render` and the executor use the same functions, so what
//! `render` prints is what a run executes.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use crate::diag::Diagnostic;
use crate::operators::{self, CheckContext, Operator};
use crate::project::{Dag, problem_diagnostic};
use crate::spec::{DeCtx, Mode, Month, Pipeline, Profile, Task, is_template};
use crate::state::{NewRun, RunFilter, RunRecord, RunState, StateStore, StoreError, Trigger};
use crate::template::{PartitionVars, RenderContext, TaskVars, Templates, WarehouseVars};

/// Where a run's files go and which profile it runs under.
#[derive(Debug, Clone)]
pub(crate) struct RunEnv {
    pub(crate) project_dir: PathBuf,
    pub(crate) home: PathBuf,
    pub(crate) profile: Profile,
}

impl RunEnv {
    pub(crate) fn log_path(&self, dag: &str, run_id: &str, task: &str, try_number: u32) -> PathBuf {
        self.run_log_dir(dag, run_id)
            .join(task)
            .join(format!("try-{try_number}.log"))
    }

    /// The folder holding every log of a run.
    pub(crate) fn run_log_dir(&self, dag: &str, run_id: &str) -> PathBuf {
        self.home.join("logs").join(dag).join(run_id)
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PlanError {
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
    #[error(
        "every partition of `{dag}` ({from}..{to}) has succeeded; pass --partition to run one again"
    )]
    AllDone { dag: String, from: Month, to: Month },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one run covers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunPlan {
    /// The partition key or logical date: unique per DAG for scheduled runs.
    pub(crate) run_key: String,
    pub(crate) partition: Option<Month>,
    pub(crate) logical_date: DateTime<Utc>,
    pub(crate) data_interval_start: DateTime<Utc>,
    pub(crate) data_interval_end: DateTime<Utc>,
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
}

impl RunPlan {
    /// The run a command asks for: `partition` or `date` when given; otherwise the first
    /// partition without a successful run (partitioned DAGs, `store` consulted when given), or
    /// today.
    pub(crate) fn for_target(
        dag: &Dag,
        partition: Option<&str>,
        date: Option<&str>,
        store: Option<&dyn StateStore>,
    ) -> Result<RunPlan, PlanError> {
        let p = &dag.pipeline;
        if let Some(key) = partition {
            return Self::for_partition(p, key);
        }
        if let Some(d) = date {
            let date: crate::spec::Date = d.parse().map_err(PlanError::BadKey)?;
            return Self::for_date(p, date.0);
        }
        let Some(parts) = &p.partitions else {
            return Self::for_date(p, Utc::now().date_naive());
        };
        let done: HashSet<String> = match store {
            Some(s) => s
                .runs(&RunFilter {
                    dag: Some(p.dag.clone()),
                    state: Some(RunState::Success),
                    limit: None,
                })?
                .into_iter()
                .map(|r| r.run_key)
                .collect(),
            None => HashSet::new(),
        };
        parts
            .monthly
            .months()
            .into_iter()
            .find(|m| !done.contains(&m.to_string()))
            .map(Self::month)
            .ok_or_else(|| PlanError::AllDone {
                dag: p.dag.clone(),
                from: parts.monthly.from,
                to: parts.monthly.to,
            })
    }

    /// The run of one monthly partition, given as `YYYY-MM`.
    pub(crate) fn for_partition(p: &Pipeline, key: &str) -> Result<RunPlan, PlanError> {
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

    pub(crate) fn month(month: Month) -> RunPlan {
        RunPlan {
            run_key: month.to_string(),
            partition: Some(month),
            logical_date: midnight(month.first_day()),
            data_interval_start: midnight(month.first_day()),
            data_interval_end: midnight(month.next().first_day()),
        }
    }

    /// The run of a partition in round `round` of a `cycle: true` DAG: the first round's key is
    /// the partition's own, a later round's says its number (`2019-10#6`), so that each round is
    /// a run of its own under the unique (DAG, key) constraint.
    pub(crate) fn month_round(month: Month, round: u32) -> RunPlan {
        let mut plan = Self::month(month);
        if round > 1 {
            plan.run_key = format!("{month}#{round}");
        }
        plan
    }

    /// The round of a cycling partition's run (`2019-10#6` → 6), when past the first.
    fn round(&self) -> Option<&str> {
        self.run_key.split_once('#').map(|(_, round)| round)
    }

    /// The run for a logical date: its interval runs to the next schedule tick (a day when the
    /// DAG has no schedule).
    pub(crate) fn for_date(p: &Pipeline, date: NaiveDate) -> Result<RunPlan, PlanError> {
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
    pub(crate) fn for_date_unchecked(date: NaiveDate) -> RunPlan {
        RunPlan {
            run_key: crate::state::ts(midnight(date)),
            partition: None,
            logical_date: midnight(date),
            data_interval_start: midnight(date),
            data_interval_end: midnight(date) + chrono::Duration::days(1),
        }
    }

    /// The run whose interval starts at `start`.
    pub(crate) fn interval(p: &Pipeline, start: DateTime<Utc>) -> RunPlan {
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
    pub(crate) fn from_record(rec: &RunRecord) -> RunPlan {
        RunPlan {
            run_key: rec.run_key.clone(),
            partition: rec.partition.as_deref().and_then(|k| k.parse().ok()),
            logical_date: rec.logical_date,
            data_interval_start: rec.data_interval_start,
            data_interval_end: rec.data_interval_end,
        }
    }

    /// A run id that says what the run is: `DAG__TRIGGER__KEY`, plus the round of a cycling
    /// partition past its first (`__r6`) and the creation time for manual runs (which may
    /// repeat a key).
    pub(crate) fn run_id(&self, dag: &str, trigger: Trigger) -> String {
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
            _ => match self.round() {
                Some(round) => format!("{dag}__{trigger}__{key}__r{round}"),
                None => format!("{dag}__{trigger}__{key}"),
            },
        }
    }

    pub(crate) fn new_run(&self, p: &Pipeline, trigger: Trigger, run_id: String) -> NewRun {
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
    pub(crate) fn context(
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
            profile: env.profile.name().to_string(),
            warehouse: WarehouseVars {
                dialect: crate::connections::warehouse::Dialect::of(env.profile)
                    .as_str()
                    .to_string(),
            },
            data_dir: std::path::absolute(&data_dir)
                .unwrap_or_else(|_| data_dir.clone())
                .display()
                .to_string(),
        }
    }
}

/// A task whose templates could not be rendered or whose rendered config is not valid: one
/// sentence, located in the pipeline file as `windsock validate` would locate it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct RenderError(String);

/// A task ready to run: the typed operator built from its rendered `with:` block.
pub(crate) struct PreparedTask {
    pub(crate) operator: Box<dyn Operator>,
}

/// Renders every template string of the task's `with:`, reads the result into the operator's
/// config type, and runs the operator's checks again on the rendered values: a value that was a
/// template at validation time (`rate: "{{ params.rate }}"`) is checked now, and a bad one fails
/// here with the sentence `validate` would give for it, before the operator starts.
pub(crate) fn prepare_task(
    templates: &Templates,
    project_dir: &Path,
    p: &Pipeline,
    task: &Task,
    ctx: &RenderContext,
) -> Result<PreparedTask, RenderError> {
    let profile: Profile = ctx.profile.parse().map_err(RenderError)?;
    let (operator, with) = task.for_profile(profile);
    let located = |d: Diagnostic| RenderError(format!("{d} (after rendering)"));
    let entry = operators::lookup(operator).ok_or_else(|| {
        located(Diagnostic::new(
            &p.file,
            task.pos,
            format!("task `{}`: unknown operator `{operator}`", task.name),
        ))
    })?;
    let value = ctx.to_value();
    let rendered = with.map_strings("with", &mut |path, s| {
        if !is_template(s) {
            return Ok(None);
        }
        templates.render(s, &value).map(Some).map_err(|e| {
            RenderError(
                Diagnostic::new(
                    &p.file,
                    with.find_path(path).map_or(with.pos, |n| n.pos),
                    format!("task `{}`: {path}: {}", task.name, e.message),
                )
                .to_string(),
            )
        })
    })?;
    let de = DeCtx::new(&p.file, Mode::Runtime);
    let parsed = (entry.parse)(&de, &rendered, "with");
    let diags = de.into_diags();
    if let Some(first) = diags.0.into_iter().next() {
        let mut d = first;
        d.message = format!("task `{}`: {}", task.name, d.message);
        return Err(located(d));
    }
    let operator = parsed.ok_or_else(|| {
        located(Diagnostic::new(
            &p.file,
            with.pos,
            format!("task `{}`: invalid configuration", task.name),
        ))
    })?;
    let check_cx = CheckContext {
        project_dir,
        templates,
    };
    if let Some(problem) = operator.check(&check_cx).into_iter().next() {
        return Err(located(problem_diagnostic(p, task, with, &problem)));
    }
    Ok(PreparedTask { operator })
}

/// Outputs for the upstream tasks a task's templates read, without a run: each value the
/// templates read shows as a placeholder naming it (`<tasks.prepare.output.output>`), so that
/// `windsock render` can show a task whose upstreams have not run.
pub(crate) fn placeholder_upstream(
    dag: &Dag,
    task: &Task,
    profile: Profile,
    templates: &Templates,
) -> BTreeMap<String, TaskVars> {
    let mut read: BTreeSet<String> = BTreeSet::new();
    let (_, with) = task.for_profile(profile);
    let _ = with.map_strings("with", &mut |_, s| {
        if let Ok(vars) = templates.check(s) {
            read.extend(vars);
        }
        Ok::<_, std::convert::Infallible>(None)
    });
    dag.graph
        .ancestors(&task.name)
        .into_iter()
        .map(|a| {
            let prefix = format!("tasks.{a}.output.");
            let mut output = serde_json::json!({});
            for path in read.iter().filter(|v| v.starts_with(&prefix)) {
                let keys: Vec<&str> = path[prefix.len()..].split('.').collect();
                let mut at = &mut output;
                for (i, k) in keys.iter().enumerate() {
                    let Some(o) = at.as_object_mut() else {
                        break;
                    };
                    at = o.entry(k.to_string()).or_insert_with(|| {
                        if i + 1 == keys.len() {
                            serde_json::Value::String(format!("<{path}>"))
                        } else {
                            serde_json::json!({})
                        }
                    });
                }
            }
            (
                a.clone(),
                TaskVars {
                    state: "success".into(),
                    output,
                },
            )
        })
        .collect()
}
