//! `ui` (and `scheduler --ui`): the web UI.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cli::args::UiArgs;
use crate::cli::{CliError, CliResult, Session, fail, stop_on_signal};
use crate::project::Project;
use crate::state::StateStore;
use crate::ui::{Ui, UiError, UiOptions};

/// The access token: from `--token-file`, else `WINDSOCK_UI_TOKEN`.
fn token(args: &UiArgs) -> Result<Option<String>, CliError> {
    match &args.token_file {
        Some(path) => {
            let t = std::fs::read_to_string(path).map_err(|e| {
                fail(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ))
            })?;
            let t = t.trim().to_string();
            if t.is_empty() {
                return Err(fail(format!("the token file {} is empty", path.display())));
            }
            Ok(Some(t))
        }
        None => Ok(std::env::var("WINDSOCK_UI_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())),
    }
}

/// Starts the UI in the background once it listens; its address goes to stdout.
pub(super) async fn start(
    s: &Session,
    args: &UiArgs,
    store: Arc<dyn StateStore>,
    project: Arc<Project>,
    stop: watch::Receiver<bool>,
) -> Result<JoinHandle<Result<(), UiError>>, CliError> {
    let opts = UiOptions {
        bind: args.bind,
        token: token(args)?,
        allowed_hosts: args.allowed_hosts.clone(),
    };
    let ui = Ui::new(store, project, s.run_env());
    let (tx, rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    let task = tokio::spawn(crate::ui::serve(opts, ui, stop, move |addr| {
        let _ = tx.send(addr);
    }));
    match rx.await {
        Ok(addr) => {
            println!("http://{addr}/");
            eprintln!("the windsock UI listens on http://{addr}/ (Ctrl-C stops it)");
            Ok(task)
        }
        // It stopped before listening: say why.
        Err(_) => match task.await {
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(())) => Err(fail("the web UI stopped before it listened")),
            Err(e) => Err(fail(format!("the web UI stopped: {e}"))),
        },
    }
}

pub(super) async fn ui(s: &Session, args: &UiArgs) -> CliResult {
    let project = Arc::new(Project::open(&s.g.project, None));
    let web = start(s, args, s.store()?, project, stop_on_signal()).await?;
    web.await
        .map_err(|e| fail(format!("the web UI stopped: {e}")))??;
    Ok(ExitCode::SUCCESS)
}
