//! `scheduler`, `dags`, `pause`, `unpause` and `trigger`: the daemon and talking to it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::args::{Target, UiArgs};
use crate::cli::output::{print_table, time};
use crate::cli::{CliResult, Session, fail, stop_on_signal};
use crate::executor::create_run;
use crate::project::Project;
use crate::scheduler::control;
use crate::state::{RunState, StateStore, Trigger};

/// The daemon's flags.
pub(super) struct Daemon {
    pub(super) pipelines: Option<PathBuf>,
    pub(super) max_tasks: usize,
    pub(super) grace: crate::spec::Duration,
    pub(super) poll: crate::spec::Duration,
    pub(super) keep_runs: Option<crate::spec::Duration>,
    /// Serve the web UI too, here.
    pub(super) ui: Option<UiArgs>,
}

pub(super) async fn scheduler(s: &Session, d: Daemon) -> CliResult {
    let project = Arc::new(Project::open(&s.g.project, d.pipelines.as_deref()));
    let opts = crate::scheduler::SchedulerOptions {
        max_tasks: d.max_tasks,
        grace: d.grace.std(),
        poll: d.poll.std().max(std::time::Duration::from_millis(50)),
        keep_runs: d.keep_runs.map(crate::spec::Duration::std),
        ..Default::default()
    };
    let store = s.store()?;
    let (sched, _lock) =
        crate::scheduler::Scheduler::new(project.clone(), store.clone(), s.run_env(), opts).await?;
    let stop = stop_on_signal();
    let web = match &d.ui {
        Some(args) => Some(super::ui::start(s, args, store, project, stop.clone()).await?),
        None => None,
    };
    sched.run(stop).await?;
    if let Some(web) = web {
        web.await
            .map_err(|e| fail(format!("the web UI stopped: {e}")))??;
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn prune(s: &Session, older_than: crate::spec::Duration) -> CliResult {
    let store = s.store()?;
    let pruned = crate::scheduler::prune_history(store.as_ref(), &s.run_env(), older_than.std())?;
    println!(
        "pruned {} that ended more than {older_than} ago, with their logs",
        crate::cli::output::plural(pruned, "run")
    );
    Ok(ExitCode::SUCCESS)
}

/// Warns that a change waits for a scheduler when none runs on the state directory.
fn daemon_note(s: &Session) {
    if control::running(s.home()).is_none() {
        eprintln!(
            "note: no scheduler is running on {}; this takes effect when one starts",
            s.home().display()
        );
    }
}

pub(super) fn pause(s: &Session, dag: &str, paused: bool) -> CliResult {
    let id = s.dag(dag)?.pipeline.dag;
    let store = s.store()?;
    store.set_paused(&id, paused)?;
    control::wake(s.home());
    println!("{} {id}", if paused { "paused" } else { "unpaused" });
    if !store.shared() {
        daemon_note(s);
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn trigger(s: &Session, dag: &str, target: &Target, wait: bool) -> CliResult {
    let dag = s.dag(dag)?;
    let store = s.store()?;
    let plan = s.plan(&dag, target, Some(store.as_ref()))?;
    let run_id = create_run(store.as_ref(), &dag, &plan, Trigger::Manual, None)?.run_id;
    control::wake(s.home());
    println!("{run_id}");
    if store.paused_dags()?.contains(&dag.pipeline.dag) {
        eprintln!(
            "note: `{}` is paused; the run starts when it is unpaused",
            dag.pipeline.dag
        );
    }
    // A shared store's schedulers run elsewhere, each with its own home: they poll for it.
    if !wait {
        if !store.shared() {
            daemon_note(s);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !store.shared() && control::running(s.home()).is_none() {
        return Err(fail(format!(
            "no scheduler is running on {} to run `{run_id}`; start `windsock scheduler` or use `windsock run --resume {run_id}`",
            s.home().display()
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

pub(super) fn dags(s: &Session, json: bool) -> CliResult {
    let store = s.store()?;
    let paused = store.paused_dags()?;
    let (loaded, diags) = s.project.validate(&s.project.pipeline_files()?);
    let mut statuses = Vec::new();
    for dag in &loaded {
        statuses.push(crate::scheduler::dag_status(
            store.as_ref() as &dyn StateStore,
            dag,
            &paused,
        )?);
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
                    time(s.next_run_time),
                    s.next_partition.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        print_table(
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
