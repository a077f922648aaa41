//! The Snowflake backend over the wire, through snowflake-api, against `fakesnow` (a real
//! Snowflake-protocol server backed by DuckDB) started here. `.ci/run` installs fakesnow and sets
//! WINDSOCK_FAKESNOW; elsewhere the test is skipped unless that variable points at it.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn fakesnow() -> Option<(Server, u16, tempfile::TempDir)> {
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let server = fakesnow_on(port, data.path())?;
    Some((server, port, data))
}

/// fakesnow on a port (None when not installed, outside CI). Its server keeps databases in
/// memory whatever `data` says: `-d` only applies to its library mode.
fn fakesnow_on(port: u16, data: &Path) -> Option<Server> {
    let Ok(bin) = std::env::var("WINDSOCK_FAKESNOW") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must set WINDSOCK_FAKESNOW (see .ci/run)"
        );
        eprintln!("skipped: set WINDSOCK_FAKESNOW to a fakesnow binary to run this test");
        return None;
    };
    let child = Command::new(bin)
        .args(["-s", "-p", &port.to_string(), "-d"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fakesnow");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "fakesnow did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    Some(server)
}

fn cloud(dir: &Path, home: &Path, port: u16, database: bool) -> Command {
    let mut c = windsock(dir, home);
    c.arg("--profile")
        .arg("cloud")
        .env("SNOWFLAKE_ACCOUNT", "windsock")
        .env("SNOWFLAKE_USER", "tester")
        .env("SNOWFLAKE_PASSWORD", "secret")
        .env("SNOWFLAKE_HOST", "127.0.0.1")
        .env("SNOWFLAKE_PORT", port.to_string())
        .env("SNOWFLAKE_PROTOCOL", "http");
    if database {
        c.env("SNOWFLAKE_DATABASE", "WINDSOCK")
            .env("SNOWFLAKE_SCHEMA", "PUBLIC");
    } else {
        c.env_remove("SNOWFLAKE_DATABASE")
            .env_remove("SNOWFLAKE_SCHEMA");
    }
    c
}

const HAND_DATA: &str =
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session
2019-10-01 10:00:00 UTC,view,1,100,electronics.smartphone,Apple,500.00,11,s1
2019-10-01 10:01:00 UTC,cart,1,100,electronics.smartphone,Apple,500.00,11,s1
2019-10-01 10:02:00 UTC,purchase,1,100,electronics.smartphone,Apple,500.00,11,s1
2019-10-01 11:00:00 UTC,view,2,200,appliances.kitchen.kettle,bosch,20.50,12,s2
2019-10-02 09:00:00 UTC,view,2,200,appliances.kitchen.kettle,bosch,20.50,11,s4
2019-10-02 09:01:00 UTC,purchase,2,200,appliances.kitchen.kettle,bosch,20.50,11,s4
2019-10-02 09:05:00 UTC,purchase,4,100,electronics.smartphone,samsung,300.00,11,s4
";

#[test]
fn loads_runs_the_reporting_sql_and_senses_over_the_snowflake_protocol() {
    let Some((_server, port, _data)) = fakesnow() else {
        return;
    };
    let mut files: Vec<(String, String)> = vec![
        ("events.csv".into(), HAND_DATA.into()),
        (
            "pipelines/sf.yaml".into(),
            "dag: sf\ntasks:\n  prep: {operator: prepare_events, with: {input: events.csv, output: prepared}}\n  load: {operator: load_table, depends_on: [prep], with: {input: prepared, table: RAW.EVENTS, mode: merge, key: [event_id]}}\n  landed: {operator: wait_for, depends_on: [load], with: {sql: 'select count(*) >= 7 from RAW.EVENTS', poke_interval: 200ms, timeout: 30s}}\n  report: {operator: sql, depends_on: [landed], with: {files: ['reporting/*.sql']}}\n".into(),
        ),
    ];
    files.extend(reporting_files());
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = project(&refs);
    let home = dir.path().join(".windsock");
    let out = run(cloud(dir.path(), &home, port, false)
        .args(["query", "CREATE DATABASE IF NOT EXISTS WINDSOCK"]));
    assert!(out.status.success(), "{:?}", text(&out));
    for round in 0..2 {
        let out = run(cloud(dir.path(), &home, port, true).args(["run", "sf"]));
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "round {round}: {stdout}{stderr}");
    }
    let q = |sql: &str| {
        json(cloud(dir.path(), &home, port, true).args(["query", "--format", "json", sql]))
    };
    let n = q("SELECT count(*) AS n FROM RAW.EVENTS");
    assert_eq!(n[0]["N"].as_i64().or(n[0]["n"].as_i64()), Some(7), "{n}");
    let revenue =
        q("SELECT event_date, revenue, purchases FROM REPORTING.DAILY_REVENUE ORDER BY 1");
    let revenue = revenue.as_array().unwrap();
    assert_eq!(revenue.len(), 2, "{revenue:?}");
    let get = |row: &serde_json::Value, k: &str| {
        row.get(k).or(row.get(k.to_uppercase())).cloned().unwrap()
    };
    assert_eq!(get(&revenue[0], "revenue").as_f64(), Some(500.0));
    assert_eq!(get(&revenue[1], "revenue").as_f64(), Some(320.5));

    let bad =
        run(cloud(dir.path(), &home, port, true).args(["query", "SELECT * FROM NO_SUCH_TABLE"]));
    let (_, stderr) = text(&bad);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr.contains("Snowflake error 002003"), "{stderr}");
}

/// The cloud profile's Kafka and Snowflake paths together, over the wire: a tansu broker process
/// reached through KAFKA_* settings (as Confluent Cloud would be) and fakesnow. Events go through
/// kafka_produce, land in Snowflake with kafka_to_warehouse (batched INSERTs, merged on
/// event_id), are aggregated by stream_aggregate and the windows landed from Avro.
#[test]
fn streams_through_kafka_into_snowflake_with_the_cloud_profile() {
    let Some((_server, port, _data)) = fakesnow() else {
        return;
    };
    let broker_dir = tempfile::tempdir().unwrap();
    let (_broker, bootstrap) = tansu(broker_dir.path());
    let raw_schema = std::fs::read_to_string(repo().join("schemas/raw_event.schema.json")).unwrap();
    let windows = std::fs::read_to_string(repo().join("schemas/window_aggregate.avsc")).unwrap();
    let trending = std::fs::read_to_string(repo().join("schemas/trending_product.avsc")).unwrap();
    let pipeline = "dag: cs
tasks:
  prep: {operator: prepare_events, with: {input: events.csv, output: prepared}}
  batch: {operator: load_table, depends_on: [prep], with: {input: prepared, table: RAW.EVENTS, mode: merge, key: [event_id]}}
  produce: {operator: kafka_produce, depends_on: [batch], with: {input: prepared, topic: raw, rows_per_day: 10000}}
  land: {operator: kafka_to_warehouse, depends_on: [produce], with: {topic: raw, table: RAW.EVENTS, schema: schemas/raw_event.schema.json, key: [event_id]}}
  aggregate: {operator: stream_aggregate, depends_on: [produce], with: {topic: raw, output_topic: windows, windows: [1h]}}
  land_windows: {operator: kafka_to_warehouse, depends_on: [aggregate], with: {topic: windows, table: PROCESSED.WINDOW_AGGREGATES, format: avro, schema: schemas/window_aggregate.avsc, key: [window_size, window_start, dimension, dimension_value]}}
";
    let dir = project(&[
        ("events.csv", HAND_DATA),
        ("pipelines/cs.yaml", pipeline),
        ("schemas/raw_event.schema.json", &raw_schema),
        ("schemas/window_aggregate.avsc", &windows),
        ("schemas/trending_product.avsc", &trending),
    ]);
    let home = dir.path().join(".windsock");
    let with_kafka = |c: &mut Command| {
        c.env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
            .env("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
            .env_remove("WINDSOCK_KAFKA_BOOTSTRAP");
    };
    let out = run(cloud(dir.path(), &home, port, false)
        .args(["query", "CREATE DATABASE IF NOT EXISTS WINDSOCK"]));
    assert!(out.status.success(), "{:?}", text(&out));
    for round in 0..2 {
        let mut c = cloud(dir.path(), &home, port, true);
        with_kafka(&mut c);
        let out = run(c.args(["run", "cs"]));
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "round {round}: {stdout}{stderr}");
    }
    assert!(
        !broker_dir.path().join("broker").exists() && !home.join("broker").exists(),
        "the cloud profile must not start the embedded broker"
    );
    let q = |sql: &str| {
        json(cloud(dir.path(), &home, port, true).args(["query", "--format", "json", sql]))
    };
    let get = |row: &serde_json::Value, k: &str| {
        row.get(k).or(row.get(k.to_uppercase())).cloned().unwrap()
    };
    // Loaded by the batch task first, then streamed twice: one copy of each event, with the
    // Kafka columns the landing added to the batch task's table.
    let meta = q(
        "SELECT count(*) AS n FROM RAW.EVENTS WHERE kafka_offset IS NOT NULL AND kafka_topic = 'raw'",
    );
    assert_eq!(get(&meta[0], "n").as_i64(), Some(7), "{meta}");
    let n = q(
        "SELECT count(*) AS n, count(DISTINCT event_id) AS ids, count(DISTINCT kafka_offset) AS offsets FROM RAW.EVENTS",
    );
    assert_eq!(get(&n[0], "n").as_i64(), Some(7), "{n}");
    assert_eq!(get(&n[0], "ids").as_i64(), Some(7), "{n}");
    // The windows: 2019-10-01 10:00 holds a view, a cart and a purchase of 500.00.
    let w = q(
        "SELECT events, views, carts, purchases, revenue, distinct_users FROM PROCESSED.WINDOW_AGGREGATES WHERE dimension = 'category_l1' AND dimension_value = 'electronics' ORDER BY window_start",
    );
    let w = w.as_array().unwrap();
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!(get(&w[0], "events").as_i64(), Some(3), "{w:?}");
    assert_eq!(get(&w[0], "purchases").as_i64(), Some(1), "{w:?}");
    assert_eq!(get(&w[0], "revenue").as_f64(), Some(500.0), "{w:?}");
    assert_eq!(get(&w[1], "revenue").as_f64(), Some(300.0), "{w:?}");
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// The Snowflake password, a private-key passphrase and the Kafka API secret, given by
/// environment to a cloud run, appear nowhere: not in the output of any command (run, render,
/// logs, tasks, query), not in a task log, not in the state database, not in any file the run
/// left (rendered configs, outputs, the dashboard).
#[test]
fn secrets_given_by_environment_are_never_written_anywhere() {
    let Some((_server, port, _data)) = fakesnow() else {
        return;
    };
    let broker_dir = tempfile::tempdir().unwrap();
    let (_broker, bootstrap) = tansu(broker_dir.path());
    let raw_schema = std::fs::read_to_string(repo().join("schemas/raw_event.schema.json")).unwrap();
    let pipeline = "dag: sec
tasks:
  prep: {operator: prepare_events, with: {input: events.csv, output: prepared}}
  produce: {operator: kafka_produce, depends_on: [prep], with: {input: prepared, topic: raw, rows_per_day: 10000}}
  land: {operator: kafka_to_warehouse, depends_on: [produce], with: {topic: raw, table: RAW.EVENTS, schema: schemas/raw_event.schema.json, key: [event_id]}}
  count: {operator: sql, depends_on: [land], with: {sql: 'select count(*) as n from RAW.EVENTS', fetch: one}}
  show: {operator: shell, depends_on: [count], with: {command: 'echo rows={{ tasks.count.output.rows | tojson }}'}}
";
    let dir = project(&[
        ("events.csv", HAND_DATA),
        ("pipelines/sec.yaml", pipeline),
        ("schemas/raw_event.schema.json", &raw_schema),
    ]);
    let home = dir.path().join(".windsock");
    let secrets = [
        ("SNOWFLAKE_PASSWORD", "sf-pw-7f3a9c1e"),
        ("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE", "pk-pass-42b8d0"),
        ("KAFKA_API_SECRET", "kafka-secret-c93e11"),
    ];
    let cmd = |args: &[&str]| {
        let mut c = cloud(dir.path(), &home, port, true);
        c.env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
            .env("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
            .env("KAFKA_API_KEY", "kafka-key")
            .env_remove("WINDSOCK_KAFKA_BOOTSTRAP")
            .args(args);
        for (k, v) in secrets {
            c.env(k, v);
        }
        c
    };
    let mut printed = String::new();
    let mut keep = |out: std::process::Output, what: &str| {
        let (o, e) = text(&out);
        assert!(out.status.success(), "{what}: {o}{e}");
        printed.push_str(&o);
        printed.push_str(&e);
        o
    };
    keep(
        run(&mut cmd(&[
            "query",
            "CREATE DATABASE IF NOT EXISTS WINDSOCK",
        ])),
        "create",
    );
    let out = keep(run(&mut cmd(&["-v", "run", "sec"])), "run");
    let run_id = out.lines().next().unwrap().trim().to_string();
    for task in ["prep", "produce", "land", "count", "show"] {
        keep(run(&mut cmd(&["render", "sec", task])), "render");
        keep(run(&mut cmd(&["logs", &run_id, task])), "logs");
    }
    keep(run(&mut cmd(&["tasks", &run_id, "--json"])), "tasks");
    keep(
        run(&mut cmd(&["query", "select * from RAW.EVENTS"])),
        "query",
    );
    assert!(
        printed.contains("rows={N: 7}") || printed.contains("rows={n: 7}"),
        "the run did its work: {printed}"
    );
    let mut files = Vec::new();
    files_under(&home, &mut files);
    files_under(&dir.path().join("prepared"), &mut files);
    assert!(files.iter().any(|f| f.ends_with("state.db")), "{files:?}");
    for (name, secret) in secrets {
        assert!(!printed.contains(secret), "{name} printed by a command");
        for f in &files {
            let bytes = std::fs::read(f).unwrap_or_default();
            let hit = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!hit, "{name} written to {}", f.display());
        }
    }
}

/// The text of every try log of `task` under `home` (any run).
fn task_logs(home: &Path, task: &str) -> String {
    let mut files = Vec::new();
    files_under(&home.join("logs"), &mut files);
    files
        .iter()
        .filter(|f| f.parent().is_some_and(|p| p.ends_with(task)))
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect()
}

/// A TCP proxy in front of a server whose link can be cut (every open connection shut, new ones
/// refused) and restored: a network outage between windsock and a real peer.
struct Link {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Link {
    fn to(target: u16) -> Link {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (o, c) = (open.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !o.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut held = c.lock().unwrap();
                for s in [&client, &server] {
                    held.push(s.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Link { port, open, conns }
    }

    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The cloud profile's peers fail under a run: the tansu broker process is SIGKILLed while the
/// month is being produced and started again over its data; then the link to Snowflake (fakesnow)
/// goes down for three seconds while the month is being landed. (fakesnow's server keeps its
/// databases in memory, so restarting it would lose the warehouse itself: a cut link is the
/// outage it can stand for.) The user sees the run succeed: the producer and the Snowflake
/// client ride out the outages with their own retries (a longer one fails the try as transient
/// and the task retries from the committed offsets). Nothing is lost or doubled: RAW.EVENTS
/// holds each of the 9,000 events once.
#[test]
fn the_cloud_run_survives_its_broker_restarting_and_its_warehouse_link_going_down() {
    let Some((_fakesnow, sf_port, _sf_data)) = fakesnow() else {
        return;
    };
    let link = Link::to(sf_port);
    let broker_dir = tempfile::tempdir().unwrap();
    let kafka_port = free_port();
    let mut broker = Some(tansu_on(broker_dir.path(), kafka_port));
    let raw_schema = std::fs::read_to_string(repo().join("schemas/raw_event.schema.json")).unwrap();
    let pipeline = "dag: faults
defaults: { retries: 5, retry_delay: 1s }
tasks:
  gen: {operator: generate_events, with: {month: 2019-11, rows_per_day: 330, output: data/raw, seed: 5}}
  prep: {operator: prepare_events, depends_on: [gen], with: {input: '{{ tasks.gen.output.path }}', output: data/prepared, rows_per_day: 300}}
  produce: {operator: kafka_produce, depends_on: [prep], with: {input: data/prepared, topic: raw, rows_per_day: 300, rate: 1500}}
  land: {operator: kafka_to_warehouse, depends_on: [produce], with: {topic: raw, table: RAW.EVENTS, schema: schemas/raw_event.schema.json, key: [event_id], batch_size: 500}}
";
    let dir = project(&[
        ("pipelines/faults.yaml", pipeline),
        ("schemas/raw_event.schema.json", &raw_schema),
    ]);
    let home = dir.path().join(".windsock");
    let bootstrap = format!("127.0.0.1:{kafka_port}");
    let cmd = |db: bool| {
        let mut c = cloud(dir.path(), &home, link.port, db);
        c.env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
            .env("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
            .env_remove("WINDSOCK_KAFKA_BOOTSTRAP");
        c
    };
    let out = run(cmd(false).args(["query", "CREATE DATABASE IF NOT EXISTS WINDSOCK"]));
    assert!(out.status.success(), "{:?}", text(&out));
    let windsock_run = cmd(true)
        .args(["run", "faults"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let wait = |secs: u64, what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // 9,000 events at 1,500 a second: the broker dies two seconds in, comes back two later.
    wait(120, "the producer to start", &|| {
        task_logs(&home, "produce").contains("windsock:")
    });
    std::thread::sleep(Duration::from_secs(2));
    drop(broker.take());
    std::thread::sleep(Duration::from_secs(2));
    broker = Some(tansu_on(broker_dir.path(), kafka_port));

    // The warehouse's link goes down after the second landed batch, for three seconds.
    wait(300, "the second landed batch", &|| {
        task_logs(&home, "land").contains("batch 2:")
    });
    link.cut();
    std::thread::sleep(Duration::from_secs(3));
    link.restore();

    let out = windsock_run.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "the run failed: {stdout}{stderr}");
    let q = |sql: &str| json(cmd(true).args(["query", "--format", "json", sql]));
    let n = q("SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM RAW.EVENTS");
    let get = |k: &str| {
        n[0].get(k)
            .or(n[0].get(k.to_uppercase()))
            .and_then(|v| v.as_i64())
    };
    assert_eq!((get("n"), get("ids")), (Some(9_000), Some(9_000)), "{n}");
    drop(broker);
}
