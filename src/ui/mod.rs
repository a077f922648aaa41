//! The web UI: the DAGs with their schedules and recent runs, a grid of runs × tasks per DAG,
//! each try's timings, rendered config, output, error and live log, the DAG's graph, which
//! partitions have run, and the business dashboard — served by `windsock ui`, or by the
//! scheduler itself with `windsock scheduler --ui`. Everything (styles, the small script that
//! keeps pages live) is in the binary; nothing is fetched from elsewhere.
//!
//! Security: it listens on 127.0.0.1 unless told otherwise. On any other address it refuses to
//! start without an access token, and then every request must carry it (a bearer header, or
//! the cookie that opening `/?token=…` once sets). Actions that change state are POSTs that must
//! carry the page's anti-forgery header and come from the UI's own origin. A request whose Host
//! is not the address it listens on, `localhost` or a name given with `--allowed-host` is
//! refused, so that a site whose name is made to point at 127.0.0.1 (DNS rebinding) reads
//! nothing. Everything from the outside world (task names, logs, SQL, values) is escaped by the
//! template engine.
//!
//! The server is hyper's, driven here rather than through `axum::serve` for the limits a
//! public-facing server needs: the request head must arrive within [`HEADER_TIMEOUT`], at most
//! [`max_connections`] are served at once (more wait in the listen queue), request bodies are
//! capped at [`MAX_BODY`]. So connections left half-open (slowloris) neither take every file
//! descriptor of the process, which the scheduler beside it needs, nor keep others out for long.

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
    /// Host names the UI answers to besides its address and `localhost` (a proxy's name).
    pub(crate) allowed_hosts: Vec<String>,
}

/// How long a client may take to send a request's head (from when it connects, or from the end
/// of its previous request).
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Connections served at once, at most: half of the open files the process may have beyond
/// a reserve for everything else (the scheduler's database, logs, task pipes), within these
/// bounds.
const MAX_CONNECTIONS: (usize, usize) = (64, 4096);

fn max_connections() -> usize {
    let files = crate::sys::raise_open_files_limit() as usize;
    (files.saturating_sub(256) / 2).clamp(MAX_CONNECTIONS.0, MAX_CONNECTIONS.1)
}
/// The largest request body taken (the UI's forms are a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;

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
    /// The address listened on, and other names the UI answers to (see [`auth::host_allowed`]).
    bind: Option<SocketAddr>,
    allowed_hosts: Vec<String>,
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
            bind: None,
            allowed_hosts: Vec::new(),
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
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
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
    ui.allowed_hosts = opts
        .allowed_hosts
        .iter()
        .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
        .collect();
    let listener = tokio::net::TcpListener::bind(opts.bind)
        .await
        .map_err(|source| UiError::Bind {
            bind: opts.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(UiError::Serve)?;
    ui.bind = Some(addr);
    ready(addr);
    let app = router(Arc::new(ui));
    let max = max_connections();
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    let mut accept_errors = 0u64;
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stopped(&mut stop) => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                // Out of file descriptors, or a connection reset before it was taken: say so
                // once in a while, wait a moment, go on.
                Err(e) => {
                    accept_errors += 1;
                    if accept_errors.is_power_of_two() {
                        tracing::warn!(errors = accept_errors, "the web UI cannot accept a connection: {e}");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    // Connections still open get a moment to finish their request.
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        slots.acquire_many(max as u32),
    )
    .await;
    Ok(())
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}
