//! Operators: the built-in task types.
//!
//! Each operator is one file here holding its typed config (serde, `deny_unknown_fields`, with
//! a JSON Schema), its static checks and its run function, all through [`OperatorConfig`].
//! [`registry`] maps `operator:` names to them; adding an operator is one file plus one line there.
//! The executor sees only [`Operator`], so it never changes when an operator is added.

pub mod generate_events;
pub mod http_download;
pub mod kafka_produce;
pub mod kafka_to_warehouse;
pub mod load_table;
pub mod noop;
pub mod prepare_events;
pub mod process;
pub mod shell;
pub mod sql;
pub mod stream_aggregate;
pub mod wait_for;

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};

use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};

use crate::spec::{DeCtx, Node};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a successful try produced.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskResult {
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

/// Why a try failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct OperatorError {
    pub message: String,
    /// Whether another try could succeed. A wrong config will not; a network error may.
    pub retryable: bool,
}

impl OperatorError {
    pub fn retryable(message: impl Into<String>) -> Self {
        OperatorError {
            message: message.into(),
            retryable: true,
        }
    }
    pub fn fatal(message: impl Into<String>) -> Self {
        OperatorError {
            message: message.into(),
            retryable: false,
        }
    }
}

/// A try's log file, shared by the executor and the operator.
#[derive(Clone)]
pub struct TaskLog {
    file: Arc<Mutex<std::fs::File>>,
    path: PathBuf,
}

impl TaskLog {
    pub fn create(path: &Path) -> std::io::Result<TaskLog> {
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
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends raw text (a line of a command's output) as is.
    pub fn raw(&self, line: &str) {
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let _ = f.write_all(line.as_bytes());
        if !line.ends_with('\n') {
            let _ = f.write_all(b"\n");
        }
    }

    /// Appends a timestamped line from windsock itself.
    pub fn info(&self, msg: &str) {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        self.raw(&format!("[{now}] windsock: {msg}"));
    }
}

/// What a running operator knows about its try.
#[derive(Clone)]
pub struct TaskContext {
    pub dag: String,
    pub run_id: String,
    pub task: String,
    pub try_number: u32,
    /// The project folder (holding `pipelines/`, `sql/`, `templates/`): relative paths start here.
    pub project_dir: PathBuf,
    /// The state directory, for operators that keep data (downloads, checkpoints).
    pub home: PathBuf,
    pub profile: String,
    pub log: TaskLog,
    /// `WINDSOCK_*` variables describing the try, for child processes.
    pub env: Vec<(String, String)>,
    /// Called with the process group id of a command the operator starts, so that it is recorded
    /// and can be stopped if windsock dies while it runs.
    pub on_process: Arc<dyn Fn(u32) + Send + Sync>,
    /// The project's templates and this try's template context, for operators that render
    /// files of their own (SQL).
    pub templates: Arc<crate::template::Templates>,
    pub template_context: minijinja::Value,
    /// What the operator kept when it last deferred (a sensor's first poke time), if it did.
    pub deferred_state: Option<serde_json::Value>,
    /// Turns true when the try should wind down cleanly (`windsock stream` on Ctrl-C), or when
    /// its future is dropped. Operators that work on a blocking thread check it.
    pub stop: Arc<std::sync::atomic::AtomicBool>,
}

impl TaskContext {
    /// What a warehouse query of this try is tagged with (Snowflake's QUERY_TAG).
    pub fn query_tag(&self) -> String {
        format!(
            "windsock dag={} task={} run={} try={}",
            self.dag, self.task, self.run_id, self.try_number
        )
    }

    /// The stop flag, and a guard that raises it when the operator's future is dropped (a
    /// timeout): hand the flag to blocking work and keep the guard in the future.
    pub fn stop_guard(&self) -> (CancelOnDrop, Arc<std::sync::atomic::AtomicBool>) {
        (CancelOnDrop(self.stop.clone()), self.stop.clone())
    }

    /// A path from a config, relative to the project folder unless absolute.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.project_dir.join(path)
        }
    }
}

impl From<crate::connections::warehouse::WarehouseError> for OperatorError {
    fn from(e: crate::connections::warehouse::WarehouseError) -> Self {
        OperatorError {
            message: e.message,
            retryable: e.transient,
        }
    }
}

/// The problem with a `connection:` key naming a warehouse this build does not have.
pub fn check_connection(connection: Option<&str>) -> Option<ConfigProblem> {
    connection
        .filter(|c| *c != "warehouse")
        .map(|c| ConfigProblem {
            key: Some("connection".into()),
            message: format!("unknown connection `{c}`; this build has `warehouse`"),
        })
}

/// A progress bar on a terminal, hidden otherwise. `template` is indicatif's (`{bytes}`, `{pos}`…);
/// without a total it is a spinner.
pub fn progress_bar(total: Option<u64>, template: &str) -> indicatif::ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match total {
        Some(t) => indicatif::ProgressBar::new(t),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

impl From<crate::connections::kafka::KafkaError> for OperatorError {
    fn from(e: crate::connections::kafka::KafkaError) -> Self {
        OperatorError {
            message: e.message,
            retryable: e.transient,
        }
    }
}

impl From<rdkafka::error::KafkaError> for OperatorError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        crate::connections::kafka::KafkaError::from(e).into()
    }
}

/// A flag that turns true when the future holding the guard is dropped (a timeout or a stop), so
/// work running on a blocking thread, which dropping cannot interrupt, stops at its next check.
pub struct CancelOnDrop(pub Arc<std::sync::atomic::AtomicBool>);

impl CancelOnDrop {
    pub fn new() -> (CancelOnDrop, Arc<std::sync::atomic::AtomicBool>) {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        (CancelOnDrop(flag.clone()), flag)
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A problem a config's own checks found, beyond its types.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    /// The key under `with:` it is about, to point at its line.
    pub key: Option<String>,
    pub message: String,
}

/// What static checks can see.
pub struct CheckContext<'a> {
    pub project_dir: &'a Path,
    pub templates: &'a crate::template::Templates,
}

/// An operator's typed config. Implement this in `src/operators/<name>.rs` and add one line to
/// [`registry`].
pub trait OperatorConfig:
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
    fn run<'a>(&'a self, ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, OperatorError>>;

    /// Whether it consumes a stream and implements [`OperatorConfig::follow`].
    const STREAMS: bool = false;

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
pub struct RenderExtras<'a> {
    pub project_dir: &'a Path,
    pub templates: &'a crate::template::Templates,
    pub context: &'a minijinja::Value,
}

/// A typed config behind a pointer, as the executor sees it.
pub trait Operator: Send + Sync {
    fn name(&self) -> &'static str;
    fn check(&self, cx: &CheckContext<'_>) -> Vec<ConfigProblem>;
    fn run<'a>(&'a self, ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, OperatorError>>;
    /// The config with its final values, for `windsock render` and the try log.
    fn config_json(&self) -> serde_json::Value;
    fn rendered_extras(&self, cx: &RenderExtras<'_>) -> Result<Vec<(String, String)>, String>;
    /// See [`OperatorConfig::follow`].
    fn follow(&self) -> Option<Box<dyn Operator>>;
}

impl<T: OperatorConfig> Operator for T {
    fn name(&self) -> &'static str {
        T::NAME
    }
    fn check(&self, cx: &CheckContext<'_>) -> Vec<ConfigProblem> {
        OperatorConfig::check(self, cx)
    }
    fn run<'a>(&'a self, ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, OperatorError>> {
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
pub struct OperatorEntry {
    pub name: &'static str,
    pub summary: &'static str,
    /// Reads a `with:` block into the typed config; problems go to the context's diagnostics.
    pub parse: fn(&DeCtx, &Node, &str) -> Option<Box<dyn Operator>>,
    /// The JSON Schema of the `with:` block.
    pub schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    /// Whether it consumes a stream (`windsock stream` runs it).
    pub streams: bool,
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
    }
}

static REGISTRY: LazyLock<Vec<OperatorEntry>> = LazyLock::new(|| {
    let mut ops = vec![
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
pub fn registry() -> &'static [OperatorEntry] {
    &REGISTRY
}

pub fn lookup(name: &str) -> Option<&'static OperatorEntry> {
    registry().iter().find(|e| e.name == name)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    registry().iter().map(|e| e.name)
}
