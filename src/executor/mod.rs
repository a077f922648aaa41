//! The executor: runs one DAG run to completion.
//!
//! A single coordinating loop decides what starts; operators run as tokio tasks under a
//! concurrency limit. Every transition is written to the state store before the loop moves on,
//! so a process killed at any point can be resumed from the store alone:
//! - a task starts when all its upstreams succeeded; a failure marks its downstream tasks
//!   `upstream_failed`, a skip skips them;
//! - a failed try is retried after the policy's delay (fixed, or exponential with jitter and a
//!   cap) while retries remain; a timeout drops the operator's future, which kills its work;
//! - a try found `running` when execution starts belonged to a process that died: it is recorded
//!   as failed and retried under the task's policy.
//!
//! One file because it is one loop: the decisions of a run (start, retry, time out, stop) read
//! best beside each other; run creation and resumption live in submodules.

mod runs;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::error::Error;
use crate::operators::{
    Operator, Progress, ProgressReport, RenderExtras, TaskContext, TaskLog, TaskResult,
};
pub(crate) use crate::plan::RunEnv;
use crate::plan::{RunPlan, prepare_task};
use crate::project::Dag;
use crate::state::{
    Owner, RunState, StateStore, StoreError, TaskInstance, TaskState, TryOutcome, owner_is_dead,
    owner_on_this_host,
};
use crate::template::{RenderContext, TaskVars, Templates};
pub(crate) use runs::{clear_tasks, create_run, resume_run};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ExecError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no run with id `{0}`")]
    NoSuchRun(String),
    #[error("run `{run_id}` belongs to DAG `{run_dag}`, not `{dag}`")]
    WrongDag {
        run_id: String,
        run_dag: String,
        dag: String,
    },
    #[error(
        "run `{run_id}` is being executed by another process ({holder}); wait for it or stop that process"
    )]
    Held { run_id: String, holder: String },
    #[error("run `{run_id}` has no task `{task}`; its tasks are {}", crate::diag::list_names(.known.iter().map(String::as_str)))]
    NoSuchTask {
        run_id: String,
        task: String,
        known: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct ExecOptions {
    /// Tasks of this run that may run at once.
    pub(crate) concurrency: usize,
    /// After a stop request, how long running tries may take to finish before they are killed.
    pub(crate) grace: Duration,
    /// This process, as the holder of the tries it claims (and of the run, unless `shared`);
    /// the leases are renewed while executing. A try another process takes over stops, and so
    /// does the whole execution when another process takes the run.
    pub(crate) owner: Option<Owner>,
    /// Task slots shared by every run of this process (the scheduler's global limit).
    pub(crate) slots: Option<Arc<Semaphore>>,
    /// Other processes execute this run too (schedulers sharing a PostgreSQL store): the run is
    /// not held, tries are claimed one by one, and the store is read every `poll` for what the
    /// others did.
    pub(crate) shared: bool,
    pub(crate) poll: Duration,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            concurrency: 8,
            grace: Duration::ZERO,
            owner: None,
            slots: None,
            shared: false,
            poll: Duration::from_secs(1),
        }
    }
}

/// Progress of a run, for displays. The store has the same facts; this is for people watching.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    RunStarted {
        run_id: String,
        tasks: usize,
        already_done: usize,
    },
    TaskStarted {
        task: String,
        try_number: u32,
        /// The last try number the retry policy allows.
        last_try: u32,
    },
    /// How far a running try has come, as its operator reports it.
    TaskProgress {
        task: String,
        progress: ProgressReport,
    },
    TaskFinished {
        task: String,
        state: TaskState,
        try_number: u32,
        duration: Duration,
        error: Option<String>,
        retry_in: Option<Duration>,
    },
    RunFinished {
        run_id: String,
        state: RunState,
    },
}

pub(crate) type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunOutcome {
    Finished(RunState),
    /// Stopped on request before the run finished; the run stays resumable.
    Interrupted,
}

pub(crate) struct Executor {
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) templates: Arc<Templates>,
    pub(crate) env: RunEnv,
    pub(crate) options: ExecOptions,
    pub(crate) observer: Observer,
}

type TryDone = (String, u32, Result<TaskResult, Error>, Duration);

/// The tries this execution runs, by tokio task: the task's name, its try and how to stop it.
type Running = HashMap<tokio::task::Id, (String, u32, tokio::task::AbortHandle)>;

/// Consecutive tries that may die with windsock before the task counts them as failures.
const MAX_INTERRUPTIONS: usize = 5;

/// What one try needs to start: the run it belongs to and where it stands.
pub(crate) struct TryPlan<'a> {
    pub(crate) dag: &'a Dag,
    pub(crate) plan: &'a RunPlan,
    pub(crate) run_id: &'a str,
    pub(crate) task: &'a str,
    pub(crate) try_number: u32,
    /// Outputs of the finished upstream tasks the task's templates may read.
    pub(crate) upstream: BTreeMap<String, TaskVars>,
}

/// A try ready to run: its operator, built from the rendered and checked config, and what the
/// operator sees of the try.
pub(crate) struct ReadyTry {
    pub(crate) operator: Box<dyn Operator>,
    pub(crate) ctx: TaskContext,
    /// The rendered config, and the text the operator renders beyond it (SQL), as YAML.
    pub(crate) rendered: String,
}

/// Renders and checks a task's config and builds the context of its try: the one way a task
/// is made ready to run, for the executor and for `windsock stream`. The try's log is created
/// first, so a config that fails its checks is explained there too.
pub(crate) fn prepare_try(
    env: &RunEnv,
    templates: &Arc<Templates>,
    t: TryPlan<'_>,
) -> Result<ReadyTry, Error> {
    let p = &t.dag.pipeline;
    let task = p
        .task(t.task)
        .ok_or_else(|| Error::fatal(format!("DAG `{}` has no task `{}`", p.dag, t.task)))?;
    let log_path = env.log_path(&p.dag, t.run_id, t.task, t.try_number);
    let log = TaskLog::create(&log_path).map_err(|e| {
        Error::transient(format!(
            "cannot write the log file {}: {e}",
            log_path.display()
        ))
    })?;
    let (operator_name, _) = task.for_profile(env.profile);
    log.info(&format!(
        "run {}, task {}, try {} (operator {operator_name}, profile {})",
        t.run_id, t.task, t.try_number, env.profile
    ));
    let ctx = t
        .plan
        .context(p, t.run_id, t.task, t.try_number, t.upstream, env);
    let prepared = prepare_task(templates, &env.project_dir, p, task, &ctx).map_err(|e| {
        log.info(&e.to_string());
        Error::fatal(e.to_string())
    })?;
    let mut rendered =
        serde_yaml_ng::to_string(&prepared.operator.config_json()).unwrap_or_default();
    log.info(&format!("rendered config:\n{}", rendered.trim_end()));
    // What the operator renders beyond its config (a `sql` task's files), for people.
    let extras = prepared
        .operator
        .rendered_extras(&RenderExtras {
            project_dir: &env.project_dir,
            templates,
            context: &ctx.to_value(),
        })
        .unwrap_or_default();
    for (title, text) in extras {
        rendered.push_str(&format!("\n-- {title}\n{}\n", text.trim_end()));
    }
    Ok(ReadyTry {
        operator: prepared.operator,
        ctx: task_context(env, templates, p, t.run_id, t.task, t.try_number, &ctx, log),
        rendered,
    })
}

#[allow(clippy::too_many_arguments)]
fn task_context(
    env: &RunEnv,
    templates: &Arc<Templates>,
    p: &crate::spec::Pipeline,
    run_id: &str,
    task: &str,
    try_number: u32,
    ctx: &RenderContext,
    log: TaskLog,
) -> TaskContext {
    TaskContext {
        dag: p.dag.clone(),
        run_id: run_id.to_string(),
        task: task.to_string(),
        try_number,
        project_dir: env.project_dir.clone(),
        home: env.home.clone(),
        profile: env.profile,
        log,
        env: vec![
            ("WINDSOCK_DAG".into(), p.dag.clone()),
            ("WINDSOCK_RUN_ID".into(), run_id.to_string()),
            ("WINDSOCK_TASK".into(), task.to_string()),
            ("WINDSOCK_TRY_NUMBER".into(), try_number.to_string()),
            ("WINDSOCK_DS".into(), ctx.ds.clone()),
        ],
        on_process: Arc::new(|_| {}),
        templates: templates.clone(),
        template_context: ctx.to_value(),
        deferred_state: None,
        stop: Default::default(),
        progress: Progress::ignored(),
    }
}

impl Executor {
    /// Runs `run_id` until every task has finished, or until `stop` turns true.
    pub(crate) async fn execute(
        &self,
        dag: &Dag,
        run_id: &str,
        mut stop: watch::Receiver<bool>,
    ) -> Result<RunOutcome, ExecError> {
        let p = &dag.pipeline;
        let g = &dag.graph;
        let rec = self
            .store
            .run(run_id)?
            .ok_or_else(|| ExecError::NoSuchRun(run_id.to_string()))?;
        if rec.dag != p.dag {
            return Err(ExecError::WrongDag {
                run_id: run_id.to_string(),
                run_dag: rec.dag,
                dag: p.dag.clone(),
            });
        }
        let plan = RunPlan::from_record(&rec);
        self.store.ensure_tasks(run_id, g.order())?;
        if self.options.shared {
            // Other processes finish runs too: one that is over has nothing left to do here.
            if rec.state.is_finished() {
                return Ok(RunOutcome::Finished(rec.state));
            }
        } else {
            self.store.set_run_state(run_id, RunState::Running)?;
        }
        let mut tis: HashMap<String, TaskInstance> = HashMap::new();
        let mut running_ids: Running = HashMap::new();
        self.refresh(dag, run_id, &mut tis, &running_ids, &[])?;

        (self.observer)(&Event::RunStarted {
            run_id: run_id.to_string(),
            tasks: g.order().len(),
            already_done: tis.values().filter(|t| t.state.is_finished()).count(),
        });

        let mut running: JoinSet<TryDone> = JoinSet::new();
        // Tries that ended while the store could not record it: written when it answers again.
        let mut pending: Vec<Ended> = Vec::new();
        let mut outage: Option<Outage> = None;
        let mut stopping_since: Option<Instant> = None;
        // The leases could not be renewed in time: the tries were stopped before another
        // process could take them over.
        let mut lease_lost = false;
        let mut starved = false;
        // A slot handed to this run while it waited for one: the next task to start takes it.
        // (Giving it back to try for it again would pass it round the waiting runs forever.)
        let mut granted: Option<OwnedSemaphorePermit> = None;
        // Leases are renewed every sixth of their length, and a renewal that fails is tried
        // again every second. When none has gone through for two thirds of the lease, the
        // tries are stopped: the leases written last end a lease after that renewal was sent
        // (by the database's clock, which started later), when another process may take the
        // tries over, so they must be stopped before then even if the store does not answer.
        let lease = self.options.owner.as_ref().map(|o| o.lease);
        let renew_every = lease.map(|l| l / 6).unwrap_or(Duration::from_secs(3600));
        let hold_limit = lease
            .map(|l| l * 2 / 3)
            .unwrap_or(Duration::from_secs(3600));
        // When the last renewal that went through was sent.
        let mut renewed_at = tokio::time::Instant::now();
        let mut next_renew = tokio::time::Instant::now() + renew_every;
        let poll = self.options.poll.max(Duration::from_millis(10));
        // Read every `poll`, also when this process runs the run alone: a clear made by another
        // process (`windsock clear`, the UI) is seen while the run executes.
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // What talks to the store. A store out of reach for a while (locked, restarting)
            // stops none of the running tries: the same step is taken again after a backoff.
            let step: Result<(), ExecError> = 'step: {
                while let Some(ended) = pending.pop() {
                    if let Err(e) = self.record(run_id, &ended, &mut tis) {
                        pending.push(ended);
                        break 'step Err(e);
                    }
                }
                if let Err(e) = self.propagate(dag, run_id, &mut tis) {
                    break 'step Err(e);
                }
                if stopping_since.is_some() {
                    break 'step Ok(());
                }
                let now = Utc::now();
                starved = false;
                for name in g.order() {
                    if running_ids.len() >= self.options.concurrency.max(1) {
                        break;
                    }
                    let ti = &tis[name];
                    let due = match ti.state {
                        TaskState::Queued => true,
                        TaskState::UpForRetry | TaskState::Deferred => {
                            ti.next_try_at.is_none_or(|t| t <= now)
                        }
                        _ => false,
                    };
                    let ups_ok = g
                        .upstream(name)
                        .iter()
                        .all(|u| tis[u].state == TaskState::Success);
                    if due && ups_ok {
                        let permit = match (&self.options.slots, granted.take()) {
                            (None, _) => None,
                            (Some(_), Some(p)) => Some(p),
                            (Some(slots), None) => match slots.clone().try_acquire_owned() {
                                Ok(p) => Some(p),
                                Err(_) => {
                                    starved = true;
                                    break;
                                }
                            },
                        };
                        if let Err(e) = self.launch(
                            dag,
                            &plan,
                            run_id,
                            name,
                            permit,
                            &mut tis,
                            &mut running,
                            &mut running_ids,
                        ) {
                            break 'step Err(e);
                        }
                    }
                }
                Ok(())
            };
            match step {
                Ok(()) => {
                    if let Some(o) = outage.take() {
                        tracing::info!(run_id, after = ?o.since.elapsed(), "the state store answers again");
                    }
                }
                Err(e) => endure(run_id, e, &mut outage)?,
            }

            let next_retry = tis
                .values()
                .filter(|t| matches!(t.state, TaskState::UpForRetry | TaskState::Deferred))
                .filter_map(|t| t.next_try_at)
                .min();
            // Done when nothing runs and nothing is left to start: no retry pending and no task
            // waiting for a slot that other runs hold (`starved`: it starts when one frees).
            let nothing_left = next_retry.is_none() && !starved;
            // Tries of other processes may still be running (a holder whose lease has not run
            // out yet), and when the run is shared, waiting to be retried by them: the run is
            // over when every task is.
            let foreign = tis.values().any(|t| {
                t.state == TaskState::Running && !running_ids.values().any(|(n, _, _)| *n == t.task)
            });
            let others_busy =
                foreign || (self.options.shared && !tis.values().all(|t| t.state.is_finished()));
            let settled = running.is_empty() && pending.is_empty() && outage.is_none();
            if settled && stopping_since.is_some() && !tis.values().all(|t| t.state.is_finished()) {
                return Ok(RunOutcome::Interrupted);
            }
            if settled && ((nothing_left && !others_busy) || stopping_since.is_some()) {
                // The run's end as the store has it: a task another process cleared meanwhile
                // keeps it going.
                match self.store.finish_run(run_id, g.order()) {
                    Ok(Some(state)) => {
                        (self.observer)(&Event::RunFinished {
                            run_id: run_id.to_string(),
                            state,
                        });
                        return Ok(RunOutcome::Finished(state));
                    }
                    Ok(None) if stopping_since.is_some() => return Ok(RunOutcome::Interrupted),
                    Ok(None) => {
                        tracing::info!(run_id, "tasks of the run were cleared meanwhile; they run");
                        if let Err(e) = self.refresh(dag, run_id, &mut tis, &running_ids, &pending)
                        {
                            endure(run_id, e, &mut outage)?;
                        }
                    }
                    Err(e) => endure(run_id, e.into(), &mut outage)?,
                }
            }
            let wait_retry = next_retry
                .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(3600));
            let grace_left = stopping_since
                .map(|s| self.options.grace.saturating_sub(s.elapsed()))
                .unwrap_or(Duration::from_secs(3600));
            let backoff = outage.as_ref().map(|o| o.backoff).unwrap_or_default();

            tokio::select! {
                Some(done) = running.join_next_with_id() => {
                    let (name, try_number, result, duration) = match done {
                        Ok((id, v)) => { running_ids.remove(&id); v }
                        Err(e) => {
                            let Some((name, try_number, _)) = running_ids.remove(&e.id()) else { continue };
                            let msg = if e.is_panic() {
                                "the operator panicked (a bug in windsock)"
                            } else if lease_lost {
                                "interrupted: the state store could not be reached to renew this try's lease, so it was stopped before another process could take it over"
                            } else {
                                "interrupted: windsock was stopped"
                            };
                            (name, try_number, Err(Error::transient(msg)), Duration::ZERO)
                        }
                    };
                    let stopping = stopping_since.is_some() || lease_lost;
                    let ended = Ended {
                        outcome: self.outcome_of(dag, &tis[&name], try_number, result, stopping),
                        name,
                        try_number,
                        duration,
                        stopping,
                    };
                    if let Err(e) = self.record(run_id, &ended, &mut tis) {
                        pending.push(ended);
                        endure(run_id, e, &mut outage)?;
                    }
                }
                _ = tokio::time::sleep(wait_retry), if stopping_since.is_none() && next_retry.is_some() => {}
                _ = tokio::time::sleep(backoff), if outage.is_some() => {}
                changed = stop.changed(), if stopping_since.is_none() => {
                    if changed.is_err() || *stop.borrow() {
                        tracing::info!(run_id, running = running_ids.len(), "stop requested; no new tasks will start");
                        stopping_since = Some(Instant::now());
                        if self.options.grace.is_zero() {
                            running.abort_all();
                        }
                    }
                }
                _ = tokio::time::sleep(grace_left), if stopping_since.is_some() && !running.is_empty() => {
                    running.abort_all();
                }
                // A slot freed elsewhere: keep it and go round to start the waiting task with it.
                permit = acquire(self.options.slots.clone()), if starved && stopping_since.is_none() => {
                    granted = permit;
                }
                _ = tokio::time::sleep_until(renewed_at + hold_limit), if lease.is_some() && !running.is_empty() && !lease_lost => {
                    tracing::error!(run_id, running = running_ids.len(), "the leases of this run's tries could not be renewed for {}; stopping them before another process may take them over", crate::spec::Duration(renewed_at.elapsed()));
                    lease_lost = true;
                    running.abort_all();
                }
                _ = tokio::time::sleep_until(next_renew), if self.options.owner.is_some() => {
                    let Some(owner) = &self.options.owner else { continue };
                    let sent = tokio::time::Instant::now();
                    match self.renew(run_id, owner) {
                        Ok(None) => {
                            tracing::error!(run_id, "another process took this run over; stopping");
                            running.abort_all();
                            while running.join_next().await.is_some() {}
                            return Ok(RunOutcome::Interrupted);
                        }
                        Ok(Some(held)) => {
                            renewed_at = sent;
                            next_renew = tokio::time::Instant::now() + renew_every;
                            for (name, _, handle) in running_ids.values() {
                                if !held.contains(name) {
                                    tracing::error!(run_id, task = %name, "another process took this try over (this one's lease expired); stopping it");
                                    handle.abort();
                                }
                            }
                        }
                        Err(e) => {
                            next_renew = tokio::time::Instant::now() + RENEW_RETRY.min(renew_every);
                            endure(run_id, e, &mut outage)?;
                        }
                    }
                }
                _ = refresh.tick(), if stopping_since.is_none() => {
                    if let Err(e) = self.refresh(dag, run_id, &mut tis, &running_ids, &pending) {
                        endure(run_id, e, &mut outage)?;
                    }
                }
            }
            if lease_lost && running.is_empty() {
                // Every stopped try is collected; tries started later hold fresh leases.
                lease_lost = false;
            }
        }
    }

    /// Extends this process's leases on the run (unless shared) and on its tries: the tasks it
    /// still holds, or None when another process took the whole run over.
    fn renew(&self, run_id: &str, owner: &Owner) -> Result<Option<Vec<String>>, ExecError> {
        if !self.options.shared && !self.store.renew_lease(run_id, owner)? {
            return Ok(None);
        }
        Ok(Some(self.store.renew_tries(run_id, owner)?))
    }

    /// Reads the run's task instances (all but the tries running here or ended here and not
    /// recorded yet, which this process knows best) and closes the tries of processes that are gone.
    fn refresh(
        &self,
        dag: &Dag,
        run_id: &str,
        tis: &mut HashMap<String, TaskInstance>,
        running_ids: &Running,
        pending: &[Ended],
    ) -> Result<(), ExecError> {
        let here: Vec<&str> = running_ids
            .values()
            .map(|(n, _, _)| n.as_str())
            .chain(pending.iter().map(|e| e.name.as_str()))
            .collect();
        for ti in self.store.task_instances(run_id)? {
            if dag.pipeline.tasks.contains_key(&ti.task) && !here.contains(&ti.task.as_str()) {
                tis.insert(ti.task.clone(), ti);
            }
        }
        let orphans: Vec<String> = dag
            .graph
            .order()
            .iter()
            .filter(|n| !here.contains(&n.as_str()))
            .filter(|n| tis.get(*n).is_some_and(|t| t.state == TaskState::Running))
            .cloned()
            .collect();
        for name in orphans {
            self.close_orphan(dag, run_id, &name, tis)?;
        }
        Ok(())
    }

    /// A try left `running` by a process that died (or whose lease expired): taken over, its
    /// leftover processes killed, and recorded as interrupted so that it runs again without
    /// using a retry, unless it keeps dying (a task that takes windsock down with it).
    fn close_orphan(
        &self,
        dag: &Dag,
        run_id: &str,
        name: &str,
        tis: &mut HashMap<String, TaskInstance>,
    ) -> Result<(), ExecError> {
        let ti = &tis[name];
        let holder = ti.owner.clone();
        // Without an owner this execution runs alone (no claims): every running try is dead.
        if let Some(owner) = &self.options.owner {
            if !self
                .store
                .take_over_try(run_id, name, ti.try_number, owner, &owner_is_dead)?
            {
                return Ok(());
            }
        }
        let tries = self.store.tries(run_id, name)?;
        if let Some(last) = tries.last() {
            // A process group on another host is not this host's to signal.
            let local = holder.as_deref().is_none_or(owner_on_this_host);
            if let (Some(pgid), true) = (last.pid, local) {
                let killed = crate::sys::kill_leftover_group(pgid, last.started_at);
                if killed > 0 {
                    tracing::warn!(run_id, task = %name, killed, "killed leftovers of an interrupted try");
                }
            }
        }
        let interrupted_in_a_row = 1 + tries
            .iter()
            .rev()
            .skip(1)
            .take_while(|t| t.interrupted)
            .count();
        let message = "interrupted: the process running this try exited before it finished";
        let outcome = if interrupted_in_a_row < MAX_INTERRUPTIONS {
            TryOutcome::interrupted(message)
        } else {
            let err =
                Error::transient(format!("{message} ({interrupted_in_a_row} times in a row)"));
            self.failure_outcome(dag, ti, ti.try_number, &err)
        };
        if self.store.finish_try(
            run_id,
            name,
            ti.try_number,
            &outcome,
            self.options.owner.as_ref(),
        )? {
            tracing::info!(run_id, task = %name, try_number = ti.try_number, holder = holder.as_deref().unwrap_or("-"), "closed a try whose process is gone");
            apply(tis, name, &outcome);
        }
        Ok(())
    }

    /// Marks tasks whose upstreams failed (or were skipped) so they never start.
    fn propagate(
        &self,
        dag: &Dag,
        run_id: &str,
        tis: &mut HashMap<String, TaskInstance>,
    ) -> Result<(), ExecError> {
        for name in dag.graph.order() {
            if !matches!(tis[name].state, TaskState::Queued | TaskState::UpForRetry) {
                continue;
            }
            let ups = dag.graph.upstream(name);
            let failed = ups
                .iter()
                .find(|u| matches!(tis[*u].state, TaskState::Failed | TaskState::UpstreamFailed));
            let new_state = if let Some(up) = failed {
                Some((
                    TaskState::UpstreamFailed,
                    format!("upstream task `{up}` failed"),
                ))
            } else if !ups.is_empty()
                && ups
                    .iter()
                    .all(|u| matches!(tis[u].state, TaskState::Success | TaskState::Skipped))
                && ups.iter().any(|u| tis[u].state == TaskState::Skipped)
            {
                Some((
                    TaskState::Skipped,
                    "an upstream task was skipped".to_string(),
                ))
            } else {
                None
            };
            if let Some((state, why)) = new_state {
                self.store.set_task_state(run_id, name, state, Some(&why))?;
                if let Some(ti) = tis.get_mut(name) {
                    ti.state = state;
                    ti.error = Some(why.clone());
                }
                (self.observer)(&Event::TaskFinished {
                    task: name.clone(),
                    state,
                    try_number: tis[name].try_number,
                    duration: Duration::ZERO,
                    error: Some(why),
                    retry_in: None,
                });
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(
        &self,
        dag: &Dag,
        plan: &RunPlan,
        run_id: &str,
        name: &str,
        permit: Option<OwnedSemaphorePermit>,
        tis: &mut HashMap<String, TaskInstance>,
        running: &mut JoinSet<TryDone>,
        running_ids: &mut Running,
    ) -> Result<(), ExecError> {
        let p = &dag.pipeline;
        let task = &p.tasks[name];
        let ti = &tis[name];
        let try_number = ti.try_number + 1;
        // The last try number the policy allows in this series.
        let last_try = ti.first_try + task.policy.retries;
        let log_path = self.env.log_path(&p.dag, run_id, name, try_number);
        let claimed = self.store.start_try(
            run_id,
            name,
            try_number,
            &log_path.display().to_string(),
            self.options.owner.as_ref(),
        )?;
        if let Some(ti) = tis.get_mut(name) {
            ti.state = TaskState::Running;
            ti.try_number = try_number;
        }
        if !claimed {
            // Another process took this try first; the next refresh shows how it went.
            tracing::debug!(
                run_id,
                task = name,
                try_number,
                "try claimed by another process"
            );
            return Ok(());
        }
        (self.observer)(&Event::TaskStarted {
            task: name.to_string(),
            try_number,
            last_try,
        });
        tracing::info!(run_id, task = name, try_number, "task started");

        // Only templates that may read `tasks.…` (directly or through an included file) need the
        // outputs of the upstreams; skipping the rest keeps long chains linear.
        let (_, with) = task.for_profile(self.env.profile);
        let mut reads_tasks = false;
        with.walk_strings("", &mut |_, _, s| {
            reads_tasks |= crate::spec::is_template(s)
                && ["tasks", "include", "import"].iter().any(|w| s.contains(w));
        });
        let ancestors = if reads_tasks {
            dag.graph.ancestors(name)
        } else {
            Default::default()
        };
        let upstream: BTreeMap<String, TaskVars> = ancestors
            .into_iter()
            .filter_map(|a| {
                let t = tis.get(&a)?;
                (t.state == TaskState::Success).then(|| {
                    (
                        a.clone(),
                        TaskVars {
                            state: t.state.to_string(),
                            output: t.output.clone().unwrap_or(serde_json::Value::Null),
                        },
                    )
                })
            })
            .collect();
        let ready = prepare_try(
            &self.env,
            &self.templates,
            TryPlan {
                dag,
                plan,
                run_id,
                task: name,
                try_number,
                upstream,
            },
        );
        let ReadyTry {
            operator,
            ctx: mut task_ctx,
            rendered,
        } = match ready {
            Ok(ready) => ready,
            Err(err) => {
                let ended = Ended {
                    outcome: self.outcome_of(dag, &tis[name], try_number, Err(err), false),
                    name: name.to_string(),
                    try_number,
                    duration: Duration::ZERO,
                    stopping: false,
                };
                return self.record(run_id, &ended, tis);
            }
        };
        if let Err(e) =
            self.store
                .set_try_rendered(run_id, name, try_number, &crate::secrets::mask(&rendered))
        {
            tracing::warn!(
                run_id,
                task = name,
                "cannot record the try's rendered config: {e}"
            );
        }
        task_ctx.on_process = {
            let store = self.store.clone();
            let (run_id, task) = (run_id.to_string(), name.to_string());
            Arc::new(move |pid: u32| {
                if let Err(e) = store.set_try_pid(&run_id, &task, try_number, pid) {
                    tracing::warn!(run_id, task, "cannot record the try's process: {e}");
                }
            })
        };
        task_ctx.deferred_state = tis[name]
            .output
            .as_ref()
            .and_then(|o| o.get("deferred"))
            .cloned();
        task_ctx.progress = {
            let observer = self.observer.clone();
            let task = name.to_string();
            Progress::to(Arc::new(move |progress| {
                observer(&Event::TaskProgress {
                    task: task.clone(),
                    progress,
                })
            }))
        };
        let timeout = task.policy.timeout.map(|t| t.std());
        let task_name = name.to_string();
        let handle = running.spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            let result = match timeout {
                Some(limit) => match tokio::time::timeout(limit, operator.run(&task_ctx)).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::transient(format!(
                        "timed out after {}",
                        crate::spec::Duration(limit)
                    ))),
                },
                None => operator.run(&task_ctx).await,
            };
            match &result {
                Ok(_) => task_ctx.log.info("try succeeded"),
                Err(e) => task_ctx.log.info(&format!("try failed: {e}")),
            }
            (task_name, try_number, result, started.elapsed())
        });
        running_ids.insert(handle.id(), (name.to_string(), try_number, handle));
        Ok(())
    }

    /// The task state after a failed try: up for retry while the policy allows, else failed.
    fn failure_outcome(
        &self,
        dag: &Dag,
        ti: &TaskInstance,
        try_number: u32,
        err: &Error,
    ) -> TryOutcome {
        let policy = &dag.pipeline.tasks[&ti.task].policy;
        let used = (try_number + 1).saturating_sub(ti.first_try);
        if err.is_transient() && used <= policy.retries {
            let delay = policy.delay_before(try_number + 1);
            TryOutcome::failed(
                TaskState::UpForRetry,
                err.message(),
                Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default()),
            )
        } else {
            TryOutcome::failed(TaskState::Failed, err.message(), None)
        }
    }

    /// What a finished try comes to for its task.
    fn outcome_of(
        &self,
        dag: &Dag,
        ti: &TaskInstance,
        try_number: u32,
        result: Result<TaskResult, Error>,
        stopping: bool,
    ) -> TryOutcome {
        let mut outcome = match result {
            Ok(TaskResult::Success(output)) => TryOutcome::success(output),
            // A sensor's "not yet": no retry used, no slot held until the next poke.
            Ok(TaskResult::Defer { wait, state }) => TryOutcome::deferred(
                state,
                Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
            ),
            Ok(TaskResult::Skipped(reason)) => TryOutcome::skipped(reason),
            // A try cut short by a stop does not count against the retries: it runs again.
            Err(e) if stopping => {
                TryOutcome::interrupted(format!("interrupted by a stop: {}", e.message()))
            }
            Err(e) => self.failure_outcome(dag, ti, try_number, &e),
        };
        // What the store keeps of a try, and so every page and command shows, holds no secret.
        if let Some(output) = outcome.output.as_mut() {
            crate::secrets::mask_json(output);
        }
        if let Some(error) = outcome.error.as_mut() {
            *error = crate::secrets::mask(error).into_owned();
        }
        outcome
    }

    /// Writes the end of a try. A try another process took over meanwhile is dropped, and the
    /// task read back as the store has it.
    fn record(
        &self,
        run_id: &str,
        ended: &Ended,
        tis: &mut HashMap<String, TaskInstance>,
    ) -> Result<(), ExecError> {
        let Ended {
            name,
            try_number,
            outcome,
            duration,
            stopping,
        } = ended;
        let (name, try_number) = (name.as_str(), *try_number);
        if !self.store.finish_try(
            run_id,
            name,
            try_number,
            outcome,
            self.options.owner.as_ref(),
        )? {
            tracing::warn!(
                run_id,
                task = name,
                try_number,
                "the try was taken over by another process; its result is dropped"
            );
            if let Some(ti) = self
                .store
                .task_instances(run_id)?
                .into_iter()
                .find(|t| t.task == name)
            {
                tis.insert(name.to_string(), ti);
            }
            return Ok(());
        }
        match outcome.task_state {
            TaskState::Success => tracing::info!(run_id, task = name, try_number, "task succeeded"),
            state => {
                tracing::warn!(run_id, task = name, try_number, %state, error = outcome.error.as_deref().unwrap_or(""), "task did not succeed")
            }
        }
        let retry_in = outcome
            .next_try_at
            .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO));
        (self.observer)(&Event::TaskFinished {
            task: name.to_string(),
            state: outcome.task_state,
            try_number,
            duration: *duration,
            error: outcome.error.clone(),
            retry_in: if *stopping { None } else { retry_in },
        });
        apply(tis, name, outcome);
        Ok(())
    }
}

/// A try that ended, with how it ended: kept until the store has recorded it.
struct Ended {
    name: String,
    try_number: u32,
    outcome: TryOutcome,
    duration: Duration,
    /// Cut short by a stop (or by leases that could not be renewed).
    stopping: bool,
}

/// The state store out of reach (locked by another process, restarting, the network): since
/// when, and how long to wait before the next attempt.
struct Outage {
    since: Instant,
    backoff: Duration,
}

/// After a renewal that failed, how soon the next is tried.
const RENEW_RETRY: Duration = Duration::from_secs(1);

/// Waits out a store that is out of reach for a while (its error is transient: nothing was
/// written, or the write is checked again when it is retried) while the tries keep running;
/// any other error ends the execution.
fn endure(run_id: &str, e: ExecError, outage: &mut Option<Outage>) -> Result<(), ExecError> {
    match e {
        ExecError::Store(ref s) if s.is_transient() => {
            match outage {
                None => {
                    tracing::warn!(
                        run_id,
                        "{s}; running tries go on, and the store is tried again shortly"
                    );
                    *outage = Some(Outage {
                        since: Instant::now(),
                        backoff: Duration::from_millis(200),
                    });
                }
                Some(o) => o.backoff = (o.backoff * 2).min(Duration::from_secs(5)),
            }
            Ok(())
        }
        e => Err(e),
    }
}

async fn acquire(slots: Option<Arc<Semaphore>>) -> Option<OwnedSemaphorePermit> {
    match slots {
        Some(s) => s.acquire_owned().await.ok(),
        None => std::future::pending().await,
    }
}

fn apply(tis: &mut HashMap<String, TaskInstance>, name: &str, outcome: &TryOutcome) {
    if let Some(ti) = tis.get_mut(name) {
        ti.state = outcome.task_state;
        ti.next_try_at = outcome.next_try_at;
        ti.error = outcome.error.clone();
        if outcome.output.is_some() {
            ti.output = outcome.output.clone();
        }
    }
}
