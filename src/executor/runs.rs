//! Creating runs and making interrupted ones ready to continue: what `run`, `run --resume`,
//! `trigger`, the scheduler and backfills share.

use super::ExecError;
use crate::plan::RunPlan;
use crate::project::Dag;
use crate::state::{Owner, RunRecord, StateStore, StoreError, TaskState, Trigger, owner_is_dead};

/// How many ids a manual run tries before giving up (ids carry the creation time to the
/// millisecond, so only runs created in the same millisecond collide).
const ID_ATTEMPTS: u32 = 5;

/// Creates a run of `dag` for `plan`, queued, claimed by `owner` when given. A scheduled or
/// backfill run is unique per DAG and partition or interval: a second one fails with
/// [`StoreError::RunExists`]. A manual run whose id is taken gets the next free `_N` suffix.
pub(crate) fn create_run(
    store: &dyn StateStore,
    dag: &Dag,
    plan: &RunPlan,
    trigger: Trigger,
    owner: Option<&Owner>,
) -> Result<RunRecord, StoreError> {
    create_with_id(
        store,
        dag,
        plan,
        trigger,
        owner,
        plan.run_id(&dag.pipeline.dag, trigger),
    )
}

fn create_with_id(
    store: &dyn StateStore,
    dag: &Dag,
    plan: &RunPlan,
    trigger: Trigger,
    owner: Option<&Owner>,
    base: String,
) -> Result<RunRecord, StoreError> {
    let p = &dag.pipeline;
    let tasks: Vec<String> = dag.graph.order().to_vec();
    let mut attempt = 1;
    loop {
        let run_id = if attempt == 1 {
            base.clone()
        } else {
            format!("{base}_{attempt}")
        };
        let mut new = plan.new_run(p, trigger, run_id);
        new.owner = owner.cloned();
        match store.create_run(&new, &tasks) {
            Err(StoreError::RunIdTaken(_)) if attempt < ID_ATTEMPTS => attempt += 1,
            other => return other,
        }
    }
}

/// Makes a failed or killed run ready to continue under `owner`: every task that did not
/// succeed (or was not skipped) is cleared to run again, and the run is claimed. Fails when
/// another live process holds the run.
pub(crate) fn resume_run(
    store: &dyn StateStore,
    run: &RunRecord,
    owner: &Owner,
) -> Result<(), ExecError> {
    let todo: Vec<String> = store
        .task_instances(&run.run_id)?
        .into_iter()
        .filter(|t| !matches!(t.state, TaskState::Success | TaskState::Skipped))
        .map(|t| t.task)
        .collect();
    store.clear_tasks(&run.run_id, &todo)?;
    if !store.claim_run(&run.run_id, owner, &owner_is_dead)? {
        let holder = store
            .run(&run.run_id)?
            .and_then(|r| r.owner)
            .unwrap_or_default();
        return Err(ExecError::Held {
            run_id: run.run_id.clone(),
            holder,
        });
    }
    Ok(())
}

/// Resets tasks of a run so that they run again (with a fresh retry budget; their tries stay
/// in the history): `only` those named, or every task; with `downstream` (the run's DAG), also
/// every task that depends on them. Returns the tasks cleared.
pub(crate) fn clear_tasks(
    store: &dyn StateStore,
    run_id: &str,
    only: &[String],
    downstream: Option<&Dag>,
) -> Result<Vec<String>, ExecError> {
    let all: Vec<String> = store
        .task_instances(run_id)?
        .into_iter()
        .map(|t| t.task)
        .collect();
    let mut chosen: Vec<String> = if only.is_empty() {
        all.clone()
    } else {
        only.to_vec()
    };
    if let Some(unknown) = chosen.iter().find(|t| !all.contains(t)) {
        return Err(ExecError::NoSuchTask {
            run_id: run_id.to_string(),
            task: unknown.clone(),
            known: all,
        });
    }
    if let Some(dag) = downstream.filter(|_| !only.is_empty()) {
        let below: Vec<String> = chosen
            .iter()
            .flat_map(|t| dag.graph.descendants(t))
            .collect();
        for t in below {
            if !chosen.contains(&t) && all.contains(&t) {
                chosen.push(t);
            }
        }
    }
    store.clear_tasks(run_id, &chosen)?;
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SqliteStore;

    fn dag() -> Dag {
        let src = "dag: d\ntasks:\n  a:\n    operator: noop\n";
        let (p, d) = crate::spec::load_str(std::path::Path::new("d.yaml"), src);
        assert!(d.is_empty(), "{d}");
        let pipeline = p.unwrap();
        let graph = crate::graph::TaskGraph::build(&pipeline).unwrap();
        Dag { pipeline, graph }
    }

    #[test]
    fn a_manual_run_whose_id_is_taken_gets_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        let dag = dag();
        let plan = RunPlan::for_date_unchecked(chrono::NaiveDate::default());
        let id = |n: &str| {
            create_with_id(&store, &dag, &plan, Trigger::Manual, None, n.to_string())
                .map(|r| r.run_id)
        };
        assert_eq!(id("d__manual__x").unwrap(), "d__manual__x");
        assert_eq!(id("d__manual__x").unwrap(), "d__manual__x_2");
        assert_eq!(id("d__manual__x").unwrap(), "d__manual__x_3");
        assert_eq!(id("d__manual__x").unwrap(), "d__manual__x_4");
        assert_eq!(id("d__manual__x").unwrap(), "d__manual__x_5");
        let e = id("d__manual__x").unwrap_err();
        assert!(matches!(e, StoreError::RunIdTaken(_)), "{e}");
    }

    #[test]
    fn a_scheduled_run_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        let dag = dag();
        let plan = RunPlan::for_date_unchecked(chrono::NaiveDate::default());
        create_run(&store, &dag, &plan, Trigger::Scheduled, None).unwrap();
        let e = create_run(&store, &dag, &plan, Trigger::Scheduled, None).unwrap_err();
        assert!(matches!(e, StoreError::RunExists { .. }), "{e}");
    }
}
