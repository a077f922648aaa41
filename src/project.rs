//! A windsock project: the folder holding `pipelines/`, `sql/`, `templates/` and `schemas/`.
//!
//! This is where a pipeline file becomes a validated DAG: the spec's structural checks, the
//! operators' config checks, the task graph, and the static template checks are run together and
//! every problem is reported.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::diag::{ConfigProblem, Diagnostic, Diagnostics, Pos, closest, list_names};
use crate::graph::TaskGraph;
use crate::operators::{self, CheckContext};
use crate::spec::{self, DeCtx, Mode, Node, Pipeline, is_template};
use crate::template::{Scope, Templates};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProjectError {
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error("no DAG named `{name}` in {dir}{}", known_list(.known))]
    UnknownDag {
        name: String,
        dir: String,
        known: Vec<String>,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        " (it holds no pipelines)".into()
    } else {
        format!(
            "; known DAGs: {}",
            list_names(known.iter().map(String::as_str))
        )
    }
}

/// A pipeline that passed every check, with its graph.
#[derive(Debug, Clone)]
pub(crate) struct Dag {
    pub(crate) pipeline: Pipeline,
    pub(crate) graph: TaskGraph,
}

impl Dag {
    /// Its tasks that open the embedded DuckDB warehouse under `profile` (the local one): DuckDB
    /// lets one process at a time open its file, so schedulers sharing a state store cannot
    /// run them side by side.
    pub(crate) fn single_process_tasks(&self, profile: spec::Profile) -> Diagnostics {
        let mut diags = Diagnostics::default();
        if profile != spec::Profile::Local {
            return diags;
        }
        for task in self.pipeline.tasks.values() {
            let (op, with) = task.for_profile(profile);
            if operators::lookup(op).is_some_and(|e| (e.uses_warehouse)(with)) {
                diags.push(Diagnostic::new(
                    &self.pipeline.file,
                    task.pos,
                    format!(
                        "task `{}` uses the local DuckDB warehouse, which one process at a time may open: \
                         with a state store shared by several schedulers (--state postgres://…) run the \
                         cloud profile (Snowflake and Kafka), or keep the embedded state with one scheduler",
                        task.name
                    ),
                ));
            }
        }
        diags
    }
}

pub(crate) struct Project {
    pub(crate) dir: PathBuf,
    pub(crate) pipelines_dir: PathBuf,
    pub(crate) templates: std::sync::Arc<Templates>,
}

impl Project {
    /// The project rooted at `dir`, with pipelines in `pipelines_dir` (default `dir/pipelines`).
    pub(crate) fn open(dir: &Path, pipelines_dir: Option<&Path>) -> Project {
        let dir = dir.to_path_buf();
        let pipelines_dir = pipelines_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join("pipelines"));
        let templates = std::sync::Arc::new(Templates::new(&dir.join("templates")));
        Project {
            dir,
            pipelines_dir,
            templates,
        }
    }

    /// The pipeline files (`*.yaml`, `*.yml`) in the pipelines folder, sorted.
    pub(crate) fn pipeline_files(&self) -> Result<Vec<PathBuf>, ProjectError> {
        pipeline_files_in(&self.pipelines_dir)
    }

    /// Validates files, reporting every problem. Also checks that DAG ids are unique across them
    /// and that every file under `templates/` compiles.
    pub(crate) fn validate(&self, files: &[PathBuf]) -> (Vec<Dag>, Diagnostics) {
        let mut diags = Diagnostics::default();
        let mut dags = Vec::new();
        for (path, e) in self.templates.check_all_files() {
            let pos = Pos::new(e.line.unwrap_or(1) as u32, 1);
            diags.push(Diagnostic::new(&path, pos, e.message));
        }
        let mut ids: BTreeMap<String, PathBuf> = BTreeMap::new();
        for file in files {
            match self.validate_file(file) {
                Ok(dag) => {
                    if let Some(first) = ids.get(&dag.pipeline.dag) {
                        diags.push(Diagnostic::new(
                            file,
                            dag.pipeline.key_pos("dag"),
                            format!(
                                "dag id `{}` is already used by {}",
                                dag.pipeline.dag,
                                first.display()
                            ),
                        ));
                    } else {
                        ids.insert(dag.pipeline.dag.clone(), file.clone());
                    }
                    dags.push(dag);
                }
                Err(d) => diags.extend(d),
            }
        }
        (dags, diags.sorted())
    }

    /// Every check on one file.
    pub(crate) fn validate_file(&self, file: &Path) -> Result<Dag, Diagnostics> {
        let (pipeline, mut diags) = spec::load_file(file);
        let Some(pipeline) = pipeline else {
            return Err(diags.sorted());
        };
        let graph = match TaskGraph::build(&pipeline) {
            Ok(g) => Some(g),
            Err(d) => {
                diags.extend(d);
                None
            }
        };
        diags.extend(self.check_tasks(&pipeline, graph.as_ref()));
        match graph {
            Some(graph) if diags.is_empty() => Ok(Dag { pipeline, graph }),
            _ => Err(diags.sorted()),
        }
    }

    fn check_tasks(&self, p: &Pipeline, graph: Option<&TaskGraph>) -> Diagnostics {
        let de = DeCtx::new(&p.file, Mode::Validate);
        let check_cx = CheckContext {
            project_dir: &self.dir,
            templates: &self.templates,
        };
        let mut diags = Diagnostics::default();
        for task in p.tasks.values() {
            for (profile, operator, with, path) in task.all_variants() {
                let op_node = match profile {
                    None => task.node.get("operator"),
                    Some(pr) => task
                        .node
                        .get("profiles")
                        .and_then(|n| n.get(pr.name()))
                        .and_then(|n| n.get("operator")),
                };
                let op_pos = op_node.map(|n| n.pos).unwrap_or(task.pos);
                let Some(entry) = operators::lookup(operator) else {
                    if profile.is_some() && op_node.is_none() {
                        continue; // inherited from the task, reported there
                    }
                    let mut d = Diagnostic::new(
                        &p.file,
                        op_pos,
                        format!("task `{}`: unknown operator `{operator}`", task.name),
                    );
                    let known = list_names(operators::names());
                    d = match closest(operator, operators::names()) {
                        Some(c) => {
                            d.with_hint(format!("did you mean `{c}`? Known operators: {known}"))
                        }
                        None => d.with_hint(format!("known operators: {known}")),
                    };
                    diags.push(d);
                    continue;
                };
                if let Some(op) = (entry.parse)(&de, with, &path) {
                    for problem in op.check(&check_cx) {
                        diags.push(problem_diagnostic(p, task, with, &problem));
                    }
                }
                diags.extend(self.check_templates(p, graph, &task.name, &path, with));
            }
        }
        diags.extend(de.into_diags());
        diags
    }

    /// Compiles each template string of a task and checks what it refers to.
    fn check_templates(
        &self,
        p: &Pipeline,
        graph: Option<&TaskGraph>,
        task: &str,
        path: &str,
        with: &Node,
    ) -> Diagnostics {
        let mut diags = Diagnostics::default();
        let scope = Scope {
            params: p.params.keys().map(String::as_str).collect(),
            partitioned: p.partitions.is_some(),
            all_tasks: p.tasks.keys().map(String::as_str).collect(),
            upstream: graph.map(|g| g.ancestors(task)).unwrap_or_default(),
        };
        let skip_refs = graph.is_none();
        with.walk_strings(path, &mut |path, node, s| {
            if !is_template(s) {
                return;
            }
            match self.templates.check(s) {
                Err(e) => {
                    let pos = template_pos(node, s, e.line);
                    let msg = match &e.file {
                        Some(f) => format!("{path}: in template `{f}`: {}", e.message),
                        None => format!("{path}: {}", e.message),
                    };
                    diags.push(Diagnostic::new(&p.file, pos, msg));
                }
                Ok(vars) if !skip_refs => {
                    for problem in scope.check(&vars) {
                        diags.push(Diagnostic::new(
                            &p.file,
                            node.pos,
                            format!("{path}: {problem}"),
                        ));
                    }
                }
                Ok(_) => {}
            }
        });
        diags
    }

    /// Finds a DAG by id (searching the pipelines folder) or by file path, and validates it.
    pub(crate) fn load_dag(&self, name_or_path: &str) -> Result<Dag, ProjectError> {
        let as_path = Path::new(name_or_path);
        let file = if name_or_path.ends_with(".yaml")
            || name_or_path.ends_with(".yml")
            || name_or_path.contains('/')
        {
            as_path.to_path_buf()
        } else {
            self.find_dag_file(name_or_path)?
        };
        self.validate_file(&file).map_err(ProjectError::Invalid)
    }

    fn find_dag_file(&self, name: &str) -> Result<PathBuf, ProjectError> {
        let files = self.pipeline_files()?;
        let mut known = BTreeSet::new();
        for file in &files {
            if let Some(id) = dag_id_of(file) {
                if id == name {
                    return Ok(file.clone());
                }
                known.insert(id);
            }
        }
        let known: Vec<String> = known.into_iter().collect();
        Err(ProjectError::UnknownDag {
            name: name.to_string(),
            dir: self.pipelines_dir.display().to_string(),
            known,
        })
    }
}

/// A problem an operator's checks found in a task's `with:` block, at the line of the key it is
/// about. Validation and the executor (checking a rendered config) both report it this way.
pub(crate) fn problem_diagnostic(
    p: &Pipeline,
    task: &crate::spec::Task,
    with: &Node,
    problem: &ConfigProblem,
) -> Diagnostic {
    let pos = problem
        .key
        .as_deref()
        .and_then(|k| with.get(k))
        .map(|n| n.pos)
        .unwrap_or(with.pos);
    Diagnostic::new(
        &p.file,
        pos,
        format!("task `{}`: {}", task.name, problem.message),
    )
}

/// Where a template error sits in the file: the scalar's position is its first line (the first
/// content line for `|` and `>` blocks), so template line N is N - 1 lines below it.
fn template_pos(node: &Node, source: &str, line: Option<usize>) -> Pos {
    match line {
        Some(l) if source.contains('\n') && l > 0 => {
            Pos::new(node.pos.line + l as u32 - 1, node.pos.col)
        }
        _ => node.pos,
    }
}

/// The `dag:` value of a file, read without validating the rest.
fn dag_id_of(file: &Path) -> Option<String> {
    let source = std::fs::read_to_string(file).ok()?;
    let root = spec::yaml::parse(file, &source).ok()?;
    root.get("dag")?.as_str().map(str::to_string)
}

pub(crate) fn pipeline_files_in(dir: &Path) -> Result<Vec<PathBuf>, ProjectError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ProjectError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml") | Some("yml")
                )
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The JSON Schema of the pipeline format, generated from the Rust types, with each task's
/// `with:` described by its operator's config (so editors complete and check it).
pub(crate) fn pipeline_schema() -> serde_json::Value {
    let mut generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let op_schemas: Vec<(&str, &str, serde_json::Value)> = operators::registry()
        .iter()
        .map(|e| (e.name, e.summary, (e.schema)(&mut generator).to_value()))
        .collect();
    let mut root = generator
        .into_root_schema_for::<spec::PipelineSpec>()
        .to_value();
    if let Some(task) = root
        .get_mut("definitions")
        .and_then(|d| d.get_mut("TaskSpec"))
    {
        let names: Vec<&str> = op_schemas.iter().map(|(n, _, _)| *n).collect();
        if let Some(op) = task.pointer_mut("/properties/operator") {
            op["enum"] = serde_json::json!(names);
        }
        let branches: Vec<serde_json::Value> = op_schemas
            .into_iter()
            .map(|(name, summary, schema)| {
                let mut with = schema;
                if with.get("description").is_none() {
                    with["description"] = serde_json::json!(format!("Config of `{name}`: {summary}."));
                }
                serde_json::json!({
                    "if": { "properties": { "operator": { "const": name } }, "required": ["operator"] },
                    "then": { "properties": { "with": with } }
                })
            })
            .collect();
        task["allOf"] = serde_json::json!(branches);
    }
    root
}

#[cfg(test)]
mod fuzz_tests;
