//! `run` and `run --resume`: one run in the foreground, with live progress.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::args::Target;
use crate::cli::output::plural_noun;
use crate::cli::{CliError, CliResult, Session, display, fail, stop_on_signal};
use crate::executor::{ExecOptions, Executor, RunOutcome, create_run, resume_run};
use crate::project::Dag;
use crate::spec::Profile;
use crate::state::{Owner, RunState, StateStore, TaskState, Trigger};

/// The lease a foreground run holds (renewed while it runs).
const LEASE: Duration = Duration::from_secs(30);

pub(super) async fn run(
    s: &Session,
    dag: Option<&str>,
    target: &Target,
    concurrency: usize,
) -> CliResult {
    let name = dag.ok_or_else(|| fail("name a DAG to run, or pass --resume RUN_ID"))?;
    let dag = s.dag(name)?;
    let store = s.store()?;
    let owner = Owner::current(LEASE);
    let plan = s.plan(&dag, target, Some(store.as_ref()))?;
    let rec = create_run(store.as_ref(), &dag, &plan, Trigger::Manual, Some(&owner))?;
    execute(s, store, &dag, &rec.run_id, &owner, concurrency).await
}

pub(super) async fn resume(
    s: &Session,
    dag: Option<&str>,
    run_id: &str,
    concurrency: usize,
) -> CliResult {
    let store = s.store()?;
    let rec = store.run(run_id)?.ok_or_else(|| {
        fail(format!(
            "no run with id `{run_id}` in {}",
            s.home().display()
        ))
    })?;
    let dag = s.dag(dag.unwrap_or(&rec.dag))?;
    if dag.pipeline.dag != rec.dag {
        return Err(fail(format!(
            "run `{run_id}` belongs to DAG `{}`, not `{}`",
            rec.dag, dag.pipeline.dag
        )));
    }
    let owner = Owner::current(LEASE);
    resume_run(store.as_ref(), &rec, &owner)?;
    execute(s, store, &dag, run_id, &owner, concurrency).await
}

/// Executes a run this process has claimed, then says how it ended.
async fn execute(
    s: &Session,
    store: Arc<dyn StateStore>,
    dag: &Dag,
    run_id: &str,
    owner: &Owner,
    concurrency: usize,
) -> CliResult {
    println!("{run_id}");
    let executor = Executor {
        store: store.clone(),
        templates: s.project.templates.clone(),
        env: s.run_env(),
        options: ExecOptions {
            concurrency,
            owner: Some(owner.clone()),
            ..ExecOptions::default()
        },
        observer: display::progress_observer(),
    };
    let started = std::time::Instant::now();
    let outcome = executor.execute(dag, run_id, stop_on_signal()).await;
    store.release_run(run_id, owner)?;
    match outcome? {
        RunOutcome::Finished(RunState::Success) => {
            eprintln!(
                "run {run_id} succeeded in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            where_things_are(s, store.as_ref(), run_id)?;
            Ok(ExitCode::SUCCESS)
        }
        RunOutcome::Finished(state) => {
            let failed: Vec<String> = store
                .task_instances(run_id)?
                .into_iter()
                .filter(|t| t.state == TaskState::Failed)
                .map(|t| format!("{} ({})", t.task, t.error.unwrap_or_default()))
                .collect();
            eprintln!(
                "run {run_id} {state}: failed {}: {}",
                plural_noun(failed.len(), "task"),
                failed.join("; ")
            );
            eprintln!("fix the cause, then `windsock run --resume {run_id}`");
            Ok(ExitCode::FAILURE)
        }
        RunOutcome::Interrupted => {
            store.set_run_state(run_id, RunState::Failed)?;
            eprintln!(
                "run {run_id} interrupted; continue it with `windsock run --resume {run_id}`"
            );
            Ok(ExitCode::from(130))
        }
    }
}

/// After a successful run: where its data and dashboards are, and what to run next.
fn where_things_are(s: &Session, store: &dyn StateStore, run_id: &str) -> Result<(), CliError> {
    let home = std::path::absolute(s.home()).unwrap_or_else(|_| s.home().to_path_buf());
    let mut lines = Vec::new();
    match s.g.profile {
        Profile::Local => lines.push(format!(
            "  warehouse: {} (windsock query \"SELECT count(*) FROM RAW.EVENTS\")",
            home.join("warehouse.duckdb").display()
        )),
        Profile::Cloud => lines.push(
            "  warehouse: Snowflake, as SNOWFLAKE_* in the environment say (windsock --profile cloud query ...)"
                .to_string(),
        ),
    }
    lines.push(format!("  files:     {}", home.join("data").display()));
    for t in store.task_instances(run_id)? {
        if let Some(path) = t
            .output
            .as_ref()
            .and_then(|o| o.get("dashboard"))
            .and_then(|p| p.as_str())
        {
            lines.push(format!("  dashboard: {path}"));
        }
    }
    lines.push(
        "  next:      windsock scheduler --ui   (every pipeline on its schedule, and the web UI on http://127.0.0.1:8080)"
            .to_string(),
    );
    lines.push(
        "             windsock ui               (the web UI alone: runs, logs, the dashboard)"
            .to_string(),
    );
    eprintln!("{}", lines.join("\n"));
    Ok(())
}
