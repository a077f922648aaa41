//! What windsock asks of the operating system, in one place: processes (groups, `/proc`, death
//! signals), advisory file locks, and durable file replacement. Linux only, as windsock is.
//!
//! Every `unsafe` call to libc lives here, each with the reason it is sound.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

// ---- processes ----------------------------------------------------------------------------

/// This machine's host name.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Where this process's pids mean something: the host name, the kernel's boot (a reboot reuses
/// pids) and the PID namespace (two containers sharing the host's network, and so its name,
/// each have their own pids). Processes with the same place can see each other in `/proc`.
pub(crate) fn pid_place() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().chars().filter(|c| *c != '-').take(12).collect())
        .unwrap_or_else(|_| "noboot".to_string());
    // `pid:[4026531836]`: the namespace's inode.
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|l| {
            let l = l.to_string_lossy().into_owned();
            let inode: String = l.chars().filter(char::is_ascii_digit).collect();
            (!inode.is_empty()).then_some(inode)
        })
        .unwrap_or_else(|| "nons".to_string());
    format!("{}/{boot}/{ns}", hostname().replace([':', '/'], "_"))
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces and parentheses):
/// index 0 is the state, 1 the parent pid, 2 the process group, 19 the start time.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// A process's start time in clock ticks since boot: with the pid, it names one process, never a
/// later one that got the same pid.
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Whether a process runs (a zombie does not).
pub(crate) fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z"))
}

/// A process's command line, split into its arguments.
pub(crate) fn cmdline(pid: u32) -> Option<Vec<String>> {
    let mut raw = String::new();
    File::open(format!("/proc/{pid}/cmdline"))
        .and_then(|mut f| f.read_to_string(&mut raw))
        .ok()?;
    Some(
        raw.split('\0')
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// Sends `signal` to a process; false if it is gone.
pub(crate) fn signal(pid: u32, signal: i32) -> bool {
    // SAFETY: kill only sends a signal; a stale pid at worst yields ESRCH.
    unsafe { libc::kill(pid as i32, signal) == 0 }
}

/// Kills a command's whole process group when dropped: on timeout, on cancel, on panic.
pub(crate) struct GroupGuard(Option<i32>);

impl GroupGuard {
    pub(crate) fn new(pgid: Option<u32>) -> Self {
        GroupGuard(pgid.map(|p| p as i32))
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: killpg only sends a signal; a stale pgid at worst yields ESRCH.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

/// Makes a child about to be started receive `signal` when the thread that starts it dies, so a
/// killed windsock never leaves a command running unsupervised.
pub(crate) fn die_with_parent(cmd: &mut std::process::Command, signal: i32) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; the hook runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, signal);
            Ok(())
        });
    }
}

/// [`die_with_parent`] for tokio's command.
pub(crate) fn die_with_parent_async(cmd: &mut tokio::process::Command, signal: i32) {
    // SAFETY: as in `die_with_parent`.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, signal);
            Ok(())
        });
    }
}

/// Starts `cmd` so that it receives `signal` when windsock dies, from a thread that lives as
/// long as the process. `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends,
/// not the process: forked from a runtime thread, a child would be killed when tokio retires
/// that thread (a blocking-pool thread ends after 10 s idle; a worker that entered
/// `block_in_place` becomes one), in the middle of its work.
pub(crate) async fn spawn_tied(
    mut cmd: tokio::process::Command,
    signal: i32,
) -> std::io::Result<tokio::process::Child> {
    type Job = (
        tokio::process::Command,
        tokio::runtime::Handle,
        tokio::sync::oneshot::Sender<std::io::Result<tokio::process::Child>>,
    );
    static SPAWNER: std::sync::OnceLock<Option<std::sync::Mutex<std::sync::mpsc::Sender<Job>>>> =
        std::sync::OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("windsock-spawner".into())
            .spawn(move || {
                // Lives as long as the process: the children it forks are tied to it.
                for (mut cmd, runtime, reply) in rx {
                    // The child's exit is watched by the runtime that asked for it.
                    let _entered = runtime.enter();
                    let _ = reply.send(cmd.spawn());
                }
            })
            .ok()
            .map(|_| std::sync::Mutex::new(tx))
    });
    die_with_parent_async(&mut cmd, signal);
    let Some(spawner) = spawner else {
        return Err(std::io::Error::other(
            "the thread that starts commands could not start",
        ));
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job = (cmd, tokio::runtime::Handle::current(), reply);
    spawner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(job)
        .map_err(|_| std::io::Error::other("the thread that starts commands has ended"))?;
    answer
        .await
        .map_err(|_| std::io::Error::other("the thread that starts commands has ended"))?
}

/// Makes a write past the file-size limit (`ulimit -f`) fail with an error (EFBIG) instead of
/// killing the process with SIGXFSZ, so that a full "disk" is a failed write to handle.
pub(crate) fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Kills what is left of a try's process group after the process that supervised it died.
///
/// Only processes of that group which started after `since` are considered, so a pid reused by
/// an unrelated group is never signalled. Returns how many processes were killed.
pub(crate) fn kill_leftover_group(pgid: u32, since: chrono::DateTime<chrono::Utc>) -> usize {
    let Some(boot) = boot_time() else {
        return 0;
    };
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // A second of slack for the clock having been stepped since; a process that old is still
    // younger than anything a reused pid could belong to.
    let since = since.timestamp_micros() as f64 / 1e6 - 1.0;
    let since_ticks = ((since - boot) * ticks).max(0.0) as u64;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Some(fields) = stat_fields(pid) else {
            continue;
        };
        let (Some(state), Some(pgrp), Some(start)) =
            (fields.first(), fields.get(2), fields.get(19))
        else {
            continue;
        };
        if pgrp.parse::<u32>().ok() != Some(pgid) || state == "Z" {
            continue;
        }
        if start.parse::<u64>().is_ok_and(|s| s + 1 >= since_ticks) && signal(pid, libc::SIGKILL) {
            killed += 1;
        }
    }
    killed
}

/// Seconds since the epoch at which the machine booted, to the microsecond: the wall clock less
/// the time since boot (`/proc/stat`'s `btime` is rounded down to the second, which made a
/// process started just after a try began look older than it).
fn boot_time() -> Option<f64> {
    let read = |clock| {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the struct passed by pointer.
        (unsafe { libc::clock_gettime(clock, &mut t) } == 0)
            .then(|| t.tv_sec as f64 + t.tv_nsec as f64 / 1e9)
    };
    Some(read(libc::CLOCK_REALTIME)? - read(libc::CLOCK_BOOTTIME)?)
}

// ---- locks --------------------------------------------------------------------------------

/// An advisory lock on a file (`flock`), held until dropped; the kernel releases it when the
/// process dies, even by SIGKILL. The file may hold a note for whoever finds it taken (a pid).
pub(crate) struct FileLock {
    file: File,
}

/// How a lock is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockMode {
    Exclusive,
    Shared,
}

impl FileLock {
    fn open(path: &Path) -> std::io::Result<File> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    }

    fn flock(file: &File, mode: LockMode, wait: bool) -> bool {
        let kind = match mode {
            LockMode::Exclusive => libc::LOCK_EX,
            LockMode::Shared => libc::LOCK_SH,
        };
        let flags = if wait { kind } else { kind | libc::LOCK_NB };
        loop {
            // SAFETY: flock on a file descriptor this function's caller owns.
            if unsafe { libc::flock(file.as_raw_fd(), flags) } == 0 {
                return true;
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return false;
            }
        }
    }

    /// Takes the lock, waiting for it.
    pub(crate) fn acquire(path: &Path) -> std::io::Result<FileLock> {
        let file = Self::open(path)?;
        if !Self::flock(&file, LockMode::Exclusive, true) {
            return Err(std::io::Error::last_os_error());
        }
        Ok(FileLock { file })
    }

    /// Takes the lock if nobody holds it; otherwise `Ok(Err(note))` with the holder's note.
    pub(crate) fn try_acquire(path: &Path) -> std::io::Result<Result<FileLock, String>> {
        let mut file = Self::open(path)?;
        if !Self::flock(&file, LockMode::Exclusive, false) {
            let mut note = String::new();
            let _ = file.read_to_string(&mut note);
            return Ok(Err(note.trim().to_string()));
        }
        Ok(Ok(FileLock { file }))
    }

    /// The note of whoever holds the lock at `path`, or `None` when nobody does.
    pub(crate) fn holder(path: &Path) -> Option<String> {
        let mut file = File::open(path).ok()?;
        if Self::flock(&file, LockMode::Shared, false) {
            // SAFETY: releasing the shared lock just taken on our own descriptor.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
            return None;
        }
        let mut note = String::new();
        let _ = file.read_to_string(&mut note);
        Some(note.trim().to_string())
    }

    /// Replaces the note (this process's pid, say).
    pub(crate) fn set_note(&mut self, note: &str) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        writeln!(self.file, "{note}")?;
        self.file.flush()
    }
}

// ---- files --------------------------------------------------------------------------------

/// Replaces `path` with `bytes` so that a crash leaves the old content or the new, never a mix:
/// written to a temporary file beside it, synced, renamed over it, and the directory synced so
/// the rename itself survives a power loss.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per call, so that two writers of one path in one process (threads) never share a
    // temporary file: each renames a whole file of its own.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Raises this process's soft limit on open files to its hard limit (as servers do: the
/// default soft limit of 1,024 is a few hundred client connections) and returns the limit now
/// in force.
pub(crate) fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Syncs a directory, so that files created, renamed or removed in it stay so after a crash.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `path` with symlinks and `..` resolved, if it exists and lies inside one of `roots`: what a
/// config may read from the file system (a `file://` download, a `sql/` glob's matches).
pub(crate) fn inside(path: &Path, roots: &[&Path]) -> Option<PathBuf> {
    let real = path.canonicalize().ok()?;
    roots
        .iter()
        .filter_map(|r| r.canonicalize().ok())
        .any(|r| real.starts_with(r))
        .then_some(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command started for a task outlives the (runtime) thread that asked for it.
    #[test]
    fn a_tied_command_outlives_the_thread_that_started_it() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let sleeper = || {
            let mut cmd = tokio::process::Command::new("sleep");
            cmd.arg("1");
            cmd
        };
        // Forked from a thread that then ends, with the death signal set there: killed.
        let handle = rt.handle().clone();
        let mut direct = std::thread::spawn(move || {
            let _entered = handle.enter();
            let mut cmd = sleeper();
            die_with_parent_async(&mut cmd, libc::SIGKILL);
            cmd.spawn().unwrap()
        })
        .join()
        .unwrap();
        let status = rt.block_on(direct.wait()).unwrap();
        assert!(
            !status.success(),
            "the signal is tied to the forking thread"
        );
        // Through the spawner: it finishes its work.
        let handle = rt.handle().clone();
        let mut tied = std::thread::spawn(move || {
            handle
                .block_on(spawn_tied(sleeper(), libc::SIGKILL))
                .unwrap()
        })
        .join()
        .unwrap();
        let status = rt.block_on(tied.wait()).unwrap();
        assert!(status.success(), "{status}");
    }

    #[test]
    fn two_threads_replacing_one_file_each_write_a_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("groups.json");
        let writers: Vec<_> = (0..4u8)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let body = vec![b'a' + w; 64 * 1024];
                    for _ in 0..100 {
                        write_atomic(&path, &body).expect("an atomic write");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let body = std::fs::read(&path).unwrap();
        assert_eq!(body.len(), 64 * 1024);
        assert!(body.iter().all(|b| *b == body[0]), "a mix of two writers");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "temporary files left: {left:?}");
    }

    /// The executor records a try's start just before it starts the command: from that very
    /// moment, the group is found, whatever the fraction of the second (it used to be missed
    /// about a quarter of the time, the boot time being rounded down to the second).
    #[test]
    fn a_group_started_right_after_its_try_is_found() {
        for _ in 0..20 {
            let since = chrono::Utc::now();
            let mut cmd = std::process::Command::new("sleep");
            cmd.arg("30");
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let mut child = cmd.spawn().unwrap();
            assert_eq!(kill_leftover_group(child.id(), since), 1, "since {since}");
            child.wait().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(37));
        }
    }

    #[test]
    fn kills_a_leftover_group_but_not_older_processes() {
        let before = chrono::Utc::now() - chrono::Duration::seconds(2);
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30; wait"]);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        // A start time in the future protects everything.
        let later = chrono::Utc::now() + chrono::Duration::seconds(60);
        assert_eq!(kill_leftover_group(child.id(), later), 0);
        assert_eq!(kill_leftover_group(child.id(), before), 3);
        let status = child.wait().unwrap();
        assert!(!status.success());
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holders_note() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let mut lock = FileLock::try_acquire(&path).unwrap().unwrap();
        lock.set_note("1234").unwrap();
        assert_eq!(FileLock::holder(&path).as_deref(), Some("1234"));
        assert_eq!(
            FileLock::try_acquire(&path).unwrap().err().as_deref(),
            Some("1234")
        );
        drop(lock);
        assert_eq!(FileLock::holder(&path), None);
        assert!(FileLock::try_acquire(&path).unwrap().is_ok());
    }

    #[test]
    fn write_atomic_replaces_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        write_atomic(&path, b"first version, rather long").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[test]
    fn this_process_is_alive_and_has_a_start_time() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(process_start(me).is_some());
        assert!(cmdline(me).is_some_and(|a| !a.is_empty()));
    }
}
