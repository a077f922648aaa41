//! Run state: DAG runs, task instances and every try, persisted so that nothing is lost when a
//! process dies.
//!
//! [`StateStore`] is the boundary; [`sqlite::SqliteStore`] is the embedded default (WAL mode,
//! versioned migrations). A PostgreSQL store for multi-node deployments implements the same trait.

pub mod sqlite;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database error while {context}: {source}")]
    Sqlite {
        context: String,
        #[source]
        source: rusqlite::Error,
    },
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
    #[error("corrupt value in the state database: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
            pub fn as_str(self) -> &'static str {
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
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failed | TaskState::UpstreamFailed | TaskState::Skipped
        )
    }
}

impl RunState {
    pub fn is_finished(self) -> bool {
        matches!(self, RunState::Success | RunState::Failed)
    }
}

/// A timestamp as stored: RFC 3339 in UTC with microseconds, which sorts as text.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| StoreError::Corrupt(format!("timestamp `{s}`")))
}

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub run_id: String,
    pub dag: String,
    /// The partition key (`2019-10`) or the logical date: what makes a scheduled run unique.
    pub run_key: String,
    pub partition: Option<String>,
    pub logical_date: DateTime<Utc>,
    pub data_interval_start: DateTime<Utc>,
    pub data_interval_end: DateTime<Utc>,
    pub trigger: Trigger,
    pub pipeline_file: String,
    /// Created already claimed by this process (so no other process picks it up first).
    pub owner: Option<Owner>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub dag: String,
    pub run_key: String,
    pub partition: Option<String>,
    pub logical_date: DateTime<Utc>,
    pub data_interval_start: DateTime<Utc>,
    pub data_interval_end: DateTime<Utc>,
    pub trigger: Trigger,
    pub state: RunState,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub pipeline_file: String,
    /// The process executing the run, while it holds the lease.
    pub owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskInstance {
    pub run_id: String,
    pub task: String,
    pub state: TaskState,
    /// Tries started so far, across clears.
    pub try_number: u32,
    /// The first try of the current series: retries are counted from here (a clear starts a new
    /// series).
    pub first_try: u32,
    pub next_try_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub output: Option<serde_json::Value>,
    pub error: Option<String>,
    pub log_path: Option<String>,
}

impl TaskInstance {
    /// Tries used in the current series.
    pub fn tries_in_series(&self) -> u32 {
        (self.try_number + 1).saturating_sub(self.first_try)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TryRecord {
    pub run_id: String,
    pub task: String,
    pub try_number: u32,
    pub state: TaskState,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub log_path: String,
    /// The process group of the try's command, for operators that start one.
    pub pid: Option<u32>,
}

/// How a try ended.
#[derive(Debug, Clone)]
pub struct TryOutcome {
    /// success, failed, up_for_retry or skipped for the task; the try itself is recorded as
    /// success, skipped or failed.
    pub task_state: TaskState,
    pub output: Option<serde_json::Value>,
    pub error: Option<String>,
    pub next_try_at: Option<DateTime<Utc>>,
    /// The try was cut short by windsock itself (a stop or a crash), not by the task: it does
    /// not count against the task's retries.
    pub refund_try: bool,
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub dag: Option<String>,
    pub state: Option<RunState>,
    pub limit: Option<usize>,
}

/// A process that executes runs, identified across hosts: `host:pid:start` (the start time tells
/// a live process from a later one that got the same pid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub id: String,
    /// How long a claim lasts without renewal; the executor renews it at a third of this.
    pub lease: std::time::Duration,
}

impl Owner {
    /// This process.
    pub fn current(lease: std::time::Duration) -> Owner {
        let pid = std::process::id();
        Owner {
            id: format!("{}:{pid}:{}", hostname(), process_start(pid).unwrap_or(0)),
            lease,
        }
    }

    pub fn lease_chrono(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(30))
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// A process's start time in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the owner id names a process on this host that no longer runs. Owners on other hosts
/// are never declared dead here: their leases expire instead.
pub fn owner_is_dead(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (Some(start), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if host != hostname() {
        return false;
    }
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    process_start(pid) != Some(start)
}

/// Persisted run state.
pub trait StateStore: Send + Sync {
    /// Creates a run and its task instances (queued). Scheduled and backfill runs are unique per
    /// DAG and run key; a second one fails with [`StoreError::RunExists`].
    fn create_run(&self, run: &NewRun, tasks: &[String]) -> Result<RunRecord>;
    fn run(&self, run_id: &str) -> Result<Option<RunRecord>>;
    fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>>;
    /// Sets a run's state, stamping `started_at` on the first `running` and `ended_at` when it
    /// finishes.
    fn set_run_state(&self, run_id: &str, state: RunState) -> Result<()>;
    /// Adds queued instances for tasks the run does not have yet (a pipeline that gained tasks).
    fn ensure_tasks(&self, run_id: &str, tasks: &[String]) -> Result<()>;
    fn task_instances(&self, run_id: &str) -> Result<Vec<TaskInstance>>;
    /// Records the start of a try: the task becomes `running` and the try gets its own row.
    fn start_try(&self, run_id: &str, task: &str, try_number: u32, log_path: &str) -> Result<()>;
    /// Records the end of a try and the task's resulting state, atomically.
    fn finish_try(
        &self,
        run_id: &str,
        task: &str,
        try_number: u32,
        outcome: &TryOutcome,
    ) -> Result<()>;
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
    /// run back to queued.
    fn clear_tasks(&self, run_id: &str, tasks: &[String]) -> Result<()>;

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
}
