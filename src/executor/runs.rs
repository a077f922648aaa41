//! Creating runs and making interrupted ones ready to continue: what `run`, `run --resume`,
//! `trigger`, the scheduler and backfills share.

use super::ExecError;
use crate::plan::RunPlan;
use crate::project::Dag;
use chrono::Utc;

use crate::state::{
    Owner, RunRecord, StateStore, StoreError, TaskState, Trigger, holder_gone, owner_is_dead,
};

/// How many `_N` suffixes a run whose id is taken tries (manual ids carry the creation time to
/// the millisecond, so only runs created in the same millisecond collide); past them, a random
/// suffix makes the id unique, so that no collision ever stops the daemon.
const ID_ATTEMPTS: u32 = 5;

/// Creates a run of `dag` for `plan`, queued, claimed by `owner` when given. A scheduled or
/// backfill run is unique per DAG and partition or interval: a second one fails with
/// [`StoreError::RunExists`]. A run whose id is taken by another run gets the next free `_N`
/// suffix, and past [`ID_ATTEMPTS`] a random one.
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
        let run_id = match attempt {
            1 => base.clone(),
            n if n <= ID_ATTEMPTS => format!("{base}_{n}"),
            _ => format!("{base}_{}", uuid::Uuid::new_v4().simple()),
        };
        let mut new = plan.new_run(p, trigger, run_id);
        new.owner = owner.cloned();
        match store.create_run(&new, &tasks) {
            Err(StoreError::RunIdTaken(_)) if attempt <= ID_ATTEMPTS => attempt += 1,
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
    let held = |holder: Option<String>| ExecError::Held {
        run_id: run.run_id.clone(),
        holder: holder.unwrap_or_default(),
    };
    // Refused before anything is written: a run another live process executes is its own.
    let current = store
        .run(&run.run_id)?
        .ok_or_else(|| ExecError::NoSuchRun(run.run_id.clone()))?;
    let (holder, expires) = (current.owner.as_deref(), current.lease_expires_at);
    if !holder_gone(holder, expires, Utc::now(), owner, &owner_is_dead) {
        return Err(held(current.owner));
    }
    let todo: Vec<String> = store
        .task_instances(&run.run_id)?
        .into_iter()
        .filter(|t| !matches!(t.state, TaskState::Success | TaskState::Skipped))
        .map(|t| t.task)
        .collect();
    store.clear_tasks(&run.run_id, &todo, owner, &owner_is_dead)?;
    if !store.claim_run(&run.run_id, owner, &owner_is_dead)? {
        return Err(held(store.run(&run.run_id)?.and_then(|r| r.owner)));
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
    // Who clears, for the check that no cleared task is still running under a live holder.
    let claimer = Owner::current(std::time::Duration::ZERO);
    store.clear_tasks(run_id, &chosen, &claimer, &owner_is_dead)?;
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
        let sixth = id("d__manual__x").unwrap();
        let seventh = id("d__manual__x").unwrap();
        for other in [&sixth, &seventh] {
            assert!(other.starts_with("d__manual__x_"), "{other}");
            assert_eq!(other.len(), "d__manual__x_".len() + 32, "{other}");
        }
        assert_ne!(sixth, seventh);
    }

    #[test]
    fn later_rounds_of_a_cycling_partition_say_their_round() {
        let m: crate::spec::Month = "2019-10".parse().unwrap();
        assert_eq!(
            RunPlan::month_round(m, 1).run_id("d", Trigger::Scheduled),
            "d__scheduled__2019-10"
        );
        let sixth = RunPlan::month_round(m, 6);
        assert_eq!(sixth.run_key, "2019-10#6");
        assert_eq!(
            sixth.run_id("d", Trigger::Scheduled),
            "d__scheduled__2019-10__r6"
        );
        // A stored run gives back the same id.
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        for round in 1..=12 {
            let plan = RunPlan::month_round(m, round);
            let rec = create_run(&store, &dag(), &plan, Trigger::Scheduled, None).unwrap();
            let again = RunPlan::from_record(&rec);
            assert_eq!(again.run_id("d", Trigger::Scheduled), rec.run_id);
        }
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
