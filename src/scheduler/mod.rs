//! The scheduler daemon: loads every pipeline, schedules each on its cron with
//! tokio-cron-scheduler, creates runs on each tick, and executes them — crash-safely.
//!
//! Everything that matters is in the state database, so the daemon can be killed at any moment:
//! - a run is unique per DAG and partition/interval (a constraint, not a check);
//! - an executing process holds a lease on each run it executes; a restarted daemon takes over
//!   runs whose holder died (same host: at once; other hosts: when the lease expires);
//! - the executor records a try left `running` by a dead process as failed and retries it under
//!   the task's policy; tasks that succeeded are never run again;
//! - one daemon per state directory (a lock); `trigger`, `pause` and `unpause` write to the
//!   database and poke a socket so the daemon acts at once.
//!
//! Hot reload: the pipelines folder is polled; a changed file that validates replaces the DAG, one
//! that does not is reported with file:line:column and the last good version keeps running.
//!
//! One file because it is one loop: the daemon's state (loaded DAGs, ticks, runs in flight) and
//! every decision made on it; control, locking and backfills are modules of their own.

pub(crate) mod backfill;
pub(crate) mod control;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::executor::{ExecError, ExecOptions, Executor, Observer, RunEnv, RunOutcome};
use crate::plan::RunPlan;
use crate::project::{Dag, Project};
use crate::spec::Month;
use crate::state::{
    Owner, RunFilter, RunRecord, RunState, StateStore, StoreError, Trigger, owner_is_dead,
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum SchedulerError {
    #[error(transparent)]
    Lock(#[from] control::LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the cron scheduler failed: {0}")]
    Cron(String),
    #[error("cannot read the pipelines folder {path}: {source}")]
    Pipelines {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Passes on what stops the daemon; logs and swallows the state database being locked by
/// another process or out of reach for a while (the work is tried again on the next poll).
fn endure(e: SchedulerError) -> Result<(), SchedulerError> {
    match e {
        SchedulerError::Store(ref s) if s.is_transient() => {
            tracing::warn!("{e}; trying again shortly");
            Ok(())
        }
        e => Err(e),
    }
}

fn endure_result(r: Result<(), SchedulerError>) -> Result<(), SchedulerError> {
    r.or_else(endure)
}

/// Deletes finished runs that ended more than `keep` ago ([`StateStore::prune_runs`] says which
/// stay), then their log folders. Returns how many runs went.
pub(crate) fn prune_history(
    store: &dyn StateStore,
    env: &RunEnv,
    keep: Duration,
) -> Result<usize, StoreError> {
    let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
    let cutoff = Utc::now()
        .checked_sub_signed(keep)
        .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
    let pruned = store.prune_runs(cutoff)?;
    for (dag, run_id) in &pruned {
        let dir = env.run_log_dir(dag, run_id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // The run is gone from the database; a folder left behind is only disk space.
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "cannot delete a pruned run's logs: {e}")
            }
        }
    }
    Ok(pruned.len())
}

/// With a store several schedulers share, each keeps the logs of the tries it ran in its own
/// home, and whichever prunes a run deletes only its own copy: this deletes the log folders here
/// (`logs/DAG/RUN_ID`) of runs the store no longer has, last written more than `keep` ago.
/// Returns how many went.
pub(crate) fn sweep_orphan_logs(
    store: &dyn StateStore,
    env: &RunEnv,
    keep: Duration,
) -> Result<usize, StoreError> {
    let cutoff = SystemTime::now()
        .checked_sub(keep)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut swept = 0;
    let logs = env.home.join("logs");
    for dag in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
        for run in std::fs::read_dir(dag.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let old = run
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            let id = run.file_name().to_string_lossy().into_owned();
            if old && store.run(&id)?.is_none() {
                match std::fs::remove_dir_all(run.path()) {
                    Ok(()) => swept += 1,
                    Err(e) => {
                        tracing::warn!(dir = %run.path().display(), "cannot delete a pruned run's logs: {e}")
                    }
                }
            }
        }
    }
    Ok(swept)
}

#[derive(Debug, Clone)]
pub(crate) struct SchedulerOptions {
    /// Tasks that may run at once across all runs (the global limit).
    pub(crate) max_tasks: usize,
    /// On SIGTERM, how long running tasks may take to finish before they are killed.
    pub(crate) grace: Duration,
    /// How often the pipelines folder and the database are looked at without a wake-up.
    pub(crate) poll: Duration,
    /// How long a run's claim lasts without renewal.
    pub(crate) lease: Duration,
    /// Finished runs older than this are deleted with their logs ([`prune_history`]).
    pub(crate) keep_runs: Option<Duration>,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            max_tasks: 16,
            grace: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            lease: Duration::from_secs(30),
            keep_runs: None,
        }
    }
}

/// The most intervals one tick creates for a DAG with `catchup: true`.
const MAX_CATCHUP: usize = 1000;

/// A cron tick for a DAG, tagged with the version of the DAG that scheduled it.
struct Tick {
    dag: String,
    version: u64,
}

struct Loaded {
    dag: Arc<Dag>,
    file: PathBuf,
    version: u64,
    job: Option<uuid::Uuid>,
}

#[derive(PartialEq, Eq, Clone, Copy)]
struct Seen {
    modified: Option<SystemTime>,
    len: u64,
}

pub(crate) struct Scheduler {
    project: Arc<Project>,
    store: Arc<dyn StateStore>,
    env: RunEnv,
    opts: SchedulerOptions,
    owner: Owner,
    slots: Arc<Semaphore>,
    dags: HashMap<String, Loaded>,
    /// Pipeline files by path: what was last seen, its content hash, and the DAG id it defined.
    files: HashMap<PathBuf, (Seen, u64, Option<String>)>,
    templates_seen: Vec<(PathBuf, Seen)>,
    versions: u64,
    executing: HashMap<String, String>,
    joins: JoinSet<(String, Result<RunOutcome, ExecError>)>,
    cron: JobScheduler,
    tick_tx: mpsc::UnboundedSender<Tick>,
    ticks: Option<mpsc::UnboundedReceiver<Tick>>,
    exec_stop: watch::Sender<bool>,
}

/// Logs run progress through tracing (the daemon has no terminal to draw on).
fn log_observer() -> Observer {
    use crate::executor::Event;
    Arc::new(|ev: &Event| match ev {
        Event::RunStarted {
            run_id,
            tasks,
            already_done,
        } => tracing::info!(run_id, tasks, already_done, "run started"),
        Event::RunFinished { run_id, state } => tracing::info!(run_id, %state, "run finished"),
        Event::TaskStarted { .. } | Event::TaskProgress { .. } | Event::TaskFinished { .. } => {}
    })
}

impl Scheduler {
    /// Takes the daemon lock on `env.home` and prepares the scheduler.
    pub(crate) async fn new(
        project: Arc<Project>,
        store: Arc<dyn StateStore>,
        env: RunEnv,
        opts: SchedulerOptions,
    ) -> Result<(Scheduler, control::DaemonLock), SchedulerError> {
        let lock = control::acquire(&env.home)?;
        let cron = JobScheduler::new()
            .await
            .map_err(|e| SchedulerError::Cron(e.to_string()))?;
        let (tick_tx, tick_rx) = mpsc::unbounded_channel();
        let (exec_stop, _) = watch::channel(false);
        let owner = Owner::current(opts.lease);
        let slots = Arc::new(Semaphore::new(opts.max_tasks.max(1)));
        Ok((
            Scheduler {
                project,
                store,
                env,
                opts,
                owner,
                slots,
                dags: HashMap::new(),
                files: HashMap::new(),
                templates_seen: Vec::new(),
                versions: 0,
                executing: HashMap::new(),
                joins: JoinSet::new(),
                cron,
                tick_tx,
                ticks: Some(tick_rx),
                exec_stop,
            },
            lock,
        ))
    }

    /// Runs until `stop` turns true, then stops gracefully: no new work, running tasks get the
    /// grace period, interrupted tasks are recorded to be retried after a restart.
    pub(crate) async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), SchedulerError> {
        let (_keep_open, mut ticks) = match self.ticks.take() {
            Some(rx) => (None, rx),
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), rx)
            }
        };
        self.cron
            .start()
            .await
            .map_err(|e| SchedulerError::Cron(e.to_string()))?;
        let wake = control::listen(&self.env.home);
        self.reload().await?;
        tracing::info!(
            home = %self.env.home.display(),
            dags = self.dags.len(),
            max_tasks = self.opts.max_tasks,
            "scheduler started"
        );
        for name in self.dag_names() {
            self.catch_up(&name)?;
        }
        self.scan()?;
        let mut poll = tokio::time::interval(self.opts.poll);
        // Ticks that found the state database locked by another process: tried again on the
        // next poll, so a lock held for a while delays runs instead of stopping the daemon.
        let mut delayed: Vec<Tick> = Vec::new();
        let mut pruned_at: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                Some(tick) = ticks.recv() => {
                    if let Err(e) = self.on_tick(&tick) {
                        endure(e)?;
                        delayed.push(tick);
                    }
                    endure_result(self.scan())?;
                }
                conn = accept(&wake) => {
                    drop(conn);
                    endure_result(self.scan())?;
                }
                _ = poll.tick() => {
                    for tick in std::mem::take(&mut delayed) {
                        if let Err(e) = self.on_tick(&tick) {
                            endure(e)?;
                            delayed.push(tick);
                        }
                    }
                    endure_result(self.reload().await)?;
                    endure_result(self.scan())?;
                    endure_result(self.prune(&mut pruned_at))?;
                }
                Some(done) = self.joins.join_next(), if !self.joins.is_empty() => {
                    if let Ok((run_id, result)) = done {
                        self.finished(&run_id, result);
                    }
                    endure_result(self.scan())?;
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
        tracing::info!(
            running = self.executing.len(),
            grace = %crate::spec::Duration(self.opts.grace),
            "stopping: no new work; running tasks get the grace period"
        );
        let _ = self.exec_stop.send(true);
        while let Some(done) = self.joins.join_next().await {
            if let Ok((run_id, result)) = done {
                self.finished(&run_id, result);
            }
        }
        let _ = self.cron.shutdown().await;
        let _ = std::fs::remove_file(control::socket_path(&self.env.home));
        tracing::info!("scheduler stopped");
        Ok(())
    }

    /// Applies `keep_runs`, at most once a minute (or a quarter of the age, if shorter).
    fn prune(&self, last: &mut Option<std::time::Instant>) -> Result<(), SchedulerError> {
        let Some(keep) = self.opts.keep_runs else {
            return Ok(());
        };
        let every = (keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        if last.is_some_and(|t| t.elapsed() < every) {
            return Ok(());
        }
        *last = Some(std::time::Instant::now());
        let n = prune_history(self.store.as_ref(), &self.env, keep)?;
        if n > 0 {
            tracing::info!(runs = n, keep = %crate::spec::Duration(keep), "pruned finished runs and their logs");
        }
        if self.store.shared() {
            // Runs another scheduler pruned leave their logs here, where their tries ran.
            let swept = sweep_orphan_logs(self.store.as_ref(), &self.env, keep)?;
            if swept > 0 {
                tracing::info!(
                    runs = swept,
                    "deleted the logs of runs other schedulers pruned"
                );
            }
        }
        Ok(())
    }

    fn dag_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.dags.keys().cloned().collect();
        names.sort();
        names
    }

    fn finished(&mut self, run_id: &str, result: Result<RunOutcome, ExecError>) {
        self.executing.remove(run_id);
        match result {
            Ok(RunOutcome::Finished(state)) => tracing::debug!(run_id, %state, "run done"),
            Ok(RunOutcome::Interrupted) => {
                tracing::info!(run_id, "run interrupted; it continues after a restart")
            }
            Err(e) => tracing::error!(run_id, "run stopped on an error: {e}"),
        }
        if let Err(e) = self.store.release_run(run_id, &self.owner) {
            tracing::warn!(run_id, "cannot release the run: {e}");
        }
    }

    /// Picks up changed, added and removed pipeline files (and changed templates).
    async fn reload(&mut self) -> Result<(), SchedulerError> {
        let dir = &self.project.pipelines_dir;
        let files = crate::project::pipeline_files_in(dir).map_err(|e| match e {
            crate::project::ProjectError::Io { path, source } => {
                SchedulerError::Pipelines { path, source }
            }
            other => SchedulerError::Pipelines {
                path: dir.display().to_string(),
                source: std::io::Error::other(other.to_string()),
            },
        })?;
        let templates = templates_state(self.project.templates.dir());
        let templates_changed = templates != self.templates_seen;
        self.templates_seen = templates;

        for file in &files {
            let seen = seen_of(file);
            let previous = self.files.get(file).cloned();
            if !templates_changed && previous.as_ref().is_some_and(|(s, _, _)| *s == seen) {
                continue;
            }
            let hash = std::fs::read(file).map(|b| fx_hash(&b)).unwrap_or(0);
            if !templates_changed && previous.as_ref().is_some_and(|(_, h, _)| *h == hash) {
                if let Some(entry) = self.files.get_mut(file) {
                    entry.0 = seen;
                }
                continue;
            }
            let old_id = previous.and_then(|(_, _, id)| id);
            let validated = self.project.validate_file(file).and_then(|dag| {
                let alone = if self.store.shared() {
                    dag.single_process_tasks(self.env.profile)
                } else {
                    Default::default()
                };
                if alone.is_empty() {
                    Ok(dag)
                } else {
                    Err(alone)
                }
            });
            match validated {
                Ok(dag) => {
                    let id = dag.pipeline.dag.clone();
                    if let Some(other) = self.dags.get(&id).filter(|l| l.file != *file) {
                        tracing::error!(
                            file = %file.display(),
                            "dag id `{id}` is already defined by {}; this file is ignored",
                            other.file.display()
                        );
                        self.files.insert(file.clone(), (seen, hash, None));
                        continue;
                    }
                    if let Some(old) = old_id.filter(|o| *o != id) {
                        self.uninstall(&old).await;
                    }
                    let replaced = self.dags.contains_key(&id);
                    self.install(dag, file).await?;
                    tracing::info!(dag = %id, file = %file.display(), "{}", if replaced { "pipeline reloaded" } else { "pipeline loaded" });
                    self.files.insert(file.clone(), (seen, hash, Some(id)));
                }
                Err(diags) => {
                    let keeping = old_id.as_ref().filter(|id| self.dags.contains_key(*id));
                    tracing::error!(
                        file = %file.display(),
                        problems = diags.len(),
                        "pipeline does not validate; {}:\n{diags}",
                        match keeping {
                            Some(id) => format!("the previous version of `{id}` keeps running"),
                            None => "it is not scheduled".to_string(),
                        }
                    );
                    self.files.insert(file.clone(), (seen, hash, old_id));
                }
            }
        }
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|f| !files.contains(f))
            .cloned()
            .collect();
        for file in gone {
            if let Some((_, _, Some(id))) = self.files.remove(&file) {
                if self.dags.get(&id).is_some_and(|l| l.file == file) {
                    self.uninstall(&id).await;
                    tracing::info!(dag = %id, file = %file.display(), "pipeline removed; no longer scheduled");
                }
            }
        }
        Ok(())
    }

    async fn install(&mut self, dag: Dag, file: &Path) -> Result<(), SchedulerError> {
        let id = dag.pipeline.dag.clone();
        if let Some(old) = self.dags.remove(&id) {
            if let Some(job) = old.job {
                let _ = self.cron.remove(&job).await;
            }
        }
        self.versions += 1;
        let version = self.versions;
        let job = match &dag.pipeline.schedule {
            None => None,
            Some(schedule) => {
                let tx = self.tick_tx.clone();
                let name = id.clone();
                let job = Job::new_async(schedule.with_seconds(), move |_id, _sched| {
                    let tx = tx.clone();
                    let dag = name.clone();
                    Box::pin(async move {
                        let _ = tx.send(Tick { dag, version });
                    })
                })
                .map_err(|e| SchedulerError::Cron(format!("scheduling `{id}`: {e}")))?;
                Some(
                    self.cron
                        .add(job)
                        .await
                        .map_err(|e| SchedulerError::Cron(format!("scheduling `{id}`: {e}")))?,
                )
            }
        };
        self.dags.insert(
            id,
            Loaded {
                dag: Arc::new(dag),
                file: file.to_path_buf(),
                version,
                job,
            },
        );
        Ok(())
    }

    async fn uninstall(&mut self, id: &str) {
        if let Some(old) = self.dags.remove(id) {
            if let Some(job) = old.job {
                let _ = self.cron.remove(&job).await;
            }
        }
    }

    /// Creates the run(s) a cron tick asks for.
    fn on_tick(&mut self, tick: &Tick) -> Result<(), SchedulerError> {
        let Some(loaded) = self.dags.get(&tick.dag) else {
            return Ok(());
        };
        if loaded.version != tick.version {
            return Ok(()); // a tick of a version that has since been replaced
        }
        if self.store.paused_dags()?.contains(&tick.dag) {
            tracing::debug!(dag = %tick.dag, "paused; tick ignored");
            return Ok(());
        }
        let dag = loaded.dag.clone();
        let p = &dag.pipeline;
        if p.partitions.is_some() {
            return self.next_partition(&dag);
        }
        let Some(schedule) = &p.schedule else {
            return Ok(());
        };
        let now = Utc::now();
        // The interval that just closed: [previous tick, this tick).
        let Some(end) = schedule.prev_at_or_before(now) else {
            return Ok(());
        };
        let Some(start) = schedule.prev_before(end) else {
            return Ok(());
        };
        if p.catchup {
            return self.catch_up(&p.dag);
        }
        let waiting = self.store.active_runs()?.into_iter().any(|r| {
            r.dag == p.dag && r.trigger == Trigger::Scheduled && r.state == RunState::Queued
        });
        if waiting {
            tracing::debug!(dag = %p.dag, "a scheduled run is still waiting to start; tick skipped (catchup: false)");
            return Ok(());
        }
        self.create(&dag, RunPlan::interval(p, start), Trigger::Scheduled)?;
        Ok(())
    }

    /// For `catchup: true` DAGs without partitions: every interval since the last scheduled one
    /// (or `start_date`) that has closed, in order.
    fn catch_up(&mut self, name: &str) -> Result<(), SchedulerError> {
        let Some(loaded) = self.dags.get(name) else {
            return Ok(());
        };
        let dag = loaded.dag.clone();
        let p = &dag.pipeline;
        let (Some(schedule), true, None) = (&p.schedule, p.catchup, &p.partitions) else {
            return Ok(());
        };
        if self.store.paused_dags()?.contains(name) {
            return Ok(());
        }
        let last_end = self
            .store
            .runs(&RunFilter {
                dag: Some(p.dag.clone()),
                state: None,
                limit: None,
            })?
            .into_iter()
            .filter(|r| r.trigger != Trigger::Manual)
            .map(|r| r.data_interval_end)
            .max();
        let from = match (last_end, p.start_date) {
            (Some(t), _) => t,
            (None, Some(d)) => {
                let midnight = crate::plan::RunPlan::for_date_unchecked(d.0).logical_date;
                schedule.prev_at_or_before(midnight).unwrap_or(midnight)
            }
            (None, None) => return Ok(()),
        };
        let now = Utc::now();
        let mut start = match schedule.prev_at_or_before(from) {
            Some(t) if t == from => t,
            _ => match schedule.next_after(from) {
                Some(t) => t,
                None => return Ok(()),
            },
        };
        for _ in 0..MAX_CATCHUP {
            let Some(end) = schedule.next_after(start) else {
                break;
            };
            if end > now {
                break;
            }
            self.create(&dag, RunPlan::interval(p, start), Trigger::Scheduled)?;
            start = end;
        }
        Ok(())
    }

    /// Partitioned DAGs: the first partition, in order, that has not succeeded (in this cycle).
    fn next_partition(&mut self, dag: &Dag) -> Result<(), SchedulerError> {
        let p = &dag.pipeline;
        let Some(parts) = &p.partitions else {
            return Ok(());
        };
        let runs = self.store.runs(&RunFilter {
            dag: Some(p.dag.clone()),
            state: Some(RunState::Success),
            limit: None,
        })?;
        let months = parts.monthly.months();
        let done = |m: &Month| {
            runs.iter()
                .filter(|r| r.partition.as_deref() == Some(m.to_string().as_str()))
                .count()
        };
        let round = months.iter().map(done).min().unwrap_or(0);
        if round >= 1 && !parts.cycle {
            tracing::debug!(dag = %p.dag, "every partition has succeeded; nothing left to do");
            return Ok(());
        }
        let Some(next) = months.iter().find(|m| done(m) == round) else {
            return Ok(());
        };
        let plan = RunPlan::month_round(*next, round as u32 + 1);
        if let Some(existing) = self.store.unique_run(&p.dag, &plan.run_key)? {
            if existing.state == RunState::Failed {
                let tasks: Vec<String> = self
                    .store
                    .task_instances(&existing.run_id)?
                    .into_iter()
                    .map(|t| t.task)
                    .collect();
                self.store
                    .clear_tasks(&existing.run_id, &tasks, &self.owner, &owner_is_dead)?;
                tracing::info!(run_id = %existing.run_id, "partition failed before; running it again");
            }
            return Ok(());
        }
        self.create(dag, plan, Trigger::Scheduled)?;
        Ok(())
    }

    /// Creates a run; a run that already exists for the key is not an error (another process or
    /// an earlier tick made it).
    fn create(&self, dag: &Dag, plan: RunPlan, trigger: Trigger) -> Result<(), SchedulerError> {
        match crate::executor::create_run(self.store.as_ref(), dag, &plan, trigger, None) {
            Ok(rec) => {
                tracing::info!(run_id = %rec.run_id, key = %rec.run_key, "run created");
                Ok(())
            }
            Err(StoreError::RunExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts every waiting run this process may take, oldest first, under `max_active_runs`.
    fn scan(&mut self) -> Result<(), SchedulerError> {
        if self.store.shared() {
            return self.scan_shared();
        }
        let paused = self.store.paused_dags()?;
        let active = self.store.active_runs()?;
        let now = Utc::now();
        let mut live: HashMap<&str, usize> = HashMap::new();
        for r in &active {
            if self.executing.contains_key(&r.run_id) || holds_live_lease(r, now) {
                *live.entry(r.dag.as_str()).or_default() += 1;
            }
        }
        let mut to_start: Vec<(Arc<Dag>, String)> = Vec::new();
        for r in &active {
            if self.executing.contains_key(&r.run_id) || holds_live_lease(r, now) {
                continue;
            }
            let Some(loaded) = self.dags.get(&r.dag) else {
                continue;
            };
            if paused.contains(&r.dag) {
                continue;
            }
            let count = live.entry(r.dag.as_str()).or_default();
            if *count >= loaded.dag.pipeline.max_active_runs as usize {
                continue;
            }
            if self
                .store
                .claim_run(&r.run_id, &self.owner, &owner_is_dead)?
            {
                *count += 1;
                to_start.push((loaded.dag.clone(), r.run_id.clone()));
            }
        }
        for (dag, run_id) in to_start {
            self.start(dag, run_id);
        }
        Ok(())
    }

    /// With a shared store every scheduler takes part in every active run (each claims tries,
    /// not runs), except runs a one-shot process (`run`, `backfill`) holds. A queued run starts
    /// when its DAG has fewer than `max_active_runs` running, counted across all schedulers.
    fn scan_shared(&mut self) -> Result<(), SchedulerError> {
        let paused = self.store.paused_dags()?;
        let now = Utc::now();
        let mut to_start: Vec<(Arc<Dag>, String)> = Vec::new();
        for r in self.store.active_runs()? {
            if self.executing.contains_key(&r.run_id) || holds_live_lease(&r, now) {
                continue;
            }
            let Some(loaded) = self.dags.get(&r.dag) else {
                continue;
            };
            if paused.contains(&r.dag) {
                continue;
            }
            let max = loaded.dag.pipeline.max_active_runs as usize;
            if r.state == RunState::Queued && !self.store.activate_run(&r.run_id, max)? {
                continue;
            }
            to_start.push((loaded.dag.clone(), r.run_id));
        }
        for (dag, run_id) in to_start {
            self.start(dag, run_id);
        }
        Ok(())
    }

    fn start(&mut self, dag: Arc<Dag>, run_id: String) {
        let executor = Executor {
            store: self.store.clone(),
            templates: self.project.templates.clone(),
            env: self.env.clone(),
            options: ExecOptions {
                concurrency: self.opts.max_tasks,
                grace: self.opts.grace,
                owner: Some(self.owner.clone()),
                slots: Some(self.slots.clone()),
                shared: self.store.shared(),
                poll: self.opts.poll,
            },
            observer: log_observer(),
        };
        let stop = self.exec_stop.subscribe();
        self.executing
            .insert(run_id.clone(), dag.pipeline.dag.clone());
        self.joins.spawn(async move {
            let result = executor.execute(&dag, &run_id, stop).await;
            (run_id, result)
        });
    }
}

/// Whether another process holds the run and is alive.
fn holds_live_lease(r: &RunRecord, now: DateTime<Utc>) -> bool {
    match (&r.owner, r.lease_expires_at) {
        (Some(owner), Some(expires)) => expires > now && !owner_is_dead(owner),
        _ => false,
    }
}

async fn accept(listener: &Option<tokio::net::UnixListener>) -> Option<tokio::net::UnixStream> {
    match listener {
        Some(l) => l.accept().await.ok().map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

fn seen_of(path: &Path) -> Seen {
    let meta = std::fs::metadata(path).ok();
    Seen {
        modified: meta.as_ref().and_then(|m| m.modified().ok()),
        len: meta.map(|m| m.len()).unwrap_or(0),
    }
}

fn templates_state(dir: &Path) -> Vec<(PathBuf, Seen)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let s = seen_of(&p);
                out.push((p, s));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A content hash to tell a touched file from a changed one (not for security).
fn fx_hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// What `windsock dags` shows for one DAG.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct DagStatus {
    pub(crate) dag: String,
    pub(crate) description: Option<String>,
    pub(crate) file: String,
    pub(crate) schedule: Option<String>,
    pub(crate) paused: bool,
    pub(crate) last_run_state: Option<RunState>,
    pub(crate) last_run_id: Option<String>,
    pub(crate) next_run_time: Option<DateTime<Utc>>,
    pub(crate) next_partition: Option<String>,
}

pub(crate) fn dag_status(
    store: &dyn StateStore,
    dag: &Dag,
    paused: &BTreeSet<String>,
) -> Result<DagStatus, StoreError> {
    let p = &dag.pipeline;
    let last = store
        .runs(&RunFilter {
            dag: Some(p.dag.clone()),
            state: None,
            limit: Some(1),
        })?
        .into_iter()
        .next();
    let next_partition = match &p.partitions {
        None => None,
        Some(parts) => {
            let ok = store.succeeded_partitions(&p.dag)?;
            let months = parts.monthly.months();
            months
                .iter()
                .find(|m| !ok.contains(&m.to_string()))
                .or(if parts.cycle { months.first() } else { None })
                .map(|m| m.to_string())
        }
    };
    Ok(DagStatus {
        dag: p.dag.clone(),
        description: p.description.clone(),
        file: p.file.display().to_string(),
        schedule: p.schedule.as_ref().map(|s| s.expr.clone()),
        paused: paused.contains(&p.dag),
        last_run_state: last.as_ref().map(|r| r.state),
        last_run_id: last.map(|r| r.run_id),
        next_run_time: p.schedule.as_ref().and_then(|s| s.next_after(Utc::now())),
        next_partition,
    })
}
