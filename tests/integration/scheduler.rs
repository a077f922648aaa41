//! The scheduler daemon and backfills, driven through the real binary: crash safety under
//! SIGKILL, partition walking, interrupted backfills, hot reload, locking and control commands.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn start_daemon(dir: &Path, home: &Path, log: &str) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(log))
        .expect("log file");
    windsock(dir, home)
        .args(["scheduler", "--poll", "200ms", "--grace", "5s"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the scheduler")
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

fn wait_exit(mut child: Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn runs(dir: &Path, home: &Path) -> Vec<serde_json::Value> {
    json(windsock(dir, home).args(["runs", "--limit", "100000", "--json"]))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn sigkilled_five_times_every_run_succeeds_and_every_task_runs_once() {
    let pipeline = |schedule: &str| {
        format!(
            r#"
dag: crashy
schedule: {schedule}
tasks:
  t1:
    operator: shell
    with: {{ command: "sleep 0.3; echo '{{{{ run_id }}}} t1' >> out.txt" }}
  t2:
    operator: shell
    depends_on: [t1]
    with: {{ command: "sleep 0.3; echo '{{{{ run_id }}}} t2' >> out.txt" }}
  t3:
    operator: shell
    depends_on: [t2]
    with: {{ command: "sleep 0.3; echo '{{{{ run_id }}}} t3' >> out.txt" }}
"#
        )
    };
    let dir = project(&[("pipelines/crashy.yaml", &pipeline("\"* * * * * *\""))]);
    let home = dir.path().join(".windsock");
    let mut rng = Lcg::seeded("kill schedule");
    let mut daemon = start_daemon(dir.path(), &home, "daemon.log");
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(rng.next_ms(700, 2500)));
        daemon.kill().expect("SIGKILL the scheduler");
        daemon.wait().expect("reap");
        daemon = start_daemon(dir.path(), &home, "daemon.log");
    }
    std::thread::sleep(Duration::from_secs(2));
    // Drain: stop the ticks (hot reload) and let every created run finish.
    std::fs::write(dir.path().join("pipelines/crashy.yaml"), pipeline("null")).unwrap();
    wait_until("all runs finished", Duration::from_secs(60), || {
        let rs = runs(dir.path(), &home);
        !rs.is_empty()
            && rs
                .iter()
                .all(|r| r["state"] == "success" || r["state"] == "failed")
    });
    signal(&daemon, libc::SIGTERM);
    assert!(
        wait_exit(daemon, Duration::from_secs(20)).success(),
        "SIGTERM exits 0"
    );

    let rs = runs(dir.path(), &home);
    assert!(rs.len() >= 3, "only {} runs", rs.len());
    let ids: BTreeSet<String> = rs
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect();
    for r in &rs {
        if r["state"] != "success" {
            let id = r["run_id"].as_str().unwrap();
            let tis = json(windsock(dir.path(), &home).args(["tasks", id, "--json"]));
            panic!("{r}\n{tis:#}\n{}", read(&dir.path().join("daemon.log")));
        }
    }
    let out = read(&dir.path().join("out.txt"));
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for line in out.lines() {
        *counts.entry(line).or_default() += 1;
    }
    for id in &ids {
        for t in ["t1", "t2", "t3"] {
            let line = format!("{id} {t}");
            assert_eq!(
                counts.get(line.as_str()).copied().unwrap_or(0),
                1,
                "`{line}` in:\n{out}"
            );
        }
    }
    assert_eq!(counts.len(), ids.len() * 3, "lines of unknown runs:\n{out}");
    let log = read(&dir.path().join("daemon.log"));
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_partitioned_dag_walks_the_seven_months_in_order_one_per_tick_then_stops() {
    let dir = project(&[(
        "pipelines/months.yaml",
        "dag: months\nschedule: \"* * * * * *\"\npartitions:\n  monthly: {from: 2019-10, to: 2020-04}\ntasks:\n  show: {operator: shell, with: {command: 'echo {{ partition.key }} >> out.txt'}}\n",
    )]);
    let home = dir.path().join(".windsock");
    let daemon = start_daemon(dir.path(), &home, "daemon.log");
    wait_until("seven runs", Duration::from_secs(40), || {
        runs(dir.path(), &home)
            .iter()
            .filter(|r| r["state"] == "success")
            .count()
            == 7
    });
    std::thread::sleep(Duration::from_millis(2500));
    signal(&daemon, libc::SIGTERM);
    assert!(wait_exit(daemon, Duration::from_secs(20)).success());

    let mut rs = runs(dir.path(), &home);
    assert_eq!(rs.len(), 7, "nothing runs after the last partition");
    rs.reverse(); // oldest first
    let partitions: Vec<&str> = rs
        .iter()
        .map(|r| r["partition"].as_str().unwrap())
        .collect();
    assert_eq!(
        partitions,
        [
            "2019-10", "2019-11", "2019-12", "2020-01", "2020-02", "2020-03", "2020-04"
        ]
    );
    assert!(rs.iter().all(|r| r["trigger"] == "scheduled"));
    let created: Vec<chrono::DateTime<chrono::Utc>> = rs
        .iter()
        .map(|r| r["created_at"].as_str().unwrap().parse().unwrap())
        .collect();
    for pair in created.windows(2) {
        assert!(
            pair[1] - pair[0] >= chrono::Duration::milliseconds(500),
            "one run per tick: {created:?}"
        );
    }
    assert_eq!(
        read(&dir.path().join("out.txt")),
        "2019-10\n2019-11\n2019-12\n2020-01\n2020-02\n2020-03\n2020-04\n"
    );
    let dags = json(windsock(dir.path(), &home).args(["dags", "--json"]));
    assert_eq!(dags[0]["last_run_state"], "success");
    assert_eq!(dags[0]["next_partition"], serde_json::Value::Null);
}

const BACKFILL_DAG: &str = r#"
dag: bf
partitions:
  monthly: { from: 2019-10, to: 2020-04 }
tasks:
  a:
    operator: shell
    with: { command: "echo {{ partition.key }} >> starts.txt; sleep 0.4; echo '{{ partition.key }} a' >> out.txt" }
  b:
    operator: shell
    depends_on: [a]
    with: { command: "echo '{{ partition.key }} b' >> out.txt" }
"#;

fn assert_each_month_once(out: &str) {
    for m in [
        "2019-10", "2019-11", "2019-12", "2020-01", "2020-02", "2020-03", "2020-04",
    ] {
        for t in ["a", "b"] {
            let line = format!("{m} {t}");
            assert_eq!(
                out.lines().filter(|l| *l == line).count(),
                1,
                "`{line}` in:\n{out}"
            );
        }
    }
    assert_eq!(out.lines().count(), 14, "{out}");
}

#[test]
fn an_interrupted_backfill_continues_where_it_stopped() {
    let dir = project(&[("pipelines/bf.yaml", BACKFILL_DAG)]);
    let home = dir.path().join(".windsock");

    let plan = run(windsock(dir.path(), &home).args([
        "backfill",
        "bf",
        "--from",
        "2019-10",
        "--to",
        "2020-04",
        "--dry-run",
    ]));
    let (stdout, _) = text(&plan);
    assert!(plan.status.success());
    assert_eq!(
        stdout.lines().filter(|l| l.contains(" run")).count(),
        7,
        "{stdout}"
    );

    let child = windsock(dir.path(), &home)
        .args(["backfill", "bf", "--from", "2019-10", "--to", "2020-04"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start backfill");
    wait_until("the fourth month started", Duration::from_secs(30), || {
        read(&dir.path().join("starts.txt")).lines().count() >= 4
    });
    signal(&child, libc::SIGINT);
    let status = wait_exit(child, Duration::from_secs(20));
    assert_eq!(
        status.code(),
        Some(130),
        "an interrupted backfill exits 130"
    );
    let done_before = runs(dir.path(), &home)
        .iter()
        .filter(|r| r["state"] == "success")
        .count();
    assert!(
        (3..7).contains(&done_before),
        "{done_before} runs done before the interrupt"
    );

    let out = run(windsock(dir.path(), &home)
        .args(["backfill", "bf", "--from", "2019-10", "--to", "2020-04"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "{} runs succeeded, {done_before} skipped",
            7 - done_before
        )),
        "{stdout}"
    );
    let rs = runs(dir.path(), &home);
    assert_eq!(rs.len(), 7);
    assert!(
        rs.iter()
            .all(|r| r["state"] == "success" && r["trigger"] == "backfill"),
        "{rs:?}"
    );
    assert_each_month_once(&read(&dir.path().join("out.txt")));

    // Everything succeeded: a third backfill skips all; --rerun-all runs them again.
    let again = run(windsock(dir.path(), &home).args([
        "backfill",
        "bf",
        "--from",
        "2019-12",
        "--to",
        "2020-01",
        "--dry-run",
    ]));
    let (stdout, _) = text(&again);
    assert_eq!(
        stdout.lines().filter(|l| l.contains("skip")).count(),
        2,
        "{stdout}"
    );
}

#[test]
fn a_backfill_beside_a_running_scheduler_never_double_runs() {
    let dag = BACKFILL_DAG.replace("dag: bf\n", "dag: bf\nschedule: \"* * * * * *\"\n");
    let dir = project(&[("pipelines/bf.yaml", &dag)]);
    let home = dir.path().join(".windsock");
    let daemon = start_daemon(dir.path(), &home, "daemon.log");
    std::thread::sleep(Duration::from_millis(1500));
    let out = run(windsock(dir.path(), &home).args([
        "backfill",
        "bf",
        "--from",
        "2019-10",
        "--to",
        "2020-04",
        "--max-active",
        "2",
    ]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    wait_until("seven successful runs", Duration::from_secs(40), || {
        runs(dir.path(), &home)
            .iter()
            .filter(|r| r["state"] == "success")
            .count()
            == 7
    });
    std::thread::sleep(Duration::from_millis(1500));
    signal(&daemon, libc::SIGTERM);
    assert!(wait_exit(daemon, Duration::from_secs(20)).success());
    let rs = runs(dir.path(), &home);
    assert_eq!(rs.len(), 7, "{rs:?}");
    let parts: BTreeSet<&str> = rs
        .iter()
        .map(|r| r["partition"].as_str().unwrap())
        .collect();
    assert_eq!(parts.len(), 7);
    assert_each_month_once(&read(&dir.path().join("out.txt")));
}

#[test]
fn hot_reload_changes_the_next_run_and_a_broken_edit_keeps_the_last_good_version() {
    let v = |word: &str| {
        format!(
            "dag: hot\nschedule: \"* * * * * *\"\ntasks:\n  say:\n    operator: shell\n    with: {{ command: \"echo {word} >> out.txt\" }}\n"
        )
    };
    let dir = project(&[("pipelines/hot.yaml", &v("v1"))]);
    let home = dir.path().join(".windsock");
    let file = dir.path().join("pipelines/hot.yaml");
    let out = dir.path().join("out.txt");
    let daemon = start_daemon(dir.path(), &home, "daemon.log");
    wait_until("v1 runs", Duration::from_secs(20), || {
        read(&out).contains("v1")
    });
    std::fs::write(&file, v("v2")).unwrap();
    wait_until("v2 runs", Duration::from_secs(20), || {
        read(&out).contains("v2")
    });

    let broken = "dag: hot\nschedule: \"* * * * * *\"\ntasks:\n  say:\n    operator: shell\n    with: { comand: \"echo v3 >> out.txt\" }\n";
    std::fs::write(&file, broken).unwrap();
    let v2_before = read(&out).lines().filter(|l| *l == "v2").count();
    wait_until(
        "the broken edit is reported",
        Duration::from_secs(20),
        || read(&dir.path().join("daemon.log")).contains("unknown key `comand`"),
    );
    wait_until("v2 keeps running", Duration::from_secs(20), || {
        read(&out).lines().filter(|l| *l == "v2").count() >= v2_before + 2
    });
    // Not YAML at all any more (an editor saved half a line): the same.
    std::fs::write(&file, "dag: hot\nschedule: \"* * * * * *\"\ntasks: [say\n").unwrap();
    let v2_before = read(&out).lines().filter(|l| *l == "v2").count();
    wait_until(
        "the syntax error is reported",
        Duration::from_secs(20),
        || read(&dir.path().join("daemon.log")).contains("YAML syntax error"),
    );
    wait_until("v2 still runs", Duration::from_secs(20), || {
        read(&out).lines().filter(|l| *l == "v2").count() >= v2_before + 2
    });
    // Fixed: the new version takes over.
    std::fs::write(&file, v("v4")).unwrap();
    wait_until("v4 runs", Duration::from_secs(20), || {
        read(&out).contains("v4")
    });
    signal(&daemon, libc::SIGTERM);
    assert!(wait_exit(daemon, Duration::from_secs(20)).success());
    let log = read(&dir.path().join("daemon.log"));
    assert!(
        log.contains("pipelines/hot.yaml:6:13: unknown key `comand` in `tasks.say.with`"),
        "{log}"
    );
    assert!(
        log.contains("the previous version of `hot` keeps running"),
        "{log}"
    );
    assert!(
        log.contains("pipelines/hot.yaml:4:1: YAML syntax error"),
        "{log}"
    );
    assert!(!read(&out).contains("v3"));
    let lines: Vec<String> = read(&out).lines().map(String::from).collect();
    let first_v2 = lines.iter().position(|l| l == "v2").unwrap();
    let first_v4 = lines.iter().position(|l| l == "v4").unwrap();
    assert!(
        lines[first_v2..first_v4].iter().all(|l| l == "v2")
            && lines[first_v4..].iter().all(|l| l == "v4"),
        "versions out of order: {lines:?}"
    );
}

#[test]
fn one_scheduler_per_home_and_control_commands_reach_it() {
    let dir = project(&[(
        "pipelines/manual.yaml",
        "dag: manual\ntasks:\n  a: {operator: shell, with: {command: 'echo ran >> out.txt'}}\n",
    )]);
    let home = dir.path().join(".windsock");
    let daemon = start_daemon(dir.path(), &home, "daemon.log");
    wait_until("the daemon holds its lock", Duration::from_secs(10), || {
        read(&dir.path().join("daemon.log")).contains("scheduler started")
    });
    let second = run(windsock(dir.path(), &home).arg("scheduler"));
    let (_, stderr) = text(&second);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr.contains("another windsock scheduler (pid"),
        "{stderr}"
    );
    assert!(stderr.contains("is already running on"), "{stderr}");

    let out = run(windsock(dir.path(), &home).args(["trigger", "manual", "--wait"]));
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(read(&dir.path().join("out.txt")), "ran\n");

    let out = run(windsock(dir.path(), &home).args(["pause", "manual"]));
    assert!(out.status.success());
    let dags = json(windsock(dir.path(), &home).args(["dags", "--json"]));
    assert_eq!(dags[0]["paused"], true);
    let out = run(windsock(dir.path(), &home).args(["trigger", "manual"]));
    let run_id = text(&out).0.trim().to_string();
    std::thread::sleep(Duration::from_millis(800));
    let rs = runs(dir.path(), &home);
    let queued = rs.iter().find(|r| r["run_id"] == run_id.as_str()).unwrap();
    assert_eq!(queued["state"], "queued", "a paused DAG starts nothing");
    let out = run(windsock(dir.path(), &home).args(["unpause", "manual"]));
    assert!(out.status.success());
    wait_until(
        "the triggered run ran after unpause",
        Duration::from_secs(10),
        || read(&dir.path().join("out.txt")) == "ran\nran\n",
    );

    signal(&daemon, libc::SIGTERM);
    assert!(wait_exit(daemon, Duration::from_secs(20)).success());
    // The lock went with the process: a new scheduler starts.
    let daemon = start_daemon(dir.path(), &home, "daemon2.log");
    wait_until("a new daemon starts", Duration::from_secs(10), || {
        read(&dir.path().join("daemon2.log")).contains("scheduler started")
    });
    signal(&daemon, libc::SIGTERM);
    assert!(wait_exit(daemon, Duration::from_secs(20)).success());
}

#[test]
fn sigterm_gives_running_tasks_the_grace_period_then_records_them_for_retry() {
    let dir = project(&[(
        "pipelines/long.yaml",
        "dag: long\ntasks:\n  wait:\n    operator: shell\n    with: {command: 'echo started >> out.txt; sleep 30; echo done >> out.txt'}\n",
    )]);
    let home = dir.path().join(".windsock");
    let daemon = start_daemon(dir.path(), &home, "daemon.log");
    let out = run(windsock(dir.path(), &home).args(["trigger", "long"]));
    let run_id = text(&out).0.trim().to_string();
    wait_until("the task started", Duration::from_secs(10), || {
        read(&dir.path().join("out.txt")).contains("started")
    });
    let t0 = Instant::now();
    signal(&daemon, libc::SIGTERM);
    let status = wait_exit(daemon, Duration::from_secs(20));
    assert!(status.success(), "exit 0 after SIGTERM");
    assert!(
        t0.elapsed() >= Duration::from_secs(4),
        "the grace period (5s) was not given"
    );
    let tis = json(windsock(dir.path(), &home).args(["tasks", &run_id, "--json"]));
    assert_eq!(tis[0]["state"], "up_for_retry", "{tis}");
    assert!(
        tis[0]["error"]
            .as_str()
            .unwrap()
            .contains("interrupted by a stop"),
        "{tis}"
    );
    // After a restart the task runs again (its try is not counted against retries).
    std::fs::write(
        dir.path().join("pipelines/long.yaml"),
        "dag: long\ntasks:\n  wait:\n    operator: shell\n    with: {command: 'echo again >> out.txt'}\n",
    )
    .unwrap();
    let daemon = start_daemon(dir.path(), &home, "daemon.log");
    wait_until(
        "the run finished after restart",
        Duration::from_secs(15),
        || {
            runs(dir.path(), &home)
                .iter()
                .any(|r| r["run_id"] == run_id.as_str() && r["state"] == "success")
        },
    );
    signal(&daemon, libc::SIGTERM);
    assert!(wait_exit(daemon, Duration::from_secs(20)).success());
    assert_eq!(read(&dir.path().join("out.txt")), "started\nagain\n");
}

#[test]
fn catchup_creates_the_missed_intervals_in_order_and_no_catchup_waits_for_a_tick() {
    let today = chrono::Utc::now().date_naive();
    let start = today - chrono::Duration::days(3);
    let dag = |name: &str, catchup: bool| {
        format!(
            "dag: {name}\nschedule: \"0 0 * * *\"\nstart_date: {start}\ncatchup: {catchup}\ntasks:\n  a: {{operator: shell, with: {{command: 'echo {{{{ ds }}}} {{{{ data_interval_end }}}} >> {name}.txt'}}}}\n"
        )
    };
    let dir = project(&[
        ("pipelines/daily.yaml", &dag("daily", true)),
        ("pipelines/lazy.yaml", &dag("lazy", false)),
    ]);
    let home = dir.path().join(".windsock");
    let daemon = start_daemon(dir.path(), &home, "daemon.log");
    wait_until("three caught-up runs", Duration::from_secs(20), || {
        runs(dir.path(), &home)
            .iter()
            .filter(|r| r["state"] == "success")
            .count()
            == 3
    });
    std::thread::sleep(Duration::from_millis(800));
    signal(&daemon, libc::SIGTERM);
    assert!(wait_exit(daemon, Duration::from_secs(20)).success());
    let expected: String = (0..3)
        .map(|i| {
            let d = start + chrono::Duration::days(i);
            format!("{d} {}T00:00:00Z\n", d + chrono::Duration::days(1))
        })
        .collect();
    assert_eq!(read(&dir.path().join("daily.txt")), expected);
    let rs = runs(dir.path(), &home);
    assert_eq!(
        rs.len(),
        3,
        "catchup: false creates nothing before its next tick: {rs:?}"
    );
    assert!(
        rs.iter()
            .all(|r| r["dag"] == "daily" && r["trigger"] == "scheduled")
    );
}

/// Another process (a `sqlite3` shell, a backup tool) holds a write transaction on the state
/// database for `secs` seconds: Python's sqlite3 module, a real second SQLite client.
fn hold_state_db(home: &Path, secs: u32) -> Child {
    let script = format!(
        "import sqlite3, sys, time\n\
         c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
         c.execute('BEGIN EXCLUSIVE')\n\
         print('locked', flush=True)\n\
         time.sleep({secs})\n"
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &script])
        .arg(home.join("state.db"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    child
}

/// What the user sees when a second process holds the state database: a one-off `run` waits
/// 10 s, then says the database is locked by another process and creates nothing; the daemon
/// waits it out, says so, and carries on, every run succeeding with its task run once.
#[test]
fn a_second_process_holding_the_state_database_delays_work_and_loses_nothing() {
    let pipeline = "dag: held\nschedule: \"* * * * * *\"\ntasks:\n  say:\n    operator: shell\n    with: { command: \"echo $WINDSOCK_RUN_ID >> out.txt\" }\n";
    let dir = project(&[("pipelines/held.yaml", pipeline)]);
    let (d, home) = (dir.path(), dir.path().join(".windsock"));
    let out = run(windsock(d, &home).args(["pause", "held"]));
    assert!(out.status.success(), "{:?}", text(&out));

    let mut holder = hold_state_db(&home, 12);
    let out = run(windsock(d, &home).args(["run", "held"]));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the state database is locked by another process"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one sentence: {stderr}");
    holder.wait().unwrap();
    assert!(runs(d, &home).is_empty(), "a run was half-created");

    let out = run(windsock(d, &home).args(["unpause", "held"]));
    assert!(out.status.success(), "{:?}", text(&out));
    let daemon = start_daemon(d, &home, "daemon.log");
    let outfile = d.join("out.txt");
    wait_until("the first runs", Duration::from_secs(20), || {
        read(&outfile).lines().count() >= 2
    });
    let mut holder = hold_state_db(&home, 12);
    holder.wait().unwrap();
    let after_lock = read(&outfile).lines().count();
    wait_until("runs after the lock", Duration::from_secs(30), || {
        read(&outfile).lines().count() >= after_lock + 3
    });
    signal(&daemon, libc::SIGTERM);
    assert!(
        wait_exit(daemon, Duration::from_secs(20)).success(),
        "the daemon survived"
    );
    let log = read(&d.join("daemon.log"));
    assert!(log.contains("locked by another process"), "{log}");
    let all = runs(d, &home);
    assert!(all.iter().all(|r| r["state"] == "success"), "{all:?}");
    let lines: Vec<String> = read(&outfile).lines().map(String::from).collect();
    let unique: BTreeSet<&String> = lines.iter().collect();
    assert_eq!(unique.len(), lines.len(), "a task ran twice: {lines:?}");
    assert_eq!(lines.len(), all.len(), "each run's task ran once");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    read(Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn db_size(home: &Path) -> u64 {
    ["state.db", "state.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(home.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Soak: 100 DAGs ticking every 10 seconds under the daemon with `--keep-runs 1m`, SIGKILLed at
/// random every 5–20 s for the first part of WINDSOCK_SOAK_SECS (default 600), then left alone.
/// Every run ends in success, no task runs twice, the state database stays bounded (pruning
/// keeps up) and the daemon's memory is flat. Prints its figures (the README reports them).
///
///     cargo test --release --test integration scheduler::soak -- --ignored --nocapture
#[test]
#[ignore = "a 10-minute soak; run it by name with --ignored"]
fn soak_a_hundred_dags_under_random_kills_with_pruning() {
    let secs: u64 = std::env::var("WINDSOCK_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let mut files: Vec<(String, String)> = Vec::new();
    for i in 0..100 {
        files.push((
            format!("pipelines/soak_{i:03}.yaml"),
            format!(
                "dag: soak_{i:03}\nschedule: \"*/10 * * * * *\"\ntasks:\n  t:\n    operator: shell\n    with: {{ command: \"sleep 0.2; echo '{{{{ run_id }}}}' >> out.txt\" }}\n"
            ),
        ));
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = project(&refs);
    let (d, home) = (dir.path(), dir.path().join(".windsock"));
    let start = |home: &Path| {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("daemon.log"))
            .unwrap();
        windsock(d, home)
            .args([
                "scheduler",
                "--poll",
                "500ms",
                "--grace",
                "5s",
                "--keep-runs",
                "1m",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    };
    let mut rng = Lcg::seeded("kill schedule");
    let began = Instant::now();
    let kill_phase = Duration::from_secs(secs * 6 / 10);
    let mut daemon = start(&home);
    let mut kills = 0;
    while began.elapsed() < kill_phase {
        std::thread::sleep(Duration::from_millis(rng.next_ms(5_000, 20_000)));
        daemon.kill().unwrap();
        daemon.wait().unwrap();
        kills += 1;
        daemon = start(&home);
    }
    // Left alone: memory and database size sampled.
    let mut rss = Vec::new();
    let mut sizes = Vec::new();
    while began.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(15));
        rss.push(rss_kib(daemon.id()));
        sizes.push(db_size(&home));
    }
    // Drain: no more ticks; every created run finishes.
    for (name, _) in &files {
        let dag = name
            .trim_start_matches("pipelines/")
            .trim_end_matches(".yaml");
        std::fs::write(
            d.join(name),
            format!(
                "dag: {dag}\ntasks:\n  t:\n    operator: shell\n    with: {{ command: \"true\" }}\n"
            ),
        )
        .unwrap();
    }
    wait_until("every run finished", Duration::from_secs(120), || {
        runs(d, &home)
            .iter()
            .all(|r| r["state"] == "success" || r["state"] == "failed")
    });
    signal(&daemon, libc::SIGTERM);
    assert!(wait_exit(daemon, Duration::from_secs(30)).success());

    let left = runs(d, &home);
    let failed: Vec<&serde_json::Value> = left.iter().filter(|r| r["state"] != "success").collect();
    if let Some(r) = failed.first() {
        let tis = json(windsock(d, &home).args(["tasks", r["run_id"].as_str().unwrap(), "--json"]));
        panic!(
            "{} runs did not succeed; the first: {r}\n{tis:#}\n{}",
            failed.len(),
            read(&d.join("daemon.log"))
                .lines()
                .filter(|l| !l.contains(" INFO "))
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let out = read(&d.join("out.txt"));
    let lines: Vec<&str> = out.lines().collect();
    let unique: BTreeSet<&str> = lines.iter().copied().collect();
    assert_eq!(unique.len(), lines.len(), "a task ran twice");
    let log = read(&d.join("daemon.log"));
    assert!(!log.contains("panicked"));
    let pruned: usize = log
        .lines()
        .filter(|l| l.contains("pruned finished runs"))
        .filter_map(|l| {
            l.split("runs=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    // Every run still in the database ran its task exactly once.
    for r in &left {
        assert!(unique.contains(r["run_id"].as_str().unwrap()), "{r}");
    }
    let (first_rss, last_rss) = (rss[0], *rss.last().unwrap());
    let (mid_db, last_db) = (sizes[0], *sizes.last().unwrap());
    println!(
        "soak: {secs} s, {kills} SIGKILLs, {} runs executed, {pruned} pruned, {} in the database at the end; \
         daemon RSS {first_rss} KiB -> {last_rss} KiB (max {} KiB); state.db+wal {mid_db} -> {last_db} bytes (max {})",
        lines.len(),
        left.len(),
        rss.iter().max().unwrap(),
        sizes.iter().max().unwrap()
    );
    assert!(pruned > 0, "nothing was pruned");
    assert!(
        last_rss <= first_rss + first_rss / 4 + 4096,
        "memory grew: {rss:?}"
    );
    assert!(
        *sizes.iter().max().unwrap() <= 2 * mid_db + (1 << 20),
        "the database grew: {sizes:?}"
    );
}

/// More runs due at once than `--max-tasks` slots: the runs whose tasks find no free slot wait
/// for one, and every run succeeds (they used to end at once as failed, their tasks queued).
#[test]
fn runs_waiting_for_a_task_slot_wait_and_succeed() {
    let mut files = Vec::new();
    for i in 0..6 {
        files.push((
            format!("pipelines/busy_{i}.yaml"),
            format!(
                "dag: busy_{i}\nschedule: \"* * * * * *\"\ntasks:\n  t:\n    operator: shell\n    with: {{ command: \"sleep 0.3\" }}\n"
            ),
        ));
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = project(&refs);
    let (d, home) = (dir.path(), dir.path().join(".windsock"));
    let daemon = windsock(d, &home)
        .args(["scheduler", "--poll", "200ms", "--max-tasks", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("a dozen runs", Duration::from_secs(30), || {
        runs(d, &home).len() >= 12
    });
    for (name, _) in &files {
        let dag = name
            .trim_start_matches("pipelines/")
            .trim_end_matches(".yaml");
        std::fs::write(
            d.join(name),
            format!("dag: {dag}\ntasks:\n  t:\n    operator: shell\n    with: {{ command: \"sleep 0.3\" }}\n"),
        )
        .unwrap();
    }
    wait_until("every run finished", Duration::from_secs(60), || {
        runs(d, &home)
            .iter()
            .all(|r| r["state"] == "success" || r["state"] == "failed")
    });
    signal(&daemon, libc::SIGTERM);
    assert!(wait_exit(daemon, Duration::from_secs(20)).success());
    let all = runs(d, &home);
    let failed: Vec<&serde_json::Value> = all.iter().filter(|r| r["state"] != "success").collect();
    assert!(
        failed.is_empty(),
        "{} of {} runs failed: {:?}",
        failed.len(),
        all.len(),
        failed.first()
    );
}

/// A `cycle: true` DAG of one month starts the month over on every tick: each round is a run of
/// its own whose id says its round, and the daemon keeps going past the sixth (it used to stop
/// there on every tick, the round's id taken).
#[test]
fn a_cycling_partition_runs_round_after_round_under_the_daemon() {
    let dir = project(&[(
        "pipelines/cyc.yaml",
        "dag: cyc\nschedule: \"* * * * * *\"\npartitions:\n  monthly: {from: 2019-10, to: 2019-10}\n  cycle: true\ntasks:\n  show: {operator: shell, with: {command: 'echo {{ run_id }} >> out.txt'}}\n",
    )]);
    let home = dir.path().join(".windsock");
    let mut daemon = start_daemon(dir.path(), &home, "daemon.log");
    wait_until("ten rounds", Duration::from_secs(60), || {
        assert!(
            daemon.try_wait().expect("wait").is_none(),
            "the daemon stopped: {}",
            read(&dir.path().join("daemon.log"))
        );
        runs(dir.path(), &home)
            .iter()
            .filter(|r| r["state"] == "success")
            .count()
            >= 10
    });
    signal(&daemon, libc::SIGTERM);
    assert!(wait_exit(daemon, Duration::from_secs(20)).success());
    let mut rs = runs(dir.path(), &home);
    rs.reverse(); // oldest first
    let ids: Vec<&str> = rs.iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    assert_eq!(ids[0], "cyc__scheduled__2019-10", "{ids:?}");
    for (i, id) in ids.iter().enumerate().skip(1).take(9) {
        assert_eq!(
            *id,
            format!("cyc__scheduled__2019-10__r{}", i + 1),
            "{ids:?}"
        );
    }
    assert!(rs.iter().all(|r| r["partition"] == "2019-10"));
    let lines = read(&dir.path().join("out.txt"));
    let done: Vec<&str> = lines.lines().collect();
    assert_eq!(
        done,
        ids[..done.len()].to_vec(),
        "each round's task ran once, in order"
    );
    let log = read(&dir.path().join("daemon.log"));
    assert!(!log.contains("ERROR"), "{log}");
}

/// The run ids of a DAG's runs, newest first.
fn run_ids(dir: &Path, home: &Path) -> Vec<String> {
    runs(dir, home)
        .iter()
        .filter_map(|r| r["run_id"].as_str().map(String::from))
        .collect()
}

fn task_instances(dir: &Path, home: &Path, run_id: &str) -> Vec<serde_json::Value> {
    json(windsock(dir, home).args(["tasks", run_id, "--json"]))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Clearing a task while its try runs would start the next try beside it: refused in one
/// sentence, and the running try goes on to succeed, alone.
#[test]
fn clearing_a_running_task_is_refused_and_the_try_goes_on() {
    let pipeline = "dag: slow\ntasks:\n  work:\n    operator: shell\n    with: { command: \"echo start >> out.txt; sleep 4; echo end >> out.txt\" }\n";
    let dir = project(&[("pipelines/slow.yaml", pipeline)]);
    let (d, home) = (dir.path(), dir.path().join(".windsock"));
    let daemon = start_daemon(d, &home, "daemon.log");
    let out = run(windsock(d, &home).args(["trigger", "slow"]));
    assert!(out.status.success(), "{:?}", text(&out));
    wait_until("the try to start", Duration::from_secs(20), || {
        read(&d.join("out.txt")).contains("start")
    });
    let run_id = run_ids(d, &home).remove(0);
    let out = run(windsock(d, &home).args(["clear", &run_id, "--task", "work"]));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("task `work` of run") && stderr.contains("is running (try 1"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one sentence: {stderr}");
    wait_until("the run to succeed", Duration::from_secs(30), || {
        runs(d, &home)[0]["state"] == "success"
    });
    signal(&daemon, libc::SIGTERM);
    assert!(wait_exit(daemon, Duration::from_secs(20)).success());
    assert_eq!(
        read(&d.join("out.txt")),
        "start\nend\n",
        "one try, undisturbed"
    );
    let tis = task_instances(d, &home, &run_id);
    assert_eq!(tis[0]["try_number"], 1, "{tis:?}");
}

/// A finished task cleared while the rest of its run still executes runs again in that
/// execution, and the run ends only when every task has (it used to end `success` with the
/// cleared task left queued for ever).
#[test]
fn a_task_cleared_while_its_run_executes_runs_again_before_the_run_ends() {
    let pipeline = "dag: ab\ntasks:\n  a:\n    operator: shell\n    with: { command: \"echo a >> out.txt\" }\n  b:\n    operator: shell\n    depends_on: [a]\n    with: { command: \"echo b-start >> out.txt; sleep 3; echo b >> out.txt\" }\n";
    let dir = project(&[("pipelines/ab.yaml", pipeline)]);
    let (d, home) = (dir.path(), dir.path().join(".windsock"));
    let one_shot = windsock(d, &home)
        .args(["run", "ab"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("windsock run");
    wait_until("b to start", Duration::from_secs(20), || {
        read(&d.join("out.txt")).contains("b-start")
    });
    let run_id = run_ids(d, &home).remove(0);
    let out = run(windsock(d, &home).args(["clear", &run_id, "--task", "a"]));
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(wait_exit(one_shot, Duration::from_secs(30)).success());
    let tis = task_instances(d, &home, &run_id);
    for ti in &tis {
        assert_eq!(ti["state"], "success", "{tis:?}");
    }
    assert_eq!(tis[0]["try_number"], 2, "a ran again: {tis:?}");
    assert_eq!(tis[1]["try_number"], 1, "{tis:?}");
    assert_eq!(runs(d, &home)[0]["state"], "success");
    let out = read(&d.join("out.txt"));
    assert_eq!(out.lines().filter(|l| *l == "a").count(), 2, "{out}");
}

/// The state database held by another process for 12 s across a lease renewal (the write
/// waits out its 10 s busy timeout and fails): the daemon waits it out while the try keeps
/// running, and the try succeeds, once (the execution used to end on the error, killing it).
#[test]
fn a_locked_state_database_during_a_try_stops_nothing() {
    let pipeline = "dag: long\ntasks:\n  work:\n    operator: shell\n    with: { command: \"echo start >> out.txt; sleep 25; echo end >> out.txt\" }\n";
    let dir = project(&[("pipelines/long.yaml", pipeline)]);
    let (d, home) = (dir.path(), dir.path().join(".windsock"));
    let daemon = start_daemon(d, &home, "daemon.log");
    let out = run(windsock(d, &home).args(["trigger", "long"]));
    assert!(out.status.success(), "{:?}", text(&out));
    wait_until("the try to start", Duration::from_secs(20), || {
        read(&d.join("out.txt")).contains("start")
    });
    let started = Instant::now();
    // The first renewal is due 10 s into the execution (a third of the 30 s lease): held from
    // 9 s to 21 s, the database keeps it waiting past its busy timeout.
    std::thread::sleep(Duration::from_secs(9));
    let mut holder = hold_state_db(&home, 12);
    holder.wait().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the lock came too late"
    );
    wait_until("the run to end", Duration::from_secs(40), || {
        runs(d, &home)[0]["state"] != "running" && runs(d, &home)[0]["state"] != "queued"
    });
    signal(&daemon, libc::SIGTERM);
    assert!(wait_exit(daemon, Duration::from_secs(20)).success());
    let log = read(&d.join("daemon.log"));
    assert!(
        log.contains("locked by another process"),
        "the lock was not met: {log}"
    );
    assert_eq!(runs(d, &home)[0]["state"], "success", "{log}");
    assert_eq!(read(&d.join("out.txt")), "start\nend\n", "one try: {log}");
}
