//! The web UI: the DAGs with their schedules and recent runs, a grid of runs × tasks per DAG,
//! each try's timings, rendered config, output, error and live log, the DAG's graph, which
//! partitions have run, and the business dashboard — served by `windsock ui`, or by the
//! scheduler itself with `windsock scheduler --ui`. Everything (styles, the small script that
//! keeps pages live) is in the binary; nothing is fetched from elsewhere.
//!
//! Security: it listens on 127.0.0.1 unless told otherwise. On any other address it refuses to
//! start without an access token, and then every request must carry it (a bearer header, or
//! the cookie that opening `/?token=…` once sets). Actions that change state are POSTs that must
//! carry the page's anti-forgery header and come from the UI's own origin. Everything from the
//! outside world (task names, logs, SQL, values) is escaped by the template engine.

mod auth;
mod graph;
mod pages;
mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::executor::RunEnv;
use crate::project::{Dag, Project};
use crate::state::StateStore;

/// Where the UI listens and the token it asks for.
#[derive(Debug, Clone)]
pub(crate) struct UiOptions {
    pub(crate) bind: SocketAddr,
    pub(crate) token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum UiError {
    #[error(
        "the web UI would listen on {bind}, which other machines can reach: set an access token (WINDSOCK_UI_TOKEN, or --token-file) or bind to 127.0.0.1"
    )]
    NeedsToken { bind: SocketAddr },
    #[error("the web UI cannot listen on {bind}: {source}")]
    Bind {
        bind: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the web UI stopped: {0}")]
    Serve(#[source] std::io::Error),
}

/// The pipelines as last read, refreshed when a file changes.
#[derive(Default)]
struct DagCache {
    /// (file, modified, length) of every pipeline file when last read.
    seen: Vec<(PathBuf, Option<SystemTime>, u64)>,
    dags: Vec<Arc<Dag>>,
    /// Files that do not validate, with their first problem.
    broken: Vec<String>,
}

/// What every page handler reads.
pub(crate) struct Ui {
    store: Arc<dyn StateStore>,
    project: Arc<Project>,
    env: RunEnv,
    dags: Mutex<DagCache>,
    /// The anti-forgery value every POST must carry (random per process).
    csrf: String,
    token: Option<String>,
}

impl Ui {
    pub(crate) fn new(store: Arc<dyn StateStore>, project: Arc<Project>, env: RunEnv) -> Ui {
        let csrf: String = (0..32)
            .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
            .collect();
        Ui {
            store,
            project,
            env,
            dags: Mutex::new(DagCache::default()),
            csrf,
            token: None,
        }
    }

    /// The validated DAGs, read again when a pipeline file changed.
    fn dags(&self) -> (Vec<Arc<Dag>>, Vec<String>) {
        let files = self.project.pipeline_files().unwrap_or_default();
        let seen: Vec<(PathBuf, Option<SystemTime>, u64)> = files
            .iter()
            .map(|f| {
                let meta = std::fs::metadata(f).ok();
                (
                    f.clone(),
                    meta.as_ref().and_then(|m| m.modified().ok()),
                    meta.map(|m| m.len()).unwrap_or(0),
                )
            })
            .collect();
        let mut cache = self.dags.lock().unwrap_or_else(|p| p.into_inner());
        if cache.seen != seen || cache.seen.is_empty() {
            let (dags, diags) = self.project.validate(&files);
            let mut dags: Vec<Arc<Dag>> = dags.into_iter().map(Arc::new).collect();
            dags.sort_by(|a, b| a.pipeline.dag.cmp(&b.pipeline.dag));
            cache.dags = dags;
            cache.broken = diags.0.iter().map(|d| d.to_string()).collect();
            cache.seen = seen;
        }
        (cache.dags.clone(), cache.broken.clone())
    }

    fn dag(&self, id: &str) -> Option<Arc<Dag>> {
        self.dags().0.into_iter().find(|d| d.pipeline.dag == id)
    }
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// The routes of the UI.
fn router(ui: Arc<Ui>) -> Router {
    Router::new()
        .route("/", get(pages::dags))
        .route("/dags/{dag}", get(pages::grid))
        .route("/dags/{dag}/graph", get(pages::graph))
        .route("/dags/{dag}/partitions", get(pages::partitions))
        .route("/runs/{run_id}/tasks/{task}", get(pages::task))
        .route("/api/log", get(pages::log_tail))
        .route("/dashboard", get(pages::dashboard))
        .route("/static/{file}", get(pages::asset))
        .route("/dags/{dag}/pause", post(pages::pause))
        .route("/dags/{dag}/unpause", post(pages::unpause))
        .route("/dags/{dag}/trigger", post(pages::trigger))
        .route("/runs/{run_id}/clear", post(pages::clear))
        .layer(axum::middleware::from_fn_with_state(
            ui.clone(),
            auth::guard,
        ))
        .with_state(ui)
}

/// Serves the UI until `stop` turns true. Reports the address it listens on through `ready`.
pub(crate) async fn serve(
    opts: UiOptions,
    mut ui: Ui,
    mut stop: watch::Receiver<bool>,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), UiError> {
    let token = opts.token.filter(|t| !t.trim().is_empty());
    if !is_loopback(&opts.bind) && token.is_none() {
        return Err(UiError::NeedsToken { bind: opts.bind });
    }
    ui.token = token;
    let listener = tokio::net::TcpListener::bind(opts.bind)
        .await
        .map_err(|source| UiError::Bind {
            bind: opts.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(UiError::Serve)?;
    ready(addr);
    let app = router(Arc::new(ui));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
        .map_err(UiError::Serve)
}
