//! The command line: argument parsing, one module per group of commands (`commands/`), and the
//! edge where every error becomes one clear sentence for a person (never a debug dump).

mod args;
mod commands;
mod display;
mod output;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio::sync::watch;

use crate::executor::RunEnv;
use crate::plan::RunPlan;
use crate::project::{Dag, Project, ProjectError};
use crate::spec::Task;
use crate::state::StateStore;
use args::{Cli, Command, Global, LogFormat, Target};
use output::plural;

/// An error for a person: printed as `error: <message>` and exit code 1.
#[derive(Debug)]
struct CliError(String);

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

fn fail(msg: impl Into<String>) -> CliError {
    CliError(msg.into())
}

type CliResult = Result<ExitCode, CliError>;

/// The program: parses the arguments, runs the command, and prints any error as one sentence.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon reports what it does; one-shot commands only warn.
    let daemon = matches!(cli.command, Command::Scheduler { .. });
    crate::secrets::register_environment();
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
    let result = runtime.block_on(commands::dispatch(cli));
    drop(runtime);
    crate::connections::warehouse::close_all();
    crate::connections::kafka::broker::stop_started();
    match result {
        Ok(code) => code,
        Err(CliError(msg)) => {
            eprintln!("error: {}", crate::secrets::mask(&msg));
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
        // Secrets never reach windsock's own log.
        .with_writer(|| crate::secrets::MaskingWriter(std::io::stderr()));
    let _ = match g.log_format {
        LogFormat::Human => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// What every command starts from: the global flags and the project they name.
struct Session {
    g: Global,
    project: Project,
}

impl Session {
    fn new(g: Global) -> Session {
        let project = Project::open(&g.project, None);
        Session { g, project }
    }

    fn home(&self) -> &Path {
        &self.g.home
    }

    /// The state store's URL: `--state URL`, else `$WINDSOCK_STATE_URL`; none for the SQLite
    /// database of the state directory.
    fn store_url(&self) -> Option<String> {
        self.g
            .state
            .clone()
            .filter(|v| crate::state::is_store_url(v))
            .or_else(|| std::env::var("WINDSOCK_STATE_URL").ok())
            .filter(|v| !v.trim().is_empty())
    }

    /// The state store: [`Session::store_url`], or the SQLite database of the state directory.
    fn store(&self) -> Result<Arc<dyn StateStore>, CliError> {
        let url = self.store_url();
        if let Some(url) = &url {
            crate::secrets::register_url_password(url);
        }
        Ok(crate::state::open(url.as_deref(), &self.g.home)?)
    }

    /// A DAG by id or file, validated; every problem listed when it does not validate.
    fn dag(&self, name: &str) -> Result<Dag, CliError> {
        self.project.load_dag(name).map_err(|e| match e {
            ProjectError::Invalid(d) => fail(format!(
                "`{name}` does not validate ({}):\n{d}",
                plural(d.len(), "problem")
            )),
            other => fail(other.to_string()),
        })
    }

    /// The run `--partition`/`--date` ask for, or the default (see [`RunPlan::for_target`]).
    fn plan(
        &self,
        dag: &Dag,
        target: &Target,
        store: Option<&dyn StateStore>,
    ) -> Result<RunPlan, CliError> {
        Ok(RunPlan::for_target(
            dag,
            target.partition.as_deref(),
            target.date.as_deref(),
            store,
        )?)
    }

    /// Where runs started from this command keep their files, and under which profile.
    fn run_env(&self) -> RunEnv {
        RunEnv {
            project_dir: self.project.dir.clone(),
            home: self.g.home.clone(),
            profile: self.g.profile,
        }
    }
}

/// A task of a DAG, or a sentence listing the DAG's tasks.
fn task<'a>(dag: &'a Dag, name: &str) -> Result<&'a Task, CliError> {
    let p = &dag.pipeline;
    p.task(name).ok_or_else(|| {
        fail(format!(
            "DAG `{}` has no task `{name}`; its tasks are {}",
            p.dag,
            crate::diag::list_names(p.tasks.keys().map(String::as_str))
        ))
    })
}

/// A flag that turns true on the first SIGINT or SIGTERM.
fn stop_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = tx.send(true);
    });
    rx
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() {
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
