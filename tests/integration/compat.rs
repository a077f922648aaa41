//! Standard Kafka tools against the local profile's embedded broker (`windsock broker`): Debian's
//! `kcat` and `python3-confluent-kafka` (librdkafka underneath both, the clients data engineers
//! point at a laptop broker). Each reads or writes a month `kafka_produce` streamed, and every
//! message arrives exactly once.
//!
//! Needs `kcat` and `/usr/bin/python3` with `confluent_kafka` (`apt-get install kcat
//! python3-confluent-kafka`; `.ci/run` installs both).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// December 2019 at 10,000 events a day.
const MONTH: usize = 310_000;

const PIPELINE: &str = r#"
dag: produce_only
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
      seed: 11
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
      partitions: 4
      rows_per_day: 10000
"#;

fn require_tools() {
    let kcat = Command::new("kcat").arg("-V").output();
    assert!(
        kcat.is_ok_and(|o| o.status.success()),
        "these tests need kcat (apt-get install kcat; .ci/run installs it)"
    );
    let py = Command::new("/usr/bin/python3")
        .args(["-c", "import confluent_kafka"])
        .output();
    assert!(
        py.is_ok_and(|o| o.status.success()),
        "these tests need python3-confluent-kafka (apt-get install python3-confluent-kafka)"
    );
}

/// A home with the embedded broker running and December streamed to `raw` by `kafka_produce`.
fn broker_with_a_month() -> (tempfile::TempDir, tempfile::TempDir, Server, String) {
    let schema = std::fs::read_to_string(repo().join("schemas/raw_event.schema.json")).unwrap();
    let proj = project(&[
        ("pipelines/produce_only.yaml", PIPELINE),
        ("schemas/raw_event.schema.json", &schema),
    ]);
    let home = tempfile::tempdir().unwrap();
    let (broker, addr) = embedded_broker(home.path());
    let out = run(windsock(proj.path(), home.path()).args([
        "run",
        "produce_only",
        "--partition",
        "2019-12",
    ]));
    assert!(out.status.success(), "{:?}", text(&out));
    (proj, home, broker, addr)
}

/// A process whose stdout lines are collected as they arrive; killed when dropped.
struct Collector {
    server: Server,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    fn start(cmd: &mut Command) -> Collector {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start client");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Collector {
            server: Server(child),
            lines,
        }
    }

    fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Stops the client with SIGTERM (it leaves its group cleanly) and returns what it printed.
    fn stop(self) -> Vec<String> {
        let pid = self.server.0.id() as i32;
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        std::thread::sleep(Duration::from_millis(500));
        drop(self.server);
        std::thread::sleep(Duration::from_millis(100));
        self.lines.lock().unwrap().clone()
    }
}

/// `partition\toffset\tvalue` lines: the event ids, checking (partition, offset) pairs are unique.
fn event_ids(lines: &[String]) -> Vec<String> {
    let mut positions = HashSet::new();
    lines
        .iter()
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            let (p, o, v) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap_or(""));
            assert!(
                positions.insert((p.to_string(), o.to_string())),
                "read twice: {p}/{o}"
            );
            let event: serde_json::Value =
                serde_json::from_str(v).unwrap_or_else(|e| panic!("not JSON ({e}): {v}"));
            event["event_id"].as_str().expect("event_id").to_string()
        })
        .collect()
}

fn assert_each_once(ids: &[String], want: usize) {
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "some events arrived twice");
    assert_eq!(ids.len(), want, "every event arrives");
}

fn group_members(addr: &str, group: &str) -> Option<(String, usize)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .ok()?;
    let list = c
        .fetch_group_list(Some(group), Duration::from_secs(5))
        .ok()?;
    let g = list.groups().iter().find(|g| g.name() == group)?;
    Some((g.state().to_string(), g.members().len()))
}

fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kcat(addr: &str) -> Command {
    let mut c = Command::new("kcat");
    // -u: unbuffered output, so a test reading a pipe sees each message as it arrives.
    c.args(["-b", addr, "-q", "-u"]);
    c
}

fn python(args: &[&str]) -> Command {
    let mut c = Command::new("/usr/bin/python3");
    c.arg(repo().join("tests/compat/confluent_clients.py"))
        .args(args);
    c
}

#[test]
fn kcat_lists_produces_and_reads_in_a_group_of_two_each_event_once() {
    require_tools();
    let home = tempfile::tempdir().unwrap();
    let (_broker, addr) = embedded_broker(home.path());
    create_topic(&addr, "raw", 4);

    // Two balanced consumers join one group before the month is produced, so both share it.
    let member = |_| {
        Collector::start(kcat(&addr).args([
            "-C",
            "-G",
            "g",
            "-X",
            "auto.offset.reset=earliest",
            "-f",
            "%p\t%o\t%s\n",
            "raw",
        ]))
    };
    let members: Vec<Collector> = (0..2).map(member).collect();
    wait_until(60, "both kcat members in a stable group", || {
        group_members(&addr, "g").is_some_and(|(state, n)| state == "Stable" && n == 2)
    });

    let schema = std::fs::read_to_string(repo().join("schemas/raw_event.schema.json")).unwrap();
    let proj = project(&[
        ("pipelines/produce_only.yaml", PIPELINE),
        ("schemas/raw_event.schema.json", &schema),
    ]);
    let out = run(windsock(proj.path(), home.path()).args([
        "run",
        "produce_only",
        "--partition",
        "2019-12",
    ]));
    assert!(out.status.success(), "{:?}", text(&out));

    wait_until(120, "the month at the two kcat members", || {
        members.iter().map(Collector::count).sum::<usize>() >= MONTH
    });
    // Anything read twice would arrive now.
    std::thread::sleep(Duration::from_secs(2));
    let per_member: Vec<Vec<String>> = members.into_iter().map(Collector::stop).collect();
    for (i, lines) in per_member.iter().enumerate() {
        assert!(!lines.is_empty(), "member {i} was given no partition");
    }
    let all: Vec<String> = per_member.concat();
    assert_each_once(&event_ids(&all), MONTH);

    // -L: the topic with its partitions.
    let listing = Command::new("kcat")
        .args(["-b", &addr, "-L"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    assert!(
        listing.contains("topic \"raw\" with 4 partitions"),
        "kcat -L: {listing}"
    );

    // -P to a topic nobody created (auto-created), then -C reads every line back in order.
    let mut producer = kcat(&addr)
        .args(["-P", "-t", "typed", "-K", ":"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let stdin = producer.stdin.as_mut().unwrap();
        for i in 0..2_000 {
            writeln!(stdin, "k:line {i}").unwrap();
        }
    }
    assert!(producer.wait().unwrap().success(), "kcat -P failed");
    let back = kcat(&addr)
        .args(["-C", "-t", "typed", "-e", "-f", "%k %s\n"])
        .output()
        .unwrap();
    let back = String::from_utf8_lossy(&back.stdout).to_string();
    let want: String = (0..2_000).map(|i| format!("k line {i}\n")).collect();
    assert_eq!(
        back, want,
        "one key, one partition: each line once, in order"
    );
}

#[test]
fn confluent_kafka_python_produces_idempotently_and_reads_a_month_with_subscribe_and_commit() {
    require_tools();
    let (_proj, _home, _broker, addr) = broker_with_a_month();

    // subscribe() + commit(), in two sessions: the second starts where the first committed.
    let first = python(&["consume", &addr, "raw", "py", "150000"])
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = python(&["consume", &addr, "raw", "py", "1000000"])
        .output()
        .unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let lines: Vec<String> = [&first.stdout, &second.stdout]
        .iter()
        .flat_map(|o| {
            String::from_utf8_lossy(o)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&first.stdout).lines().count(),
        150_000,
        "the first session reads its share"
    );
    assert_each_once(&event_ids(&lines), MONTH);

    // An idempotent producer with 5 requests in flight: every message stored once.
    let produced = python(&["produce", &addr, "py_events", "20000"])
        .output()
        .unwrap();
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&produced.stdout).trim(), "20000");
    let back = kcat(&addr)
        .args(["-C", "-t", "py_events", "-e", "-f", "%s\n"])
        .output()
        .unwrap();
    let mut per_key: BTreeMap<usize, usize> = BTreeMap::new();
    for line in String::from_utf8_lossy(&back.stdout).lines() {
        let i: usize = line.trim_start_matches("py-").parse().expect("py-<i>");
        *per_key.entry(i).or_default() += 1;
    }
    assert_eq!(per_key.len(), 20_000, "every message arrives");
    assert!(per_key.values().all(|&n| n == 1), "no message stored twice");
}

/// What a real client (librdkafka, through rdkafka) sees of commits on the embedded broker, as
/// Kafka answers them: the metadata string committed with an offset comes back with it, and a
/// commit for a topic that does not exist is refused and stores nothing.
#[test]
fn commits_keep_their_metadata_and_unknown_topics_are_refused() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let home = tempfile::tempdir().unwrap();
    let (_broker, addr) = embedded_broker(home.path());
    create_topic(&addr, "known", 1);
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("group.id", "checkpoints")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("known", 0, Offset::Offset(5))
        .unwrap();
    tpl.find_partition("known", 0)
        .unwrap()
        .set_metadata("checkpoint-5");
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    let mut ask = TopicPartitionList::new();
    ask.add_partition("known", 0);
    let got = consumer
        .committed_offsets(ask, Duration::from_secs(10))
        .expect("committed");
    let known = got.find_partition("known", 0).unwrap();
    assert_eq!(known.offset(), Offset::Offset(5));
    assert_eq!(known.metadata(), "checkpoint-5");

    let mut bad = TopicPartitionList::new();
    bad.add_partition_offset("missing", 0, Offset::Offset(1))
        .unwrap();
    let refused = consumer.commit(&bad, CommitMode::Sync);
    assert!(
        refused.is_err(),
        "a commit for a missing topic was accepted"
    );
    let mut ask = TopicPartitionList::new();
    ask.add_partition("missing", 0);
    let got = consumer
        .committed_offsets(ask, Duration::from_secs(10))
        .expect("committed");
    assert_eq!(
        got.find_partition("missing", 0).unwrap().offset(),
        Offset::Invalid,
        "nothing is stored for a missing topic"
    );
}

/// librdkafka's admin client adds partitions to a topic of the embedded broker (never removes
/// any, as Kafka), and a producer then writes to the new one.
#[test]
fn partitions_are_added_to_a_topic_and_never_removed() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let home = tempfile::tempdir().unwrap();
    let (_broker, addr) = embedded_broker(home.path());
    create_topic(&addr, "growing", 1);
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .create()
        .expect("admin client");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let grow = |n: usize| {
        rt.block_on(
            admin.create_partitions(&[NewPartitions::new("growing", n)], &AdminOptions::new()),
        )
        .expect("the request")
        .remove(0)
    };
    assert!(grow(3).is_ok(), "grown to 3");
    let shrunk = grow(2);
    assert!(shrunk.is_err(), "a topic shrank: {shrunk:?}");
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .create()
        .expect("producer");
    let meta = producer
        .client()
        .fetch_metadata(Some("growing"), Duration::from_secs(10))
        .expect("metadata");
    assert_eq!(meta.topics()[0].partitions().len(), 3);
    producer
        .send(
            BaseRecord::to("growing")
                .partition(2)
                .key("k")
                .payload("in the new partition"),
        )
        .expect("queued");
    assert!(producer.flush(Duration::from_secs(10)).is_ok());
    // The count survives a restart.
    drop(_broker);
    let (_broker, addr) = embedded_broker(home.path());
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .create()
        .expect("consumer");
    let meta = rdkafka::consumer::Consumer::fetch_metadata(
        &consumer,
        Some("growing"),
        Duration::from_secs(10),
    )
    .expect("metadata");
    assert_eq!(meta.topics()[0].partitions().len(), 3);
}
