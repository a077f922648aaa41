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
use rdkafka::ClientContext;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    BoxFuture, CheckContext, ConfigProblem, Error, OperatorConfig, TaskContext, TaskResult, Unit,
};
use crate::connections::kafka::{self, KafkaSettings, consumer, producer};
use crate::dataset::prepared;
use crate::stream::json::JsonRows;
use crate::stream::schema::{self, MessageSchema};

/// Config of `kafka_produce` (these keys are a contract).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KafkaProduceConfig {
    /// The prepared month: a folder of `event_date=YYYY-MM-DD/*.parquet` (prepare_events' output).
    pub(crate) input: String,
    /// The topic to produce to; created with `partitions` partitions if missing.
    pub(crate) topic: String,
    /// Events sent per day: the first N of the day by event time.
    pub(crate) rows_per_day: u64,
    /// The JSON Schema every event must match (its properties are the message's fields).
    #[serde(default = "default_schema")]
    pub(crate) schema: String,
    /// Where events that fail the schema go: a topic (default `<topic>.dead-letter`) …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dead_letter_topic: Option<String>,
    /// … or a JSON-lines file instead (one object per event with its reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dead_letter_file: Option<String>,
    /// Partitions of the topic when windsock creates it.
    #[serde(default = "default_partitions")]
    pub(crate) partitions: i32,
    /// Events per second at most (a replay at a live pace); default: as fast as the broker takes
    /// them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rate: Option<f64>,
    /// librdkafka producer properties, over windsock's defaults (`linger.ms`, `compression.type`…).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub(crate) properties: IndexMap<String, String>,
    /// A named Kafka connection (default: the profile's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) connection: Option<String>,
}

fn default_schema() -> String {
    "schemas/raw_event.schema.json".into()
}

fn default_partitions() -> i32 {
    3
}

impl OperatorConfig for KafkaProduceConfig {
    const NAME: &'static str = "kafka_produce";
    const SUMMARY: &'static str =
        "streams a prepared month to a Kafka topic as schema-checked JSON, N events a day";

    fn check(&self, cx: &CheckContext<'_>) -> Vec<ConfigProblem> {
        let mut out = kafka::config_problems(self.connection.as_deref(), &self.properties);
        out.extend(schema::check_file("schema", &self.schema, cx.project_dir));
        if self.rows_per_day == 0 {
            out.push(ConfigProblem::at(
                "rows_per_day",
                "`rows_per_day` must be at least 1",
            ));
        }
        if self.partitions < 1 {
            out.push(ConfigProblem::at(
                "partitions",
                "`partitions` must be at least 1",
            ));
        }
        if self.rate.is_some_and(|r| !r.is_finite() || r <= 0.0) {
            out.push(ConfigProblem::at(
                "rate",
                "`rate` must be a number of events per second above zero",
            ));
        }
        if self.dead_letter_topic.is_some() && self.dead_letter_file.is_some() {
            out.push(ConfigProblem::at(
                "dead_letter_file",
                "set `dead_letter_topic` or `dead_letter_file`, not both",
            ));
        }
        out
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, Error>> {
        Box::pin(async move {
            let schema =
                MessageSchema::load(&ctx.resolve(Path::new(&self.schema))).map_err(Error::fatal)?;
            let days = prepared::day_files(&ctx.resolve(Path::new(&self.input)))?;
            let settings = kafka::settings(ctx.profile, &ctx.home)?;
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
            let mut defaults = producer::DEFAULTS.to_vec();
            defaults.push((
                "compression.type",
                producer::default_compression(ctx.profile),
            ));
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
                progress: ctx.progress.clone(),
            };
            let (_stop_on_drop, cancelled) = ctx.stop_guard();
            let report = tokio::task::spawn_blocking(move || job.run(&cancelled))
                .await
                .map_err(|e| Error::fatal(format!("the producer stopped: {e}")))??;
            ctx.log.info(&format!(
                "produced {} events ({} bytes) to {} in {:.2} s; {} dead-lettered, {} already delivered by an earlier try",
                report.produced,
                report.bytes,
                report.topic,
                report.seconds,
                report.dead_lettered,
                report.skipped_already_delivered
            ));
            TaskResult::output(&report)
        })
    }
}

/// The task's output.
#[derive(Debug, Default, Serialize)]
pub(crate) struct ProduceReport {
    pub(crate) topic: String,
    /// Events produced per day (`YYYY-MM-DD`), this try and earlier ones of the run.
    pub(crate) rows_per_day: BTreeMap<String, u64>,
    /// Events of the month in the topic from this run (the sum of `rows_per_day`).
    pub(crate) events: u64,
    /// Events this try sent.
    pub(crate) produced: u64,
    pub(crate) bytes: u64,
    /// First and last offset written per partition by this try.
    pub(crate) partitions: BTreeMap<i32, PartitionOffsets>,
    pub(crate) dead_lettered: u64,
    pub(crate) dead_letter: String,
    /// Events an earlier, interrupted try of the run had delivered (found in the topic, not resent).
    pub(crate) skipped_already_delivered: u64,
    pub(crate) seconds: f64,
    pub(crate) messages_per_second: f64,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub(crate) struct PartitionOffsets {
    pub(crate) first_offset: i64,
    pub(crate) last_offset: i64,
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
    /// [`producer::DEFAULTS`] and the profile's compression.
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
    progress: super::Progress,
}

/// Delivery reports, counted as they arrive.
struct Deliveries {
    failed: producer::DeliveryFailures,
    bytes: AtomicU64,
    offsets: Mutex<BTreeMap<i32, PartitionOffsets>>,
    main_topic: String,
    window: producer::Window,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        self.window.reported();
        match result {
            Ok(m) => {
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
    fn run(self, cancelled: &std::sync::atomic::AtomicBool) -> Result<ProduceReport, Error> {
        let started = Instant::now();
        let delivered = self.already_delivered()?;
        let config = self
            .settings
            .client_config_over(&self.defaults, &self.properties);
        let ctx = Deliveries {
            main_topic: self.topic.clone(),
            failed: Default::default(),
            bytes: Default::default(),
            offsets: Default::default(),
            window: producer::Window::new(WINDOW),
        };
        let producer: BaseProducer<Deliveries> = config.create_with_context(ctx)?;
        let MessageSchema::Json { columns, validator } = &self.schema else {
            return Err(Error::fatal(
                "kafka_produce sends JSON: `schema` must be a JSON Schema, not Avro",
            ));
        };
        let send =
            |rec: BaseRecord<'_, [u8], Vec<u8>>| producer.context().window.send(&producer, rec);
        let mut report = ProduceReport {
            topic: self.topic.clone(),
            ..Default::default()
        };
        let mut dead_file = match &self.dead_letter {
            DeadLetter::File(p) => {
                if let Some(d) = p.parent() {
                    std::fs::create_dir_all(d)
                        .map_err(|e| Error::fatal(format!("cannot create {}: {e}", d.display())))?;
                }
                Some(std::io::BufWriter::new(std::fs::File::create(p).map_err(
                    |e| Error::fatal(format!("cannot create {}: {e}", p.display())),
                )?))
            }
            DeadLetter::Topic(_) => None,
        };
        report.dead_letter = match &self.dead_letter {
            DeadLetter::File(p) => p.display().to_string(),
            DeadLetter::Topic(t) => t.clone(),
        };
        let total: u64 = self.days.len() as u64 * self.rows_per_day;
        let mut done = 0u64;
        let mut value = Vec::with_capacity(1024);
        let mut key = String::new();
        let paced_from = Instant::now();
        let mut paced = 0u64;
        for (day, files) in &self.days {
            if cancelled.load(Ordering::Relaxed) {
                return Err(Error::transient("cancelled"));
            }
            let df = prepared::read_day(files, self.rows_per_day)?;
            let mut rows = JsonRows::new(&df, columns)
                .map_err(|e| Error::fatal(format!("day {day} of {}: {e}", self.topic)))?;
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
                serde_json::to_writer(&mut value, obj).map_err(|e| Error::fatal(e.to_string()))?;
                if let Some(reason) = schema::violations(validator, obj) {
                    report.dead_lettered += 1;
                    match (&self.dead_letter, dead_file.as_mut()) {
                        (_, Some(f)) => {
                            let line = serde_json::json!({
                                "topic": self.topic, "key": key, "reason": reason,
                                "event": obj,
                            });
                            std::io::Write::write_all(f, format!("{line}\n").as_bytes())
                                .map_err(|e| Error::fatal(e.to_string()))?;
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
                            send(rec)?;
                        }
                        (DeadLetter::File(_), None) => {}
                    }
                    done += 1;
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
                    done += 1;
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
                send(rec)?;
                sent += 1;
                done += 1;
                if sent % 1024 == 0 {
                    producer.poll(Duration::ZERO);
                    self.progress.report(done, Some(total), Unit::Events);
                    if cancelled.load(Ordering::Relaxed) {
                        return Err(Error::transient("cancelled"));
                    }
                }
            }
            report.rows_per_day.insert(day.clone(), sent);
        }
        if let Some(f) = dead_file.as_mut() {
            std::io::Write::flush(f).map_err(|e| Error::fatal(e.to_string()))?;
        }
        producer::flush(&producer, Duration::from_secs(300))?;
        self.progress.report(done, Some(total), Unit::Events);
        let ctx = producer.context();
        ctx.failed
            .check("message(s) were")
            .map_err(|e| e.context("a retry resends only those"))?;
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
    fn already_delivered(&self) -> Result<HashSet<String>, Error> {
        let previous: Option<Checkpoint> = std::fs::read(&self.checkpoint)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|c: &Checkpoint| c.topic == self.topic);
        let Some(cp) = previous else {
            let cp = Checkpoint {
                topic: self.topic.clone(),
                start_offsets: consumer::end_offsets(&self.settings, &self.topic)?,
            };
            let bytes = serde_json::to_vec(&cp).map_err(|e| Error::fatal(e.to_string()))?;
            crate::sys::write_atomic(&self.checkpoint, &bytes).map_err(|e| {
                Error::fatal(format!("cannot write {}: {e}", self.checkpoint.display()))
            })?;
            return Ok(HashSet::new());
        };
        let log = |n: i64| {
            self.log.info(&format!(
                "an earlier try of this run produced up to {n} message(s); reading them to skip what arrived"
            ))
        };
        consumer::field_values_since(
            &self.settings,
            &self.topic,
            &cp.start_offsets,
            "event_id",
            log,
        )
    }
}

/// Messages handed to librdkafka and not yet acknowledged, at most (see [`producer::Window`]).
const WINDOW: u64 = 20_000;
