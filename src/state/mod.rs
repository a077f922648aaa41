//! Run state: DAG runs, task instances and every try, persisted so that nothing is lost when a
//! process dies.
//!
//! [`StateStore`] is the boundary; [`sqlite::SqliteStore`] is the embedded default (WAL mode,
//! versioned migrations); [`postgres::PostgresStore`] is one database shared by several
//! schedulers on several machines. Both pass the same behavioural suite (`tests.rs`).
//!
//! Work is claimed at two levels, both under leases the holder renews: a one-shot process
//! (`run`, `backfill`) or a scheduler on SQLite holds whole runs; every try is claimed on its
//! own (compare-and-swap on the task's state and try number), so that with a shared store the
//! schedulers spread a run's tasks between them and a try never runs twice at once.

pub(crate) mod postgres;
pub(crate) mod sqlite;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::sys;

pub(crate) use postgres::PostgresStore;
pub(crate) use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("state database error while {context}: {source}")]
    Sqlite {
        context: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database error while {context}: {source}")]
    Postgres {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The shared database cannot be reached (down, restarting, the network), and the same call
    /// may succeed later. A connection cut in the middle of a call may have taken the COMMIT
    /// with it or not: the writes a caller retries are compare-and-swaps that tell (a try's end
    /// recorded already counts as recorded; a claim made already reads as another's).
    #[error("the state database cannot be reached while {context}: {reason}")]
    Unavailable { context: String, reason: String },
    #[error("the state store URL `{url}` cannot be used: {reason}")]
    BadUrl { url: String, reason: String },
    /// Another process held the database longer than the busy timeout: nothing was written.
    #[error(
        "the state database is locked by another process (waited 10 s while {context}); if a `sqlite3` shell or another tool holds a transaction on state.db, end it"
    )]
    Busy { context: String },
    #[error(
        "the state database {path} was written by a newer windsock (schema version {found}, this build knows up to {supported}); upgrade windsock or use another --home"
    )]
    NewerSchema {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("cannot open the state directory {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no run with id `{0}`")]
    NoSuchRun(String),
    #[error("a run of `{dag}` for `{key}` already exists: {run_id}")]
    RunExists {
        dag: String,
        key: String,
        run_id: String,
    },
    /// The id is taken by another run (two manual runs created in the same millisecond).
    #[error("a run with id `{0}` already exists")]
    RunIdTaken(String),
    #[error("corrupt value in the state database: {0}")]
    Corrupt(String),
    /// A clear would start the next try of a task beside the one still running.
    #[error(
        "task `{task}` of run `{run_id}` is running (try {try_number}, held by {holder}); wait for the try to end, or stop the process running it, then clear"
    )]
    TaskRunning {
        run_id: String,
        task: String,
        try_number: u32,
        holder: String,
    },
}

pub(crate) type Result<T> = std::result::Result<T, StoreError>;

impl StoreError {
    /// The store could not be used for a while (locked, unreachable); nothing was written and
    /// the same call may succeed later.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Busy { .. } | StoreError::Unavailable { .. }
        )
    }
}

/// Whether a `--state` URL names a store several schedulers share.
pub(crate) fn is_shared_url(url: &str) -> bool {
    let url = url.trim();
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Whether a `--state` value is a store URL (rather than a run state to filter by).
pub(crate) fn is_store_url(value: &str) -> bool {
    value.contains("://") || value.starts_with("sqlite:")
}

/// Opens the state store: `url` when given (`postgres://…` for a store shared by several
/// schedulers, `sqlite:PATH`), else the embedded SQLite database `state.db` in `home`.
pub(crate) fn open(
    url: Option<&str>,
    home: &std::path::Path,
) -> Result<std::sync::Arc<dyn StateStore>> {
    match url.map(str::trim).filter(|u| !u.is_empty()) {
        None => Ok(std::sync::Arc::new(SqliteStore::open(
            &home.join("state.db"),
        )?)),
        Some(u) if is_shared_url(u) => Ok(std::sync::Arc::new(PostgresStore::open(u)?)),
        Some(u) if u.starts_with("sqlite:") => {
            let path = u.trim_start_matches("sqlite:").trim_start_matches("//");
            Ok(std::sync::Arc::new(SqliteStore::open(
                std::path::Path::new(path),
            )?))
        }
        Some(u) => Err(StoreError::BadUrl {
            url: redacted(u),
            reason: "expected postgres://user:password@host:port/database or sqlite:PATH".into(),
        }),
    }
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub(crate) enum $name { $($variant),* }

        impl $name {
            pub(crate) fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)*
                    _ => Err(format!(
                        "unknown {} `{s}`, expected one of: {}",
                        stringify!($name),
                        [$($text),*].join(", ")
                    )),
                }
            }
        }
    };
}

string_enum!(
    /// State of a DAG run.
    RunState {
        Queued = "queued",
        Running = "running",
        Success = "success",
        Failed = "failed",
    }
);

string_enum!(
    /// State of a task instance (one task in one run).
    TaskState {
        Queued = "queued",
        Running = "running",
        Success = "success",
        Failed = "failed",
        UpForRetry = "up_for_retry",
        // A sensor between two pokes: it holds no slot and is poked again at `next_try_at`.
        Deferred = "deferred",
        UpstreamFailed = "upstream_failed",
        Skipped = "skipped",
    }
);

string_enum!(
    /// What created a run.
    Trigger {
        Scheduled = "scheduled",
        Manual = "manual",
        Backfill = "backfill",
    }
);

impl TaskState {
    /// No more tries will happen without a clear.
    pub(crate) fn is_finished(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failed | TaskState::UpstreamFailed | TaskState::Skipped
        )
    }
}

impl RunState {
    pub(crate) fn is_finished(self) -> bool {
        matches!(self, RunState::Success | RunState::Failed)
    }
}

/// A timestamp as stored: RFC 3339 in UTC with microseconds, which sorts as text.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| StoreError::Corrupt(format!("timestamp `{s}`")))
}

/// A run to create.
#[derive(Debug, Clone)]
pub(crate) struct NewRun {
    pub(crate) run_id: String,
    pub(crate) dag: String,
    /// The partition key (`2019-10`) or the logical date: what makes a scheduled run unique.
    pub(crate) run_key: String,
    pub(crate) partition: Option<String>,
    pub(crate) logical_date: DateTime<Utc>,
    pub(crate) data_interval_start: DateTime<Utc>,
    pub(crate) data_interval_end: DateTime<Utc>,
    pub(crate) trigger: Trigger,
    pub(crate) pipeline_file: String,
    /// Created already claimed by this process (so no other process picks it up first).
    pub(crate) owner: Option<Owner>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunRecord {
    pub(crate) run_id: String,
    pub(crate) dag: String,
    pub(crate) run_key: String,
    pub(crate) partition: Option<String>,
    pub(crate) logical_date: DateTime<Utc>,
    pub(crate) data_interval_start: DateTime<Utc>,
    pub(crate) data_interval_end: DateTime<Utc>,
    pub(crate) trigger: Trigger,
    pub(crate) state: RunState,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) ended_at: Option<DateTime<Utc>>,
    pub(crate) pipeline_file: String,
    /// The process executing the run, while it holds the lease.
    pub(crate) owner: Option<String>,
    pub(crate) lease_expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct TaskInstance {
    pub(crate) run_id: String,
    pub(crate) task: String,
    pub(crate) state: TaskState,
    /// Tries started so far, across clears.
    pub(crate) try_number: u32,
    /// The first try of the current series: retries are counted from here (a clear starts a new
    /// series).
    pub(crate) first_try: u32,
    pub(crate) next_try_at: Option<DateTime<Utc>>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) ended_at: Option<DateTime<Utc>>,
    pub(crate) duration_ms: Option<i64>,
    pub(crate) output: Option<serde_json::Value>,
    pub(crate) error: Option<String>,
    pub(crate) log_path: Option<String>,
    /// The process running the current try, while it holds the lease.
    pub(crate) owner: Option<String>,
    pub(crate) lease_expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct TryRecord {
    pub(crate) run_id: String,
    pub(crate) task: String,
    pub(crate) try_number: u32,
    pub(crate) state: TaskState,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) ended_at: Option<DateTime<Utc>>,
    pub(crate) error: Option<String>,
    pub(crate) log_path: String,
    /// The process group of the try's command, for operators that start one.
    pub(crate) pid: Option<u32>,
    /// The try was cut short by windsock itself (a stop, or the process running it died), not
    /// by a fault of the task.
    pub(crate) interrupted: bool,
}

/// How a try ended.
#[derive(Debug, Clone)]
pub(crate) struct TryOutcome {
    /// success, failed, up_for_retry or skipped for the task; the try itself is recorded as
    /// success, skipped or failed.
    pub(crate) task_state: TaskState,
    pub(crate) output: Option<serde_json::Value>,
    pub(crate) error: Option<String>,
    pub(crate) next_try_at: Option<DateTime<Utc>>,
    /// The try does not count against the task's retries (a sensor's poke, an interruption).
    pub(crate) refund_try: bool,
    /// The try was cut short by windsock itself (a stop or a crash), not by the task.
    pub(crate) interrupted: bool,
}

impl TryOutcome {
    pub(crate) fn success(output: serde_json::Value) -> Self {
        TryOutcome {
            task_state: TaskState::Success,
            output: Some(output),
            error: None,
            next_try_at: None,
            refund_try: false,
            interrupted: false,
        }
    }

    pub(crate) fn skipped(reason: String) -> Self {
        TryOutcome {
            task_state: TaskState::Skipped,
            output: None,
            error: Some(reason),
            next_try_at: None,
            refund_try: false,
            interrupted: false,
        }
    }

    /// A sensor's "not yet": poked again at `next`, keeping `state` for that poke.
    pub(crate) fn deferred(state: serde_json::Value, next: DateTime<Utc>) -> Self {
        TryOutcome {
            task_state: TaskState::Deferred,
            output: Some(serde_json::json!({ "deferred": state })),
            error: None,
            next_try_at: Some(next),
            refund_try: true,
            interrupted: false,
        }
    }

    /// A failure of the task: `up_for_retry` at `next`, or `failed`.
    pub(crate) fn failed(task_state: TaskState, error: &str, next: Option<DateTime<Utc>>) -> Self {
        TryOutcome {
            task_state,
            output: None,
            error: Some(error.to_string()),
            next_try_at: next,
            refund_try: false,
            interrupted: false,
        }
    }

    /// How the try itself is recorded: success, skipped, or failed (every other task state).
    pub(crate) fn try_state(&self) -> TaskState {
        match self.task_state {
            TaskState::Success => TaskState::Success,
            TaskState::Skipped => TaskState::Skipped,
            _ => TaskState::Failed,
        }
    }

    /// Cut short by windsock (a stop, a crash): tried again at once, without using a retry.
    pub(crate) fn interrupted(error: impl Into<String>) -> Self {
        TryOutcome {
            task_state: TaskState::UpForRetry,
            output: None,
            error: Some(error.into()),
            next_try_at: Some(Utc::now()),
            refund_try: true,
            interrupted: true,
        }
    }
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunFilter {
    pub(crate) dag: Option<String>,
    pub(crate) state: Option<RunState>,
    pub(crate) limit: Option<usize>,
}

/// A process that executes runs, identified across hosts: `place:pid:start`, where the place
/// ([`sys::pid_place`]) is the host, its boot and its PID namespace, and the start time tells a
/// live process from a later one that got the same pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) id: String,
    /// How long a claim lasts without renewal; the executor renews it at a third of this.
    pub(crate) lease: std::time::Duration,
}

impl Owner {
    /// This process.
    pub(crate) fn current(lease: std::time::Duration) -> Owner {
        let pid = std::process::id();
        Owner {
            id: format!("{}:{pid}:{}", here(), sys::process_start(pid).unwrap_or(0)),
            lease,
        }
    }

    pub(crate) fn lease_chrono(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(30))
    }
}

/// This process's place, read once.
fn here() -> &'static str {
    static HERE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HERE.get_or_init(sys::pid_place)
}

/// The place of an owner id, and its pid and start time.
fn owner_parts(owner: &str) -> Option<(&str, u32, u64)> {
    let mut parts = owner.rsplitn(3, ':');
    let (start, pid, place) = (parts.next()?, parts.next()?, parts.next()?);
    Some((place, pid.parse().ok()?, start.parse().ok()?))
}

/// Whether the owner id names a process whose pids this process sees (the same host, boot and
/// PID namespace) and that no longer runs. Owners elsewhere (other hosts, other containers,
/// ids of an older format) are never declared dead here: their leases expire instead.
pub(crate) fn owner_is_dead(owner: &str) -> bool {
    match owner_parts(owner) {
        Some((place, pid, start)) if place == here() => sys::process_start(pid) != Some(start),
        _ => false,
    }
}

/// Whether a run or try held by `holder` until `expires` may be taken by `claimer` at `now`:
/// nobody holds it, the claimer already does, the lease expired (or never had an end), or the
/// holder died.
pub(crate) fn holder_gone(
    holder: Option<&str>,
    expires: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    claimer: &Owner,
    is_dead: &dyn Fn(&str) -> bool,
) -> bool {
    match holder {
        None => true,
        Some(h) if h == claimer.id => true,
        Some(h) => expires.is_none_or(|t| t < now) || is_dead(h),
    }
}

/// A store URL as it may be shown: without its password, in the user part or in the query
/// (`?password=…`).
pub(crate) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let rest = match rest.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split(':').next().unwrap_or("");
            format!("{user}@{host}")
        }
        None => rest.to_string(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(q) => format!("{scheme}://{rest}?{q}"),
        None => format!("{scheme}://{rest}"),
    }
}

/// Whether the owner id names a process whose pids are this process's too (its process groups
/// are ours to signal).
pub(crate) fn owner_on_this_host(owner: &str) -> bool {
    owner_parts(owner).is_some_and(|(place, _, _)| place == here())
}

/// Persisted run state.
pub(crate) trait StateStore: Send + Sync {
    /// Creates a run and its task instances (queued). Scheduled and backfill runs are unique per
    /// DAG and run key; a second one fails with [`StoreError::RunExists`].
    fn create_run(&self, run: &NewRun, tasks: &[String]) -> Result<RunRecord>;
    fn run(&self, run_id: &str) -> Result<Option<RunRecord>>;
    fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>>;
    /// Sets a run's state, stamping `started_at` on the first `running` and `ended_at` when it
    /// finishes.
    fn set_run_state(&self, run_id: &str, state: RunState) -> Result<()>;
    /// Ends a run from the instances of `tasks` (the DAG's tasks) as stored, in one statement:
    /// `success` when every one succeeded or was skipped, else `failed`. None, changing nothing,
    /// while one is not finished (another process cleared it meanwhile: the run goes on).
    fn finish_run(&self, run_id: &str, tasks: &[String]) -> Result<Option<RunState>>;
    /// Adds queued instances for tasks the run does not have yet (a pipeline that gained tasks).
    fn ensure_tasks(&self, run_id: &str, tasks: &[String]) -> Result<()>;
    fn task_instances(&self, run_id: &str) -> Result<Vec<TaskInstance>>;
    /// Claims a task's next try: atomically, when the task is still waiting (queued, up for
    /// retry or deferred) after try `try_number - 1`, it becomes `running`, held by `owner`
    /// under a lease, and the try gets its own row. False when another process claimed it
    /// first; of several processes claiming one try, exactly one wins.
    fn start_try(
        &self,
        run_id: &str,
        task: &str,
        try_number: u32,
        log_path: &str,
        owner: Option<&Owner>,
    ) -> Result<bool>;
    /// Records the end of a try and the task's resulting state, atomically, when the try is
    /// still running and held by `owner`. False when it is not (another process took it over
    /// after this one's lease expired): nothing is written. True, writing nothing, when the
    /// same end is recorded already (a retry after the reply to the first call was lost).
    fn finish_try(
        &self,
        run_id: &str,
        task: &str,
        try_number: u32,
        outcome: &TryOutcome,
        owner: Option<&Owner>,
    ) -> Result<bool>;
    /// Extends the leases of the running tries of a run that `owner` holds; returns their
    /// tasks (a try missing from the answer was taken over and must stop).
    fn renew_tries(&self, run_id: &str, owner: &Owner) -> Result<Vec<String>>;
    /// Takes over a running try whose holder is gone: no holder, its lease expired, or
    /// `is_dead` says it died. Atomic, like [`StateStore::start_try`]; the new holder then
    /// finishes the try (as interrupted) with [`StateStore::finish_try`].
    fn take_over_try(
        &self,
        run_id: &str,
        task: &str,
        try_number: u32,
        owner: &Owner,
        is_dead: &dyn Fn(&str) -> bool,
    ) -> Result<bool>;
    /// Moves a queued run to `running` when fewer than `max_active` runs of its DAG are
    /// running (atomic across processes); true when the run is running afterwards.
    fn activate_run(&self, run_id: &str, max_active: usize) -> Result<bool>;
    /// Whether several processes, possibly on several machines, share this store (each
    /// scheduler then takes part in every run, claiming tasks).
    fn shared(&self) -> bool {
        false
    }
    /// Sets a task's state without a try (upstream_failed, skipped, queued).
    fn set_task_state(
        &self,
        run_id: &str,
        task: &str,
        state: TaskState,
        error: Option<&str>,
    ) -> Result<()>;
    fn tries(&self, run_id: &str, task: &str) -> Result<Vec<TryRecord>>;
    /// Resets tasks to queued with a fresh retry budget, keeping their try history, and puts the
    /// run back to queued (a running run stays running: its executor picks the tasks up). A
    /// try still marked running is closed as interrupted when its holder is gone for `claimer`
    /// ([`holder_gone`]); while the holder lives, nothing is changed and the clear fails with
    /// [`StoreError::TaskRunning`], so that no try ever starts beside a running one.
    fn clear_tasks(
        &self,
        run_id: &str,
        tasks: &[String],
        claimer: &Owner,
        is_dead: &dyn Fn(&str) -> bool,
    ) -> Result<()>;

    /// Takes a run for `owner` when nobody holds it, its lease expired, or `is_dead` says its
    /// holder died. Atomic: of two processes claiming one run, one wins. False for finished runs.
    fn claim_run(
        &self,
        run_id: &str,
        owner: &Owner,
        is_dead: &dyn Fn(&str) -> bool,
    ) -> Result<bool>;
    /// Extends the owner's lease; false when the run is no longer held by it.
    fn renew_lease(&self, run_id: &str, owner: &Owner) -> Result<bool>;
    fn release_run(&self, run_id: &str, owner: &Owner) -> Result<()>;
    /// Queued and running runs, oldest logical date first.
    fn active_runs(&self) -> Result<Vec<RunRecord>>;
    /// The scheduled or backfill run of a DAG for a partition or interval, if any.
    fn unique_run(&self, dag: &str, run_key: &str) -> Result<Option<RunRecord>>;
    fn set_paused(&self, dag: &str, paused: bool) -> Result<()>;
    fn paused_dags(&self) -> Result<std::collections::BTreeSet<String>>;
    /// Records the process group a try started, so that a later process can stop leftovers.
    fn set_try_pid(&self, run_id: &str, task: &str, try_number: u32, pid: u32) -> Result<()>;
    /// Records what a try ran: its rendered config (and the SQL it rendered), for people.
    fn set_try_rendered(
        &self,
        run_id: &str,
        task: &str,
        try_number: u32,
        rendered: &str,
    ) -> Result<()>;
    /// What a try ran, as recorded by [`StateStore::set_try_rendered`].
    fn try_rendered(&self, run_id: &str, task: &str, try_number: u32) -> Result<Option<String>>;
    /// The task instances of several runs at once (a grid of runs × tasks).
    fn task_instances_of(&self, run_ids: &[String]) -> Result<Vec<TaskInstance>>;
    /// The newest run of each partition of a DAG (its partitioned runs only).
    fn latest_run_per_partition(&self, dag: &str) -> Result<Vec<RunRecord>>;
    /// The partitions of a DAG with at least one successful run.
    fn succeeded_partitions(&self, dag: &str) -> Result<std::collections::BTreeSet<String>>;
    /// Deletes finished runs that ended before `cutoff`, with their task instances and tries,
    /// keeping what the scheduler reads to decide what comes next: every run of a partition
    /// (partition walking counts them) and each DAG's newest scheduled or backfill run (catch-up
    /// starts after it). Returns the deleted runs as (dag, run id), for their logs.
    fn prune_runs(&self, cutoff: DateTime<Utc>) -> Result<Vec<(String, String)>>;
}
