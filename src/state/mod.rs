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

/// A timestamp as stored: RFC 3339 in UTC with milliseconds, which sorts as text.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
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
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub dag: Option<String>,
    pub state: Option<RunState>,
    pub limit: Option<usize>,
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
}
