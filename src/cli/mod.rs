//! The command line: argument parsing, one handler per command, and the edge where every error
//! becomes one clear sentence for a person (never a debug dump).

pub mod args;
mod display;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use crate::diag::Diagnostics;
use crate::executor::{ExecOptions, Executor, RunEnv, RunOutcome};
use crate::plan::RunPlan;
use crate::project::{Dag, Project, ProjectError};
use crate::state::{RunFilter, RunState, SqliteStore, StateStore, TaskState, Trigger};
use args::{Cli, Command, Global, GraphFormat, LogFormat, Target};

/// An error for a person: printed as `error: <message>` and exit code 1.
#[derive(Debug)]
pub struct CliError(String);

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

fn fail(msg: impl Into<String>) -> CliError {
    CliError(msg.into())
}

type CliResult = Result<ExitCode, CliError>;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon reports what it does; one-shot commands only warn.
    let daemon = matches!(cli.command, Command::Scheduler { .. });
    init_logging(&cli.global, daemon);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli));
    drop(runtime);
    crate::connections::warehouse::close_all();
    crate::connections::kafka::broker::stop_started();
    match result {
        Ok(code) => code,
        Err(CliError(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(g: &Global, daemon: bool) {
    let default = match g.verbose {
        0 if daemon => "info",
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WINDSOCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match g.log_format {
        LogFormat::Human => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn dispatch(cli: Cli) -> CliResult {
    let g = &cli.global;
    let project = Project::open(&g.project, None);
    match cli.command {
        Command::Validate { paths } => validate(&project, &paths),
        Command::Schema => {
            let schema = crate::project::pipeline_schema();
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Render { dag, task, target } => render(g, &project, &dag, &task, &target),
        Command::Graph { dag, format } => {
            let dag = load_dag(&project, &dag)?;
            match format {
                GraphFormat::Text => print!("{}", dag.graph.to_text(&dag.pipeline)),
                GraphFormat::Dot => print!("{}", dag.graph.to_dot(&dag.pipeline)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            dag,
            target,
            resume,
            concurrency,
        } => {
            run(
                g,
                &project,
                dag.as_deref(),
                &target,
                resume.as_deref(),
                concurrency,
            )
            .await
        }
        Command::Stream {
            dag,
            tasks,
            follow,
            target,
        } => stream(g, &project, &dag, &tasks, follow, &target).await,
        Command::Broker => {
            let addr =
                crate::connections::kafka::broker::ensure(&g.home).map_err(|e| fail(e.message))?;
            println!("{addr}");
            eprintln!(
                "the embedded Kafka broker of {} listens on {addr}; Ctrl-C stops it",
                g.home.display()
            );
            wait_for_signal().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs {
            dag,
            state,
            limit,
            json,
        } => runs(g, dag, state.as_deref(), limit, json),
        Command::Tasks { run_id, json } => tasks(g, &run_id, json),
        Command::Logs {
            run_id,
            task,
            try_number,
            follow,
            json,
        } => logs(g, &run_id, &task, try_number, follow, json).await,
        Command::Scheduler {
            pipelines,
            max_tasks,
            grace,
            poll,
        } => scheduler(g, pipelines, max_tasks, grace, poll).await,
        Command::SampleData {
            months,
            rows_per_day,
            out,
            seed,
            dirt,
        } => sample_data(&months, rows_per_day, &out, seed, dirt).await,
        Command::Query {
            sql,
            connection,
            format,
        } => query(g, &sql, &connection, format).await,
        Command::Pause { dag } => pause(g, &project, &dag, true),
        Command::Unpause { dag } => pause(g, &project, &dag, false),
        Command::Trigger { dag, target, wait } => trigger(g, &project, &dag, &target, wait).await,
        Command::Dags { json } => dags(g, &project, json),
        Command::Backfill {
            dag,
            from,
            to,
            rerun_failed,
            rerun_all,
            dry_run,
            max_active,
        } => {
            let opts = crate::scheduler::backfill::BackfillOptions {
                rerun_failed,
                rerun_all,
                max_active: 0,
                concurrency: 8,
            };
            backfill(g, &project, &dag, &from, &to, opts, dry_run, max_active).await
        }
        Command::Clear {
            run_id,
            tasks,
            downstream,
        } => clear(g, &project, &run_id, &tasks, downstream),
    }
}

fn load_dag(project: &Project, name: &str) -> Result<Dag, CliError> {
    project.load_dag(name).map_err(|e| match e {
        ProjectError::Invalid(d) => fail(format!(
            "`{name}` does not validate ({} problem{}):\n{d}",
            d.len(),
            if d.len() == 1 { "" } else { "s" }
        )),
        other => fail(other.to_string()),
    })
}

fn open_store(g: &Global) -> Result<Arc<SqliteStore>, CliError> {
    Ok(Arc::new(SqliteStore::open(&g.home.join("state.db"))?))
}

fn validate(project: &Project, paths: &[PathBuf]) -> CliResult {
    let mut files = Vec::new();
    if paths.is_empty() {
        files = project.pipeline_files()?;
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
            project.pipelines_dir.display()
        )));
    }
    let (dags, diags) = project.validate(&files);
    if diags.is_empty() {
        let names: Vec<&str> = dags.iter().map(|d| d.pipeline.dag.as_str()).collect();
        println!(
            "ok: {} pipeline{} valid ({})",
            dags.len(),
            if dags.len() == 1 { "" } else { "s" },
            names.join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    print_diagnostics(&diags);
    let files_with: std::collections::BTreeSet<&Path> =
        diags.0.iter().map(|d| d.file.as_path()).collect();
    eprintln!(
        "{} problem{} in {} file{}",
        diags.len(),
        if diags.len() == 1 { "" } else { "s" },
        files_with.len(),
        if files_with.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::FAILURE)
}

fn print_diagnostics(d: &Diagnostics) {
    for diag in &d.0 {
        println!("{diag}");
    }
}

/// The plan for `--partition`/`--date`, or a sensible default: the next partition without a
/// successful run, or today.
fn plan_for(
    dag: &Dag,
    target: &Target,
    store: Option<&dyn StateStore>,
) -> Result<RunPlan, CliError> {
    let p = &dag.pipeline;
    if let Some(key) = &target.partition {
        return Ok(RunPlan::for_partition(p, key)?);
    }
    if let Some(d) = &target.date {
        let date: crate::spec::Date = d.parse().map_err(fail)?;
        return Ok(RunPlan::for_date(p, date.0)?);
    }
    if let Some(parts) = &p.partitions {
        let done: std::collections::HashSet<String> = match store {
            Some(s) => s
                .runs(&RunFilter {
                    dag: Some(p.dag.clone()),
                    state: Some(RunState::Success),
                    limit: None,
                })?
                .into_iter()
                .map(|r| r.run_key)
                .collect(),
            None => Default::default(),
        };
        let months = parts.monthly.months();
        let next = months
            .iter()
            .find(|m| !done.contains(&m.to_string()))
            .ok_or_else(|| {
                fail(format!(
                    "every partition of `{}` ({}..{}) has succeeded; pass --partition to run one again",
                    p.dag, parts.monthly.from, parts.monthly.to
                ))
            })?;
        return Ok(RunPlan::month(*next));
    }
    Ok(RunPlan::for_date(p, chrono::Utc::now().date_naive())?)
}

fn render(g: &Global, project: &Project, dag: &str, task: &str, target: &Target) -> CliResult {
    let dag = load_dag(project, dag)?;
    let p = &dag.pipeline;
    let Some(t) = p.task(task) else {
        let known: Vec<&str> = p.tasks.keys().map(String::as_str).collect();
        return Err(fail(format!(
            "DAG `{}` has no task `{task}`; its tasks are {}",
            p.dag,
            crate::diag::list_names(known)
        )));
    };
    let plan = plan_for(&dag, target, None)?;
    let run_id = plan.run_id(&p.dag, Trigger::Manual);
    // Upstream outputs do not exist without a run: each one the task's templates read shows as
    // a placeholder naming it, `<tasks.prepare.output.output>`.
    let mut read: std::collections::BTreeSet<String> = Default::default();
    let (_, with) = t.for_profile(g.profile.name());
    let _ = with.map_strings("with", &mut |_, s| {
        if let Ok(vars) = project.templates.check(s) {
            read.extend(vars);
        }
        Ok::<_, std::convert::Infallible>(None)
    });
    let upstream = dag
        .graph
        .ancestors(task)
        .into_iter()
        .map(|a| {
            let prefix = format!("tasks.{a}.output.");
            let mut output = serde_json::json!({});
            for path in read.iter().filter(|v| v.starts_with(&prefix)) {
                let keys: Vec<&str> = path[prefix.len()..].split('.').collect();
                let mut at = &mut output;
                for (i, k) in keys.iter().enumerate() {
                    let Some(o) = at.as_object_mut() else {
                        break;
                    };
                    at = o.entry(k.to_string()).or_insert_with(|| {
                        if i + 1 == keys.len() {
                            serde_json::Value::String(format!("<{path}>"))
                        } else {
                            serde_json::json!({})
                        }
                    });
                }
            }
            (
                a.clone(),
                crate::template::TaskVars {
                    state: "success".into(),
                    output,
                },
            )
        })
        .collect();
    let env = RunEnv {
        project_dir: project.dir.clone(),
        home: g.home.clone(),
        profile: g.profile.name().to_string(),
    };
    let ctx = plan.context(p, &run_id, task, 1, upstream, &env);
    let prepared = crate::plan::prepare_task(&project.templates, p, t, &ctx)?;
    println!(
        "# dag: {}  task: {task}  operator: {}  profile: {}",
        p.dag,
        t.for_profile(g.profile.name()).0,
        g.profile.name()
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
            project_dir: &project.dir,
            templates: &project.templates,
            context: &ctx.to_value(),
        })
        .map_err(fail)?;
    for (title, text) in extras {
        println!("\n-- {title}\n{}", text.trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(
    g: &Global,
    project: &Project,
    dag_arg: Option<&str>,
    target: &Target,
    resume: Option<&str>,
    concurrency: usize,
) -> CliResult {
    let store = open_store(g)?;
    let owner = crate::state::Owner::current(std::time::Duration::from_secs(30));
    let (dag, run_id) = match resume {
        Some(run_id) => {
            let rec = store.run(run_id)?.ok_or_else(|| {
                fail(format!("no run with id `{run_id}` in {}", g.home.display()))
            })?;
            let dag = load_dag(project, dag_arg.unwrap_or(&rec.dag))?;
            if dag.pipeline.dag != rec.dag {
                return Err(fail(format!(
                    "run `{run_id}` belongs to DAG `{}`, not `{}`",
                    rec.dag, dag.pipeline.dag
                )));
            }
            let todo: Vec<String> = store
                .task_instances(run_id)?
                .into_iter()
                .filter(|t| !matches!(t.state, TaskState::Success | TaskState::Skipped))
                .map(|t| t.task)
                .collect();
            store.clear_tasks(run_id, &todo)?;
            if !store.claim_run(run_id, &owner, &crate::state::owner_is_dead)? {
                let holder = store.run(run_id)?.and_then(|r| r.owner).unwrap_or_default();
                return Err(fail(format!(
                    "run `{run_id}` is being executed by another process ({holder}); wait for it or stop that process"
                )));
            }
            (dag, run_id.to_string())
        }
        None => {
            let name = dag_arg.ok_or_else(|| fail("name a DAG to run, or pass --resume RUN_ID"))?;
            let dag = load_dag(project, name)?;
            let plan = plan_for(&dag, target, Some(store.as_ref()))?;
            let mut run_id = plan.run_id(&dag.pipeline.dag, Trigger::Manual);
            let tasks: Vec<String> = dag.graph.order().to_vec();
            let mut attempt = 1;
            loop {
                let mut new = plan.new_run(&dag.pipeline, Trigger::Manual, run_id.clone());
                new.owner = Some(owner.clone());
                match store.create_run(&new, &tasks) {
                    Ok(_) => break,
                    Err(crate::state::StoreError::Sqlite { .. }) if attempt < 5 => {
                        attempt += 1;
                        run_id = format!(
                            "{}_{attempt}",
                            plan.run_id(&dag.pipeline.dag, Trigger::Manual)
                        );
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            (dag, run_id)
        }
    };
    println!("{run_id}");
    let executor = Executor {
        store: store.clone(),
        templates: project.templates.clone(),
        env: RunEnv {
            project_dir: project.dir.clone(),
            home: g.home.clone(),
            profile: g.profile.name().to_string(),
        },
        options: ExecOptions {
            concurrency,
            owner: Some(owner.clone()),
            ..ExecOptions::default()
        },
        observer: display::progress_observer(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    let started = std::time::Instant::now();
    let outcome = executor.execute(&dag, &run_id, stop_rx).await;
    store.release_run(&run_id, &owner)?;
    match outcome? {
        RunOutcome::Finished(RunState::Success) => {
            eprintln!(
                "run {run_id} succeeded in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        RunOutcome::Finished(state) => {
            let failed: Vec<String> = store
                .task_instances(&run_id)?
                .into_iter()
                .filter(|t| t.state == TaskState::Failed)
                .map(|t| format!("{} ({})", t.task, t.error.unwrap_or_default()))
                .collect();
            eprintln!(
                "run {run_id} {state}: failed task{}: {}",
                if failed.len() == 1 { "" } else { "s" },
                failed.join("; ")
            );
            eprintln!("fix the cause, then `windsock run --resume {run_id}`");
            Ok(ExitCode::FAILURE)
        }
        RunOutcome::Interrupted => {
            store.set_run_state(&run_id, RunState::Failed)?;
            eprintln!(
                "run {run_id} interrupted; continue it with `windsock run --resume {run_id}`"
            );
            Ok(ExitCode::from(130))
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
/// `windsock stream`: the DAG's streaming tasks, side by side, outside a run.
async fn stream(
    g: &Global,
    project: &Project,
    dag: &str,
    names: &[String],
    follow: bool,
    target: &Target,
) -> CliResult {
    let dag = load_dag(project, dag)?;
    let p = &dag.pipeline;
    let profile = g.profile.name().to_string();
    let plan = plan_for(&dag, target, None)?;
    let env = RunEnv {
        project_dir: project.dir.clone(),
        home: g.home.clone(),
        profile: profile.clone(),
    };
    let run_id = format!("stream__{}", chrono::Utc::now().format("%Y%m%dT%H%M%S"));
    let wanted: Vec<&str> = if names.is_empty() {
        p.tasks.keys().map(String::as_str).collect()
    } else {
        names.iter().map(String::as_str).collect()
    };
    let mut jobs = Vec::new();
    for name in wanted {
        let Some(t) = p.task(name) else {
            let known: Vec<&str> = p.tasks.keys().map(String::as_str).collect();
            return Err(fail(format!(
                "DAG `{}` has no task `{name}`; its tasks are {}",
                p.dag,
                crate::diag::list_names(known)
            )));
        };
        let op_name = t.for_profile(&profile).0;
        let streams = crate::operators::lookup(op_name).is_some_and(|e| e.streams);
        if !streams {
            if names.is_empty() {
                continue;
            }
            return Err(fail(format!(
                "task `{name}` ({op_name}) does not stream; `windsock stream` runs kafka_to_warehouse and stream_aggregate tasks"
            )));
        }
        let ctx = plan.context(p, &run_id, name, 1, Default::default(), &env);
        let prepared = crate::plan::prepare_task(&project.templates, p, t, &ctx)?;
        let operator = if follow {
            prepared.operator.follow().unwrap_or(prepared.operator)
        } else {
            prepared.operator
        };
        let log_path = env.log_path(&p.dag, &run_id, name, 1);
        let log = crate::operators::TaskLog::create(&log_path)
            .map_err(|e| fail(format!("cannot create {}: {e}", log_path.display())))?;
        let task_ctx = crate::operators::TaskContext {
            dag: p.dag.clone(),
            run_id: run_id.clone(),
            task: name.to_string(),
            try_number: 1,
            project_dir: env.project_dir.clone(),
            home: env.home.clone(),
            profile: profile.clone(),
            log,
            env: Vec::new(),
            on_process: std::sync::Arc::new(|_| {}),
            templates: project.templates.clone(),
            template_context: ctx.to_value(),
            deferred_state: None,
            stop: Default::default(),
        };
        eprintln!("{name}: {op_name}, log {}", log_path.display());
        jobs.push((name.to_string(), operator, task_ctx));
    }
    if jobs.is_empty() {
        return Err(fail(format!(
            "DAG `{}` has no streaming task (kafka_to_warehouse or stream_aggregate)",
            p.dag
        )));
    }
    if follow {
        eprintln!("streaming until Ctrl-C");
    }
    let stops: Vec<_> = jobs.iter().map(|(_, _, c)| c.stop.clone()).collect();
    let all = futures_util::future::join_all(
        jobs.iter()
            .map(|(name, op, ctx)| async move { (name.clone(), op.run(ctx).await) }),
    );
    tokio::pin!(all);
    let results = tokio::select! {
        r = &mut all => r,
        _ = wait_for_signal() => {
            eprintln!("stopping: finishing the current batches");
            for s in &stops {
                s.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            all.await
        }
    };
    let mut ok = true;
    for (name, r) in results {
        match r {
            Ok(crate::operators::TaskResult::Success(v)) => {
                println!("{name}: {}", serde_json::to_string(&v)?);
            }
            Ok(other) => println!("{name}: {other:?}"),
            Err(e) => {
                ok = false;
                eprintln!("error: {name}: {}", e.message);
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

fn fmt_time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

fn fmt_ms(ms: Option<i64>) -> String {
    ms.map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
}

/// Prints rows as aligned columns.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn runs(
    g: &Global,
    dag: Option<String>,
    state: Option<&str>,
    limit: usize,
    json: bool,
) -> CliResult {
    let store = open_store(g)?;
    let state = state
        .map(|s| s.parse::<RunState>())
        .transpose()
        .map_err(fail)?;
    let runs = store.runs(&RunFilter {
        dag,
        state,
        limit: Some(limit),
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.run_id.clone(),
                r.dag.clone(),
                r.partition
                    .clone()
                    .unwrap_or_else(|| r.logical_date.format("%Y-%m-%d %H:%M").to_string()),
                r.trigger.to_string(),
                r.state.to_string(),
                fmt_time(r.started_at),
                fmt_time(r.ended_at),
            ]
        })
        .collect();
    table(
        &[
            "RUN_ID",
            "DAG",
            "PARTITION/DATE",
            "TRIGGER",
            "STATE",
            "STARTED",
            "ENDED",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

fn tasks(g: &Global, run_id: &str, json: bool) -> CliResult {
    let store = open_store(g)?;
    if store.run(run_id)?.is_none() {
        return Err(fail(format!(
            "no run with id `{run_id}` in {}",
            g.home.display()
        )));
    }
    let tis = store.task_instances(run_id)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&tis)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = tis
        .iter()
        .map(|t| {
            vec![
                t.task.clone(),
                t.state.to_string(),
                t.try_number.to_string(),
                fmt_time(t.started_at),
                fmt_ms(t.duration_ms),
                t.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["TASK", "STATE", "TRIES", "STARTED", "DURATION", "ERROR"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

async fn logs(
    g: &Global,
    run_id: &str,
    task: &str,
    try_number: Option<u32>,
    follow: bool,
    json: bool,
) -> CliResult {
    let store = open_store(g)?;
    if store.run(run_id)?.is_none() {
        return Err(fail(format!(
            "no run with id `{run_id}` in {}",
            g.home.display()
        )));
    }
    let tries = store.tries(run_id, task)?;
    if tries.is_empty() {
        return Err(fail(format!(
            "task `{task}` of run `{run_id}` has no tries yet"
        )));
    }
    let chosen = match try_number {
        Some(n) => tries.iter().find(|t| t.try_number == n).ok_or_else(|| {
            fail(format!(
                "task `{task}` has no try {n}; its tries are 1..{}",
                tries.last().map(|t| t.try_number).unwrap_or(0)
            ))
        })?,
        None => tries.last().ok_or_else(|| fail("no tries"))?,
    };
    if follow {
        return follow_log(store.as_ref(), chosen).await;
    }
    let text = std::fs::read_to_string(&chosen.log_path)
        .map_err(|e| fail(format!("cannot read the log {}: {e}", chosen.log_path)))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "try": chosen,
                "log": text,
            }))?
        );
    } else {
        print!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

fn clear(
    g: &Global,
    project: &Project,
    run_id: &str,
    only: &[String],
    downstream: bool,
) -> CliResult {
    let store = open_store(g)?;
    let rec = store
        .run(run_id)?
        .ok_or_else(|| fail(format!("no run with id `{run_id}` in {}", g.home.display())))?;
    let all: Vec<String> = store
        .task_instances(run_id)?
        .into_iter()
        .map(|t| t.task)
        .collect();
    let mut chosen: Vec<String> = if only.is_empty() {
        all.clone()
    } else {
        only.to_vec()
    };
    for t in &chosen {
        if !all.contains(t) {
            return Err(fail(format!(
                "run `{run_id}` has no task `{t}`; its tasks are {}",
                crate::diag::list_names(all.iter().map(String::as_str))
            )));
        }
    }
    if downstream && !only.is_empty() {
        let dag = load_dag(project, &rec.dag)?;
        let mut extra = Vec::new();
        for t in &chosen {
            extra.extend(dag.graph.descendants(t));
        }
        for t in extra {
            if !chosen.contains(&t) && all.contains(&t) {
                chosen.push(t);
            }
        }
    }
    store.clear_tasks(run_id, &chosen)?;
    println!(
        "cleared {} task{} of {run_id}: {}",
        chosen.len(),
        if chosen.len() == 1 { "" } else { "s" },
        chosen.join(", ")
    );
    println!("run them with `windsock run --resume {run_id}`");
    Ok(ExitCode::SUCCESS)
}

/// Prints a try's log as it grows, until the try has finished.
async fn follow_log(store: &dyn StateStore, t: &crate::state::TryRecord) -> CliResult {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut offset = 0u64;
    loop {
        let finished = store
            .tries(&t.run_id, &t.task)?
            .iter()
            .find(|x| x.try_number == t.try_number)
            .is_none_or(|x| x.state != TaskState::Running);
        if let Ok(mut f) = std::fs::File::open(&t.log_path) {
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| fail(format!("cannot read the log {}: {e}", t.log_path)))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)
                .map_err(|e| fail(format!("cannot read the log {}: {e}", t.log_path)))?;
            offset += buf.len() as u64;
            let mut out = std::io::stdout();
            let _ = out.write_all(&buf);
            let _ = out.flush();
        }
        if finished {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn scheduler(
    g: &Global,
    pipelines: Option<PathBuf>,
    max_tasks: usize,
    grace: crate::spec::Duration,
    poll: crate::spec::Duration,
) -> CliResult {
    let project = Arc::new(Project::open(&g.project, pipelines.as_deref()));
    let store = open_store(g)?;
    let env = RunEnv {
        project_dir: project.dir.clone(),
        home: g.home.clone(),
        profile: g.profile.name().to_string(),
    };
    let opts = crate::scheduler::SchedulerOptions {
        max_tasks,
        grace: grace.std(),
        poll: poll.std().max(std::time::Duration::from_millis(50)),
        ..Default::default()
    };
    let (sched, _lock) = crate::scheduler::Scheduler::new(project, store, env, opts).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    sched.run(stop_rx).await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves a DAG argument to its id (a file path is read for its `dag:`).
fn dag_id(project: &Project, name: &str) -> Result<String, CliError> {
    Ok(load_dag(project, name)?.pipeline.dag)
}

fn daemon_note(g: &Global) {
    if crate::scheduler::control::running(&g.home).is_none() {
        eprintln!(
            "note: no scheduler is running on {}; this takes effect when one starts",
            g.home.display()
        );
    }
}

fn pause(g: &Global, project: &Project, dag: &str, paused: bool) -> CliResult {
    let id = dag_id(project, dag)?;
    let store = open_store(g)?;
    store.set_paused(&id, paused)?;
    crate::scheduler::control::wake(&g.home);
    println!("{} {id}", if paused { "paused" } else { "unpaused" });
    daemon_note(g);
    Ok(ExitCode::SUCCESS)
}

async fn trigger(
    g: &Global,
    project: &Project,
    dag: &str,
    target: &Target,
    wait: bool,
) -> CliResult {
    let dag = load_dag(project, dag)?;
    let store = open_store(g)?;
    let plan = plan_for(&dag, target, Some(store.as_ref()))?;
    let run_id = plan.run_id(&dag.pipeline.dag, Trigger::Manual);
    let new = plan.new_run(&dag.pipeline, Trigger::Manual, run_id.clone());
    let tasks: Vec<String> = dag.graph.order().to_vec();
    store.create_run(&new, &tasks)?;
    crate::scheduler::control::wake(&g.home);
    println!("{run_id}");
    if store.paused_dags()?.contains(&dag.pipeline.dag) {
        eprintln!(
            "note: `{}` is paused; the run starts when it is unpaused",
            dag.pipeline.dag
        );
    }
    if !wait {
        daemon_note(g);
        return Ok(ExitCode::SUCCESS);
    }
    if crate::scheduler::control::running(&g.home).is_none() {
        return Err(fail(format!(
            "no scheduler is running on {} to run `{run_id}`; start `windsock scheduler` or use `windsock run --resume {run_id}`",
            g.home.display()
        )));
    }
    loop {
        let state = store
            .run(&run_id)?
            .map(|r| r.state)
            .ok_or_else(|| fail(format!("run `{run_id}` disappeared")))?;
        match state {
            RunState::Success => return Ok(ExitCode::SUCCESS),
            RunState::Failed => {
                eprintln!("run {run_id} failed");
                return Ok(ExitCode::FAILURE);
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(2)).await,
        }
    }
}

fn dags(g: &Global, project: &Project, json: bool) -> CliResult {
    let store = open_store(g)?;
    let paused = store.paused_dags()?;
    let (loaded, diags) = project.validate(&project.pipeline_files()?);
    let mut statuses = Vec::new();
    for dag in &loaded {
        statuses.push(crate::scheduler::dag_status(store.as_ref(), dag, &paused)?);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&statuses)?);
    } else {
        let rows: Vec<Vec<String>> = statuses
            .iter()
            .map(|s| {
                vec![
                    s.dag.clone(),
                    s.schedule.clone().unwrap_or_else(|| "-".into()),
                    if s.paused { "yes".into() } else { "no".into() },
                    s.last_run_state
                        .map(|x| x.to_string())
                        .unwrap_or_else(|| "-".into()),
                    fmt_time(s.next_run_time),
                    s.next_partition.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        table(
            &[
                "DAG",
                "SCHEDULE",
                "PAUSED",
                "LAST RUN",
                "NEXT RUN",
                "NEXT PARTITION",
            ],
            &rows,
        );
    }
    if !diags.is_empty() {
        eprintln!("some pipelines do not validate and are not listed (see `windsock validate`)");
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
async fn backfill(
    g: &Global,
    project: &Project,
    dag: &str,
    from: &str,
    to: &str,
    mut opts: crate::scheduler::backfill::BackfillOptions,
    dry_run: bool,
    max_active: Option<usize>,
) -> CliResult {
    use crate::scheduler::backfill::{self, Action};
    let dag = Arc::new(load_dag(project, dag)?);
    opts.max_active = max_active.unwrap_or(dag.pipeline.max_active_runs as usize);
    let store = open_store(g)?;
    let planned = backfill::plan(store.as_ref(), &dag, from, to, &opts)?;
    let rows: Vec<Vec<String>> = planned
        .iter()
        .map(|p| {
            let (action, why) = match &p.action {
                Action::Create => ("run".to_string(), String::new()),
                Action::Skip(why) => ("skip".to_string(), why.clone()),
                Action::Rerun => ("rerun".to_string(), "cleared and run again".into()),
                Action::Continue => ("continue".to_string(), "unfinished run".into()),
            };
            vec![
                p.label(),
                p.existing
                    .as_ref()
                    .map(|r| r.state.to_string())
                    .unwrap_or_else(|| "-".into()),
                action,
                why,
            ]
        })
        .collect();
    if dry_run {
        table(&["PARTITION/DATE", "EXISTING", "ACTION", "WHY"], &rows);
        return Ok(ExitCode::SUCCESS);
    }
    let todo = planned
        .iter()
        .filter(|p| !matches!(p.action, Action::Skip(_)))
        .count();
    eprintln!(
        "backfill {}: {} runs in range, {todo} to run, up to {} at once",
        dag.pipeline.dag,
        planned.len(),
        opts.max_active
    );
    let env = RunEnv {
        project_dir: project.dir.clone(),
        home: g.home.clone(),
        profile: g.profile.name().to_string(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    let progress = display::backfill_progress(todo);
    let report = backfill::run(
        store.clone(),
        project.templates.clone(),
        env,
        dag.clone(),
        planned,
        &opts,
        progress.as_ref(),
        stop_rx,
    )
    .await?;
    for (label, why) in &report.skipped {
        eprintln!("skipped {label}: {why}");
    }
    if report.interrupted {
        eprintln!(
            "backfill interrupted after {} successful runs; run the same command again to continue",
            report.succeeded.len()
        );
        return Ok(ExitCode::from(130));
    }
    if !report.failed.is_empty() {
        let names: Vec<String> = report
            .failed
            .iter()
            .map(|(label, run_id)| format!("{label} ({run_id})"))
            .collect();
        eprintln!(
            "backfill finished with {} failed run{}: {}",
            report.failed.len(),
            if report.failed.len() == 1 { "" } else { "s" },
            names.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "backfill {}: {} runs succeeded, {} skipped",
        dag.pipeline.dag,
        report.succeeded.len(),
        report.skipped.len()
    );
    Ok(ExitCode::SUCCESS)
}

async fn sample_data(
    months: &str,
    rows_per_day: u64,
    out: &Path,
    seed: u64,
    dirt: Option<f64>,
) -> CliResult {
    use crate::dataset::generate::{Dirt, Options, write_month};
    let (from, to) = months.split_once("..").unwrap_or((months, months));
    let from: crate::spec::Month = from.parse().map_err(fail)?;
    let to: crate::spec::Month = to.parse().map_err(fail)?;
    if from > to {
        return Err(fail(format!("--months {months}: {from} is after {to}")));
    }
    if rows_per_day == 0 {
        return Err(fail("--rows-per-day must be at least 1"));
    }
    if let Some(rate) = dirt.filter(|r| !(0.0..=0.2).contains(r)) {
        return Err(fail(format!(
            "--dirt is a rate between 0 and 0.2, not {rate}"
        )));
    }
    let opts = Options {
        rows_per_day,
        seed,
        dirt: dirt.filter(|r| *r > 0.0).map(Dirt::at),
    };
    let range = crate::spec::MonthRange { from, to };
    for month in range.months() {
        let started = std::time::Instant::now();
        let out = out.to_path_buf();
        let stats = tokio::task::spawn_blocking(move || write_month(month, &opts, &out))
            .await
            .map_err(|e| fail(format!("the generator stopped: {e}")))?
            .map_err(|e| fail(format!("writing {}: {e}", month.name())))?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{}: {} rows, {:.1} MB, {:.2}s ({:.2} M rows/s)",
            stats.path.display(),
            stats.rows,
            stats.bytes as f64 / 1e6,
            secs,
            stats.rows as f64 / secs / 1e6
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn query(g: &Global, sql: &str, connection: &str, format: args::QueryFormat) -> CliResult {
    if connection != "warehouse" {
        return Err(fail(format!(
            "unknown connection `{connection}`; this build has `warehouse`"
        )));
    }
    let wh = crate::connections::warehouse::open(g.profile.name(), &g.home, Some("windsock query"))
        .map_err(|e| fail(e.message))?;
    let result = wh.query(sql).await.map_err(|e| fail(e.message))?;
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match format {
        args::QueryFormat::Json => {
            let rows: Vec<serde_json::Map<String, serde_json::Value>> = result
                .rows
                .iter()
                .map(|r| {
                    result
                        .columns
                        .iter()
                        .cloned()
                        .zip(r.iter().cloned())
                        .collect()
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        args::QueryFormat::Csv => {
            let esc = |s: String| {
                if s.contains([',', '"', '\n']) {
                    format!("\"{}\"", s.replace('"', "\"\""))
                } else {
                    s
                }
            };
            println!(
                "{}",
                result
                    .columns
                    .iter()
                    .cloned()
                    .map(esc)
                    .collect::<Vec<_>>()
                    .join(",")
            );
            for r in &result.rows {
                println!(
                    "{}",
                    r.iter().map(|v| esc(cell(v))).collect::<Vec<_>>().join(",")
                );
            }
        }
        args::QueryFormat::Table => {
            let header: Vec<&str> = result.columns.iter().map(String::as_str).collect();
            let rows: Vec<Vec<String>> = result
                .rows
                .iter()
                .map(|r| r.iter().map(cell).collect())
                .collect();
            table(&header, &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}
