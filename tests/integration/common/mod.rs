//! Helpers shared by the integration tests: they start the real `windsock` binary.

pub mod postgres;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_windsock")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `windsock` command with its own state directory, in the given project folder.
pub fn windsock(project: &Path, home: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(project)
        .env("WINDSOCK_HOME", home)
        .env_remove("WINDSOCK_PROFILE")
        .env_remove("WINDSOCK_STATE_URL")
        .env_remove("WINDSOCK_PROJECT")
        .env_remove("WINDSOCK_LOG");
    c
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A throwaway project folder with `pipelines/` holding the given files.
pub fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("templates")).expect("mkdir");
    for (name, body) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, body).expect("write");
    }
    dir
}

/// Runs a command to completion, panicking with its output when it cannot start.
pub fn run(c: &mut Command) -> Output {
    c.output().expect("start windsock")
}

/// The JSON printed by a `--json` command.
pub fn json(c: &mut Command) -> serde_json::Value {
    let out = run(c);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "command failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"))
}

/// The shipped reporting SQL and the macros it imports, as (path, content) for `project`.
pub fn reporting_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(repo().join("sql/reporting"))
        .expect("sql/reporting")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().to_string();
        let body = std::fs::read_to_string(entry.path()).expect("read");
        files.push((format!("sql/reporting/{name}"), body));
    }
    let macros = std::fs::read_to_string(repo().join("templates/reporting.j2")).expect("read");
    files.push(("templates/reporting.j2".to_string(), macros));
    files
}

/// A child process killed when dropped (a server a test started).
pub struct Server(pub std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A tansu broker process of the test's own on 127.0.0.1 with SQLite storage in `dir` (the
/// binary must be on PATH; `.ci/run` installs it). Returns it with its bootstrap address.
pub fn tansu(dir: &Path) -> (Server, String) {
    let port = free_port();
    (tansu_on(dir, port), format!("127.0.0.1:{port}"))
}

/// A tansu broker on a given port over the data in `dir`: to start one again after a kill.
pub fn tansu_on(dir: &Path, port: u16) -> Server {
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new("tansu")
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start tansu (cargo install tansu --locked --features libsql; .ci/run does)");
    let server = Server(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "tansu did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    server
}

/// `windsock broker` for a state directory: the local profile's embedded broker in a process of
/// its own, over the directory's data. Returns it with its address; dropping it kills it.
pub fn embedded_broker(home: &Path) -> (Server, String) {
    use std::io::BufRead;
    let mut child = Command::new(bin())
        .args(["broker", "--home"])
        .arg(home)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start windsock broker");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the broker's address");
    let addr = line.trim().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "not an address: {addr:?}");
    (server, addr)
}

/// Creates a topic on a broker with librdkafka's admin client.
pub fn create_topic(addr: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .expect("admin client");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let results = rt
        .block_on(admin.create_topics(
            [&NewTopic::new(
                topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        ))
        .expect("create topics");
    for r in results {
        r.expect("topic created");
    }
}

/// A plain HTTP/1.1 request to `addr` (`127.0.0.1:8080`): (status, response headers, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the UI");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    // The UI's own address, unless the test names another host.
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// `windsock ui` for a state directory and project, on a free port: the server and its address.
pub fn ui(project: &Path, home: &Path, bind: &str, token: Option<&str>) -> (Server, String) {
    ui_with(project, home, bind, token, &[])
}

/// `windsock ui` with more arguments.
pub fn ui_with(
    project: &Path,
    home: &Path,
    bind: &str,
    token: Option<&str>,
    args: &[&str],
) -> (Server, String) {
    let mut cmd = windsock(project, home);
    cmd.args(["ui", "--bind", bind])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .env_remove("WINDSOCK_UI_TOKEN");
    if let Some(t) = token {
        cmd.env("WINDSOCK_UI_TOKEN", t);
    }
    serving(&mut cmd)
}

/// Starts a command that serves the UI (`ui`, `scheduler --ui`) with its stdout piped: the
/// server, and the address it prints first.
pub fn serving(cmd: &mut Command) -> (Server, String) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start windsock");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the UI's address");
    let addr = line
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    assert!(!addr.is_empty(), "windsock printed no address");
    (server, addr)
}

/// A file's text, or nothing when it does not exist (yet).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A small deterministic random source (no extra dependency) whose seed is printed, so that a
/// failing sequence can be replayed.
pub struct Lcg(u64);

impl Lcg {
    /// Seeded from `WINDSOCK_TEST_SEED` when set (to replay a failing sequence), else from the
    /// clock; the seed is printed either way. A seed that is not a number stops the test rather
    /// than quietly running another sequence than the one asked for.
    pub fn seeded(what: &str) -> Lcg {
        let seed = match std::env::var("WINDSOCK_TEST_SEED") {
            Ok(s) => s
                .parse()
                .unwrap_or_else(|_| panic!("WINDSOCK_TEST_SEED must be a number, not `{s}`")),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|x| x.as_nanos() as u64)
                .unwrap_or(7),
        };
        eprintln!("{what} seed: {seed} (replay with WINDSOCK_TEST_SEED={seed})");
        Lcg(seed)
    }

    /// A number in `lo..hi`.
    pub fn next_ms(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (self.0 >> 33) % (hi - lo)
    }
}

/// A TCP proxy on 127.0.0.1 to a local port whose forwarding can be stalled: bytes stop moving
/// both ways and no connection is closed, as when a network drops packets.
pub struct StallingProxy {
    pub port: u16,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl StallingProxy {
    pub fn start(target: u16) -> StallingProxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stalled.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    let (Ok(mut from), Ok(mut to)) = (from, to) else {
                        continue;
                    };
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let _ = from.set_read_timeout(Some(std::time::Duration::from_millis(100)));
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            while flag.load(Ordering::SeqCst) {
                                std::thread::sleep(std::time::Duration::from_millis(50));
                            }
                            match from.read(&mut buf) {
                                Ok(0) => {
                                    let _ = to.shutdown(std::net::Shutdown::Write);
                                    return;
                                }
                                Ok(n) => {
                                    while flag.load(Ordering::SeqCst) {
                                        std::thread::sleep(std::time::Duration::from_millis(50));
                                    }
                                    if to.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => {
                                    let _ = to.shutdown(std::net::Shutdown::Both);
                                    return;
                                }
                            }
                        }
                    });
                }
            }
        });
        StallingProxy { port, stalled }
    }

    /// Stops (true) or resumes (false) all forwarding.
    pub fn stall(&self, on: bool) {
        self.stalled.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}
