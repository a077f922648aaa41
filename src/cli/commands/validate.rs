//! `validate`, `schema`, `render` and `graph`: looking at pipelines without running them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::args::{GraphFormat, Target};
use crate::cli::output::plural;
use crate::cli::{CliResult, Session, fail};
use crate::plan::{placeholder_upstream, prepare_task};
use crate::state::Trigger;

pub(super) fn validate(s: &Session, paths: &[PathBuf]) -> CliResult {
    let mut files = Vec::new();
    if paths.is_empty() {
        files = s.project.pipeline_files()?;
    }
    for p in paths {
        if p.is_dir() {
            files.extend(crate::project::pipeline_files_in(p)?);
        } else {
            files.push(p.clone());
        }
    }
    if files.is_empty() {
        return Err(fail(format!(
            "no pipeline files (*.yaml) found in {}",
            s.project.pipelines_dir.display()
        )));
    }
    let (dags, mut diags) = s.project.validate(&files);
    if s.store_url()
        .as_deref()
        .is_some_and(crate::state::is_shared_url)
    {
        for dag in &dags {
            diags.extend(dag.single_process_tasks(s.g.profile));
        }
    }
    if diags.is_empty() {
        let names: Vec<&str> = dags.iter().map(|d| d.pipeline.dag.as_str()).collect();
        println!(
            "ok: {} valid ({})",
            plural(dags.len(), "pipeline"),
            names.join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    for diag in &diags.0 {
        println!("{diag}");
    }
    let files_with: std::collections::BTreeSet<&Path> =
        diags.0.iter().map(|d| d.file.as_path()).collect();
    eprintln!(
        "{} in {}",
        plural(diags.len(), "problem"),
        plural(files_with.len(), "file")
    );
    Ok(ExitCode::FAILURE)
}

pub(super) fn schema() -> CliResult {
    let schema = crate::project::pipeline_schema();
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn graph(s: &Session, dag: &str, format: GraphFormat) -> CliResult {
    let dag = s.dag(dag)?;
    match format {
        GraphFormat::Text => print!("{}", dag.graph.to_text(&dag.pipeline)),
        GraphFormat::Dot => print!("{}", dag.graph.to_dot(&dag.pipeline)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a task's rendered config (and a `sql` task's rendered files) without running it.
pub(super) fn render(s: &Session, dag: &str, task: &str, target: &Target) -> CliResult {
    let dag = s.dag(dag)?;
    let p = &dag.pipeline;
    let t = crate::cli::task(&dag, task)?;
    let plan = s.plan(&dag, target, None)?;
    let run_id = plan.run_id(&p.dag, Trigger::Manual);
    let profile = s.g.profile;
    // Upstream outputs do not exist without a run: each one the task's templates read shows as
    // a placeholder naming it.
    let upstream = placeholder_upstream(&dag, t, profile, &s.project.templates);
    let env = s.run_env();
    let ctx = plan.context(p, &run_id, task, 1, upstream, &env);
    let prepared = prepare_task(&s.project.templates, &s.project.dir, p, t, &ctx)?;
    println!(
        "# dag: {}  task: {task}  operator: {}  profile: {profile}",
        p.dag,
        t.for_profile(profile).0,
    );
    println!(
        "# run covers {} .. {}",
        ctx.data_interval_start, ctx.data_interval_end
    );
    print!(
        "{}",
        serde_yaml_ng::to_string(&prepared.operator.config_json())?
    );
    let extras = prepared
        .operator
        .rendered_extras(&crate::operators::RenderExtras {
            project_dir: &s.project.dir,
            templates: &s.project.templates,
            context: &ctx.to_value(),
        })
        .map_err(fail)?;
    for (title, text) in extras {
        println!("\n-- {title}\n{}", text.trim_end());
    }
    Ok(ExitCode::SUCCESS)
}
