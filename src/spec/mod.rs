//! The pipeline format: the YAML model, read with positions so that every problem can be reported
//! as `file:line:column`.
//!
//! This module knows the shape of a pipeline file but nothing about operators, the graph or
//! templates; [`crate::project`] combines those checks into `windsock validate`.

pub(crate) mod de;
pub(crate) mod raw;
pub(crate) mod types;
pub(crate) mod yaml;

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diag::{Diagnostic, Diagnostics, Pos};
pub(crate) use de::{DeCtx, Mode, is_template};
pub(crate) use raw::Raw;
pub(crate) use types::{CronSchedule, Date, Duration, Month};
pub(crate) use yaml::Node;

/// A pipeline file (a DAG), as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "windsock pipeline")]
pub(crate) struct PipelineSpec {
    /// The DAG's id: letters, digits, `_` and `-`. Unique across `pipelines/`.
    pub(crate) dag: String,
    /// What the pipeline does, for people.
    #[serde(default)]
    pub(crate) description: Option<String>,
    /// When the scheduler runs it: a cron expression (5 fields, or 6 with seconds first), or null
    /// to run only when triggered.
    #[serde(default)]
    pub(crate) schedule: Option<CronSchedule>,
    /// The first logical date the scheduler considers (YYYY-MM-DD).
    #[serde(default)]
    pub(crate) start_date: Option<Date>,
    /// Split the work into partitions; each run covers exactly one.
    #[serde(default)]
    pub(crate) partitions: Option<Partitions>,
    /// Whether the scheduler creates the runs missed since `start_date`.
    #[serde(default)]
    pub(crate) catchup: bool,
    /// How many runs of this DAG may be active at once.
    #[serde(default = "default_max_active_runs")]
    #[schemars(range(min = 1))]
    pub(crate) max_active_runs: u32,
    /// Values available to templates as `params.NAME`.
    #[serde(default)]
    pub(crate) params: IndexMap<String, serde_json::Value>,
    /// Environment variables whose values are secrets though their names do not say so
    /// (names with PASSWORD, SECRET, TOKEN, KEY, CREDENTIAL, PRIVATE, AUTH are secrets
    /// already): their values are masked as `***` in every log, stored rendering, output,
    /// error and page.
    #[serde(default)]
    pub(crate) secrets: Vec<String>,
    /// Retry and timeout settings for every task; a task may override each of them.
    #[serde(default)]
    pub(crate) defaults: RetrySpec,
    /// The tasks, by name.
    // Described here for the schema and the key checks; the loader reads each task on its own,
    // so that one broken task does not hide the others' problems.
    #[allow(dead_code)]
    pub(crate) tasks: IndexMap<String, Raw<TaskSpec>>,
}

fn default_max_active_runs() -> u32 {
    1
}

/// Partitioning of a DAG's work.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Partitions {
    /// One partition per calendar month, `from` and `to` inclusive (YYYY-MM).
    pub(crate) monthly: MonthRange,
    /// Start again at the first partition after the last one has succeeded.
    #[serde(default)]
    pub(crate) cycle: bool,
}

/// Months `from` to `to`, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MonthRange {
    pub(crate) from: Month,
    pub(crate) to: Month,
}

impl MonthRange {
    pub(crate) fn months(&self) -> Vec<Month> {
        let mut out = Vec::new();
        let mut m = self.from;
        while m <= self.to {
            out.push(m);
            m = m.next();
        }
        out
    }
}

/// Retry and timeout settings. In `defaults` they apply to every task; in a task they override.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetrySpec {
    /// How many times a failed try is retried.
    #[serde(default)]
    pub(crate) retries: Option<u32>,
    /// The wait before the first retry.
    #[serde(default)]
    pub(crate) retry_delay: Option<Duration>,
    /// `fixed` waits `retry_delay` each time; `exponential` doubles it per retry (with jitter).
    #[serde(default)]
    pub(crate) retry_backoff: Option<Backoff>,
    /// The longest wait between tries under exponential backoff.
    #[serde(default)]
    pub(crate) max_retry_delay: Option<Duration>,
    /// How long one try may run before it is cancelled (and retried).
    #[serde(default)]
    pub(crate) timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Backoff {
    Fixed,
    Exponential,
}

/// Where a pipeline's connections go (`--profile`): `local` runs everything embedded (DuckDB,
/// windsock's own Kafka broker), `cloud` talks to Snowflake and Confluent Cloud (or any Kafka)
/// configured by the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Profile {
    Local,
    Cloud,
}

impl Profile {
    pub(crate) const ALL: [Profile; 2] = [Profile::Local, Profile::Cloud];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Profile::Local => "local",
            Profile::Cloud => "cloud",
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Profile, String> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown profile `{s}`; profiles are `local` and `cloud`"))
    }
}

/// A task's operator and config under one profile, replacing the task's own.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProfileVariant {
    /// The operator under this profile (default: the task's).
    #[serde(default)]
    pub(crate) operator: Option<String>,
    /// The config under this profile (default: the task's `with`).
    #[serde(default, rename = "with")]
    pub(crate) with: Option<Raw<serde_json::Value>>,
}

/// One task of a DAG.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskSpec {
    /// The built-in operator that runs this task.
    pub(crate) operator: String,
    /// What the task does, for people.
    #[serde(default)]
    pub(crate) description: Option<String>,
    /// Tasks that must succeed before this one starts.
    #[serde(default)]
    pub(crate) depends_on: Vec<String>,
    // The keys of `RetrySpec`, repeated rather than `#[serde(flatten)]`ed: flattening would hide
    // this struct's key list from the deserializer, which needs it to report unknown keys.
    #[serde(default)]
    pub(crate) retries: Option<u32>,
    #[serde(default)]
    pub(crate) retry_delay: Option<Duration>,
    #[serde(default)]
    pub(crate) retry_backoff: Option<Backoff>,
    #[serde(default)]
    pub(crate) max_retry_delay: Option<Duration>,
    #[serde(default)]
    pub(crate) timeout: Option<Duration>,
    /// The operator's configuration; every string in it is a template.
    #[serde(default, rename = "with")]
    pub(crate) with: Option<Raw<serde_json::Value>>,
    /// Per-profile variants, e.g. generate the month under `local` and download it under
    /// `cloud`: `profiles: { local: { operator: generate_events, with: {...} } }`.
    #[serde(default)]
    pub(crate) profiles: IndexMap<String, ProfileVariant>,
}

/// The retry policy of a task after defaults are applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct RetryPolicy {
    pub(crate) retries: u32,
    pub(crate) retry_delay: Duration,
    pub(crate) retry_backoff: Backoff,
    pub(crate) max_retry_delay: Duration,
    pub(crate) timeout: Option<Duration>,
}

impl RetryPolicy {
    fn resolve(task: &RetrySpec, defaults: &RetrySpec) -> RetryPolicy {
        RetryPolicy {
            retries: task.retries.or(defaults.retries).unwrap_or(0),
            retry_delay: task
                .retry_delay
                .or(defaults.retry_delay)
                .unwrap_or(Duration::from_secs(30)),
            retry_backoff: task
                .retry_backoff
                .or(defaults.retry_backoff)
                .unwrap_or(Backoff::Fixed),
            max_retry_delay: task
                .max_retry_delay
                .or(defaults.max_retry_delay)
                .unwrap_or(Duration::from_secs(3600)),
            timeout: task.timeout.or(defaults.timeout),
        }
    }

    /// The wait before try number `next_try` (2 for the first retry), jittered when exponential.
    pub(crate) fn delay_before(&self, next_try: u32) -> std::time::Duration {
        let base = self.retry_delay.std();
        match self.retry_backoff {
            Backoff::Fixed => base,
            Backoff::Exponential => {
                let exp = next_try.saturating_sub(2).min(30);
                let full = base
                    .saturating_mul(1u32 << exp)
                    .min(self.max_retry_delay.std());
                // "Equal jitter": between half and all of the backoff, so retries of many tasks
                // that failed together do not stampede, yet the wait still grows.
                full.mul_f64(0.5 + fastrand::f64() * 0.5)
            }
        }
    }
}

/// A task after loading: its name, operator, upstreams, policy and raw config.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub(crate) name: String,
    pub(crate) operator: String,
    pub(crate) description: Option<String>,
    pub(crate) depends_on: Vec<String>,
    pub(crate) policy: RetryPolicy,
    /// The `with:` block as written; rendered and typed when the task runs.
    pub(crate) with: Node,
    /// Where the task is defined (its name's position).
    pub(crate) pos: Pos,
    /// The whole task mapping, to point at its keys in messages.
    pub(crate) node: Node,
    /// Operator and `with:` per profile, where a profile changes them.
    pub(crate) variants: IndexMap<Profile, (String, Node)>,
}

impl Task {
    /// The operator and raw config that run under `profile`.
    pub(crate) fn for_profile(&self, profile: Profile) -> (&str, &Node) {
        match self.variants.get(&profile) {
            Some((op, with)) => (op.as_str(), with),
            None => (self.operator.as_str(), &self.with),
        }
    }

    /// Every (profile or `None` for the base, operator, config, path of the config) to check.
    pub(crate) fn all_variants(&self) -> Vec<(Option<Profile>, &str, &Node, String)> {
        let mut out = vec![(
            None,
            self.operator.as_str(),
            &self.with,
            format!("tasks.{}.with", self.name),
        )];
        for (profile, (op, with)) in &self.variants {
            out.push((
                Some(*profile),
                op.as_str(),
                with,
                format!("tasks.{}.profiles.{profile}.with", self.name),
            ));
        }
        out
    }
}

/// A loaded pipeline: the header and its tasks in file order.
#[derive(Debug, Clone)]
pub(crate) struct Pipeline {
    pub(crate) file: PathBuf,
    pub(crate) dag: String,
    pub(crate) description: Option<String>,
    pub(crate) schedule: Option<CronSchedule>,
    pub(crate) start_date: Option<Date>,
    pub(crate) partitions: Option<Partitions>,
    pub(crate) catchup: bool,
    pub(crate) max_active_runs: u32,
    pub(crate) params: IndexMap<String, serde_json::Value>,
    pub(crate) tasks: IndexMap<String, Task>,
    /// Tasks that are defined but could not be read (already reported): others may still name
    /// them in `depends_on` without a second report.
    pub(crate) broken_tasks: std::collections::BTreeSet<String>,
    /// The whole file's tree, to point at keys in later checks.
    pub(crate) root: Node,
}

impl Pipeline {
    pub(crate) fn task(&self, name: &str) -> Option<&Task> {
        self.tasks.get(name)
    }

    /// Position of a top-level key, or the file's start.
    pub(crate) fn key_pos(&self, key: &str) -> Pos {
        self.root
            .entry(key)
            .map(|(_, v)| v.pos)
            .unwrap_or(Pos::new(1, 1))
    }
}

/// Parses and structurally checks one pipeline file. Returns the pipeline when its shape allows
/// further checks, and every problem found.
pub(crate) fn load_file(file: &Path) -> (Option<Pipeline>, Diagnostics) {
    let source = match std::fs::read_to_string(file) {
        Ok(s) => s,
        Err(e) => {
            let mut d = Diagnostics::default();
            d.push(Diagnostic::new(
                file,
                Pos::new(1, 1),
                format!("cannot read the file: {e}"),
            ));
            return (None, d);
        }
    };
    load_str(file, &source)
}

/// As [`load_file`], for source text already in memory.
pub(crate) fn load_str(file: &Path, source: &str) -> (Option<Pipeline>, Diagnostics) {
    let root = match yaml::parse(file, source) {
        Ok(root) => root,
        Err(d) => return (None, d),
    };
    let ctx = DeCtx::new(file, Mode::Validate);
    if !matches!(root.kind, yaml::NodeKind::Map(_)) {
        ctx.diags.borrow_mut().push(Diagnostic::new(
            file,
            root.pos,
            format!(
                "a pipeline file must be a mapping with `dag` and `tasks`, found {}",
                root.describe()
            ),
        ));
        return (None, ctx.into_diags());
    }
    let header = read_header(&ctx, &root);
    let mut tasks = IndexMap::new();
    let mut broken_tasks = std::collections::BTreeSet::new();
    let defaults = header
        .as_ref()
        .map(|h| h.defaults.clone())
        .unwrap_or_default();
    // Tasks are read one by one, even when the header had problems, so each gets its own report.
    if let Some(tasks_node) = root.get("tasks") {
        match &tasks_node.kind {
            yaml::NodeKind::Map(entries) if !entries.is_empty() => {
                for (key, node) in entries {
                    let name = key.as_str().unwrap_or_default().to_string();
                    check_task_name(&ctx, &name, key.pos);
                    let Ok(spec) = ctx.try_read::<TaskSpec>(node, &format!("tasks.{name}")) else {
                        broken_tasks.insert(name);
                        continue;
                    };
                    let retry = RetrySpec {
                        retries: spec.retries,
                        retry_delay: spec.retry_delay,
                        retry_backoff: spec.retry_backoff,
                        max_retry_delay: spec.max_retry_delay,
                        timeout: spec.timeout,
                    };
                    let with = spec
                        .with
                        .map(|r| r.node)
                        .unwrap_or_else(|| Node::null(node.pos));
                    let mut variants = IndexMap::new();
                    for (profile, variant) in spec.profiles {
                        let at = node
                            .get("profiles")
                            .and_then(|p| p.entry(&profile))
                            .map(|(k, _)| k.pos)
                            .unwrap_or(key.pos);
                        let Ok(known) = profile.parse::<Profile>() else {
                            ctx.diags.borrow_mut().push(
                                Diagnostic::new(
                                    file,
                                    at,
                                    format!("task `{name}`: unknown profile `{profile}`"),
                                )
                                .with_hint(format!(
                                    "profiles are {}",
                                    crate::diag::list_names(Profile::ALL.iter().map(|p| p.name()))
                                )),
                            );
                            continue;
                        };
                        let op = variant.operator.unwrap_or_else(|| spec.operator.clone());
                        let w = variant.with.map(|r| r.node).unwrap_or_else(|| with.clone());
                        variants.insert(known, (op, w));
                    }
                    tasks.insert(
                        name.clone(),
                        Task {
                            name,
                            operator: spec.operator,
                            description: spec.description,
                            depends_on: spec.depends_on,
                            policy: RetryPolicy::resolve(&retry, &defaults),
                            with,
                            pos: key.pos,
                            node: node.clone(),
                            variants,
                        },
                    );
                }
            }
            _ => ctx.diags.borrow_mut().push(
                Diagnostic::new(
                    file,
                    tasks_node.pos,
                    format!(
                        "`tasks` must be a mapping of task names to tasks, found {}",
                        tasks_node.describe()
                    ),
                )
                .with_hint("write `tasks:` followed by indented `name: {operator: ...}` entries"),
            ),
        }
    }
    let Some(header) = header else {
        return (None, ctx.into_diags());
    };
    check_header(&ctx, &header, &root);
    // Their values are masked from here on, wherever this process writes.
    for name in &header.secrets {
        crate::secrets::register_var(name);
    }
    let pipeline = Pipeline {
        file: file.to_path_buf(),
        dag: header.dag,
        description: header.description,
        schedule: header.schedule,
        start_date: header.start_date,
        partitions: header.partitions,
        catchup: header.catchup,
        max_active_runs: header.max_active_runs,
        params: header.params,
        tasks,
        broken_tasks,
        root,
    };
    (Some(pipeline), ctx.into_diags())
}

/// Reads the header, skipping keys whose values are invalid so that the rest of the file (the
/// tasks, the graph) is still checked and every problem is reported in one go.
fn read_header(ctx: &DeCtx, root: &Node) -> Option<PipelineSpec> {
    let mut root = root.clone();
    // Each round removes one bad key, so this ends; the bound is only a guard.
    for _ in 0..64 {
        let failed_at = match ctx.try_read::<PipelineSpec>(&root, "") {
            Ok(h) => return Some(h),
            Err(path) => path,
        };
        let key = failed_at
            .split(['.', '['])
            .next()
            .unwrap_or_default()
            .to_string();
        let yaml::NodeKind::Map(entries) = &mut root.kind else {
            return None;
        };
        let Some(i) = entries
            .iter()
            .position(|(k, _)| k.as_str() == Some(key.as_str()))
        else {
            // A problem of the whole mapping: a missing required key. Stand in for it once.
            let pos = entries.first().map(|(k, _)| k.pos).unwrap_or_default();
            let missing = ["dag", "tasks"]
                .into_iter()
                .find(|k| !entries.iter().any(|(e, _)| e.as_str() == Some(k)))?;
            let value = match missing {
                "dag" => Node::string("invalid", pos),
                _ => Node {
                    kind: yaml::NodeKind::Map(Vec::new()),
                    pos,
                },
            };
            entries.push((Node::string(missing, pos), value));
            continue;
        };
        if key == "dag" {
            // Required: keep a stand-in so the tasks are still checked.
            entries[i].1 = Node::string("invalid", entries[i].1.pos);
        } else {
            entries.remove(i);
        }
    }
    None
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn check_task_name(ctx: &DeCtx, name: &str, pos: Pos) {
    if !is_identifier(name) {
        ctx.diags.borrow_mut().push(
            Diagnostic::new(&ctx.file, pos, format!("invalid task name `{name}`"))
                .with_hint("task names use letters, digits, `_` and `-`"),
        );
    }
}

fn check_header(ctx: &DeCtx, h: &PipelineSpec, root: &Node) {
    let pos = |key: &str| root.get(key).map(|n| n.pos).unwrap_or(Pos::new(1, 1));
    let mut diags = ctx.diags.borrow_mut();
    if !is_identifier(&h.dag) {
        diags.push(
            Diagnostic::new(&ctx.file, pos("dag"), format!("invalid dag id `{}`", h.dag))
                .with_hint("dag ids use letters, digits, `_` and `-`"),
        );
    }
    if h.max_active_runs == 0 {
        diags.push(Diagnostic::new(
            &ctx.file,
            pos("max_active_runs"),
            "max_active_runs must be at least 1",
        ));
    }
    if let Some(p) = &h.partitions {
        if p.monthly.from > p.monthly.to {
            let at = root
                .get("partitions")
                .and_then(|n| n.get("monthly"))
                .map(|n| n.pos)
                .unwrap_or(pos("partitions"));
            diags.push(Diagnostic::new(
                &ctx.file,
                at,
                format!(
                    "empty partition range: `from` ({}) is after `to` ({})",
                    p.monthly.from, p.monthly.to
                ),
            ));
        }
    }
    if h.catchup && h.start_date.is_none() && h.partitions.is_none() && h.schedule.is_some() {
        diags.push(
            Diagnostic::new(
                &ctx.file,
                pos("catchup"),
                "`catchup: true` needs a `start_date` to know which runs were missed",
            )
            .with_hint("add `start_date: YYYY-MM-DD`"),
        );
    }
    if h.defaults.timeout.is_some_and(|t| t.std().is_zero()) {
        diags.push(Diagnostic::new(
            &ctx.file,
            root.get("defaults")
                .and_then(|d| d.get("timeout"))
                .map(|n| n.pos)
                .unwrap_or(pos("defaults")),
            "a timeout of zero would cancel every try at once",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(src: &str) -> (Option<Pipeline>, Diagnostics) {
        load_str(Path::new("p.yaml"), src)
    }

    const GOOD: &str = r#"
dag: ecommerce_stream
description: Stream one month.
schedule: "0 */3 * * *"
start_date: 2019-10-01
partitions:
  monthly: { from: 2019-10, to: 2020-04 }
catchup: false
max_active_runs: 1
params: { rows_per_day: 10000 }
defaults: { retries: 3, retry_delay: 30s, retry_backoff: exponential, max_retry_delay: 10m, timeout: 1h }
tasks:
  prepare:
    operator: noop
  stream_month:
    operator: kafka_produce
    depends_on: [prepare]
    retries: 5
    with: { topic: ecommerce.events.raw, rows_per_day: "{{ params.rows_per_day }}" }
"#;

    #[test]
    fn loads_the_documented_example() {
        let (p, d) = load(GOOD);
        assert!(d.is_empty(), "{d}");
        let p = p.unwrap();
        assert_eq!(p.dag, "ecommerce_stream");
        assert_eq!(p.partitions.as_ref().unwrap().monthly.months().len(), 7);
        let t = p.task("stream_month").unwrap();
        assert_eq!(t.policy.retries, 5);
        assert_eq!(t.policy.retry_delay, Duration::from_secs(30));
        assert_eq!(t.policy.retry_backoff, Backoff::Exponential);
        assert_eq!(t.policy.timeout, Some(Duration::from_secs(3600)));
        assert_eq!(t.depends_on, vec!["prepare"]);
        assert_eq!(
            t.with.get("topic").unwrap().as_str(),
            Some("ecommerce.events.raw")
        );
        assert_eq!(p.params["rows_per_day"], serde_json::json!(10000));
        assert_eq!(p.task("prepare").unwrap().policy.retries, 3);
    }

    #[test]
    fn reports_problems_in_several_tasks_and_the_header() {
        let src = "dag: x\nschedule: \"61 * * * *\"\ntasks:\n  a:\n    operator: noop\n    retries: many\n  b:\n    operater: noop\n  c:\n    operator: noop\n    timeout: 5 minutes\n";
        let (_, d) = load(src);
        let text = d.sorted().to_string();
        assert!(
            text.contains("p.yaml:2:11: schedule: invalid cron schedule"),
            "{text}"
        );
        assert!(
            text.contains("p.yaml:6:14: tasks.a.retries: expected u32"),
            "{text}"
        );
        assert!(
            text.contains("p.yaml:8:5: unknown key `operater` in `tasks.b`"),
            "{text}"
        );
        assert!(
            text.contains("p.yaml:11:14: tasks.c.timeout: invalid duration `5 minutes`"),
            "{text}"
        );
    }

    #[test]
    fn exponential_backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            retries: 10,
            retry_delay: Duration::from_secs(10),
            retry_backoff: Backoff::Exponential,
            max_retry_delay: Duration::from_secs(60),
            timeout: None,
        };
        let d2 = p.delay_before(2).as_secs_f64();
        let d4 = p.delay_before(4).as_secs_f64();
        let d9 = p.delay_before(9).as_secs_f64();
        assert!((5.0..=10.0).contains(&d2), "{d2}");
        assert!((20.0..=40.0).contains(&d4), "{d4}");
        assert!((30.0..=60.0).contains(&d9), "{d9}");
    }
}
