//! Jinja templating (minijinja) of task configs and SQL.
//!
//! Undefined values are errors (strict), reported with the expression that was undefined. Shared
//! macros live in the project's `templates/` folder and can be imported from any template. At
//! validation time templates are compiled and their variable references are checked statically
//! against what the run context will hold, so a typo fails `windsock validate`, not a run.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};
use serde::Serialize;

/// Top-level names of the render context.
pub(crate) const CONTEXT_NAMES: &[&str] = &[
    "ds",
    "ds_nodash",
    "ts",
    "logical_date",
    "data_interval_start",
    "data_interval_end",
    "run_id",
    "dag",
    "task",
    "params",
    "partition",
    "tasks",
    "profile",
    "try_number",
    "data_dir",
    "warehouse",
];

/// Attributes of `partition`.
pub(crate) const PARTITION_FIELDS: &[&str] = &["key", "name", "start", "end", "last_day", "days"];

/// A template that failed to compile or render.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct TemplateError {
    pub(crate) message: String,
    /// 1-based line within the template source, when known.
    pub(crate) line: Option<usize>,
    /// A problem in an imported file rather than the template itself.
    pub(crate) file: Option<String>,
}

/// The project's template environment.
pub(crate) struct Templates {
    env: Environment<'static>,
    dir: PathBuf,
}

impl Templates {
    /// An environment that imports shared macros from `templates_dir`.
    pub(crate) fn new(templates_dir: &Path) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_loader(minijinja::path_loader(templates_dir));
        env.add_function("env", env_function);
        Templates {
            env,
            dir: templates_dir.to_path_buf(),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Renders `source` with `ctx`.
    pub(crate) fn render(&self, source: &str, ctx: &Value) -> Result<String, TemplateError> {
        guarded(|| {
            let tmpl = self
                .env
                .template_from_str(source)
                .map_err(|e| to_error(&e, source))?;
            tmpl.render(ctx).map_err(|e| to_error(&e, source))
        })
    }

    /// Compiles `source`, checks the templates it imports, and returns the variables it reads
    /// from the context as dotted paths (`params.rows_per_day`, `tasks.load.output.rows`).
    pub(crate) fn check(&self, source: &str) -> Result<BTreeSet<String>, TemplateError> {
        guarded(|| self.check_unguarded(source))
    }

    fn check_unguarded(&self, source: &str) -> Result<BTreeSet<String>, TemplateError> {
        let tmpl = self
            .env
            .template_from_str(source)
            .map_err(|e| to_error(&e, source))?;
        for name in referenced_templates(source) {
            self.env.get_template(&name).map_err(|e| {
                if e.kind() == ErrorKind::TemplateNotFound {
                    TemplateError {
                        message: format!(
                            "imports `{name}`, which does not exist in {}",
                            self.dir.display()
                        ),
                        line: line_of(source, &name),
                        file: None,
                    }
                } else {
                    let mut err = to_error(&e, "");
                    err.file = Some(name.clone());
                    err
                }
            })?;
        }
        let globals: HashSet<String> = self.env.globals().map(|(n, _)| n.to_string()).collect();
        Ok(tmpl
            .undeclared_variables(true)
            .into_iter()
            .filter(|v| !globals.contains(root_of(v)))
            .collect())
    }

    /// Compiles every file under the templates folder; returns (file, error) for each broken one.
    pub(crate) fn check_all_files(&self) -> Vec<(PathBuf, TemplateError)> {
        let mut out = Vec::new();
        let mut files = Vec::new();
        collect_files(&self.dir, &mut files);
        files.sort();
        for path in files {
            let Ok(rel) = path.strip_prefix(&self.dir) else {
                continue;
            };
            let name = rel.to_string_lossy().replace('\\', "/");
            let compiled = guarded(|| {
                self.env.get_template(&name).map(|_| ()).map_err(|e| {
                    let source = std::fs::read_to_string(&path).unwrap_or_default();
                    to_error(&e, &source)
                })
            });
            if let Err(e) = compiled {
                out.push((path, e));
            }
        }
        out
    }
}

thread_local! {
    /// Set while [`guarded`] runs: its panics are expected and turned into errors, not printed.
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs template work, turning a panic inside minijinja into an error. minijinja 3.1 panics on
/// some inputs its parser accepts (`{% import "m.j2" as a-b %}` reaches an `unreachable!` in
/// its code generator); a pipeline file must never crash windsock.
fn guarded<T>(work: impl FnOnce() -> Result<T, TemplateError>) -> Result<T, TemplateError> {
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    let outer = GUARDED.with(|g| g.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    GUARDED.with(|g| g.set(outer));
    result.unwrap_or_else(|_| {
        Err(TemplateError {
            message: "the template engine cannot compile this template; check that each name \
                      after `as`, `set` or `for` is a plain variable name"
                .to_string(),
            line: None,
            file: None,
        })
    })
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn root_of(var: &str) -> &str {
    var.split('.').next().unwrap_or(var)
}

/// `env("NAME")` or `env("NAME", "default")`: the only way templates read the environment. A
/// value read under a secret-looking name is masked from then on (`crate::secrets`).
fn env_function(name: String, default: Option<String>) -> Result<String, minijinja::Error> {
    match std::env::var(&name) {
        Ok(v) => {
            if crate::secrets::looks_secret(&name) {
                crate::secrets::register(&v);
            }
            Ok(v)
        }
        Err(_) => default.ok_or_else(|| {
            minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("environment variable `{name}` is not set"),
            )
        }),
    }
}

static TEMPLATE_REF: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r#"\{%-?\s*(?:import|include|from|extends)\s+["']([^"']+)["']"#)
        .unwrap_or_else(|e| panic!("static regex: {e}"))
});

/// Names of templates that `source` imports, includes or extends (string literals only).
pub(crate) fn referenced_templates(source: &str) -> Vec<String> {
    TEMPLATE_REF
        .captures_iter(source)
        .map(|c| c[1].to_string())
        .collect()
}

fn line_of(source: &str, needle: &str) -> Option<usize> {
    source
        .lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
}

fn to_error(e: &minijinja::Error, source: &str) -> TemplateError {
    let line = e.line();
    let snippet = e
        .range()
        .and_then(|r| source.get(r))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let message = match e.kind() {
        ErrorKind::UndefinedError => match snippet {
            Some(expr) => format!("undefined variable `{expr}`"),
            None => "undefined variable".to_string(),
        },
        ErrorKind::SyntaxError => format!(
            "template syntax error: {}",
            e.detail().unwrap_or("invalid syntax")
        ),
        _ => match (e.detail(), snippet) {
            (Some(d), Some(expr)) => format!("{d} (in `{expr}`)"),
            (Some(d), None) => d.to_string(),
            (None, _) => e.kind().to_string(),
        },
    };
    let file = e.name().filter(|n| *n != "<string>").map(|n| n.to_string());
    TemplateError {
        message,
        line,
        file,
    }
}

/// What a template in a given task may refer to, for the static check.
pub(crate) struct Scope<'a> {
    pub(crate) params: BTreeSet<&'a str>,
    pub(crate) partitioned: bool,
    pub(crate) all_tasks: BTreeSet<&'a str>,
    /// Tasks that finish before this one (its transitive upstreams).
    pub(crate) upstream: BTreeSet<String>,
}

impl Scope<'_> {
    /// Problems with the variables a template reads; each a one-sentence message.
    pub(crate) fn check(&self, vars: &BTreeSet<String>) -> Vec<String> {
        let mut out = Vec::new();
        for var in vars {
            let parts: Vec<&str> = var.split('.').collect();
            let root = parts[0];
            if !CONTEXT_NAMES.contains(&root) {
                let mut msg = format!("undefined variable `{root}`");
                if let Some(c) = crate::diag::closest(root, CONTEXT_NAMES.iter().copied()) {
                    msg.push_str(&format!(" (did you mean `{c}`?)"));
                }
                out.push(msg);
                continue;
            }
            match (root, parts.get(1)) {
                ("params", Some(name)) if !self.params.contains(name) => {
                    let mut msg =
                        format!("undefined variable `params.{name}`: the DAG has no such param");
                    if let Some(c) = crate::diag::closest(name, self.params.iter().copied()) {
                        msg.push_str(&format!(" (did you mean `{c}`?)"));
                    }
                    out.push(msg);
                }
                ("partition", _) if !self.partitioned => out.push(
                    "`partition` is only defined in partitioned DAGs (add `partitions:`)".into(),
                ),
                ("partition", Some(field)) if !PARTITION_FIELDS.contains(field) => {
                    out.push(format!(
                        "`partition` has no `{field}`; it has {}",
                        crate::diag::list_names(PARTITION_FIELDS.iter().copied())
                    ))
                }
                ("tasks", Some(name)) => {
                    if !self.all_tasks.contains(name) {
                        out.push(format!(
                            "`tasks.{name}`: there is no task `{name}` in this DAG"
                        ));
                    } else if !self.upstream.contains(*name) {
                        out.push(format!(
                            "`tasks.{name}` is read, but `{name}` is not upstream of this task, so its output may not exist yet (add it to `depends_on`)"
                        ));
                    } else if let Some(field) = parts.get(2) {
                        if !["output", "state"].contains(field) {
                            out.push(format!(
                                "`tasks.{name}.{field}`: a task exposes `output` and `state`"
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// The partition a run covers, as templates see it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PartitionVars {
    pub(crate) key: String,
    pub(crate) name: String,
    pub(crate) start: String,
    pub(crate) end: String,
    pub(crate) last_day: String,
    pub(crate) days: u32,
}

/// An upstream task's result, as templates see it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TaskVars {
    pub(crate) state: String,
    pub(crate) output: serde_json::Value,
}

/// Everything a task's templates can read.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RenderContext {
    pub(crate) ds: String,
    pub(crate) ds_nodash: String,
    pub(crate) ts: String,
    pub(crate) logical_date: String,
    pub(crate) data_interval_start: String,
    pub(crate) data_interval_end: String,
    pub(crate) run_id: String,
    pub(crate) dag: String,
    pub(crate) task: String,
    pub(crate) try_number: u32,
    pub(crate) params: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) partition: Option<PartitionVars>,
    pub(crate) tasks: BTreeMap<String, TaskVars>,
    pub(crate) profile: String,
    /// `<state directory>/data`, absolute: where data operators keep files by default.
    pub(crate) data_dir: String,
    /// The profile's warehouse: `warehouse.dialect` is `duckdb` or `snowflake`.
    pub(crate) warehouse: WarehouseVars,
}

/// What templates know of the warehouse, to write SQL both backends accept.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WarehouseVars {
    pub(crate) dialect: String,
}

impl RenderContext {
    pub(crate) fn to_value(&self) -> Value {
        Value::from(minijinja::value::Serde(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates() -> (tempfile::TempDir, Templates) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("macros.sql"),
            "{% macro upper(x) %}{{ x | upper }}{% endmacro %}",
        )
        .unwrap();
        let t = Templates::new(dir.path());
        (dir, t)
    }

    #[test]
    fn renders_with_imported_macros() {
        let (_d, t) = templates();
        let ctx = Value::from(minijinja::value::Serde(serde_json::json!({"name": "oct"})));
        let out = t
            .render("{% import 'macros.sql' as m %}{{ m.upper(name) }}", &ctx)
            .unwrap();
        assert_eq!(out, "OCT");
    }

    #[test]
    fn what_crashes_the_template_engine_is_an_error_not_a_panic() {
        let (dir, t) = templates();
        let bad = "{% import 'macros.sql' as a-b %}{{ a }}";
        let e = t.check(bad).unwrap_err();
        assert!(e.message.contains("cannot compile"), "{}", e.message);
        let e = t.render(bad, &Value::UNDEFINED).unwrap_err();
        assert!(e.message.contains("cannot compile"), "{}", e.message);
        // In a file under templates/ too; the others still compile.
        std::fs::write(dir.path().join("broken.j2"), bad).unwrap();
        let broken = t.check_all_files();
        assert_eq!(broken.len(), 1, "{broken:?}");
        assert!(broken[0].0.ends_with("broken.j2"));
        // Panics elsewhere are not hidden.
        assert!(!GUARDED.with(std::cell::Cell::get));
    }

    #[test]
    fn undefined_names_the_expression() {
        let (_d, t) = templates();
        let ctx = Value::from(minijinja::value::Serde(
            serde_json::json!({"params": {"a": 1}}),
        ));
        let e = t.render("x {{ params.b }} y", &ctx).unwrap_err();
        assert_eq!(e.message, "undefined variable `params.b`");
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let (_d, t) = templates();
        let e = t.check("ok\n{{ broken ").unwrap_err();
        assert!(
            e.message.starts_with("template syntax error"),
            "{}",
            e.message
        );
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn missing_imports_are_found_statically() {
        let (_d, t) = templates();
        let e = t.check("{% import 'nope.sql' as n %}{{ 1 }}").unwrap_err();
        assert!(e.message.contains("imports `nope.sql`"), "{}", e.message);
    }

    #[test]
    fn scope_checks_references() {
        let (_d, t) = templates();
        let vars = t
            .check("{{ params.rows_per_dya }} {{ parms }} {{ tasks.load.output.rows }} {{ tasks.later.output }} {{ partition.key }} {{ env('HOME') }}")
            .unwrap();
        let scope = Scope {
            params: ["rows_per_day"].into_iter().collect(),
            partitioned: false,
            all_tasks: ["load", "later", "me"].into_iter().collect(),
            upstream: ["load".to_string()].into_iter().collect(),
        };
        let problems = scope.check(&vars).join("\n");
        assert!(
            problems.contains(
                "`params.rows_per_dya`: the DAG has no such param (did you mean `rows_per_day`?)"
            ),
            "{problems}"
        );
        assert!(
            problems.contains("undefined variable `parms` (did you mean `params`?)"),
            "{problems}"
        );
        assert!(problems.contains("`later` is not upstream"), "{problems}");
        assert!(
            problems.contains("only defined in partitioned DAGs"),
            "{problems}"
        );
        assert!(!problems.contains("tasks.load"), "{problems}");
        assert!(!problems.contains("env"), "{problems}");
    }
}
