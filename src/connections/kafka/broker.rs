//! The `local` profile's embedded broker, one per state directory, shared by every windsock
//! process of it through `<home>/broker/broker.json` (pid, port, kind) under a file lock. The
//! first process that needs Kafka starts it; it lives as long as that process; the next one that
//! needs it starts it again, on the same port, over the same data — so a run interrupted between
//! producing and landing loses nothing.
//!
//! Two engines:
//! - `native` (the default): windsock's own broker ([`super::native`]), in process, storing
//!   record batches as they arrive in `<home>/broker/native/`. Nothing to install.
//! - `tansu` (`WINDSOCK_BROKER=tansu`): the tansu broker as a managed child process with SQLite
//!   storage in `<home>/broker/tansu.db`, listening on 127.0.0.1 only. The binary is
//!   `WINDSOCK_BROKER_BIN`, else `tansu` beside the windsock executable, on `PATH` or in
//!   `~/.cargo/bin`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::native;
use crate::error::Error;
use crate::sys;

/// Which engine serves the embedded broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum BrokerKind {
    /// windsock's own, in process (the default).
    #[default]
    Native,
    /// tansu as a managed child process (`WINDSOCK_BROKER=tansu`).
    Tansu,
}

/// `<home>/broker/broker.json`: how other windsock processes find the running broker.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct BrokerFile {
    pid: u32,
    port: u16,
    kind: BrokerKind,
}

enum Handle {
    Tansu(u32),
    Native(Arc<native::Broker>),
}

/// Brokers this process started, by broker folder.
static STARTED: Mutex<Vec<(PathBuf, Handle)>> = Mutex::new(Vec::new());
/// Homes whose broker this process keeps up while it runs.
static WATCHED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// This process is stopping its brokers: nothing is brought back any more.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// The embedded broker's address for `home`, starting it if it is not running. From then on
/// this process keeps it up: should the process running it go (a `windsock run` that started it
/// ends while a `windsock stream --follow` still reads from it), it is started again here, on the
/// same port, over the same data, within a second.
pub(crate) fn ensure(home: &Path) -> Result<String, Error> {
    let addr = start_if_down(home)?;
    watch(home);
    Ok(addr)
}

/// Keeps the broker of `home` up for as long as this process runs (once per home).
fn watch(home: &Path) {
    let home = std::path::absolute(home).unwrap_or_else(|_| home.to_path_buf());
    {
        let mut watched = WATCHED.lock().unwrap_or_else(|p| p.into_inner());
        if watched.contains(&home) {
            return;
        }
        watched.push(home.clone());
    }
    let spawned = std::thread::Builder::new()
        .name("windsock-broker-watch".into())
        .spawn(move || {
            while !STOPPING.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                if STOPPING.load(Ordering::Relaxed) || running(&home) {
                    continue;
                }
                match start_if_down(&home) {
                    Ok(addr) => tracing::info!(%addr, "the embedded Kafka broker was down; started it again here"),
                    Err(e) => tracing::debug!("the embedded Kafka broker is down and could not be started yet: {e}"),
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch the embedded broker: {e}");
    }
}

/// Whether the broker `broker.json` names runs and answers.
fn running(home: &Path) -> bool {
    let state: Option<BrokerFile> = std::fs::read(home.join("broker").join("broker.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    state.is_some_and(|b| {
        let alive = match b.kind {
            BrokerKind::Native => sys::alive(b.pid),
            BrokerKind::Tansu => is_tansu(b.pid),
        };
        alive && answers(b.port)
    })
}

fn start_if_down(home: &Path) -> Result<String, Error> {
    let dir = std::path::absolute(home.join("broker")).unwrap_or_else(|_| home.join("broker"));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::fatal(format!("cannot create {}: {e}", dir.display())))?;
    // One process at a time decides whether to start it.
    let _lock = sys::FileLock::acquire(&dir.join("broker.lock"))
        .map_err(|e| Error::fatal(format!("cannot take the broker lock: {e}")))?;
    let state_path = dir.join("broker.json");
    let previous: Option<BrokerFile> = std::fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(b) = &previous {
        let running = match b.kind {
            BrokerKind::Native => sys::alive(b.pid),
            BrokerKind::Tansu => is_tansu(b.pid),
        };
        if running && answers(b.port) {
            return Ok(format!("127.0.0.1:{}", b.port));
        }
    }
    // Keep the port across restarts, so clients that cached it reconnect.
    let port = previous
        .as_ref()
        .map(|b| b.port)
        .filter(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .or_else(free_port)
        .ok_or_else(|| Error::transient("no free port on 127.0.0.1 for the broker"))?;
    let tansu = std::env::var("WINDSOCK_BROKER").is_ok_and(|v| v == "tansu");
    let (pid, port, kind, handle) = if tansu {
        let (pid, port) = start_tansu(&dir, port)?;
        (pid, port, BrokerKind::Tansu, Handle::Tansu(pid))
    } else {
        let broker = start_native(&dir.join("native"), port)?;
        (
            std::process::id(),
            broker.port(),
            BrokerKind::Native,
            Handle::Native(broker),
        )
    };
    let file = serde_json::to_vec(&BrokerFile { pid, port, kind })
        .map_err(|e| Error::fatal(format!("cannot write {}: {e}", state_path.display())))?;
    sys::write_atomic(&state_path, &file)
        .map_err(|e| Error::fatal(format!("cannot write {}: {e}", state_path.display())))?;
    STARTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((dir, handle));
    tracing::info!(port, pid, ?kind, "started the embedded Kafka broker");
    Ok(format!("127.0.0.1:{port}"))
}

/// Runs the native broker on a thread of its own for the rest of the process.
fn start_native(dir: &Path, port: u16) -> Result<Arc<native::Broker>, Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::Builder::new()
        .name("windsock-broker".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("windsock-broker")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                let config = match native::BrokerConfig::from_env() {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                match native::Broker::start(&dir, port, config).await {
                    Ok(b) => {
                        let _ = tx.send(Ok(b));
                        std::future::pending::<()>().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("{}: {e}", dir.display())));
                    }
                }
            });
        })
        .map_err(|e| Error::fatal(format!("cannot start a thread: {e}")))?;
    rx.recv()
        .map_err(|_| Error::fatal("the broker thread ended"))?
        .map_err(|e| Error::transient(format!("the embedded broker did not start: {e}")))
}

fn start_tansu(dir: &Path, port: u16) -> Result<(u32, u16), Error> {
    let bin = find_binary().ok_or_else(|| {
        Error::fatal(
            "WINDSOCK_BROKER=tansu needs the `tansu` binary: install it with \
             `cargo install tansu --locked --features libsql`, or set WINDSOCK_BROKER_BIN",
        )
    })?;
    let pid = spawn(&bin, dir, port)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !answers(port) {
        if !sys::alive(pid) {
            return Err(Error::transient(format!(
                "the embedded broker exited at start; see {}",
                dir.join("broker.log").display()
            )));
        }
        if Instant::now() > deadline {
            return Err(Error::transient(format!(
                "the embedded broker did not listen on 127.0.0.1:{port} within 20 s; see {}",
                dir.join("broker.log").display()
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok((pid, port))
}

/// Stops the brokers this process started (the CLI calls it before exiting).
pub(crate) fn stop_started() {
    STOPPING.store(true, Ordering::Relaxed);
    let started = std::mem::take(&mut *STARTED.lock().unwrap_or_else(|p| p.into_inner()));
    stop_these(started);
}

fn stop_these(started: Vec<(PathBuf, Handle)>) {
    let mut pids = Vec::new();
    for (_, h) in started {
        match h {
            Handle::Native(b) => b.stop(),
            Handle::Tansu(pid) => {
                sys::signal(pid, libc::SIGTERM);
                pids.push(pid);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in pids {
        while sys::alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if sys::alive(pid) {
            sys::signal(pid, libc::SIGKILL);
        }
    }
}

fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WINDSOCK_BROKER_BIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("tansu")));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("tansu"));
    let cargo = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/tansu"));
    beside
        .into_iter()
        .chain(on_path)
        .chain(cargo)
        .find(|p| p.is_file())
}

/// Starts the broker from a thread that lives as long as the process: PDEATHSIG fires when the
/// *thread* that forked the child ends, and runtime threads come and go.
fn spawn(bin: &Path, dir: &Path, port: u16) -> Result<u32, Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    let bin = bin.to_path_buf();
    let dir = dir.to_path_buf();
    std::thread::Builder::new()
        .name("windsock-broker".into())
        .spawn(move || {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("broker.log"));
            let result = log
                .and_then(|log| {
                    let url = format!("tcp://127.0.0.1:{port}");
                    let mut cmd = std::process::Command::new(&bin);
                    cmd.arg("broker")
                        .args(["--listener-url", &url])
                        .args(["--advertised-listener-url", &url])
                        // A path relative to the working directory: tansu drops the leading `/`
                        // of an absolute one.
                        .args(["--storage-engine", "sqlite://tansu.db"])
                        .args(["--kafka-cluster-id", "windsock"])
                        .current_dir(&dir)
                        .env_remove("STORAGE_ENGINE")
                        .env_remove("LISTENER_URL")
                        .env_remove("ADVERTISED_LISTENER_URL")
                        .env_remove("SCHEMA_REGISTRY")
                        .env("RUST_LOG", "warn")
                        .stdin(std::process::Stdio::null())
                        .stdout(log.try_clone()?)
                        .stderr(log)
                        // Its own group: a Ctrl-C meant for windsock reaches the broker only
                        // after windsock has finished with it.
                        .process_group(0);
                    sys::die_with_parent(&mut cmd, libc::SIGTERM);
                    cmd.spawn()
                })
                .map_err(|e| format!("cannot start {}: {e}", bin.display()));
            match result {
                Ok(mut child) => {
                    let _ = tx.send(Ok(child.id()));
                    let _ = child.wait();
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
            // Stay alive: PDEATHSIG is tied to this thread.
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| Error::fatal(format!("cannot start a thread: {e}")))?;
    rx.recv()
        .map_err(|_| Error::fatal("the broker thread ended"))?
        .map_err(Error::fatal)
}

fn free_port() -> Option<u16> {
    TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()
        .map(|a| a.port())
}

fn answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

fn is_tansu(pid: u32) -> bool {
    sys::alive(pid) && sys::cmdline(pid).is_some_and(|args| args.iter().any(|a| a == "broker"))
}
