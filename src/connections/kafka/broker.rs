//! The `local` profile's embedded broker: tansu (a Kafka-compatible broker in Rust) run as a
//! managed child process with SQLite storage in `<home>/broker/tansu.db`, listening on
//! 127.0.0.1 only. Its data survives restarts, so a run interrupted between producing and landing
//! loses nothing.
//!
//! The first windsock process of a home that needs Kafka starts it; others find it through
//! `<home>/broker/broker.json` (pid and port) and reuse it. It dies with the process that started
//! it (PDEATHSIG); the next one that needs it starts it again on the same port, over the same data.
//!
//! The binary is `WINDSOCK_BROKER_BIN`, else `tansu` beside the windsock executable, else on
//! `PATH`, else in `~/.cargo/bin`.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::KafkaError;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct BrokerFile {
    pid: u32,
    port: u16,
}

/// Brokers this process started: (home, pid), so a second `ensure` is a file read.
static STARTED: Mutex<Vec<(PathBuf, u32, u16)>> = Mutex::new(Vec::new());

/// The embedded broker's address for `home`, starting it if it is not running.
pub fn ensure(home: &Path) -> Result<String, KafkaError> {
    let dir = std::path::absolute(home.join("broker")).unwrap_or_else(|_| home.join("broker"));
    std::fs::create_dir_all(&dir)
        .map_err(|e| KafkaError::fatal(format!("cannot create {}: {e}", dir.display())))?;
    // One process at a time decides whether to start it.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("broker.lock"))
        .map_err(|e| KafkaError::fatal(format!("cannot open the broker lock: {e}")))?;
    // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
    unsafe {
        libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX);
    }
    let state_path = dir.join("broker.json");
    let previous: Option<BrokerFile> = std::fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(b) = &previous
        && is_tansu(b.pid)
        && answers(b.port)
    {
        return Ok(format!("127.0.0.1:{}", b.port));
    }
    let bin = find_binary().ok_or_else(|| {
        KafkaError::fatal(
            "the local profile's embedded Kafka broker needs the `tansu` binary: install it with \
             `cargo install tansu --locked --features libsql`, or set WINDSOCK_BROKER_BIN, or point \
             WINDSOCK_KAFKA_BOOTSTRAP at a broker of your own",
        )
    })?;
    // Keep the port across restarts, so clients that cached it reconnect.
    let port = previous
        .map(|b| b.port)
        .filter(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .or_else(free_port)
        .ok_or_else(|| KafkaError::transient("no free port on 127.0.0.1 for the broker"))?;
    let pid = spawn(&bin, &dir, port)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !answers(port) {
        if !alive(pid) {
            return Err(KafkaError::transient(format!(
                "the embedded broker exited at start; see {}",
                dir.join("broker.log").display()
            )));
        }
        if Instant::now() > deadline {
            return Err(KafkaError::transient(format!(
                "the embedded broker did not listen on 127.0.0.1:{port} within 20 s; see {}",
                dir.join("broker.log").display()
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let file = serde_json::to_vec(&BrokerFile { pid, port }).unwrap_or_default();
    let tmp = dir.join("broker.json.tmp");
    std::fs::write(&tmp, file)
        .and_then(|_| std::fs::rename(&tmp, &state_path))
        .map_err(|e| KafkaError::fatal(format!("cannot write {}: {e}", state_path.display())))?;
    STARTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((dir, pid, port));
    tracing::info!(port, pid, "started the embedded Kafka broker");
    Ok(format!("127.0.0.1:{port}"))
}

/// Stops the brokers this process started (the CLI calls it before exiting, so the broker closes
/// its database cleanly rather than by PDEATHSIG).
pub fn stop_started() {
    let started = std::mem::take(&mut *STARTED.lock().unwrap_or_else(|p| p.into_inner()));
    stop_these(started);
}

/// Stops the broker of `home` if this process started it.
pub fn stop(home: &Path) {
    let dir = std::path::absolute(home.join("broker")).unwrap_or_else(|_| home.join("broker"));
    let mut started = STARTED.lock().unwrap_or_else(|p| p.into_inner());
    let (these, others): (Vec<_>, Vec<_>) = started.drain(..).partition(|(d, _, _)| *d == dir);
    *started = others;
    drop(started);
    stop_these(these);
}

fn stop_these(started: Vec<(PathBuf, u32, u16)>) {
    for (_, pid, _) in &started {
        // SAFETY: kill only sends a signal.
        unsafe {
            libc::kill(*pid as i32, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for (_, pid, _) in started {
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if alive(pid) {
            // SAFETY: as above.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
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
fn spawn(bin: &Path, dir: &Path, port: u16) -> Result<u32, KafkaError> {
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
                    // SAFETY: prctl is async-signal-safe; runs in the child before exec.
                    unsafe {
                        cmd.pre_exec(|| {
                            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                            Ok(())
                        });
                    }
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
        .map_err(|e| KafkaError::fatal(format!("cannot start a thread: {e}")))?;
    rx.recv()
        .map_err(|_| KafkaError::fatal("the broker thread ended"))?
        .map_err(KafkaError::fatal)
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

fn alive(pid: u32) -> bool {
    // A zombie is not alive: read its state.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn is_tansu(pid: u32) -> bool {
    let mut cmdline = String::new();
    alive(pid)
        && std::fs::File::open(format!("/proc/{pid}/cmdline"))
            .and_then(|mut f| f.read_to_string(&mut cmdline))
            .is_ok()
        && cmdline.split('\0').any(|a| a == "broker")
}
