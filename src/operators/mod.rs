//! Operators: the built-in task types.
//!
//! Each operator is one file here holding its typed config (serde, `deny_unknown_fields`, with
//! a JSON Schema), its static checks and its run function, all through [`OperatorConfig`].
//! [`registry`] maps `operator:` names to them; adding an operator is one file plus one line there.
//! The executor sees only [`Operator`], so it never changes when an operator is added.

pub(crate) mod dashboard;
pub(crate) mod generate_events;
pub(crate) mod http_download;
pub(crate) mod kafka_produce;
pub(crate) mod kafka_to_warehouse;
pub(crate) mod load_table;
pub(crate) mod noop;
pub(crate) mod prepare_events;
pub(crate) mod shell;
pub(crate) mod sql;
pub(crate) mod stream_aggregate;
pub(crate) mod wait_for;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

pub(crate) use futures_util::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};

pub(crate) use crate::diag::ConfigProblem;
pub(crate) use crate::error::Error;
use crate::spec::{DeCtx, Node, Profile};

/// What a successful try produced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TaskResult {
    /// Done; the JSON output is stored and visible to downstream templates.
    Success(serde_json::Value),
    /// Nothing to do (for example a sensor with `soft_fail`); downstream tasks are skipped.
    Skipped(String),
    /// Not yet (a sensor whose condition is false): poke again after `wait`. The task holds no
    /// slot meanwhile; `state` is persisted and handed back as `TaskContext::deferred_state`.
    Defer {
        wait: std::time::Duration,
        state: serde_json::Value,
    },
}

impl TaskResult {
    /// Success with `report` as the task's JSON output.
    pub(crate) fn output(report: &impl Serialize) -> Result<TaskResult, Error> {
        serde_json::to_value(report)
            .map(TaskResult::Success)
            .map_err(|e| Error::fatal(format!("the task's output is not JSON: {e}")))
    }
}

/// A try's log file, shared by the executor and the operator.
///
/// A line that cannot be written (a full disk) is dropped, not fatal: the task's work matters
/// more than its log. The first such failure of a try is reported once through tracing, so the
/// daemon's log says which file stopped growing and why.
#[derive(Clone)]
pub(crate) struct TaskLog {
    file: Arc<Mutex<std::fs::File>>,
    path: PathBuf,
    failed: Arc<std::sync::atomic::AtomicBool>,
}

impl TaskLog {
    pub(crate) fn create(path: &Path) -> std::io::Result<TaskLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(TaskLog {
            file: Arc::new(Mutex::new(file)),
            path: path.to_path_buf(),
            failed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends raw text (a line of a command's output) as is, secrets masked.
    pub(crate) fn raw(&self, line: &str) {
        // Secrets (the values of secret variables) never reach a log.
        let line = crate::secrets::mask(line);
        // A panic elsewhere while holding the lock leaves a file that is still fine to append to.
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let mut written = f.write_all(line.as_bytes());
        if written.is_ok() && !line.ends_with('\n') {
            written = f.write_all(b"\n");
        }
        if let Err(e) = written
            && !self.failed.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                log = %self.path.display(),
                "cannot write the task's log ({e}); its lines are dropped until space is freed"
            );
        }
    }

    /// Appends a timestamped line from windsock itself.
    pub(crate) fn info(&self, msg: &str) {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        self.raw(&format!("[{now}] windsock: {msg}"));
    }
}

/// What a running operator knows about its try.
#[derive(Clone)]
pub(crate) struct TaskContext {
    pub(crate) dag: String,
    pub(crate) run_id: String,
    pub(crate) task: String,
    pub(crate) try_number: u32,
    /// The project folder (holding `pipelines/`, `sql/`, `templates/`): relative paths start here.
    pub(crate) project_dir: PathBuf,
    /// The state directory, for operators that keep data (downloads, checkpoints).
    pub(crate) home: PathBuf,
    pub(crate) profile: Profile,
    pub(crate) log: TaskLog,
    /// `WINDSOCK_*` variables describing the try, for child processes.
    pub(crate) env: Vec<(String, String)>,
    /// Called with the process group id of a command the operator starts, so that it is recorded
    /// and can be stopped if windsock dies while it runs.
    pub(crate) on_process: Arc<dyn Fn(u32) + Send + Sync>,
    /// The project's templates and this try's template context, for operators that render
    /// files of their own (SQL).
    pub(crate) templates: Arc<crate::template::Templates>,
    pub(crate) template_context: minijinja::Value,
    /// What the operator kept when it last deferred (a sensor's first poke time), if it did.
    pub(crate) deferred_state: Option<serde_json::Value>,
    /// Turns true when the try should wind down cleanly (`windsock stream` on Ctrl-C), or when
    /// its future is dropped. Operators that work on a blocking thread check it.
    pub(crate) stop: Arc<std::sync::atomic::AtomicBool>,
    /// Where the operator says how far it has come (events produced, bytes downloaded).
    pub(crate) progress: Progress,
}

impl TaskContext {
    /// What a warehouse query of this try is tagged with (Snowflake's QUERY_TAG).
    pub(crate) fn query_tag(&self) -> String {
        format!(
            "windsock dag={} task={} run={} try={}",
            self.dag, self.task, self.run_id, self.try_number
        )
    }

    /// The stop flag, and a guard that raises it when the operator's future is dropped (a
    /// timeout): hand the flag to blocking work and keep the guard in the future.
    pub(crate) fn stop_guard(&self) -> (CancelOnDrop, Arc<std::sync::atomic::AtomicBool>) {
        (CancelOnDrop(self.stop.clone()), self.stop.clone())
    }

    /// A path from a config, relative to the project folder unless absolute.
    pub(crate) fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.project_dir.join(path)
        }
    }
}

/// The problem with a `connection:` key naming a warehouse this build does not have.
pub(crate) fn check_connection(connection: Option<&str>) -> Option<ConfigProblem> {
    connection.filter(|c| *c != "warehouse").map(|c| {
        ConfigProblem::at(
            "connection",
            format!("unknown connection `{c}`; this build has `warehouse`"),
        )
    })
}

/// What a progress report counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Events,
    Bytes,
}

/// How far a try has come: `done` of `total` (when known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProgressReport {
    pub(crate) done: u64,
    pub(crate) total: Option<u64>,
    pub(crate) unit: Unit,
}

/// The channel an operator reports its progress on. Whoever runs the try decides what to do
/// with it (the CLI draws a bar on a terminal); the operator only counts.
#[derive(Clone)]
pub(crate) struct Progress {
    sink: Option<Arc<dyn Fn(ProgressReport) + Send + Sync>>,
    last: Arc<Mutex<Option<Instant>>>,
}

impl Progress {
    /// Reports go to `sink`.
    pub(crate) fn to(sink: Arc<dyn Fn(ProgressReport) + Send + Sync>) -> Progress {
        Progress {
            sink: Some(sink),
            last: Arc::default(),
        }
    }

    /// Reports go nowhere.
    pub(crate) fn ignored() -> Progress {
        Progress {
            sink: None,
            last: Arc::default(),
        }
    }

    /// Reports `done` of `total`. Cheap to call often: at most ten reports a second go on.
    pub(crate) fn report(&self, done: u64, total: Option<u64>, unit: Unit) {
        let Some(sink) = &self.sink else { return };
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
                return;
            }
            *last = Some(Instant::now());
        }
        sink(ProgressReport { done, total, unit });
    }
}

/// A flag that turns true when the future holding the guard is dropped (a timeout or a stop), so
/// work running on a blocking thread, which dropping cannot interrupt, stops at its next check.
pub(crate) struct CancelOnDrop(pub(crate) Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What static checks can see.
pub(crate) struct CheckContext<'a> {
    pub(crate) project_dir: &'a Path,
    pub(crate) templates: &'a crate::template::Templates,
}

/// An operator's typed config. Implement this in `src/operators/<name>.rs` and add one line to
/// [`registry`].
pub(crate) trait OperatorConfig:
    DeserializeOwned + Serialize + JsonSchema + Send + Sync + 'static
{
    /// The `operator:` name.
    const NAME: &'static str;
    /// One line for `--help` style listings.
    const SUMMARY: &'static str;

    /// Checks beyond types, at validation time (for example that a referenced file exists).
    /// Templated values are unrendered here; skip checks on them.
    fn check(&self, _cx: &CheckContext<'_>) -> Vec<ConfigProblem> {
        Vec::new()
    }

    /// Runs one try. Dropping the future must stop the work (that is how timeouts cancel).
    fn run<'a>(&'a self, ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, Error>>;

    /// Whether it consumes a stream and implements [`OperatorConfig::follow`].
    const STREAMS: bool = false;

    /// Whether a task with this `with:` block opens the warehouse (under the local profile, the
    /// embedded DuckDB file, which one process at a time may open).
    fn uses_warehouse(_with: &crate::spec::Node) -> bool {
        false
    }

    /// Operators that consume a stream: the same config running until stopped instead of
    /// stopping at the end of what is there (`windsock stream --follow`).
    fn follow(&self) -> Option<Self> {
        None
    }

    /// Text the operator renders beyond its config (a `sql` task's files), for `windsock render`:
    /// (title, rendered text) pairs.
    fn rendered_extras(&self, _cx: &RenderExtras<'_>) -> Result<Vec<(String, String)>, String> {
        Ok(Vec::new())
    }
}

/// What `rendered_extras` can use: the project folder, its templates and the task's context.
pub(crate) struct RenderExtras<'a> {
    pub(crate) project_dir: &'a Path,
    pub(crate) templates: &'a crate::template::Templates,
    pub(crate) context: &'a minijinja::Value,
}

/// A typed config behind a pointer, as the executor sees it.
pub(crate) trait Operator: Send + Sync {
    fn check(&self, cx: &CheckContext<'_>) -> Vec<ConfigProblem>;
    fn run<'a>(&'a self, ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, Error>>;
    /// The config with its final values, for `windsock render` and the try log.
    fn config_json(&self) -> serde_json::Value;
    fn rendered_extras(&self, cx: &RenderExtras<'_>) -> Result<Vec<(String, String)>, String>;
    /// See [`OperatorConfig::follow`].
    fn follow(&self) -> Option<Box<dyn Operator>>;
}

impl<T: OperatorConfig> Operator for T {
    fn check(&self, cx: &CheckContext<'_>) -> Vec<ConfigProblem> {
        OperatorConfig::check(self, cx)
    }
    fn run<'a>(&'a self, ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, Error>> {
        OperatorConfig::run(self, ctx)
    }
    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
    fn rendered_extras(&self, cx: &RenderExtras<'_>) -> Result<Vec<(String, String)>, String> {
        OperatorConfig::rendered_extras(self, cx)
    }
    fn follow(&self) -> Option<Box<dyn Operator>> {
        OperatorConfig::follow(self).map(|c| Box::new(c) as Box<dyn Operator>)
    }
}

/// One registered operator.
pub(crate) struct OperatorEntry {
    pub(crate) name: &'static str,
    pub(crate) summary: &'static str,
    /// Reads a `with:` block into the typed config; problems go to the context's diagnostics.
    pub(crate) parse: fn(&DeCtx, &Node, &str) -> Option<Box<dyn Operator>>,
    /// The JSON Schema of the `with:` block.
    pub(crate) schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    /// Whether it consumes a stream (`windsock stream` runs it).
    pub(crate) streams: bool,
    /// [`OperatorConfig::uses_warehouse`].
    pub(crate) uses_warehouse: fn(&crate::spec::Node) -> bool,
}

fn entry<T: OperatorConfig>() -> OperatorEntry {
    OperatorEntry {
        name: T::NAME,
        summary: T::SUMMARY,
        parse: |cx, node, path| {
            cx.read::<T>(node, path)
                .map(|c| Box::new(c) as Box<dyn Operator>)
        },
        schema: |g| g.subschema_for::<T>(),
        streams: T::STREAMS,
        uses_warehouse: T::uses_warehouse,
    }
}

static REGISTRY: LazyLock<Vec<OperatorEntry>> = LazyLock::new(|| {
    let mut ops = vec![
        entry::<dashboard::DashboardConfig>(),
        entry::<generate_events::GenerateEventsConfig>(),
        entry::<http_download::HttpDownloadConfig>(),
        entry::<kafka_produce::KafkaProduceConfig>(),
        entry::<kafka_to_warehouse::KafkaToWarehouseConfig>(),
        entry::<load_table::LoadTableConfig>(),
        entry::<noop::NoopConfig>(),
        entry::<prepare_events::PrepareEventsConfig>(),
        entry::<shell::ShellConfig>(),
        entry::<sql::SqlConfig>(),
        entry::<stream_aggregate::StreamAggregateConfig>(),
        entry::<wait_for::WaitForConfig>(),
    ];
    ops.sort_by_key(|e| e.name);
    ops
});

/// Every built-in operator, sorted by name.
pub(crate) fn registry() -> &'static [OperatorEntry] {
    &REGISTRY
}

pub(crate) fn lookup(name: &str) -> Option<&'static OperatorEntry> {
    registry().iter().find(|e| e.name == name)
}

pub(crate) fn names() -> impl Iterator<Item = &'static str> {
    registry().iter().map(|e| e.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// /dev/full answers every write with ENOSPC, as a full disk does.
    #[test]
    fn a_log_on_a_full_disk_drops_lines_and_says_so_once() {
        let log = TaskLog::create(Path::new("/dev/full")).unwrap();
        log.info("first line");
        assert!(log.failed.load(std::sync::atomic::Ordering::Relaxed));
        log.raw("more output");
        // Still usable by the operator and the executor: nothing panicked, nothing was returned.
        let dir = tempfile::tempdir().unwrap();
        let ok = TaskLog::create(&dir.path().join("t/try-1.log")).unwrap();
        ok.info("fine");
        assert!(!ok.failed.load(std::sync::atomic::Ordering::Relaxed));
    }
}
