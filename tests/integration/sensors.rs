//! `wait_for` sensors: a thousand of them waiting at once hold a handful of threads and little
//! memory; a SQL condition is met when another task lands the rows; `soft_fail` skips.

use std::time::{Duration, Instant};

use crate::common::*;

fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

#[test]
fn a_thousand_waiting_sensors_hold_a_handful_of_threads() {
    let mut yaml = String::from("dag: many\ntasks:\n");
    for i in 0..1000 {
        yaml.push_str(&format!(
            "  s{i}: {{operator: wait_for, with: {{file: flag.txt, poke_interval: 1s, timeout: 5m}}}}\n"
        ));
    }
    yaml.push_str("  done: {operator: noop, depends_on: [s0, s999]}\n");
    let dir = project(&[("pipelines/many.yaml", &yaml)]);
    let home = dir.path().join(".windsock");
    let mut child = windsock(dir.path(), &home)
        .args(["run", "many", "--concurrency", "64"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start windsock");
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(4));
    let (mut threads, mut rss_kib) = (0, 0);
    for _ in 0..10 {
        threads = threads.max(status_field(pid, "Threads:"));
        rss_kib = rss_kib.max(status_field(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "1,000 waiting sensors: {threads} threads, {} MiB RSS",
        rss_kib / 1024
    );
    assert!(threads > 0 && threads <= 12, "{threads} threads");
    assert!(rss_kib < 100 * 1024, "{rss_kib} KiB");
    std::fs::write(dir.path().join("flag.txt"), "go").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the sensors never finished");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    let runs = json(windsock(dir.path(), &home).args(["runs", "--json"]));
    let run_id = runs[0]["run_id"].as_str().unwrap().to_string();
    let tis = json(windsock(dir.path(), &home).args(["tasks", &run_id, "--json"]));
    let s0 = tis
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "s0")
        .unwrap();
    assert_eq!(s0["state"], "success");
    assert!(s0["output"]["pokes"].as_u64().unwrap() >= 2, "{s0}");
}

#[test]
fn a_sql_sensor_waits_for_rows_and_soft_fail_skips() {
    let dir = project(&[(
        "pipelines/land.yaml",
        r#"
dag: land
tasks:
  setup: {operator: sql, with: {sql: "CREATE SCHEMA IF NOT EXISTS T; CREATE OR REPLACE TABLE T.X (n INTEGER)"}}
  slow: {operator: shell, depends_on: [setup], with: {command: "sleep 1.5"}}
  fill: {operator: sql, depends_on: [slow], with: {sql: "INSERT INTO T.X VALUES (1), (2), (3)"}}
  wait_landed:
    operator: wait_for
    depends_on: [setup]
    with: {sql: "select count(*) >= 3 from T.X", poke_interval: 200ms, timeout: 30s}
  never:
    operator: wait_for
    depends_on: [setup]
    with: {sql: "select count(*) > 100 from T.X", poke_interval: 200ms, timeout: 1s, soft_fail: true}
  after_never: {operator: noop, depends_on: [never]}
"#,
    )]);
    let home = dir.path().join(".windsock");
    let out = run(windsock(dir.path(), &home).args(["run", "land"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let run_id = stdout.lines().next().unwrap().trim().to_string();
    let tis = json(windsock(dir.path(), &home).args(["tasks", &run_id, "--json"]));
    let get = |n: &str| {
        tis.as_array()
            .unwrap()
            .iter()
            .find(|t| t["task"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(get("wait_landed")["state"], "success");
    assert!(
        get("wait_landed")["output"]["pokes"].as_u64().unwrap() >= 3,
        "{}",
        get("wait_landed")
    );
    assert_eq!(get("never")["state"], "skipped");
    assert!(
        get("never")["error"]
            .as_str()
            .unwrap()
            .contains("did not hold within 1s")
    );
    assert_eq!(get("after_never")["state"], "skipped");
}
