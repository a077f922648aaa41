//! `stream_aggregate`: the seed's Flink SQL job. Consumes the raw event topic and computes
//! event-time tumbling windows (default 1 minute and 1 hour) per `event_type` and per
//! `category_l1` — views, carts, purchases, revenue, distinct users and sessions, view→cart and
//! cart→purchase conversion — and the top products by views and by purchases per window
//! ([`crate::stream::window`]). Results go to the output topics as Avro
//! (`schemas/window_aggregate.avsc`, `schemas/trending_product.avsc`), in the Confluent wire
//! format with the registered schema id when a Schema Registry is configured; `kafka_to_warehouse`
//! lands them in the PROCESSED layer.
//!
//! Bounded (a DAG task): from the group's committed offsets to the end offsets seen at start,
//! then every window is emitted and the offsets committed. `follow: true` (`windsock stream
//! --follow`): windows are emitted as the watermark passes them, offsets are committed up to the
//! oldest event of a window not yet emitted, and the latency from an event's produce time to the
//! acknowledged output of the windows it closed is measured (p50/p99 in the output and the log).
//!
//! One file, as every operator is: its config, validation and run; the window arithmetic is in
//! [`crate::stream::window`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use apache_avro::types::Value as Avro;
use indexmap::IndexMap;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    BoxFuture, CheckContext, ConfigProblem, Error, OperatorConfig, TaskContext, TaskResult,
};
use crate::connections::kafka::{self, KafkaSettings, consumer, producer, registry};
use crate::spec::is_template;
use crate::stream::schema::{self, MessageSchema};
use crate::stream::window::{
    AggregateRow, Aggregator, Event, TrendingRow, WindowSpec, WindowStats, parse_window,
};

/// Config of `stream_aggregate` (these keys are a contract).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamAggregateConfig {
    /// The raw event topic (JSON, as `kafka_produce` writes it).
    pub(crate) topic: String,
    /// Where window aggregates go (Avro, `aggregate_schema`).
    pub(crate) output_topic: String,
    /// Where the top products per window go (Avro, `trending_schema`); default
    /// `<output_topic>.trending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) trending_topic: Option<String>,
    /// Window lengths; each must divide a day.
    #[serde(default = "default_windows")]
    pub(crate) windows: Vec<String>,
    /// How far behind the newest event time the watermark trails: events up to this much out of
    /// order are on time.
    #[serde(default = "default_lateness")]
    pub(crate) allowed_lateness: String,
    /// How long an emitted window is kept to fold in late events (and be emitted again).
    #[serde(default = "default_retention")]
    pub(crate) late_retention: String,
    /// Products per ranking and window.
    #[serde(default = "default_top_n")]
    pub(crate) top_n: usize,
    #[serde(default = "default_aggregate_schema")]
    pub(crate) aggregate_schema: String,
    #[serde(default = "default_trending_schema")]
    pub(crate) trending_schema: String,
    /// The consumer group (default `windsock.<dag>.<task>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) group: Option<String>,
    /// Keep consuming until stopped.
    #[serde(default)]
    pub(crate) follow: bool,
    /// Partitions of the output topics when windsock creates them.
    #[serde(default = "default_partitions")]
    pub(crate) partitions: i32,
    /// librdkafka properties for the consumer and the producer.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub(crate) properties: IndexMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) connection: Option<String>,
}

fn default_windows() -> Vec<String> {
    vec!["1m".into(), "1h".into()]
}
fn default_lateness() -> String {
    "5s".into()
}
fn default_retention() -> String {
    "1d".into()
}
fn default_top_n() -> usize {
    10
}
fn default_aggregate_schema() -> String {
    "schemas/window_aggregate.avsc".into()
}
fn default_trending_schema() -> String {
    "schemas/trending_product.avsc".into()
}
fn default_partitions() -> i32 {
    1
}

impl StreamAggregateConfig {
    fn duration_ms(key: &str, s: &str) -> Result<i64, String> {
        s.parse::<crate::spec::Duration>()
            .map(|d| d.std().as_millis() as i64)
            .map_err(|e| format!("`{key}`: {e}"))
    }
}

impl OperatorConfig for StreamAggregateConfig {
    const NAME: &'static str = "stream_aggregate";
    const SUMMARY: &'static str =
        "event-time tumbling windows over the raw event topic, to Avro topics";

    fn check(&self, cx: &CheckContext<'_>) -> Vec<ConfigProblem> {
        let mut out = kafka::config_problems(self.connection.as_deref(), &self.properties);
        out.extend(schema::check_file(
            "aggregate_schema",
            &self.aggregate_schema,
            cx.project_dir,
        ));
        out.extend(schema::check_file(
            "trending_schema",
            &self.trending_schema,
            cx.project_dir,
        ));
        if self.windows.is_empty() {
            out.push(ConfigProblem::at(
                "windows",
                "`windows` needs at least one window length",
            ));
        }
        for w in self.windows.iter().filter(|w| !is_template(w)) {
            if let Err(e) = parse_window(w) {
                out.push(ConfigProblem::at("windows", e));
            }
        }
        for (k, v) in [
            ("allowed_lateness", &self.allowed_lateness),
            ("late_retention", &self.late_retention),
        ] {
            if !is_template(v)
                && let Err(e) = Self::duration_ms(k, v)
            {
                out.push(ConfigProblem::at(k, e));
            }
        }
        if self.top_n == 0 {
            out.push(ConfigProblem::at("top_n", "`top_n` must be at least 1"));
        }
        if self.partitions < 1 {
            out.push(ConfigProblem::at(
                "partitions",
                "`partitions` must be at least 1",
            ));
        }
        out
    }

    const STREAMS: bool = true;

    fn follow(&self) -> Option<Self> {
        Some(Self {
            follow: true,
            ..self.clone()
        })
    }

    fn run<'a>(&'a self, ctx: &'a TaskContext) -> BoxFuture<'a, Result<TaskResult, Error>> {
        Box::pin(async move {
            let mut specs = Vec::new();
            for w in &self.windows {
                specs.push(WindowSpec {
                    label: w.clone(),
                    size_ms: parse_window(w).map_err(Error::fatal)?,
                });
            }
            let lateness = Self::duration_ms("allowed_lateness", &self.allowed_lateness)
                .map_err(Error::fatal)?;
            let retention =
                Self::duration_ms("late_retention", &self.late_retention).map_err(Error::fatal)?;
            let load =
                |p: &str| MessageSchema::load(&ctx.resolve(Path::new(p))).map_err(Error::fatal);
            let (agg_schema, trend_schema) =
                (load(&self.aggregate_schema)?, load(&self.trending_schema)?);
            let settings = kafka::settings(ctx.profile, &ctx.home)?;
            let trending_topic = self
                .trending_topic
                .clone()
                .unwrap_or_else(|| format!("{}.trending", self.output_topic));
            kafka::ensure_topic(&settings, &self.output_topic, self.partitions).await?;
            kafka::ensure_topic(&settings, &trending_topic, self.partitions).await?;
            let mut outputs = Vec::new();
            for (topic, schema) in [
                (self.output_topic.clone(), agg_schema),
                (trending_topic, trend_schema),
            ] {
                let MessageSchema::Avro { schema, text, .. } = schema else {
                    return Err(Error::fatal(
                        "the aggregate and trending schemas must be Avro (.avsc)",
                    ));
                };
                let id = match &settings.registry {
                    Some(r) => Some(registry::register(r, &format!("{topic}-value"), &text).await?),
                    None => None,
                };
                outputs.push(Output {
                    topic,
                    schema: *schema,
                    registry_id: id,
                });
            }
            let trending = outputs.pop().ok_or_else(|| Error::fatal("no outputs"))?;
            let aggregates = outputs.pop().ok_or_else(|| Error::fatal("no outputs"))?;
            let job = Job {
                cfg: self.clone(),
                group: self
                    .group
                    .clone()
                    .unwrap_or_else(|| format!("windsock.{}.{}", ctx.dag, ctx.task)),
                settings,
                aggregator: Aggregator::new(specs, lateness, retention, self.top_n),
                aggregates,
                trending,
                log: ctx.log.clone(),
            };
            let (_stop_on_drop, cancelled) = ctx.stop_guard();
            let report = tokio::task::spawn_blocking(move || job.run(&cancelled))
                .await
                .map_err(|e| Error::fatal(format!("the aggregation stopped: {e}")))??;
            TaskResult::output(&report)
        })
    }
}

struct Output {
    topic: String,
    schema: apache_avro::Schema,
    registry_id: Option<u32>,
}

/// The task's output.
#[derive(Debug, Default, Serialize)]
pub(crate) struct AggregateReport {
    pub(crate) topic: String,
    pub(crate) group: String,
    pub(crate) consumed: u64,
    /// Messages that are not raw events (not JSON, fields missing); the landing dead-letters them.
    pub(crate) skipped_invalid: u64,
    pub(crate) windows: WindowStats,
    pub(crate) aggregates_emitted: u64,
    pub(crate) trending_emitted: u64,
    pub(crate) output_topic: String,
    pub(crate) trending_topic: String,
    /// From an event's produce time to the acknowledged output of the windows it closed.
    pub(crate) latency_ms: LatencyReport,
    /// From an event's produce time to its arrival here (following only): the broker's and the
    /// fetch's part of the above.
    pub(crate) consume_latency_ms: LatencyReport,
    /// From the arrival of the event that closed the windows to their acknowledged output:
    /// windsock's part (aggregation, encoding, producing, the broker's ack).
    pub(crate) processing_latency_ms: LatencyReport,
    pub(crate) seconds: f64,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct LatencyReport {
    pub(crate) samples: usize,
    pub(crate) p50: u64,
    pub(crate) p99: u64,
    pub(crate) max: u64,
}

impl LatencyReport {
    fn of(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        LatencyReport {
            samples: samples.len(),
            p50: crate::stream::percentile(&samples, 0.50),
            p99: crate::stream::percentile(&samples, 0.99),
            max: samples.last().copied().unwrap_or(0),
        }
    }
}

struct Job {
    cfg: StreamAggregateConfig,
    group: String,
    settings: KafkaSettings,
    aggregator: Aggregator,
    aggregates: Output,
    trending: Output,
    log: super::TaskLog,
}

/// When the event that closed a window was produced and when it arrived here: the opaque of
/// the first record of an emission, timed when its delivery report comes.
#[derive(Default)]
struct Timing {
    produced_ms: Option<i64>,
    arrived: Option<Instant>,
}

/// Delivery reports of the outputs, and the latencies they end.
#[derive(Default)]
struct Acks {
    failed: producer::DeliveryFailures,
    latencies: Mutex<Vec<u64>>,
    /// From the arrival of the closing event to the acknowledged output: windsock's share.
    processing: Mutex<Vec<u64>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<Timing>;

    fn delivery(&self, result: &DeliveryResult<'_>, timing: Box<Timing>) {
        match result {
            Ok(_) => {
                if let Some(produced) = timing.produced_ms {
                    let now = chrono::Utc::now().timestamp_millis();
                    self.latencies
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(now.saturating_sub(produced).max(0) as u64);
                }
                if let Some(arrived) = timing.arrived {
                    self.processing
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(arrived.elapsed().as_millis() as u64);
                }
            }
            Err((e, _)) => {
                self.failed.record(e);
            }
        }
    }
}

#[derive(Deserialize)]
struct RawEvent {
    event_id: String,
    event_time: String,
    event_type: String,
    product_id: i64,
    #[serde(default)]
    category_l1: Option<String>,
    #[serde(default)]
    price: f64,
    user_id: i64,
    #[serde(default)]
    user_session: Option<String>,
}

impl Job {
    fn run(mut self, cancelled: &AtomicBool) -> Result<AggregateReport, Error> {
        let started = Instant::now();
        let mut pconf = self.settings.client_config(&self.cfg.properties);
        pconf
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", if self.cfg.follow { "1" } else { "20" });
        let producer: BaseProducer<Acks> = pconf.create_with_context(Acks::default())?;
        let topic = self.cfg.topic.clone();
        if self.cfg.follow {
            self.log.info(&format!(
                "following {topic} as group {} (waiting for the topic if it does not exist yet)",
                self.group
            ));
        }
        let consumer::Assigned {
            consumer,
            partitions: parts,
            from,
            mut ends,
        } = consumer::assign_from_committed(
            &self.settings,
            &[("fetch.wait.max.ms", "10")],
            &self.cfg.properties,
            &self.group,
            &topic,
            self.cfg.follow,
            cancelled,
        )?;
        let mut next = from;
        // Bounded: the partitions with data to read. Following: every partition, since each
        // gets events (keyed by session) and one left out would let the watermark run ahead.
        if self.cfg.follow {
            self.aggregator.expect_partitions(parts.iter().copied());
        } else {
            self.aggregator.expect_partitions(ends.keys().copied());
        }
        self.log.info(&format!(
            "aggregating {topic} from offsets {next:?} as group {} into {} and {}",
            self.group, self.aggregates.topic, self.trending.topic
        ));
        let mut report = AggregateReport {
            topic: topic.clone(),
            group: self.group.clone(),
            output_topic: self.aggregates.topic.clone(),
            trending_topic: self.trending.topic.clone(),
            ..Default::default()
        };
        let mut last_commit = Instant::now();
        let mut consume_lat: Vec<u64> = Vec::new();
        loop {
            if cancelled.load(Ordering::Relaxed) {
                break;
            }
            if !self.cfg.follow && ends.is_empty() {
                break;
            }
            let Some(m) =
                consumer::next_message(&consumer, Duration::from_millis(50), self.cfg.follow)?
            else {
                if self.cfg.follow && last_commit.elapsed() > Duration::from_secs(1) {
                    self.commit_safe(&consumer, &producer, &next)?;
                    last_commit = Instant::now();
                }
                continue;
            };
            let arrived = Instant::now();
            let (p, off) = (m.partition(), m.offset());
            if !self.cfg.follow && ends.get(&p).is_none_or(|end| off >= *end) {
                ends.remove(&p);
                continue;
            }
            report.consumed += 1;
            next.insert(p, off + 1);
            if self.cfg.follow
                && let Some(t) = m.timestamp().to_millis()
            {
                let now = chrono::Utc::now().timestamp_millis();
                consume_lat.push(now.saturating_sub(t).max(0) as u64);
            }
            if !self.cfg.follow && ends.get(&p).is_some_and(|end| off + 1 >= *end) {
                ends.remove(&p);
            }
            let Some(raw) = m
                .payload()
                .and_then(|v| serde_json::from_slice::<RawEvent>(v).ok())
            else {
                report.skipped_invalid += 1;
                continue;
            };
            let Ok(t) = chrono::DateTime::parse_from_rfc3339(&raw.event_time) else {
                report.skipped_invalid += 1;
                continue;
            };
            self.aggregator.add(&Event {
                time_ms: t.timestamp_millis(),
                event_type: &raw.event_type,
                category_l1: raw.category_l1.as_deref(),
                product_id: raw.product_id,
                price: raw.price,
                user_id: raw.user_id,
                session: raw.user_session.as_deref(),
                id: xxhash_rust::xxh3::xxh3_64(raw.event_id.as_bytes()),
                produced_ms: m.timestamp().to_millis(),
                position: Some((p, off)),
            });
            if self.cfg.follow {
                let out = self.aggregator.drain_ready();
                self.emit(
                    &producer,
                    &out.aggregates,
                    &out.trending,
                    out.trigger_produced_ms,
                    Some(arrived),
                    &mut report,
                )?;
                producer.poll(Duration::ZERO);
                if last_commit.elapsed() > Duration::from_secs(1) {
                    self.commit_safe(&consumer, &producer, &next)?;
                    last_commit = Instant::now();
                }
            }
        }
        if !self.cfg.follow {
            // The whole bounded input is in: every window is final.
            let out = self.aggregator.drain_all();
            self.emit(
                &producer,
                &out.aggregates,
                &out.trending,
                None,
                None,
                &mut report,
            )?;
        }
        self.commit_safe(&consumer, &producer, &next)?;
        report.windows = self.aggregator.stats.clone();
        let lat = std::mem::take(
            &mut *producer
                .context()
                .latencies
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        report.latency_ms = LatencyReport::of(lat);
        report.consume_latency_ms = LatencyReport::of(consume_lat);
        report.processing_latency_ms = LatencyReport::of(std::mem::take(
            &mut *producer
                .context()
                .processing
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        ));
        report.seconds = started.elapsed().as_secs_f64();
        self.log.info(&format!(
            "consumed {} event(s) ({} duplicate, {} late, {} invalid); emitted {} aggregate and {} trending record(s); latency p50 {} ms, p99 {} ms over {} window emission(s)",
            report.consumed,
            report.windows.duplicates,
            report.windows.late_events,
            report.skipped_invalid,
            report.aggregates_emitted,
            report.trending_emitted,
            report.latency_ms.p50,
            report.latency_ms.p99,
            report.latency_ms.samples
        ));
        Ok(report)
    }

    /// Waits for every output to be acknowledged, then commits what the emitted windows cover.
    fn commit_safe(
        &self,
        consumer: &BaseConsumer,
        producer: &BaseProducer<Acks>,
        next: &BTreeMap<i32, i64>,
    ) -> Result<(), Error> {
        producer::flush(producer, Duration::from_secs(60))?;
        producer.context().failed.check("output record(s) were")?;
        let pending = self.aggregator.pending_from();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (p, off) in next {
            let safe = pending.get(p).map_or(*off, |lowest| (*lowest).min(*off));
            tpl.add_partition_offset(&self.cfg.topic, *p, rdkafka::Offset::Offset(safe))?;
        }
        if tpl.count() > 0 {
            // Following, a commit is only a restart point that the next one supersedes: do not
            // hold the stream for the broker's round trip (it made the p99 latency a second).
            let mode = if self.cfg.follow {
                CommitMode::Async
            } else {
                CommitMode::Sync
            };
            consumer.commit(&tpl, mode)?;
        }
        Ok(())
    }

    fn emit(
        &self,
        producer: &BaseProducer<Acks>,
        aggregates: &[AggregateRow],
        trending: &[TrendingRow],
        trigger_produced_ms: Option<i64>,
        arrived: Option<Instant>,
        report: &mut AggregateReport,
    ) -> Result<(), Error> {
        if aggregates.is_empty() && trending.is_empty() {
            return Ok(());
        }
        let now = chrono::Utc::now().timestamp_millis();
        // One latency sample per emission: on its first record.
        let mut timing = Some(Timing {
            produced_ms: trigger_produced_ms,
            arrived,
        });
        for r in aggregates {
            let value = Avro::Record(vec![
                ("window_size".into(), Avro::String(r.window_size.clone())),
                ("window_start".into(), Avro::TimestampMillis(r.window_start)),
                ("window_end".into(), Avro::TimestampMillis(r.window_end)),
                ("dimension".into(), Avro::String(r.dimension.into())),
                (
                    "dimension_value".into(),
                    Avro::String(r.dimension_value.clone()),
                ),
                ("events".into(), Avro::Long(r.events)),
                ("views".into(), Avro::Long(r.views)),
                ("carts".into(), Avro::Long(r.carts)),
                ("purchases".into(), Avro::Long(r.purchases)),
                ("revenue".into(), Avro::Double(r.revenue)),
                ("distinct_users".into(), Avro::Long(r.distinct_users)),
                ("distinct_sessions".into(), Avro::Long(r.distinct_sessions)),
                ("view_to_cart".into(), nullable(r.view_to_cart)),
                ("cart_to_purchase".into(), nullable(r.cart_to_purchase)),
                ("late_events".into(), Avro::Long(r.late_events)),
                ("emitted_at".into(), Avro::TimestampMillis(now)),
            ]);
            let key = format!(
                "{}|{}|{}|{}",
                r.window_size, r.window_start, r.dimension, r.dimension_value
            );
            self.send(producer, &self.aggregates, &key, value, timing.take())?;
            report.aggregates_emitted += 1;
        }
        for r in trending {
            let value = Avro::Record(vec![
                ("window_size".into(), Avro::String(r.window_size.clone())),
                ("window_start".into(), Avro::TimestampMillis(r.window_start)),
                ("window_end".into(), Avro::TimestampMillis(r.window_end)),
                ("ranking".into(), Avro::String(r.ranking.into())),
                ("rank".into(), Avro::Long(r.rank)),
                ("product_id".into(), Avro::Long(r.product_id)),
                ("events".into(), Avro::Long(r.events)),
                ("emitted_at".into(), Avro::TimestampMillis(now)),
            ]);
            let key = format!(
                "{}|{}|{}|{}",
                r.window_size, r.window_start, r.ranking, r.rank
            );
            self.send(producer, &self.trending, &key, value, None)?;
            report.trending_emitted += 1;
        }
        Ok(())
    }

    fn send(
        &self,
        producer: &BaseProducer<Acks>,
        out: &Output,
        key: &str,
        value: Avro,
        timing: Option<Timing>,
    ) -> Result<(), Error> {
        let datum = apache_avro::to_avro_datum(&out.schema, value)
            .map_err(|e| Error::fatal(format!("{}: {e}", out.topic)))?;
        let payload = match out.registry_id {
            Some(id) => registry::frame(id, &datum),
            None => datum,
        };
        let rec = BaseRecord::with_opaque_to(&out.topic, Box::new(timing.unwrap_or_default()))
            .key(key.as_bytes())
            .payload(&payload);
        producer::enqueue(producer, rec)
    }
}

fn nullable(v: Option<f64>) -> Avro {
    match v {
        Some(x) => Avro::Union(1, Box::new(Avro::Double(x))),
        None => Avro::Union(0, Box::new(Avro::Null)),
    }
}
