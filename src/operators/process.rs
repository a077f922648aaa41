//! Process groups of operators that run commands: killing them on cancel, and finding leftovers
//! of a process that died.

/// Kills a command's whole process group when dropped: on timeout, on cancel, on panic.
pub struct GroupGuard(Option<i32>);

impl GroupGuard {
    pub fn new(pgid: Option<u32>) -> Self {
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

/// Kills what is left of a try's process group after the process that supervised it died.
///
/// Only processes of that group which started after `since` are considered, so a pid reused by
/// an unrelated group is never signalled. Returns how many processes were killed.
pub fn kill_leftover_group(pgid: u32, since: chrono::DateTime<chrono::Utc>) -> usize {
    let Some(boot) = boot_time() else {
        return 0;
    };
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let since_ticks = ((since.timestamp() as f64 - boot) * ticks).max(0.0) as u64;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state(0) ppid(1) pgrp(2) ... starttime(19).
        let (Some(pgrp), Some(start)) = (fields.get(2), fields.get(19)) else {
            continue;
        };
        if pgrp.parse::<u32>().ok() != Some(pgid) || fields.first() == Some(&"Z") {
            continue;
        }
        if start.parse::<u64>().is_ok_and(|s| s + 1 >= since_ticks) {
            // SAFETY: kill only sends a signal.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
    }
    killed
}

/// Seconds since the epoch at which the machine booted.
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
