//! `windsock backfill`: plan and run a range of partitions or dates in the foreground.
//!
//! Runs are created already claimed by this process, so a scheduler running on the same state
//! directory never executes them too; a run another live process holds is waited for, not run
//! twice. Interrupted, the runs stay resumable: running the same backfill again continues them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::executor::{ExecError, ExecOptions, Executor, Observer, RunEnv, RunOutcome};
use crate::plan::RunPlan;
use crate::project::Dag;
use crate::spec::{Date, Month};
use crate::state::{Owner, RunRecord, RunState, StateStore, StoreError, Trigger, owner_is_dead};
use crate::template::Templates;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BackfillError {
    #[error("{0}")]
    Range(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Exec(#[from] ExecError),
}

#[derive(Debug, Clone)]
pub(crate) struct BackfillOptions {
    pub(crate) rerun_failed: bool,
    pub(crate) rerun_all: bool,
    /// Runs at once (default: the DAG's `max_active_runs`).
    pub(crate) max_active: usize,
    /// Tasks at once within a run.
    pub(crate) concurrency: usize,
}

/// What the backfill does for one partition or interval.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    Create,
    /// Already succeeded (or failed, without a rerun flag).
    Skip(String),
    /// Clear every task of an existing run and run it again.
    Rerun,
    /// An unfinished run: continue it.
    Continue,
}

#[derive(Debug, Clone)]
pub(crate) struct PlannedRun {
    pub(crate) plan: RunPlan,
    pub(crate) existing: Option<RunRecord>,
    pub(crate) action: Action,
}

impl PlannedRun {
    /// The partition key or logical date, for people.
    pub(crate) fn label(&self) -> String {
        match self.plan.partition {
            Some(m) => m.to_string(),
            None => self.plan.logical_date.format("%Y-%m-%d %H:%M").to_string(),
        }
    }
}

/// Progress of a backfill, for displays.
#[derive(Debug, Clone)]
pub(crate) enum Progress {
    Started {
        label: String,
        run_id: String,
    },
    Waiting {
        label: String,
        run_id: String,
    },
    Finished {
        label: String,
        run_id: String,
        state: RunState,
    },
}

#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) succeeded: Vec<String>,
    pub(crate) failed: Vec<(String, String)>,
    pub(crate) skipped: Vec<(String, String)>,
    pub(crate) interrupted: bool,
}

/// The runs of `from..=to`: partition keys (`2019-10`) for partitioned DAGs, dates otherwise
/// (every schedule interval starting on those days; one per day without a schedule).
pub(crate) fn plan(
    store: &dyn StateStore,
    dag: &Dag,
    from: &str,
    to: &str,
    opts: &BackfillOptions,
) -> Result<Vec<PlannedRun>, BackfillError> {
    let p = &dag.pipeline;
    let plans: Vec<RunPlan> = match &p.partitions {
        Some(parts) => {
            let (a, b) = (month(from)?, month(to)?);
            if a > b {
                return Err(BackfillError::Range(format!(
                    "--from {a} is after --to {b}"
                )));
            }
            for m in [a, b] {
                if m < parts.monthly.from || m > parts.monthly.to {
                    return Err(BackfillError::Range(format!(
                        "partition `{m}` is outside DAG `{}`'s range {}..{}",
                        p.dag, parts.monthly.from, parts.monthly.to
                    )));
                }
            }
            parts
                .monthly
                .months()
                .into_iter()
                .filter(|m| *m >= a && *m <= b)
                .map(RunPlan::month)
                .collect()
        }
        None => {
            let (a, b) = (date(from)?, date(to)?);
            if a > b {
                return Err(BackfillError::Range(format!(
                    "--from {a} is after --to {b}"
                )));
            }
            intervals(dag, a, b)
        }
    };
    let mut out = Vec::new();
    for plan in plans {
        let existing = store.unique_run(&p.dag, &plan.run_key)?;
        let action = match existing.as_ref().map(|r| r.state) {
            None => Action::Create,
            Some(RunState::Success) if opts.rerun_all => Action::Rerun,
            Some(RunState::Success) => Action::Skip("succeeded already".into()),
            Some(RunState::Failed) if opts.rerun_failed || opts.rerun_all => Action::Rerun,
            Some(RunState::Failed) => {
                Action::Skip("failed before (pass --rerun-failed to run it again)".into())
            }
            Some(RunState::Queued | RunState::Running) => Action::Continue,
        };
        out.push(PlannedRun {
            plan,
            existing,
            action,
        });
    }
    Ok(out)
}

fn month(s: &str) -> Result<Month, BackfillError> {
    s.parse().map_err(BackfillError::Range)
}

fn date(s: &str) -> Result<NaiveDate, BackfillError> {
    s.parse::<Date>().map(|d| d.0).map_err(BackfillError::Range)
}

fn intervals(dag: &Dag, from: NaiveDate, to: NaiveDate) -> Vec<RunPlan> {
    let p = &dag.pipeline;
    let start = RunPlan::for_date_unchecked(from).logical_date;
    let end = RunPlan::for_date_unchecked(to).logical_date + chrono::Duration::days(1);
    let mut out = Vec::new();
    match &p.schedule {
        None => {
            let mut t = start;
            while t < end {
                out.push(RunPlan::interval(p, t));
                t += chrono::Duration::days(1);
            }
        }
        Some(s) => {
            let mut t = match s.prev_at_or_before(start) {
                Some(x) if x == start => Some(x),
                _ => s.next_after(start),
            };
            while let Some(x) = t.filter(|x| *x < end) {
                out.push(RunPlan::interval(p, x));
                t = s.next_after(x);
            }
        }
    }
    out
}

/// Runs the planned runs in order, at most `max_active` at once. Returns when all have finished,
/// or when `stop` turns true (then the report says `interrupted`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    store: Arc<dyn StateStore>,
    templates: Arc<Templates>,
    env: RunEnv,
    dag: Arc<Dag>,
    planned: Vec<PlannedRun>,
    opts: &BackfillOptions,
    progress: &(dyn Fn(&Progress) + Send + Sync),
    mut stop: watch::Receiver<bool>,
) -> Result<Report, BackfillError> {
    let owner = Owner::current(Duration::from_secs(30));
    let mut report = Report::default();
    let mut queue: VecDeque<PlannedRun> = VecDeque::new();
    for item in planned {
        match &item.action {
            Action::Skip(why) => report.skipped.push((item.label(), why.clone())),
            _ => queue.push_back(item),
        }
    }
    let (exec_stop, _) = watch::channel(false);
    let mut running: JoinSet<(String, String, Result<RunOutcome, ExecError>)> = JoinSet::new();
    let mut waiting: Vec<(String, String)> = Vec::new();
    let mut mine: Vec<String> = Vec::new();
    let observer: Observer = Arc::new(|_| {});
    let spawn = |running: &mut JoinSet<_>, label: String, run_id: String| {
        let executor = Executor {
            store: store.clone(),
            templates: templates.clone(),
            env: env.clone(),
            options: ExecOptions {
                concurrency: opts.concurrency,
                grace: Duration::ZERO,
                owner: Some(owner.clone()),
                ..ExecOptions::default()
            },
            observer: observer.clone(),
        };
        let dag = dag.clone();
        let stop = exec_stop.subscribe();
        running.spawn(async move {
            let r = executor.execute(&dag, &run_id, stop).await;
            (label, run_id, r)
        });
    };
    loop {
        while running.len() + waiting.len() < opts.max_active.max(1) && !*stop.borrow() {
            let Some(item) = queue.pop_front() else {
                break;
            };
            let label = item.label();
            let run_id = match (&item.action, &item.existing) {
                (Action::Create, _) => {
                    match crate::executor::create_run(
                        store.as_ref(),
                        &dag,
                        &item.plan,
                        Trigger::Backfill,
                        Some(&owner),
                    ) {
                        Ok(rec) => rec.run_id,
                        // Created meanwhile (by the scheduler): treat it as an existing run.
                        Err(StoreError::RunExists { run_id, .. }) => run_id,
                        Err(e) => return Err(e.into()),
                    }
                }
                (Action::Rerun, Some(rec)) => {
                    let tasks: Vec<String> = store
                        .task_instances(&rec.run_id)?
                        .into_iter()
                        .map(|t| t.task)
                        .collect();
                    store.clear_tasks(&rec.run_id, &tasks, &owner, &owner_is_dead)?;
                    rec.run_id.clone()
                }
                (_, Some(rec)) => rec.run_id.clone(),
                (_, None) => continue,
            };
            if store.claim_run(&run_id, &owner, &owner_is_dead)? {
                mine.push(run_id.clone());
                progress(&Progress::Started {
                    label: label.clone(),
                    run_id: run_id.clone(),
                });
                spawn(&mut running, label, run_id);
            } else {
                match store.run(&run_id)?.map(|r| r.state) {
                    Some(state) if state.is_finished() => {
                        record(&mut report, progress, label, run_id, state)
                    }
                    _ => {
                        progress(&Progress::Waiting {
                            label: label.clone(),
                            run_id: run_id.clone(),
                        });
                        waiting.push((label, run_id));
                    }
                }
            }
        }
        if running.is_empty() && waiting.is_empty() && (queue.is_empty() || *stop.borrow()) {
            break;
        }
        tokio::select! {
            Some(done) = running.join_next(), if !running.is_empty() => {
                let Ok((label, run_id, result)) = done else { continue };
                let _ = store.release_run(&run_id, &owner);
                match result? {
                    RunOutcome::Finished(state) => record(&mut report, progress, label, run_id, state),
                    RunOutcome::Interrupted => report.interrupted = true,
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(200)), if !waiting.is_empty() => {
                let mut still = Vec::new();
                for (label, run_id) in std::mem::take(&mut waiting) {
                    match store.run(&run_id)?.map(|r| r.state) {
                        Some(state) if state.is_finished() => record(&mut report, progress, label, run_id, state),
                        _ if store.claim_run(&run_id, &owner, &owner_is_dead)? => {
                            mine.push(run_id.clone());
                            progress(&Progress::Started { label: label.clone(), run_id: run_id.clone() });
                            spawn(&mut running, label, run_id);
                        }
                        _ => still.push((label, run_id)),
                    }
                }
                waiting = still;
            }
            changed = stop.changed(), if !*stop.borrow() => {
                if changed.is_err() || *stop.borrow() {
                    report.interrupted = true;
                    let _ = exec_stop.send(true);
                    waiting.clear();
                }
            }
        }
    }
    for run_id in mine {
        let _ = store.release_run(&run_id, &owner);
    }
    Ok(report)
}

fn record(
    report: &mut Report,
    progress: &(dyn Fn(&Progress) + Send + Sync),
    label: String,
    run_id: String,
    state: RunState,
) {
    progress(&Progress::Finished {
        label: label.clone(),
        run_id: run_id.clone(),
        state,
    });
    match state {
        RunState::Success => report.succeeded.push(label),
        _ => report.failed.push((label, run_id)),
    }
}
