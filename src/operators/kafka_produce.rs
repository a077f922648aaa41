//! `kafka_produce`: streams a prepared month to a topic, as the seed's Python producer did —
//! for every day, the first `rows_per_day` events in event-time order, as JSON keyed by
//! `user_session` (else `user_id`), each validated against a JSON Schema first. Events that fail
//! go to a dead-letter topic (or file) with the reason; none is dropped silently.
//!
//! Idempotent producer, `acks=all`, lz4, large batches; the task succeeds only when every
//! message has a positive delivery report.
//!
//! Retry safety: before the first message of a run, the topic's end offsets are saved in a
//! checkpoint (`<home>/kafka/checkpoints/<dag>/<run>/<task>.json`). A later try of the same run
//! reads the topic from there and skips every event (by `event_id`) that already arrived, so a
//! try killed half-way leaves no duplicate of what it delivered.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use polars::prelude::*;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    BoxFuture, CheckContext, ConfigProblem, OperatorConfig, OperatorError, TaskContext, TaskResult,
};
use crate::connections::kafka::{self, KafkaSettings};
use crate::spec::is_template;
use crate::stream::json::JsonRows;
use crate::stream::schema::MessageSchema;

/// Config of `kafka_produce` (these keys are a contract).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaProduceConfig {
    /// The prepared month: a folder of `event_date=YYYY-MM-DD/*.parquet` (prepare_events' output).
    pub input: String,
    /// The topic to produce to; created with `partitions` partitions if missing.
    pub topic: String,
    /// Events sent per day: the first N of the day by event time.
    pub rows_per_day: u64,
    /// The JSON Schema every event must match (its properties are the message's fields).
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Where events that fail the schema go: a topic (default `<topic>.dead-letter`) …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// … or a JSON-lines file instead (one object per event with its reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_file: Option<String>,
    /// Partitions of the topic when windsock creates it.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Events per second at most (a replay at a live pace); default: as fast as the broker takes
    /// them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// librdkafka producer properties, over windsock's defaults (`linger.ms`, `compression.type`…).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub properties: IndexMap<String, String>,
    /// A named Kafka connection (default: the profile's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
}

fn default_schema() -> String {
    "schemas/raw_event.schema.json".into()
}

fn default_partitions() -> i32 {
    3
}

/// The producer settings windsock starts from: safe (idempotent, every replica) and tuned for
/// throughput (large lz4 batches; the broker's cost is per request as much as per message).
pub const PRODUCER_DEFAULTS: [(&str, &str); 8] = [
    ("enable.idempotence", "true"),
    ("acks", "all"),
    // An idempotent librdkafka producer sends one request at a time per partition whatever this
    // says (librdkafka PR #4989); with more allowed, its broker thread busy-polls while it waits,
    // which cost 3.5x the producer's CPU here for no extra throughput.
    ("max.in.flight.requests.per.connection", "1"),
    ("linger.ms", "50"),
    ("batch.size", "4000000"),
    ("batch.num.messages", "100000"),
    ("queue.buffering.max.kbytes", "262144"),
    // The Java client's partitioner, so keys land where other clients put them.
    ("partitioner", "murmur2_random"),
];

/// The compression windsock picks when `properties` do not: lz4 over a network (Confluent
/// Cloud bills and limits bytes), none for the embedded broker on loopback, where compressing
/// only costs CPU (benches/produce.py: 1.9 µs of producer CPU per event without, 2.1 with lz4;
/// tansu, which decompresses every batch, spent 10.6 µs per event without and 17.5 with).
pub fn default_compression(profile: &str) -> &'static str {
    if profile == "local" { "none" } else { "lz4" }
}

/// Checks shared by the Kafka operators: a known connection and properties that are not secrets
/// (those belong in the environment, not in a pipeline file).
pub fn check_kafka(
    connection: Option<&str>,
    properties: &IndexMap<String, String>,
) -> Vec<ConfigProblem> {
    let mut out = Vec::new();
    if let Some(c) = connection.filter(|c| *c != "kafka") {
        out.push(ConfigProblem {
            key: Some("connection".into()),
            message: format!("unknown connection `{c}`; this build has `kafka`"),
        });
    }
    for k in properties.keys() {
        if kafka::is_secret(k) || k == "bootstrap.servers" || k.starts_with("sasl.") {
            out.push(ConfigProblem {
                key: Some("properties".into()),
                message: format!(
                    "`{k}` is part of the connection: set it in the environment (KAFKA_*), not in the pipeline"
                ),
            });
        }
    }
    out
}

/// A path of a schema that must exist (unless templated).
pub fn check_schema_file(key: &str, path: &str, cx: &CheckContext<'_>) -> Vec<ConfigProblem> {
    if is_template(path) {
        return Vec::new();
    }
    let p = cx.project_dir.join(path);
    match MessageSchema::load(&p) {
        Ok(_) => Vec::new(),
        Err(e) => vec![ConfigProblem {
            key: Some(key.into()),
            message: e,
        }],
    }
}

impl OperatorConfig for KafkaProduceConfig {
    const NAME: &'static str = "kafka_produce";
    const SUMMARY: &'static str =
        "streams a prepared month to a Kafka topic as schema-checked JSON, N events a day";

    fn check(&self, cx: &CheckContext<'_>) -> Vec<ConfigProblem> {
        let mut out = check_kafka(self.connection.as_deref(), &self.properties);
        out.extend(check_schema_file("schema", &self.schema, cx));
        if self.rows_per_day == 0 {
            out.push(ConfigProblem {
                key: Some("rows_per_day".into()),
                message: "`rows_per_day` must be at least 1".into(),
            });
        }
        if self.partitions < 1 {
            out.push(ConfigProblem {
                key: Some("partitions".into()),
                message: "`partitions` must be at least 1".into(),
            });
        }
        if self.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
            out.push(ConfigProblem {
                key: Some("rate".into()),
                message: "`rate` must be above zero (events per second)".into(),
            });
        }
        if self.dead_letter_topic.is_some() && self.dead_letter_file.is_some() {
            out.push(ConfigProblem {
                key: Some("dead_letter_file".into()),
                message: "set `dead_letter_topic` or `dead_letter_file`, not both".into(),
            });
        }
        out
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, OperatorError>> {
        Box::pin(async move {
            let schema = MessageSchema::load(&ctx.resolve(Path::new(&self.schema)))
                .map_err(OperatorError::fatal)?;
            let days = day_files(&ctx.resolve(Path::new(&self.input)))?;
            let settings = kafka::settings(&ctx.profile, &ctx.home)?;
            kafka::ensure_topic(&settings, &self.topic, self.partitions).await?;
            let dead_letter = match (&self.dead_letter_file, &self.dead_letter_topic) {
                (Some(f), _) => DeadLetter::File(ctx.resolve(Path::new(f))),
                (None, t) => {
                    let t = t
                        .clone()
                        .unwrap_or_else(|| format!("{}.dead-letter", self.topic));
                    kafka::ensure_topic(&settings, &t, 1).await?;
                    DeadLetter::Topic(t)
                }
            };
            let checkpoint = ctx
                .home
                .join("kafka/checkpoints")
                .join(&ctx.dag)
                .join(&ctx.run_id)
                .join(format!("{}.json", ctx.task));
            let mut defaults = PRODUCER_DEFAULTS.to_vec();
            defaults.push(("compression.type", default_compression(&ctx.profile)));
            if self.rate.is_some() {
                // A live pace: latency matters more than batching.
                defaults.push(("linger.ms", "5"));
            }
            let job = Job {
                settings,
                defaults,
                topic: self.topic.clone(),
                rows_per_day: self.rows_per_day,
                properties: self.properties.clone(),
                schema,
                days,
                dead_letter,
                rate: self.rate,
                checkpoint,
                log: ctx.log.clone(),
            };
            let (_stop_on_drop, cancelled) = ctx.stop_guard();
            let report = tokio::task::spawn_blocking(move || job.run(&cancelled))
                .await
                .map_err(|e| OperatorError::fatal(format!("the producer stopped: {e}")))??;
            ctx.log.info(&format!(
                "produced {} events ({} bytes) to {} in {:.2} s; {} dead-lettered, {} already delivered by an earlier try",
                report.produced,
                report.bytes,
                report.topic,
                report.seconds,
                report.dead_lettered,
                report.skipped_already_delivered
            ));
            let value =
                serde_json::to_value(&report).map_err(|e| OperatorError::fatal(e.to_string()))?;
            Ok(TaskResult::Success(value))
        })
    }
}

/// The task's output.
#[derive(Debug, Default, Serialize)]
pub struct ProduceReport {
    pub topic: String,
    /// Events produced per day (`YYYY-MM-DD`), this try and earlier ones of the run.
    pub rows_per_day: BTreeMap<String, u64>,
    /// Events of the month in the topic from this run (the sum of `rows_per_day`).
    pub events: u64,
    /// Events this try sent.
    pub produced: u64,
    pub bytes: u64,
    /// First and last offset written per partition by this try.
    pub partitions: BTreeMap<i32, PartitionOffsets>,
    pub dead_lettered: u64,
    pub dead_letter: String,
    /// Events an earlier, interrupted try of the run had delivered (found in the topic, not resent).
    pub skipped_already_delivered: u64,
    pub seconds: f64,
    pub messages_per_second: f64,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct PartitionOffsets {
    pub first_offset: i64,
    pub last_offset: i64,
}

enum DeadLetter {
    Topic(String),
    File(PathBuf),
}

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    topic: String,
    /// End offsets of the topic before the run's first message.
    start_offsets: BTreeMap<i32, i64>,
}

struct Job {
    settings: KafkaSettings,
    /// [`PRODUCER_DEFAULTS`] and the profile's compression.
    defaults: Vec<(&'static str, &'static str)>,
    topic: String,
    rows_per_day: u64,
    properties: IndexMap<String, String>,
    schema: MessageSchema,
    days: Vec<(String, Vec<PathBuf>)>,
    dead_letter: DeadLetter,
    rate: Option<f64>,
    checkpoint: PathBuf,
    log: super::TaskLog,
}

/// Delivery reports, counted as they arrive.
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: DeliveryFailures,
    bytes: AtomicU64,
    offsets: Mutex<BTreeMap<i32, PartitionOffsets>>,
    main_topic: String,
    /// Messages handed to librdkafka, and how many may wait for their report.
    sent: AtomicU64,
    window: u64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                self.ok.fetch_add(1, Ordering::Relaxed);

                if m.topic() != self.main_topic {
                    return;
                }
                self.bytes.fetch_add(
                    (m.payload_len() + m.key().map_or(0, <[u8]>::len)) as u64,
                    Ordering::Relaxed,
                );
                let mut offs = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
                let e = offs.entry(m.partition()).or_insert(PartitionOffsets {
                    first_offset: m.offset(),
                    last_offset: m.offset(),
                });
                e.first_offset = e.first_offset.min(m.offset());
                e.last_offset = e.last_offset.max(m.offset());
            }
            Err((e, _)) => {
                self.failed.record(e);
            }
        }
    }
}

impl Job {
    fn run(
        self,
        cancelled: &std::sync::atomic::AtomicBool,
    ) -> Result<ProduceReport, OperatorError> {
        let started = Instant::now();
        let delivered = self.already_delivered()?;
        let config = self
            .settings
            .client_config_over(&self.defaults, &self.properties);
        let ctx = Deliveries {
            main_topic: self.topic.clone(),
            window: max_outstanding(),
            ..Default::default()
        };
        let producer: BaseProducer<Deliveries> = config.create_with_context(ctx)?;
        let MessageSchema::Json { columns, validator } = &self.schema else {
            return Err(OperatorError::fatal(
                "kafka_produce sends JSON: `schema` must be a JSON Schema, not Avro",
            ));
        };
        let mut report = ProduceReport {
            topic: self.topic.clone(),
            ..Default::default()
        };
        let mut dead_file = match &self.dead_letter {
            DeadLetter::File(p) => {
                if let Some(d) = p.parent() {
                    std::fs::create_dir_all(d).map_err(|e| {
                        OperatorError::fatal(format!("cannot create {}: {e}", d.display()))
                    })?;
                }
                Some(std::io::BufWriter::new(std::fs::File::create(p).map_err(
                    |e| OperatorError::fatal(format!("cannot create {}: {e}", p.display())),
                )?))
            }
            DeadLetter::Topic(_) => None,
        };
        report.dead_letter = match &self.dead_letter {
            DeadLetter::File(p) => p.display().to_string(),
            DeadLetter::Topic(t) => t.clone(),
        };
        let total: u64 = self.days.len() as u64 * self.rows_per_day;
        let bar = super::progress_bar(
            Some(total),
            "  {pos}/{len} events {per_sec} [{bar:30}] {eta}",
        );
        let mut value = Vec::with_capacity(1024);
        let mut key = String::new();
        let paced_from = Instant::now();
        let mut paced = 0u64;
        for (day, files) in &self.days {
            if cancelled.load(Ordering::Relaxed) {
                return Err(OperatorError::retryable("cancelled"));
            }
            let df = read_day(files, self.rows_per_day)?;
            let mut rows = JsonRows::new(&df, columns)
                .map_err(|e| OperatorError::fatal(format!("{}: {e}", files[0].display())))?;
            let session = df
                .column("user_session")
                .ok()
                .and_then(|c| c.str().ok().cloned());
            let user = df
                .column("user_id")
                .ok()
                .and_then(|c| c.i64().ok().cloned());
            let ids = df
                .column("event_id")
                .ok()
                .and_then(|c| c.str().ok().cloned());
            let mut sent = 0u64;
            for i in 0..df.height() {
                let obj = rows.row(i);
                key.clear();
                match session.as_ref().and_then(|s| s.get(i)) {
                    Some(s) => key.push_str(s),
                    None => {
                        if let Some(u) = user.as_ref().and_then(|u| u.get(i)) {
                            key.push_str(itoa::Buffer::new().format(u));
                        }
                    }
                }
                value.clear();
                serde_json::to_writer(&mut value, obj)
                    .map_err(|e| OperatorError::fatal(e.to_string()))?;
                if !validator.is_valid(obj) {
                    let reasons: Vec<String> = validator
                        .iter_errors(obj)
                        .map(super::kafka_to_warehouse::describe)
                        .collect();
                    let reason = reasons.join("; ");
                    report.dead_lettered += 1;
                    match (&self.dead_letter, dead_file.as_mut()) {
                        (_, Some(f)) => {
                            let line = serde_json::json!({
                                "topic": self.topic, "key": key, "reason": reason,
                                "event": obj,
                            });
                            std::io::Write::write_all(f, format!("{line}\n").as_bytes())
                                .map_err(|e| OperatorError::fatal(e.to_string()))?;
                        }
                        (DeadLetter::Topic(t), None) => {
                            let headers = OwnedHeaders::new()
                                .insert(Header {
                                    key: "windsock.error",
                                    value: Some(reason.as_bytes()),
                                })
                                .insert(Header {
                                    key: "windsock.source_topic",
                                    value: Some(self.topic.as_bytes()),
                                });
                            let rec = BaseRecord::to(t)
                                .key(key.as_bytes())
                                .payload(&value)
                                .headers(headers);
                            send(&producer, rec)?;
                        }
                        (DeadLetter::File(_), None) => {}
                    }
                    bar.inc(1);
                    continue;
                }
                if !delivered.is_empty()
                    && ids
                        .as_ref()
                        .and_then(|c| c.get(i))
                        .is_some_and(|id| delivered.contains(id))
                {
                    report.skipped_already_delivered += 1;
                    sent += 1;
                    bar.inc(1);
                    continue;
                }
                if let Some(rate) = self.rate {
                    paced += 1;
                    let due = paced_from + Duration::from_secs_f64(paced as f64 / rate);
                    let now = Instant::now();
                    if due > now {
                        producer.poll(Duration::ZERO);
                        std::thread::sleep(due - now);
                    }
                }
                let rec = BaseRecord::to(&self.topic)
                    .key(key.as_bytes())
                    .payload(&value);
                send(&producer, rec)?;
                sent += 1;
                if sent % 1024 == 0 {
                    producer.poll(Duration::ZERO);
                    bar.inc(1024);
                    if cancelled.load(Ordering::Relaxed) {
                        return Err(OperatorError::retryable("cancelled"));
                    }
                }
            }
            bar.set_position(bar.position().max(sent));
            report.rows_per_day.insert(day.clone(), sent);
        }
        if let Some(f) = dead_file.as_mut() {
            std::io::Write::flush(f).map_err(|e| OperatorError::fatal(e.to_string()))?;
        }
        flush(&producer, Duration::from_secs(300))?;
        bar.finish_and_clear();
        let ctx = producer.context();
        ctx.failed.check("message(s) were").map_err(|e| {
            OperatorError::retryable(format!("{}; a retry resends only those", e.message))
        })?;
        report.events = report.rows_per_day.values().sum::<u64>();
        report.produced = report.events - report.skipped_already_delivered;
        report.bytes = ctx.bytes.load(Ordering::Relaxed);
        report.partitions = ctx
            .offsets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        report.seconds = started.elapsed().as_secs_f64();
        report.messages_per_second = report.produced as f64 / report.seconds.max(1e-9);
        Ok(report)
    }

    /// On the run's first try, saves where the topic ends; on a later one, the `event_id`s an
    /// earlier try delivered after that point.
    fn already_delivered(&self) -> Result<HashSet<String>, OperatorError> {
        let consumer: BaseConsumer = self
            .settings
            .client_config(std::iter::empty())
            .set("group.id", "windsock-produce-checkpoint")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()?;
        let timeout = Duration::from_secs(30);
        let previous: Option<Checkpoint> = std::fs::read(&self.checkpoint)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|c: &Checkpoint| c.topic == self.topic);
        let Some(cp) = previous else {
            let marks = kafka::watermarks(&consumer, &self.topic, timeout)?;
            let cp = Checkpoint {
                topic: self.topic.clone(),
                start_offsets: marks.iter().map(|(p, _, hi)| (*p, *hi)).collect(),
            };
            write_atomic(
                &self.checkpoint,
                &serde_json::to_vec(&cp).unwrap_or_default(),
            )?;
            return Ok(HashSet::new());
        };
        let marks = kafka::watermarks(&consumer, &self.topic, timeout)?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        let mut remaining = 0i64;
        let mut ends = BTreeMap::new();
        for (p, lo, hi) in &marks {
            let from = cp.start_offsets.get(p).copied().unwrap_or(*lo).max(*lo);
            if from < *hi {
                tpl.add_partition_offset(&self.topic, *p, rdkafka::Offset::Offset(from))?;
                remaining += hi - from;
                ends.insert(*p, *hi);
            }
        }
        let mut ids = HashSet::new();
        if remaining == 0 {
            return Ok(ids);
        }
        self.log.info(&format!(
            "an earlier try of this run produced up to {remaining} message(s); reading them to skip what arrived"
        ));
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + Duration::from_secs(600);
        #[derive(Deserialize)]
        struct IdOnly {
            event_id: String,
        }
        while !ends.is_empty() {
            if Instant::now() > deadline {
                return Err(OperatorError::retryable(
                    "timed out reading what an earlier try delivered",
                ));
            }
            let Some(m) = consumer.poll(Duration::from_millis(500)) else {
                continue;
            };
            let m = m?;
            if let Some(id) = m
                .payload()
                .and_then(|p| serde_json::from_slice::<IdOnly>(p).ok())
            {
                ids.insert(id.event_id);
            }
            if ends
                .get(&m.partition())
                .is_some_and(|end| m.offset() + 1 >= *end)
            {
                ends.remove(&m.partition());
            }
        }
        Ok(ids)
    }
}

/// Messages handed to librdkafka and not yet acknowledged, at most. With a deeper queue its
/// broker thread busy-polls while every in-flight slot is taken (idempotence allows five requests
/// per connection), burning a core for nothing; this keeps the queue about as deep as what can be
/// in flight. `WINDSOCK_PRODUCE_WINDOW` overrides it (for benchmarks).
fn max_outstanding() -> u64 {
    std::env::var("WINDSOCK_PRODUCE_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn send(
    producer: &BaseProducer<Deliveries>,
    rec: BaseRecord<'_, [u8], Vec<u8>>,
) -> Result<(), OperatorError> {
    let ctx = producer.context();
    let sent = ctx.sent.fetch_add(1, Ordering::Relaxed) + 1;
    let window = ctx.window;
    while sent.saturating_sub(ctx.ok.load(Ordering::Relaxed) + ctx.failed.count()) > window {
        serve_then_nap(producer);
    }
    enqueue(producer, rec)
}

/// Hands a record to librdkafka; while its local queue is full, serves delivery reports until
/// there is room.
pub fn enqueue<C, K, P>(
    producer: &BaseProducer<C>,
    mut rec: BaseRecord<'_, K, P, C::DeliveryOpaque>,
) -> Result<(), OperatorError>
where
    C: ProducerContext,
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((e, back))
                if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
            {
                serve_then_nap(producer);
                rec = back;
            }
            Err((e, _)) => return Err(kafka::KafkaError::from(e).into()),
        }
    }
}

/// Negative delivery reports: how many, and the first one's reason.
#[derive(Default)]
pub struct DeliveryFailures {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl DeliveryFailures {
    pub fn record(&self, e: &impl std::fmt::Display) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| e.to_string());
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// An error naming how many `what` failed and why, if any did.
    pub fn check(&self, what: &str) -> Result<(), OperatorError> {
        let n = self.count();
        if n == 0 {
            return Ok(());
        }
        let first = self
            .first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        Err(OperatorError::retryable(format!(
            "{n} {what} not delivered (first error: {first})"
        )))
    }
}

/// Serves the delivery reports that are there, then sleeps a moment. rdkafka's
/// `poll(timeout)` spins through the last millisecond of its timeout (its deadline rounds down to
/// a zero-millisecond wait), which showed as a third of the producer's CPU when it waited.
fn serve_then_nap<C: ProducerContext>(producer: &BaseProducer<C>) {
    producer.poll(Duration::ZERO);
    std::thread::sleep(Duration::from_millis(2));
    producer.poll(Duration::ZERO);
}

/// Waits until every message has its delivery report served (or `timeout` passes), napping
/// between checks for the reason given at [`serve_then_nap`].
pub fn flush<C: ProducerContext>(
    producer: &BaseProducer<C>,
    timeout: Duration,
) -> Result<(), OperatorError> {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if Instant::now() > deadline {
            return Err(OperatorError::retryable(format!(
                "{} message(s) not acknowledged within {} s",
                producer.in_flight_count(),
                timeout.as_secs()
            )));
        }
        serve_then_nap(producer);
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OperatorError> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)
            .map_err(|e| OperatorError::fatal(format!("cannot create {}: {e}", d.display())))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| OperatorError::fatal(format!("cannot write {}: {e}", path.display())))
}

/// The prepared month's files by day, in day order.
fn day_files(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>, OperatorError> {
    let pattern = format!("{}/event_date=*/*.parquet", dir.display());
    let mut by_day: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for p in glob::glob(&pattern)
        .map_err(|e| OperatorError::fatal(format!("bad input `{pattern}`: {e}")))?
        .filter_map(Result::ok)
    {
        let day = p
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("event_date="))
            .unwrap_or_default()
            .to_string();
        by_day.entry(day).or_default().push(p);
    }
    if by_day.is_empty() {
        return Err(OperatorError::fatal(format!(
            "no prepared data in {} (expected event_date=YYYY-MM-DD/*.parquet, as prepare_events writes)",
            dir.display()
        )));
    }
    for files in by_day.values_mut() {
        files.sort();
    }
    Ok(by_day.into_iter().collect())
}

/// One day's events in event-time order (ties keep file order), the first `limit` of them.
fn read_day(files: &[PathBuf], limit: u64) -> Result<DataFrame, OperatorError> {
    let mut all: Option<DataFrame> = None;
    for p in files {
        let bad = |e: &dyn std::fmt::Display| OperatorError::fatal(format!("{}: {e}", p.display()));
        let file = std::fs::File::open(p).map_err(|e| bad(&e))?;
        let df = ParquetReader::new(file).finish().map_err(|e| bad(&e))?;
        all = Some(match all {
            None => df,
            Some(mut a) => {
                a.vstack_mut(&df).map_err(|e| bad(&e))?;
                a
            }
        });
    }
    let Some(df) = all else {
        return Ok(DataFrame::empty());
    };
    df.sort(
        ["event_time"],
        SortMultipleOptions::default().with_maintain_order(true),
    )
    .map(|d| d.head(Some(limit as usize)))
    .map_err(|e| OperatorError::fatal(format!("{}: {e}", files[0].display())))
}
