//! A throwaway PostgreSQL server for tests: Debian's `postgresql` package, started on a
//! temporary data directory and a free loopback port, once per test process. `.ci/run`
//! installs the package; `WINDSOCK_PG_BIN` names another folder of PostgreSQL programs.
//!
//! Shared by the store's unit tests (included by path) and the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub struct Server {
    pub port: u16,
    pub bin: PathBuf,
    pub pid: u32,
    data: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The folder holding `initdb`, `postgres` and `psql`.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WINDSOCK_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .filter(|d| d.join("initdb").is_file())
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL's programs are not installed: `apt-get install postgresql` (as .ci/run \
                 does), or set WINDSOCK_PG_BIN to the folder holding initdb and postgres"
            )
        })
}

/// The uid and gid PostgreSQL runs as: `postgres` when the tests run as root (the server
/// refuses root), else ourselves.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam returns a pointer into static storage, read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root needs the `postgres` user (created by Debian's postgresql package)"
    );
    // SAFETY: checked non-null above.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

fn as_server_user(cmd: &mut Command, user: Option<(u32, u32)>, die_with_us: bool) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec. The parent-death signal is
    // set after the user changes (a credential change clears it).
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = user {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if die_with_us {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            }
            Ok(())
        });
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn chown(path: &Path, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown for postgres");
    }
}

/// Starts `postgres` over `data` on `port`, logging to `log`; returns its pid. Started from a
/// thread that lives as long as the process: the parent-death signal fires when the thread
/// that forked the server ends, and test threads come and go.
fn spawn_postgres(bin: &Path, data: &Path, port: u16, log: &Path, user: Option<(u32, u32)>) -> u32 {
    let logfile = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    chown(log, user);
    let (tx, rx) = std::sync::mpsc::channel();
    let (bin, data) = (bin.to_path_buf(), data.to_path_buf());
    std::thread::spawn(move || {
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "fsync=off"])
            .args(["-c", "max_connections=200"])
            .stdout(logfile.try_clone().expect("log"))
            .stderr(logfile);
        as_server_user(&mut cmd, user, true);
        match cmd.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(child.id()));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
        loop {
            std::thread::park();
        }
    });
    rx.recv().expect("server thread").expect("start postgres")
}

impl Server {
    /// Starts a new server (fsync off: the tests kill clients, never the server).
    pub fn start() -> Server {
        let bin = bin_dir();
        let user = run_as();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        chown(&data, user);
        let mut init = Command::new(bin.join("initdb"));
        init.args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .current_dir(dir.path());
        as_server_user(&mut init, user, false);
        let out = init.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let log = dir.path().join("postgres.log");
        let pid = spawn_postgres(&bin, &data, port, &log, user);
        let server = Server {
            port,
            bin,
            pid,
            data,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.psql("postgres", "SELECT 1").status.success() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Stops the server (a fast shutdown: open connections are cut, as in `pg_ctl restart -m
    /// fast`), waits `down`, and starts it again on the same port and data.
    pub fn restart(&mut self, down: Duration) {
        // SAFETY: signalling the server process this helper started.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{}/stat", self.pid)).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
                .unwrap_or_default()
                .contains(") Z ")
        {
            assert!(Instant::now() < deadline, "PostgreSQL did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(down);
        self.pid = spawn_postgres(&self.bin, &self.data, self.port, &self.log, run_as());
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.psql("postgres", "SELECT 1").status.success() {
            assert!(Instant::now() < deadline, "PostgreSQL did not start again");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs one SQL statement with psql.
    pub fn psql(&self, db: &str, sql: &str) -> std::process::Output {
        Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ])
            .output()
            .expect("run psql")
    }

    /// A new, empty database; returns its URL.
    pub fn database(&self) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let out = self.psql("postgres", &format!("CREATE DATABASE {name}"));
        assert!(
            out.status.success(),
            "CREATE DATABASE failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

/// The test process's server, started on first use.
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start)
}
