//! The Kafka operators through the binary: on the local profile's embedded broker (windsock's
//! native broker, in the windsock process: SIGKILLed with it and started again over the same
//! data), and on a tansu broker process windsock manages (`WINDSOCK_BROKER=tansu`).
//!
//! Needs the `tansu` binary (`cargo install tansu --locked --features libsql`; `.ci/run`
//! installs it and puts it on PATH).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

fn query(project: &Path, home: &Path, sql: &str) -> Vec<Vec<serde_json::Value>> {
    let v = json(windsock(project, home).args(["query", "--format", "json", sql]));
    v.as_array()
        .unwrap_or_else(|| panic!("not rows: {v}"))
        .iter()
        .map(|r| r.as_object().unwrap().values().cloned().collect())
        .collect()
}

fn scalar(project: &Path, home: &Path, sql: &str) -> i64 {
    let rows = query(project, home, sql);
    rows[0][0]
        .as_i64()
        .or_else(|| rows[0][0].as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {rows:?}"))
}

/// The messages in a topic: the sum of its partitions' end offsets (the test's own client, on
/// the embedded broker it starts again from the same data).
fn topic_size(home: &Path, topic: &str) -> i64 {
    try_topic_size(home, topic).expect("the topic's size")
}

/// The size of a topic on the broker windsock is running now, if it is.
fn running_topic_size(home: &Path, topic: &str) -> Option<i64> {
    let state = std::fs::read_to_string(home.join("broker/broker.json")).ok()?;
    let b: serde_json::Value = serde_json::from_str(&state).ok()?;
    std::fs::metadata(format!("/proc/{}", b["pid"])).ok()?;
    size_at(&format!("127.0.0.1:{}", b["port"]), topic)
}

fn try_topic_size(home: &Path, topic: &str) -> Option<i64> {
    let (_broker, addr) = embedded_broker(home);
    size_at(&addr, topic)
}

fn size_at(addr: &str, topic: &str) -> Option<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "test-size")
        .create()
        .ok()?;
    let timeout = Duration::from_secs(5);
    let md = consumer.fetch_metadata(Some(topic), timeout).ok()?;
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    if t.error().is_some() || t.partitions().is_empty() {
        return None;
    }
    let mut total = 0;
    for p in t.partitions() {
        let (lo, hi) = consumer.fetch_watermarks(topic, p.id(), timeout).ok()?;
        total += hi - lo;
    }
    Some(total)
}

fn require_broker() {
    let found = std::env::var_os("WINDSOCK_BROKER_BIN").is_some()
        || std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("tansu").is_file()));
    assert!(
        found,
        "these tests need the tansu broker binary on PATH (cargo install tansu --locked --features libsql)"
    );
}

const PIPELINE: &str = r#"
dag: kstream
start_date: 2019-10-01
partitions:
  monthly: { from: 2019-10, to: 2020-04 }
defaults:
  retries: 0
tasks:
  get_month:
    operator: generate_events
    with:
      month: "{{ partition.key }}"
      rows_per_day: 10500
      output: "{{ data_dir }}/raw"
      seed: 7
  prepare:
    operator: prepare_events
    depends_on: [get_month]
    with:
      input: "{{ tasks.get_month.output.path }}"
      output: "{{ data_dir }}/prepared/{{ partition.key }}"
      rows_per_day: 10000
  stream_month:
    operator: kafka_produce
    depends_on: [prepare]
    with:
      input: "{{ tasks.prepare.output.output }}"
      topic: raw
      rows_per_day: 10000
      properties:
        linger.ms: "5"
        batch.num.messages: "2000"
  land_raw:
    operator: kafka_to_warehouse
    depends_on: [stream_month]
    with:
      topic: raw
      table: RAW.EVENTS
      schema: schemas/raw_event.schema.json
      key: [event_id]
      batch_size: 20000
  landed:
    operator: wait_for
    depends_on: [land_raw]
    with:
      kafka_lag: { topic: raw, group: windsock.kstream.land_raw, max_lag: 0 }
      poke_interval: 200ms
      timeout: 1m
"#;

/// The stream project with 200 events a day: (project, its pipeline text).
fn small_stream_project() -> (tempfile::TempDir, String) {
    let pipeline = PIPELINE.replace(
        "rows_per_day: 10000\n      properties:",
        "rows_per_day: 200\n      properties:",
    );
    let schema = std::fs::read_to_string(repo().join("schemas/raw_event.schema.json")).unwrap();
    let proj = project(&[
        ("pipelines/kstream.yaml", &pipeline),
        ("schemas/raw_event.schema.json", &schema),
    ]);
    (proj, pipeline)
}

fn stream_project() -> tempfile::TempDir {
    let schema = std::fs::read_to_string(repo().join("schemas/raw_event.schema.json")).unwrap();
    project(&[
        ("pipelines/kstream.yaml", PIPELINE),
        ("schemas/raw_event.schema.json", &schema),
    ])
}

/// Waits until `cond` holds (or panics after `secs`).
fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_text(home: &Path, task: &str) -> String {
    let mut out = String::new();
    for e in glob::glob(&format!("{}/logs/kstream/*/{task}/*.log", home.display()))
        .unwrap()
        .flatten()
    {
        out.push_str(&std::fs::read_to_string(e).unwrap_or_default());
    }
    out
}

/// SIGKILLs windsock, then waits for the broker it started to go too (PDEATHSIG), so the next
/// user of the state directory starts it again.
fn kill_windsock(child: &mut std::process::Child, home: &Path) {
    // SAFETY: signals our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    let state = std::fs::read_to_string(home.join("broker/broker.json")).unwrap_or_default();
    let pid: serde_json::Value = serde_json::from_str(&state).unwrap_or_default();
    if let Some(pid) = pid["pid"].as_u64() {
        wait_until(10, "the broker to stop with windsock", || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
        });
    }
}

#[test]
fn a_month_lands_exactly_once_with_kills_during_produce_and_landing() {
    require_broker();
    let proj = stream_project();
    let home = tempfile::tempdir().unwrap();
    let (p, h) = (proj.path(), home.path());

    // 1. Killed while producing: once the producer has delivered part of the month.
    let mut child = windsock(p, h)
        .args(["run", "kstream", "--partition", "2019-12"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Let it deliver some, not all, of the 310,000 messages.
    wait_until(300, "the producer to deliver part of the month", || {
        log_text(h, "stream_month").contains("windsock:")
            && running_topic_size(h, "raw").is_some_and(|n| n >= 20_000)
    });
    kill_windsock(&mut child, h);
    // The broker died with windsock; started again, it has what was delivered.
    let partial = topic_size(h, "raw");
    assert!(
        partial > 0 && partial < 310_000,
        "the kill should land mid-stream, found {partial} messages"
    );
    let runs = json(windsock(p, h).args(["runs", "kstream", "--json"]));
    let run_id = runs[0]["run_id"].as_str().unwrap().to_string();

    // 2. Resume; killed while landing, after the first batch is committed.
    let mut child = windsock(p, h)
        .args(["run", "--resume", &run_id])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(300, "the first landed batch", || {
        log_text(h, "land_raw").contains("batch 1:")
    });
    kill_windsock(&mut child, h);
    assert_eq!(
        topic_size(h, "raw"),
        310_000,
        "the resumed producer sent only what was missing"
    );
    let landed = scalar(p, h, "SELECT count(*) FROM RAW.EVENTS");
    assert!(
        landed > 0 && landed < 310_000,
        "landed {landed} before the kill"
    );

    // 3. Resume to the end.
    let out = run(windsock(p, h).args(["run", "--resume", &run_id]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let tis = json(windsock(p, h).args(["tasks", &run_id, "--json"]));
    let produce = tis
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "stream_month")
        .unwrap();
    assert_eq!(produce["output"]["events"], 310_000, "{produce}");
    // The lag sensor saw the landing's group caught up with the topic.
    let landed = tis
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "landed")
        .unwrap();
    assert_eq!(landed["state"], "success", "{landed}");
    assert!(log_text(h, "landed").contains("0 message(s) behind on raw"));
    assert!(
        produce["output"]["skipped_already_delivered"]
            .as_u64()
            .unwrap()
            > 0,
        "{produce}"
    );
    assert_eq!(topic_size(h, "raw"), 310_000);
    assert_eq!(scalar(p, h, "SELECT count(*) FROM RAW.EVENTS"), 310_000);
    assert_eq!(
        scalar(p, h, "SELECT count(DISTINCT event_id) FROM RAW.EVENTS"),
        310_000
    );
    assert_eq!(
        scalar(
            p,
            h,
            "SELECT count(*) FROM (SELECT event_date FROM RAW.EVENTS GROUP BY 1 HAVING count(*) = 10000)"
        ),
        31,
        "10,000 events on each of December's 31 days"
    );
    // Every event of the prepared month, none else.
    let prepared = format!("{}/data/prepared/2019-12/*/*.parquet", h.display());
    assert_eq!(
        scalar(
            p,
            h,
            &format!(
                "SELECT count(*) FROM read_parquet('{prepared}') p FULL JOIN RAW.EVENTS r USING (event_id) WHERE p.event_id IS NULL OR r.event_id IS NULL"
            )
        ),
        0
    );
    // Kafka metadata beside the columns; each (partition, offset) once.
    assert_eq!(
        scalar(
            p,
            h,
            "SELECT count(DISTINCT (kafka_partition, kafka_offset)) FROM RAW.EVENTS WHERE kafka_topic = 'raw' AND kafka_key IS NOT NULL AND kafka_timestamp IS NOT NULL"
        ),
        310_000
    );
}

#[test]
fn schema_violations_and_malformed_messages_are_dead_lettered_with_reasons() {
    require_broker();
    // A stricter schema: prices above 300 are violations (a known share of the generated month).
    let strict = std::fs::read_to_string(repo().join("schemas/raw_event.schema.json"))
        .unwrap()
        .replace(
            r#""price": { "type": "number", "minimum": 0 }"#,
            r#""price": { "type": "number", "minimum": 0, "maximum": 300 }"#,
        );
    assert!(strict.contains("\"maximum\": 300"));
    let pipeline = PIPELINE
        .replace("schemas/raw_event.schema.json", "schemas/strict.schema.json")
        .replace(
            "      rows_per_day: 10000\n      properties:",
            "      rows_per_day: 1000\n      schema: schemas/strict.schema.json\n      dead_letter_topic: raw.rejects\n      properties:",
        );
    let proj = project(&[
        ("pipelines/kstream.yaml", &pipeline),
        ("schemas/strict.schema.json", &strict),
    ]);
    let home = tempfile::tempdir().unwrap();
    let (p, h) = (proj.path(), home.path());
    let out = run(windsock(p, h).args(["run", "kstream", "--partition", "2019-11"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let run_id = stdout.lines().next().unwrap().trim().to_string();
    let tis = json(windsock(p, h).args(["tasks", &run_id, "--json"]));
    let output = |task: &str| {
        tis.as_array()
            .unwrap()
            .iter()
            .find(|t| t["task"] == task)
            .unwrap()["output"]
            .clone()
    };
    let produce = output("stream_month");
    let prepared = format!("{}/data/prepared/2019-11/*/*.parquet", h.display());
    let expensive = scalar(
        p,
        h,
        &format!(
            "SELECT count(*) FROM (SELECT * FROM read_parquet('{prepared}') QUALIFY row_number() OVER (PARTITION BY event_date ORDER BY event_time) <= 1000) WHERE price > 300"
        ),
    );
    assert!(expensive > 0);
    assert_eq!(produce["dead_lettered"], expensive, "{produce}");
    assert_eq!(produce["events"].as_i64().unwrap() + expensive, 30_000);
    assert_eq!(topic_size(h, "raw.rejects"), expensive);
    assert_eq!(topic_size(h, "raw"), 30_000 - expensive);

    // Malformed messages written straight to the topic: the landing dead-letters each with its reason.
    {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let (_broker, addr) = embedded_broker(h);
        let producer: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &addr)
            .create()
            .unwrap();
        let bad: [&[u8]; 4] = [
            b"not json at all",
            br#"{"event_id": "0011223344556677"}"#,
            br#"{"event_id": "0011223344556677", "event_time": "2019-11-02T00:00:00Z", "event_type": "view", "product_id": "seven", "category_id": 1, "price": 1.0, "user_id": 1, "event_date": "2019-11-02"}"#,
            br#"[1, 2, 3]"#,
        ];
        for b in bad {
            // One key: one partition, so offsets follow this order.
            producer
                .send(BaseRecord::<[u8], [u8]>::to("raw").key(b"k").payload(b))
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    }
    let out = run(windsock(p, h).args(["stream", "kstream", "land_raw"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim().strip_prefix("land_raw: ").unwrap()).unwrap();
    assert_eq!(report["consumed"], 4, "{report}");
    assert_eq!(report["dead_lettered"], 4, "{report}");
    assert_eq!(
        scalar(p, h, "SELECT count(*) FROM RAW.EVENTS"),
        30_000 - expensive
    );
    let reasons = query(
        p,
        h,
        "SELECT reason FROM RAW.EVENTS_DEAD_LETTER ORDER BY kafka_offset",
    );
    let reasons: Vec<String> = reasons
        .iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].starts_with("not JSON"), "{reasons:?}");
    assert!(
        reasons[1].contains("\"event_time\" is a required property"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].contains("/product_id: \"seven\" is not of type \"integer\""),
        "{reasons:?}"
    );
    assert!(
        reasons[3].contains("is not of type \"object\""),
        "{reasons:?}"
    );
}

/// The shipped streaming DAG, twice: 300,000 November events in RAW.EVENTS both times, and its
/// windows equal the same aggregates computed in SQL on the prepared data.
#[test]
fn the_stream_pipeline_lands_november_once_twice_and_its_windows_match_sql() {
    require_broker();
    let home = tempfile::tempdir().unwrap();
    let (p, h) = (repo(), home.path());
    let p = p.as_path();
    for round in 0..2 {
        let out = run(windsock(p, h).args(["run", "ecommerce_stream", "--partition", "2019-11"]));
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "round {round}: {stdout}{stderr}");
        assert_eq!(
            scalar(p, h, "SELECT count(*) FROM RAW.EVENTS"),
            300_000,
            "round {round}"
        );
        assert_eq!(
            scalar(
                p,
                h,
                "SELECT count(*) FROM RAW.EVENTS WHERE event_date >= DATE '2019-11-01' AND event_date < DATE '2019-12-01'"
            ),
            300_000
        );
        assert_eq!(
            scalar(p, h, "SELECT count(*) FROM REPORTING.DAILY_REVENUE"),
            30,
            "round {round}"
        );
        assert_eq!(
            scalar(p, h, "SELECT count(*) FROM RAW.EVENTS_DEAD_LETTER"),
            0,
            "round {round}"
        );
    }
    let prepared = format!("{}/data/prepared/2019-11/*/*.parquet", h.display());
    for (size, ms) in [("1m", 60_000), ("1h", 3_600_000)] {
        for (dim, col) in [
            ("event_type", "event_type"),
            ("category_l1", "coalesce(category_l1, '(none)')"),
        ] {
            let expected = format!(
                "SELECT (epoch_ms(event_time) // {ms}) * {ms} AS ws, {col} AS val, count(*) AS events,
                    count(*) FILTER (WHERE event_type = 'view') AS views,
                    count(*) FILTER (WHERE event_type = 'cart') AS carts,
                    count(*) FILTER (WHERE event_type = 'purchase') AS purchases,
                    coalesce(sum(price) FILTER (WHERE event_type = 'purchase'), 0) AS revenue,
                    count(DISTINCT user_id) AS users, count(DISTINCT user_session) AS sessions
                 FROM read_parquet('{prepared}') GROUP BY 1, 2"
            );
            let actual = format!(
                "SELECT epoch_ms(window_start) AS ws, dimension_value AS val, events, views, carts,
                    purchases, revenue, distinct_users AS users, distinct_sessions AS sessions
                 FROM PROCESSED.WINDOW_AGGREGATES WHERE window_size = '{size}' AND dimension = '{dim}'"
            );
            let mismatches = scalar(
                p,
                h,
                &format!(
                    "SELECT count(*) FROM ({expected}) e FULL JOIN ({actual}) a USING (ws, val)
                     WHERE a.ws IS NULL OR e.ws IS NULL OR a.events <> e.events OR a.views <> e.views
                        OR a.carts <> e.carts OR a.purchases <> e.purchases
                        OR abs(a.revenue - e.revenue) > 0.005 OR a.users <> e.users
                        OR a.sessions <> e.sessions"
                ),
            );
            assert_eq!(mismatches, 0, "{size} windows by {dim} differ from SQL");
        }
    }
    let windows = scalar(
        p,
        h,
        "SELECT count(DISTINCT window_start) FROM PROCESSED.WINDOW_AGGREGATES WHERE window_size = '1h'",
    );
    // The first 10,000 events of a generated day end in its evening: hours with events only.
    let hours = scalar(
        p,
        h,
        &format!(
            "SELECT count(DISTINCT epoch_ms(event_time) // 3600000) FROM read_parquet('{prepared}')"
        ),
    );
    assert!(hours > 30 * 12, "{hours}");
    assert_eq!(windows, hours);
    // Conversion rates and the top products are there too.
    assert_eq!(
        scalar(
            p,
            h,
            "SELECT count(*) FROM PROCESSED.WINDOW_AGGREGATES WHERE views > 0 AND abs(view_to_cart - carts / views) > 1e-9"
        ),
        0
    );
    let top = query(
        p,
        h,
        &format!(
            "SELECT t.product_id, t.events, e.n FROM PROCESSED.TRENDING_PRODUCTS t
             JOIN (SELECT (epoch_ms(event_time) // 3600000) * 3600000 AS ws, product_id, count(*) AS n
                   FROM read_parquet('{prepared}') WHERE event_type = 'view' GROUP BY 1, 2) e
               ON e.ws = epoch_ms(t.window_start) AND e.product_id = t.product_id
             WHERE t.window_size = '1h' AND t.ranking = 'views' AND t.rank = 1"
        ),
    );
    assert_eq!(top.len() as i64, hours);
    assert!(top.iter().all(|r| r[1] == r[2]), "{:?}", &top[..3]);
}

/// RAW.EVENTS written by the batch DAG, then landed from Kafka: the landing adds its metadata
/// columns to the table and the month is still there once.
#[test]
fn landing_into_a_table_the_batch_dag_made_adds_the_kafka_columns() {
    require_broker();
    let home = tempfile::tempdir().unwrap();
    let (p, h) = (repo(), home.path());
    let p = p.as_path();
    let batch = run(windsock(p, h).args(["run", "ecommerce_batch", "--partition", "2019-11"]));
    assert!(batch.status.success(), "{:?}", text(&batch));
    let stream = run(windsock(p, h).args(["run", "ecommerce_stream", "--partition", "2019-11"]));
    assert!(stream.status.success(), "{:?}", text(&stream));
    assert_eq!(scalar(p, h, "SELECT count(*) FROM RAW.EVENTS"), 300_000);
    assert_eq!(
        scalar(
            p,
            h,
            "SELECT count(*) FROM RAW.EVENTS WHERE kafka_offset IS NOT NULL"
        ),
        300_000,
        "every event was landed again from the topic, replacing its batch copy"
    );
}

/// `windsock stream --follow` keeps landing what is produced while it runs, and on Ctrl-C
/// finishes its batch, commits and prints what it did.
#[test]
fn stream_follow_lands_while_producing_and_stops_cleanly_on_sigint() {
    require_broker();
    let (proj, pipeline) = small_stream_project();
    let home = tempfile::tempdir().unwrap();
    let (p, h) = (proj.path(), home.path());
    // Started before the topic exists: it waits for it.
    let follower = windsock(p, h)
        .args(["stream", "kstream", "land_raw", "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(60, "the follower to start", || {
        log_text(h, "land_raw").contains("following raw")
    });
    // The run only produces (its landing taken out): the follower lands.
    let pipeline_without_landing = pipeline.split("  land_raw:").next().unwrap().to_string();
    std::fs::write(p.join("pipelines/kstream.yaml"), pipeline_without_landing).unwrap();
    let out = run(windsock(p, h).args(["run", "kstream", "--partition", "2019-10"]));
    assert!(out.status.success(), "{:?}", text(&out));
    // The follower holds the DuckDB file (one writer per file): watch its log instead.
    wait_until(120, "the follower to land the month", || {
        log_text(h, "land_raw")
            .lines()
            .filter_map(|l| l.split("batch ").nth(1))
            .filter_map(|l| l.split(": ").nth(1))
            .filter_map(|l| l.split(' ').next())
            .filter_map(|n| n.parse::<usize>().ok())
            .sum::<usize>()
            == 31 * 200
    });
    // SAFETY: signals our own child.
    unsafe {
        libc::kill(follower.id() as i32, libc::SIGINT);
    }
    let out = follower.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim().strip_prefix("land_raw: ").unwrap()).unwrap();
    assert_eq!(report["consumed"], 31 * 200, "{report}");
    assert_eq!(report["inserted"], 31 * 200, "{report}");
    assert_eq!(scalar(p, h, "SELECT count(*) FROM RAW.EVENTS"), 31 * 200);
    // Committed: the group has nothing left to read.
    std::fs::write(p.join("pipelines/kstream.yaml"), &pipeline).unwrap();
    let again = run(windsock(p, h).args(["stream", "kstream", "land_raw"]));
    let (stdout, _) = text(&again);
    assert!(stdout.contains("\"consumed\":0"), "{stdout}");
}

/// The local profile on tansu instead of the native broker (`WINDSOCK_BROKER=tansu`): a real
/// broker process windsock manages, with its SQLite storage in the state directory.
#[test]
fn the_local_profile_also_runs_on_a_tansu_process() {
    require_broker();
    let (proj, _) = small_stream_project();
    let home = tempfile::tempdir().unwrap();
    let (p, h) = (proj.path(), home.path());
    let out = run(windsock(p, h).env("WINDSOCK_BROKER", "tansu").args([
        "run",
        "kstream",
        "--partition",
        "2019-11",
    ]));
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(scalar(p, h, "SELECT count(*) FROM RAW.EVENTS"), 30 * 200);
    assert!(h.join("broker/tansu.db").exists());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.join("broker/broker.json")).unwrap()).unwrap();
    assert_eq!(state["kind"], "tansu");
}

/// librdkafka with `acks=0` (no response expected) and default settings against the embedded
/// broker: every message arrives and reads back in order.
#[test]
fn the_embedded_broker_serves_plain_clients_too() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let home = tempfile::tempdir().unwrap();
    let (_broker, addr) = embedded_broker(home.path());
    create_topic(&addr, "plain", 2);
    let settings = |extra: &[(&str, &str)]| {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &addr);
        for (k, v) in extra {
            c.set(*k, *v);
        }
        c
    };
    for acks in ["0", "1"] {
        let producer: BaseProducer = settings(&[("acks", acks)]).create().unwrap();
        for i in 0..500 {
            let v = format!("{acks}-{i}");
            producer
                .send(BaseRecord::<str, str>::to("plain").key("k").payload(&v))
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    }
    let consumer: BaseConsumer = settings(&[
        ("group.id", "plain-reader"),
        ("auto.offset.reset", "earliest"),
    ])
    .create()
    .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset("plain", p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 1000 && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            got.push(String::from_utf8_lossy(m.payload().unwrap()).to_string());
        }
    }
    let want: Vec<String> = ["0", "1"]
        .iter()
        .flat_map(|a| (0..500).map(move |i| format!("{a}-{i}")))
        .collect();
    assert_eq!(got, want, "one key, one partition: in order, each once");
}

/// `windsock broker` for `home` with its log (stderr) going to `log`.
fn broker_logging_to(home: &Path, log: &Path) -> (Server, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(bin())
        .args(["broker", "--home"])
        .arg(home)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start windsock broker");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    (server, line.trim().to_string())
}

/// A crash tears the last batch of a log, and a bit rots inside an acknowledged batch: the broker
/// starts, says what it cut and what it skipped, serves every intact batch, never the damaged one.
#[test]
fn a_torn_tail_and_a_rotten_batch_are_logged_and_only_intact_batches_are_served() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let (broker, addr) = embedded_broker(h);
    create_topic(&addr, "kept", 1);
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .create()
        .unwrap();
    // Ten batches of 100, each flushed on its own: offsets 100*b .. 100*b+99 hold "m-<offset>".
    for b in 0..10 {
        for i in 0..100 {
            let v = format!("m-{}", b * 100 + i);
            producer
                .send(BaseRecord::<str, str>::to("kept").payload(&v))
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    }
    drop(producer);
    drop(broker);

    // The batches on disk: (position, length, base offset, records).
    let file = h.join("broker/native/topics/kept/0/00000000000000000000.log");
    let bytes = std::fs::read(&file).unwrap();
    let mut batches = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let base = i64::from_be_bytes(bytes[pos..pos + 8].try_into().unwrap());
        let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize + 12;
        let count = i32::from_be_bytes(bytes[pos + 57..pos + 61].try_into().unwrap()) as i64;
        batches.push((pos, len, base, count));
        pos += len;
    }
    assert_eq!(batches.len(), 10, "one batch per flush");
    // Rot a byte in the records of the fourth batch; tear the tenth in half.
    let (rot_pos, rot_len, rot_base, rot_count) = batches[3];
    let (tail_pos, tail_len, tail_base, _) = batches[9];
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(
        &[bytes[rot_pos + rot_len / 2] ^ 0x40],
        (rot_pos + rot_len / 2) as u64,
    )
    .unwrap();
    f.set_len((tail_pos + tail_len / 2) as u64).unwrap();
    drop(f);

    let log = h.join("broker.stderr");
    let (_broker, addr) = broker_logging_to(h, &log);
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("group.id", "after-damage")
        .set("check.crcs", "true")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("kept", 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let want: Vec<String> = (0..900)
        .filter(|o| !(rot_base..rot_base + rot_count).contains(o))
        .map(|o| format!("{o}=m-{o}"))
        .collect();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < want.len() && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("no consumer error (a CRC error would be one)");
            let v = String::from_utf8_lossy(m.payload().unwrap()).to_string();
            got.push(format!("{}={v}", m.offset()));
        }
    }
    // Nothing after what was intact either.
    assert!(consumer.poll(Duration::from_millis(500)).is_none());
    assert_eq!(
        got, want,
        "every intact batch, in order, without the rotten one"
    );

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("cut the log at offset {tail_base}")),
        "the torn tail is logged: {text}"
    );
    assert!(
        text.contains(&format!(
            "skipped a damaged batch at offsets {rot_base}..={}",
            rot_base + rot_count - 1
        )),
        "the rotten batch is logged: {text}"
    );
}

/// The disk fills under the broker (its file size limit, RLIMIT_FSIZE, makes every write past
/// 3 MiB fail as a full disk would): producers get KAFKA_STORAGE_ERROR for what was not stored,
/// the broker says so, and started again with room, it serves exactly what it acknowledged.
#[test]
fn a_full_disk_fails_produces_with_storage_errors_and_keeps_every_acknowledged_message() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use std::collections::BTreeSet;
    use std::os::unix::process::CommandExt;
    use std::sync::{Arc, Mutex};
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // Created with room (the topic's files exist), then restarted under the limit.
    drop(embedded_broker(h));
    let log = h.join("broker.stderr");
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["broker", "--home"])
        .arg(h)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: setrlimit is async-signal-safe; it only limits the child about to exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 3 << 20,
                rlim_max: 3 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let broker = Server(child);
    let addr = line.trim().to_string();
    create_topic(&addr, "full", 1);

    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let failed = Arc::new(Mutex::new(Vec::new()));
    struct Tally(Arc<Mutex<BTreeSet<String>>>, Arc<Mutex<Vec<String>>>);
    impl rdkafka::ClientContext for Tally {}
    impl rdkafka::producer::ProducerContext for Tally {
        type DeliveryOpaque = ();
        fn delivery(&self, r: &rdkafka::message::DeliveryResult<'_>, _: ()) {
            match r {
                Ok(m) => {
                    let v = String::from_utf8_lossy(m.payload().unwrap()).to_string();
                    self.0.lock().unwrap().insert(v);
                }
                Err((e, _)) => self.1.lock().unwrap().push(e.to_string()),
            }
        }
    }
    let producer: BaseProducer<Tally> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("message.timeout.ms", "4000")
        .set("linger.ms", "5")
        .create_with_context(Tally(acked.clone(), failed.clone()))
        .unwrap();
    // 8,000 messages of 1 KiB: well past the 3 MiB the disk has.
    let body = "x".repeat(1000);
    for i in 0..8_000 {
        let v = format!("{i:05}-{body}");
        loop {
            match producer.send(BaseRecord::<str, str>::to("full").payload(&v)) {
                Ok(()) => break,
                Err((_, _)) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    let _ = producer.flush(Duration::from_secs(20));
    drop(producer);
    let acked = acked.lock().unwrap().clone();
    let failed = failed.lock().unwrap().clone();
    assert!(
        !acked.is_empty() && acked.len() < 8_000,
        "{} acknowledged",
        acked.len()
    );
    assert_eq!(
        acked.len() + failed.len(),
        8_000,
        "every message has an answer"
    );
    assert!(
        failed
            .iter()
            .all(|e| e.contains("Storage") || e.contains("timed out")),
        "{:?}",
        &failed[..3.min(failed.len())]
    );
    drop(broker);
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("cannot write the partition's log")
            && said.contains("refuses produce requests until the broker restarts"),
        "{said}"
    );

    // Room again: exactly the acknowledged messages, once each, in order.
    let (_broker, addr) = embedded_broker(h);
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("group.id", "after-full")
        .set("check.crcs", "true")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("full", 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < acked.len() && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("a clean read");
            got.push(String::from_utf8_lossy(m.payload().unwrap()).to_string());
        }
    }
    assert!(
        consumer.poll(Duration::from_millis(500)).is_none(),
        "more than was acknowledged"
    );
    let want: Vec<String> = acked.into_iter().collect();
    assert_eq!(got, want, "what was acknowledged, once, in order");
}

/// A `stream --follow` outlives the process that started the embedded broker (here `windsock
/// broker`, SIGKILLed): the follower brings the broker back on the same port over the same data
/// within seconds, and lands what is produced afterwards.
#[test]
fn a_follower_brings_back_the_broker_when_the_process_running_it_dies() {
    let (proj, pipeline) = small_stream_project();
    let home = tempfile::tempdir().unwrap();
    let (p, h) = (proj.path(), home.path());
    let (broker, addr) = embedded_broker(h);
    let follower = windsock(p, h)
        .args(["stream", "kstream", "land_raw", "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(h.join("follower.stderr")).unwrap())
        .spawn()
        .unwrap();
    wait_until(60, "the follower to start", || {
        log_text(h, "land_raw").contains("following raw")
    });
    drop(broker);
    let follower_pid = follower.id();
    wait_until(20, "the follower to run the broker", || {
        let state: Option<serde_json::Value> = std::fs::read(h.join("broker/broker.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        state.is_some_and(|s| s["pid"] == follower_pid)
            && std::net::TcpStream::connect(&addr).is_ok()
    });
    let pipeline_without_landing = pipeline.split("  land_raw:").next().unwrap().to_string();
    std::fs::write(p.join("pipelines/kstream.yaml"), pipeline_without_landing).unwrap();
    let out = run(windsock(p, h).args(["run", "kstream", "--partition", "2019-10"]));
    assert!(out.status.success(), "{:?}", text(&out));
    wait_until(120, "the follower to land the month", || {
        log_text(h, "land_raw")
            .lines()
            .filter_map(|l| l.split("batch ").nth(1))
            .filter_map(|l| l.split(": ").nth(1))
            .filter_map(|l| l.split(' ').next())
            .filter_map(|n| n.parse::<usize>().ok())
            .sum::<usize>()
            == 31 * 200
    });
    // SAFETY: signals our own child.
    unsafe {
        libc::kill(follower.id() as i32, libc::SIGINT);
    }
    let out = follower.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(scalar(p, h, "SELECT count(*) FROM RAW.EVENTS"), 31 * 200);
}
