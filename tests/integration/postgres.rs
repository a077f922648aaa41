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
    daemon_under(dir, home, url, &[])
}

/// A scheduler on the shared store, started through `wrapper` (a program that runs the rest of
/// its arguments, such as `faketime` or `unshare`) unless it is empty; its log beside its home.
fn daemon_under(dir: &Path, home: &Path, url: &str, wrapper: &[&str]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.with_extension("log"))
        .expect("log file");
    let mut cmd = match wrapper.split_first() {
        None => windsock(dir, home),
        Some((program, args)) => {
            // The same environment as the plain command's.
            let plain = windsock(dir, home);
            let mut c = std::process::Command::new(program);
            c.args(args).arg(bin()).current_dir(dir);
            for (k, v) in plain.get_envs() {
                match v {
                    Some(v) => c.env(k, v),
                    None => c.env_remove(k),
                };
            }
            c
        }
    };
    cmd.args([
        "scheduler",
        "--poll",
        "200ms",
        "--grace",
        "5s",
        "--max-tasks",
        "3",
    ])
    .env("WINDSOCK_STATE_URL", url)
    // faketime shifts the wall clock only: timers and timeouts keep real time.
    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
    .stdout(Stdio::null())
    .stderr(log);
    cmd.spawn().unwrap_or_else(|e| {
        panic!("start a scheduler ({wrapper:?}; .ci/run installs what it needs): {e}")
    })
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

/// `windsock trigger DAG` against the shared store, from a home of its own.
fn trigger(d: &Path, url: &str, dag: &str) {
    let out = run(windsock(d, &d.join(".inspect"))
        .env("WINDSOCK_STATE_URL", url)
        .args(["trigger", dag]));
    assert!(out.status.success(), "{:?}", text(&out));
}

/// Waits until the project's `out.txt` holds `start` `n` times.
fn wait_started(d: &Path, n: usize, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while read(&d.join("out.txt")).matches("start").count() < n {
        assert!(
            Instant::now() < deadline,
            "{n} tries did not start: {}",
            read(&d.join("out.txt"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the newest run has ended (`success` or `failed`), checking meanwhile that
/// `alive` (a scheduler) has not stopped; returns its state.
fn wait_run_end(d: &Path, url: &str, secs: u64, mut alive: Option<&mut Child>) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(child) = alive.as_deref_mut() {
            assert!(
                child.try_wait().expect("wait").is_none(),
                "a scheduler stopped"
            );
        }
        let rs = runs(d, url);
        if let Some(state) = rs
            .first()
            .and_then(|r| r["state"].as_str())
            .filter(|s| matches!(*s, "success" | "failed"))
        {
            return state.to_string();
        }
        assert!(Instant::now() < deadline, "the run did not end: {rs:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// PostgreSQL restarted (a fast shutdown cuts every connection) while a try runs: the daemon
/// waits it out and the try goes on to succeed, once (the execution used to end on the first
/// error, killing the try).
#[test]
fn a_postgres_restart_during_a_try_stops_nothing() {
    let mut server = postgres::Server::start();
    let url = server.database();
    let pipeline = "dag: long\ntasks:\n  work:\n    operator: shell\n    with: { command: \"echo start >> out.txt; sleep 20; echo end >> out.txt\" }\n";
    let dir = project(&[("pipelines/long.yaml", pipeline)]);
    let d = dir.path();
    let home = d.join("daemon");
    let mut sched = daemon(d, &home, &url);
    trigger(d, &url, "long");
    wait_started(d, 1, 30);
    std::thread::sleep(Duration::from_secs(5));
    server.restart(Duration::from_secs(3));
    let log = || read(&home.with_extension("log"));
    assert_eq!(
        wait_run_end(d, &url, 60, Some(&mut sched)),
        "success",
        "{}",
        log()
    );
    stop_daemon(sched);
    assert!(
        log().contains("cannot be reached"),
        "the restart was not met: {}",
        log()
    );
    assert_eq!(
        read(&d.join("out.txt")),
        "start\nend\n",
        "one try: {}",
        log()
    );
}

/// SIGTERM, and a clean exit.
fn stop_daemon(mut child: Child) {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().expect("wait").success());
}

/// A task longer than tokio keeps an idle thread under the PostgreSQL store, whose calls move
/// the daemon's threads around: the command is not killed with the thread that started it.
#[test]
fn a_long_task_under_the_postgres_store_succeeds() {
    let url = postgres::server().database();
    let pipeline = "dag: long\ntasks:\n  work:\n    operator: shell\n    with: { command: \"echo start >> out.txt; sleep 25; echo end >> out.txt\" }\n";
    let dir = project(&[("pipelines/long.yaml", pipeline)]);
    let d = dir.path();
    let home = d.join("daemon");
    let sched = daemon(d, &home, &url);
    trigger(d, &url, "long");
    let state = wait_run_end(d, &url, 60, None);
    stop_daemon(sched);
    let log = read(&home.with_extension("log"));
    assert_eq!(state, "success", "{log}");
    assert_eq!(read(&d.join("out.txt")), "start\nend\n", "one try: {log}");
}

/// A pipeline whose task notices a second try beside it: the second finds the first's lock
/// taken and says `overlap`. Each try that runs alone writes `start`, sleeps, writes `end`.
fn guarded(secs: u32) -> String {
    format!(
        "dag: guarded\ntasks:\n  work:\n    operator: shell\n    with: {{ command: \"flock -n task.lock sh -c 'echo start >> out.txt; sleep {secs}; echo end >> out.txt' || echo overlap >> out.txt\" }}\n"
    )
}

/// The two schedulers' logs, for failure messages.
fn logs_of(d: &Path, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("== {n}\n{}", read(&d.join(format!("{n}.log")))))
        .collect::<Vec<_>>()
        .join("\n")
}

fn kill_all(children: impl IntoIterator<Item = Child>) {
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One daemon runs a 20 s try; a second one starts through `wrapper` while it runs. The try
/// must run once, alone.
fn a_second_daemon_leaves_a_running_try_alone(wrapper: &[&str]) {
    let url = postgres::server().database();
    let dir = project(&[("pipelines/guarded.yaml", &guarded(20))]);
    let d = dir.path();
    let first = daemon(d, &d.join("first"), &url);
    trigger(d, &url, "guarded");
    wait_started(d, 1, 30);
    let second = daemon_under(d, &d.join("second"), &url, wrapper);
    let state = wait_run_end(d, &url, 90, None);
    kill_all([first, second]);
    let logs = logs_of(d, &["first", "second"]);
    assert_eq!(state, "success", "{logs}");
    assert_eq!(
        read(&d.join("out.txt")),
        "start\nend\n",
        "one try, alone:\n{logs}"
    );
}

/// Leases are judged by the database's clock: a daemon whose clock runs 25 s ahead does not
/// find another's live lease expired (it used to, five seconds after each renewal).
#[test]
fn a_daemon_with_a_clock_ahead_takes_no_live_try_over() {
    a_second_daemon_leaves_a_running_try_alone(&["faketime", "-f", "+25s"]);
}

/// Two daemons in PID namespaces of their own (containers sharing the host's network, and so
/// its name) each see the other's pid as another process: the other's try is not taken over
/// as if its holder had died (it used to be, at once).
#[test]
fn a_daemon_in_another_pid_namespace_takes_no_live_try_over() {
    a_second_daemon_leaves_a_running_try_alone(&[
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
    ]);
}

/// The network between a daemon and PostgreSQL stalls (packets dropped, nothing closed) for
/// longer than the lease while that daemon runs a try: it stops the try before its lease ends
/// (every call to the database is bounded), so the try another daemon then takes over never
/// runs beside it.
#[test]
fn a_daemon_cut_off_from_postgres_stops_its_try_before_another_takes_it() {
    let server = postgres::server();
    let url = server.database();
    let db = url.rsplit('/').next().unwrap().to_string();
    let proxy = StallingProxy::start(server.port);
    let cut_off_url = format!("postgres://postgres@127.0.0.1:{}/{db}", proxy.port);
    let dir = project(&[("pipelines/guarded.yaml", &guarded(40))]);
    let d = dir.path();
    let cut_off = daemon(d, &d.join("cut-off"), &cut_off_url);
    trigger(d, &url, "guarded");
    wait_started(d, 1, 30);
    let other = daemon(d, &d.join("other"), &url);
    std::thread::sleep(Duration::from_secs(2));
    proxy.stall(true);
    std::thread::sleep(Duration::from_secs(45));
    proxy.stall(false);
    let state = wait_run_end(d, &url, 120, None);
    kill_all([cut_off, other]);
    let logs = logs_of(d, &["cut-off", "other"]);
    assert_eq!(state, "success", "{logs}");
    assert!(
        logs.contains("could not be renewed"),
        "the cut-off daemon did not stop its try:\n{logs}"
    );
    assert_eq!(
        read(&d.join("out.txt")),
        "start\nstart\nend\n",
        "the first try stopped, the second ran alone:\n{logs}"
    );
}

/// Log folders of a home: `logs/DAG/RUN_ID` names.
fn log_runs(home: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for dag in std::fs::read_dir(home.join("logs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for run in std::fs::read_dir(dag.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.insert(run.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

/// Two schedulers pruning one shared store: whichever prunes a run deletes its own logs of it,
/// and the other deletes its copy when it finds the run gone; no log folder outlives its run.
#[test]
fn schedulers_sharing_a_store_prune_every_log_of_a_pruned_run() {
    let url = postgres::server().database();
    let ticking = "dag: tick\nschedule: \"* * * * * *\"\ntasks:\n  say:\n    operator: shell\n    with: { command: \"echo $WINDSOCK_RUN_ID\" }\n";
    let dir = project(&[("pipelines/tick.yaml", ticking)]);
    let d = dir.path();
    let homes = [d.join("a"), d.join("b")];
    let start = |home: &Path| {
        let log = std::fs::File::create(home.with_extension("log")).unwrap();
        windsock(d, home)
            .env("WINDSOCK_STATE_URL", &url)
            .args(["scheduler", "--poll", "200ms", "--keep-runs", "3s"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    };
    let daemons: Vec<Child> = homes.iter().map(|h| start(h)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while homes.iter().any(|h| log_runs(h).is_empty()) {
        assert!(
            Instant::now() < deadline,
            "both schedulers should have run tries"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    // No more runs; what exists ages past --keep-runs and is pruned.
    std::fs::write(
        d.join("pipelines/tick.yaml"),
        ticking.replace("\"* * * * * *\"", "null"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: BTreeSet<String> = runs(d, &url)
            .iter()
            .map(|r| r["run_id"].as_str().unwrap().to_string())
            .collect();
        let stray: Vec<String> = homes
            .iter()
            .flat_map(|h| log_runs(h).into_iter())
            .filter(|id| !left.contains(id))
            .collect();
        if left.len() <= 1 && stray.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "runs left {left:?}, logs of pruned runs left {stray:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    kill_all(daemons);
}

/// A daemon frozen (SIGSTOP) past its lease while it runs a try: the other daemon takes the try
/// over (killing what is left of it on this host) and runs it again; thawed (SIGCONT), the
/// frozen one finds its lease gone and drops its result. The tries never overlap.
#[test]
fn a_frozen_daemon_finds_its_try_taken_over_and_drops_its_result() {
    let url = postgres::server().database();
    let dir = project(&[("pipelines/guarded.yaml", &guarded(40))]);
    let d = dir.path();
    let frozen = daemon(d, &d.join("frozen"), &url);
    trigger(d, &url, "guarded");
    wait_started(d, 1, 30);
    let other = daemon(d, &d.join("other"), &url);
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(frozen.id() as i32, libc::SIGSTOP);
    }
    wait_started(d, 2, 60);
    // SAFETY: as above.
    unsafe {
        libc::kill(frozen.id() as i32, libc::SIGCONT);
    }
    let state = wait_run_end(d, &url, 90, None);
    std::thread::sleep(Duration::from_secs(2));
    kill_all([frozen, other]);
    let logs = logs_of(d, &["frozen", "other"]);
    assert_eq!(state, "success", "{logs}");
    assert_eq!(
        read(&d.join("out.txt")),
        "start\nstart\nend\n",
        "the frozen try was stopped, the second ran alone:\n{logs}"
    );
    assert!(
        logs.contains("took this try over") || logs.contains("result is dropped"),
        "the frozen daemon did not notice:\n{logs}"
    );
}

/// Two schedulers on one store; `windsock clear` of a task whose try one of them runs is
/// refused in one sentence, and the try goes on alone (the clear used to reset it, and the
/// other scheduler started the next try beside it).
#[test]
fn clearing_a_task_another_scheduler_runs_is_refused() {
    let url = postgres::server().database();
    let dir = project(&[("pipelines/guarded.yaml", &guarded(20))]);
    let d = dir.path();
    let daemons = [daemon(d, &d.join("a"), &url), daemon(d, &d.join("b"), &url)];
    trigger(d, &url, "guarded");
    wait_started(d, 1, 30);
    std::thread::sleep(Duration::from_secs(3));
    let run_id = runs(d, &url)[0]["run_id"].as_str().unwrap().to_string();
    let out = run(windsock(d, &d.join(".inspect"))
        .env("WINDSOCK_STATE_URL", &url)
        .args(["clear", &run_id, "--task", "work"]));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is running (try 1"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one sentence: {stderr}");
    let state = wait_run_end(d, &url, 60, None);
    kill_all(daemons);
    let logs = logs_of(d, &["a", "b"]);
    assert_eq!(state, "success", "{logs}");
    assert_eq!(
        read(&d.join("out.txt")),
        "start\nend\n",
        "one try, alone:\n{logs}"
    );
}
