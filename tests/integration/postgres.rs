//! Several schedulers on one PostgreSQL state store (a real server of Debian's package, started
//! by the tests): runs are created once however many daemons tick, tries are claimed by one
//! daemon each and spread between them, and a SIGKILLed daemon's work is taken over.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const TASKS: [&str; 6] = ["extract", "left", "middle", "right", "join", "publish"];

fn pipeline(schedule: &str) -> String {
    let shell = |name: &str, deps: &str| {
        format!(
            "  {name}:\n    operator: shell\n{deps}    with: {{ command: \"sleep 0.1; echo '{{{{ run_id }}}} {name}' $WINDSOCK_TRY_NUMBER >> out.txt\" }}\n"
        )
    };
    let mut p = format!("dag: fanout\nschedule: {schedule}\nmax_active_runs: 8\ntasks:\n");
    p += &shell("extract", "");
    for t in ["left", "middle", "right"] {
        p += &shell(t, "    depends_on: [extract]\n");
    }
    p += &shell("join", "    depends_on: [left, middle, right]\n");
    p += &shell("publish", "    depends_on: [join]\n");
    p
}

fn daemon(dir: &Path, home: &Path, url: &str) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.with_extension("log"))
        .expect("log file");
    windsock(dir, home)
        .env("WINDSOCK_STATE_URL", url)
        .args([
            "scheduler",
            "--poll",
            "200ms",
            "--grace",
            "5s",
            "--max-tasks",
            "3",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start a scheduler")
}

fn runs(dir: &Path, url: &str) -> Vec<serde_json::Value> {
    let home = dir.join(".inspect");
    json(
        windsock(dir, &home)
            .env("WINDSOCK_STATE_URL", url)
            .args(["runs", "--limit", "100000", "--json"]),
    )
    .as_array()
    .cloned()
    .unwrap_or_default()
}

#[test]
fn three_schedulers_run_two_hundred_runs_once_each_under_random_sigkills() {
    let url = postgres::server().database();
    let dir = project(&[("pipelines/fanout.yaml", &pipeline("\"* * * * * *\""))]);
    let d = dir.path();
    let homes: Vec<PathBuf> = (0..3).map(|i| d.join(format!("daemon{i}"))).collect();
    let mut daemons: Vec<Child> = homes.iter().map(|h| daemon(d, h, &url)).collect();
    let mut rng = Lcg::seeded("kill schedule");
    let began = Instant::now();
    let mut kills = 0;
    loop {
        std::thread::sleep(Duration::from_millis(2000 + rng.next_ms(0, 3000)));
        let victim = rng.next_ms(0, 3) as usize;
        daemons[victim].kill().expect("SIGKILL a scheduler");
        daemons[victim].wait().expect("reap");
        kills += 1;
        daemons[victim] = daemon(d, &homes[victim], &url);
        if runs(d, &url).len() >= 200 {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(400),
            "fewer than 200 runs after 400 s"
        );
    }
    // Drain: no more ticks (every daemon reloads the pipeline); every created run finishes.
    std::fs::write(d.join("pipelines/fanout.yaml"), pipeline("null")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let rs = loop {
        let rs = runs(d, &url);
        if rs
            .iter()
            .all(|r| r["state"] == "success" || r["state"] == "failed")
        {
            break rs;
        }
        assert!(Instant::now() < deadline, "runs still unfinished: {rs:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    for mut child in daemons {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let status = child.wait().expect("wait");
        assert!(status.success(), "a scheduler exited with {status}");
    }
    let logs: Vec<String> = homes
        .iter()
        .map(|h| read(&h.with_extension("log")))
        .collect();
    for log in &logs {
        assert!(!log.contains("panicked"), "{log}");
    }

    // Every run succeeded, and no interval got two runs.
    assert!(rs.len() >= 200, "only {} runs", rs.len());
    if let Some(r) = rs.iter().find(|r| r["state"] != "success") {
        let id = r["run_id"].as_str().unwrap();
        let tis = json(
            windsock(d, &d.join(".inspect"))
                .env("WINDSOCK_STATE_URL", &url)
                .args(["tasks", id, "--json"]),
        );
        panic!("{r}\n{tis:#}\n{}", logs.join("\n"));
    }
    let keys: BTreeSet<&str> = rs.iter().map(|r| r["run_key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), rs.len(), "two runs for one interval");
    let created: usize = logs
        .iter()
        .map(|l| l.lines().filter(|l| l.contains("run created")).count())
        .sum();
    assert_eq!(
        created,
        rs.len(),
        "runs created (by all daemons) vs runs stored"
    );

    // Each task's side effect happened once per run, from the try recorded as its success. The
    // one exception no orchestrator can close: a daemon SIGKILLed after a command finished and
    // before its success was committed. Such a try is recorded as interrupted (its process
    // died) and runs again; every repeat must be one of those, and no two tries of a task ran
    // at the same time.
    let out = read(&d.join("out.txt"));
    let mut done: BTreeMap<(String, String), Vec<u32>> = BTreeMap::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 3, "a torn line: `{line}`");
        let try_number = f[2].parse().expect("a try number");
        done.entry((f[0].to_string(), f[1].to_string()))
            .or_default()
            .push(try_number);
    }
    let inspect = |args: &[&str]| {
        json(
            windsock(d, &d.join(".inspect"))
                .env("WINDSOCK_STATE_URL", &url)
                .args(args),
        )
    };
    let mut repeats = 0;
    for r in &rs {
        let id = r["run_id"].as_str().unwrap();
        let tasks = inspect(&["tasks", id, "--json"]);
        for t in TASKS {
            let tries = done
                .get(&(id.to_string(), t.to_string()))
                .unwrap_or_else(|| panic!("`{id} {t}` never ran"));
            let ti = tasks
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["task"] == t)
                .unwrap();
            let success = ti["try_number"].as_u64().unwrap() as u32;
            assert_eq!(
                tries.iter().filter(|n| **n == success).count(),
                1,
                "`{id} {t}`: the successful try {success} in {tries:?}"
            );
            let time = |v: &serde_json::Value| {
                v.as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            };
            if success == 1 && tries.len() == 1 {
                continue; // one try, which did the work once
            }
            let mut previous_end = None;
            for n in 1..=success {
                let rec =
                    inspect(&["logs", id, t, "--try", &n.to_string(), "--json"])["try"].clone();
                if let Some(end) = previous_end {
                    assert!(
                        time(&rec["started_at"]).unwrap() >= end,
                        "`{id} {t}`: try {n} started before the one before it ended"
                    );
                }
                previous_end = time(&rec["ended_at"]);
                if n != success && tries.contains(&n) {
                    assert_eq!(
                        rec["interrupted"], true,
                        "`{id} {t}`: try {n} did its work but was not cut short by a dead daemon: {rec}"
                    );
                    repeats += 1;
                }
            }
        }
    }
    let lines = out.lines().count();
    assert_eq!(
        lines,
        rs.len() * TASKS.len() + repeats,
        "lines of unknown runs"
    );
    assert!(repeats <= kills, "{repeats} repeats from {kills} kills");

    // The tries were spread over the three daemons: each one's logs hold some of them.
    let mut per_daemon = [0usize; 3];
    for (i, home) in homes.iter().enumerate() {
        let logs = home.join("logs");
        let mut stack = vec![logs];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    per_daemon[i] += 1;
                }
            }
        }
    }
    println!(
        "{} runs, {kills} SIGKILLs in {:.0} s; {repeats} commands finished by a daemon killed before it recorded them; try logs per daemon: {per_daemon:?}",
        rs.len(),
        began.elapsed().as_secs_f64()
    );
    for n in per_daemon {
        assert!(n >= rs.len() / 2, "tries not spread: {per_daemon:?}");
    }
}

#[test]
fn validation_refuses_the_local_warehouse_with_a_shared_state_store() {
    let dir = project(&[(
        "pipelines/report.yaml",
        "dag: report\ntasks:\n  totals:\n    operator: sql\n    with: { sql: \"SELECT 1\" }\n",
    )]);
    let d = dir.path();
    let home = d.join(".windsock");
    let out = run(windsock(d, &home)
        .env("WINDSOCK_STATE_URL", "postgres://u@127.0.0.1:1/db")
        .args(["validate"]));
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stdout.contains("report.yaml:3:3")
            && stdout.contains("task `totals` uses the local DuckDB warehouse"),
        "{stdout}{stderr}"
    );
    // The cloud profile, or the embedded store, is fine.
    let ok = run(windsock(d, &home)
        .env("WINDSOCK_STATE_URL", "postgres://u@127.0.0.1:1/db")
        .args(["--profile", "cloud", "validate"]));
    assert!(ok.status.success(), "{:?}", text(&ok));
    assert!(run(windsock(d, &home).args(["validate"])).status.success());
}
