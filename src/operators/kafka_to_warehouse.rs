//! `kafka_to_warehouse`: the sink connector. Consumes a topic with a consumer group from its
//! committed offsets and lands batches in a warehouse table: the message's typed columns (from
//! its JSON Schema or Avro schema) plus the Kafka metadata (`kafka_topic`, `kafka_partition`,
//! `kafka_offset`, `kafka_timestamp`, `kafka_key`), like the connector's RECORD_METADATA.
//!
//! Bounded (a DAG task): up to the end offsets seen at start. `follow: true` (`windsock stream
//! --follow`): until stopped.
//!
//! Exactly-once landing: each batch is merged into the table on `key` (default: topic, partition,
//! offset) in one warehouse transaction, and the group's offsets are committed only after it.
//! A crash between the two replays the batch, which the merge absorbs. Messages that do not
//! parse or fail the schema go to a dead-letter table with the reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use polars::prelude::*;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    BoxFuture, CheckContext, ConfigProblem, Error, OperatorConfig, TaskContext, TaskResult,
};
use crate::connections::kafka::{self, KafkaSettings, consumer, registry};
use crate::connections::warehouse::{self, LoadMode, LoadSpec, Warehouse};
use crate::ident::{check_column, split_table};
use crate::spec::is_template;
use crate::stream::batch::{self, META_COLUMNS, Meta, RowBatch};
use crate::stream::schema::{self, MessageSchema};

/// How messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Format {
    /// JSON objects, checked against the JSON Schema in `schema`.
    #[default]
    Json,
    /// Avro datums of the record in `schema` (`.avsc`); in the Confluent wire format when a
    /// Schema Registry is configured.
    Avro,
}

/// Config of `kafka_to_warehouse` (these keys are a contract).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KafkaToWarehouseConfig {
    pub(crate) topic: String,
    /// `SCHEMA.TABLE`; created from the schema's columns plus the Kafka metadata columns.
    pub(crate) table: String,
    #[serde(default)]
    pub(crate) format: Format,
    /// The message schema: a JSON Schema for `json`, an Avro schema (`.avsc`) for `avro`.
    pub(crate) schema: String,
    /// The consumer group (default `windsock.<dag>.<task>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) group: Option<String>,
    /// The columns a row is identified by: a message landed twice (a replay, a month streamed
    /// again) replaces the row. Default: `[kafka_topic, kafka_partition, kafka_offset]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) key: Vec<String>,
    /// Write new rows sorted by these columns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) order_by: Vec<String>,
    /// Messages per warehouse transaction.
    #[serde(default = "default_batch_size")]
    pub(crate) batch_size: usize,
    /// Where messages that cannot be landed go (default `<table>_DEAD_LETTER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dead_letter_table: Option<String>,
    /// Keep consuming until stopped, instead of stopping at the end offsets seen at start.
    #[serde(default)]
    pub(crate) follow: bool,
    /// librdkafka consumer properties.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub(crate) properties: IndexMap<String, String>,
    /// A named Kafka connection (default: the profile's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) connection: Option<String>,
}

fn default_batch_size() -> usize {
    50_000
}

impl OperatorConfig for KafkaToWarehouseConfig {
    const NAME: &'static str = "kafka_to_warehouse";

    fn uses_warehouse(_with: &crate::spec::Node) -> bool {
        true
    }
    const SUMMARY: &'static str =
        "lands a Kafka topic in a warehouse table, exactly once, with a dead-letter table";

    fn check(&self, cx: &CheckContext<'_>) -> Vec<ConfigProblem> {
        let mut out = kafka::config_problems(self.connection.as_deref(), &self.properties);
        out.extend(schema::check_file("schema", &self.schema, cx.project_dir));
        if !is_template(&self.schema) {
            let avsc = self.schema.ends_with(".avsc");
            if avsc != (self.format == Format::Avro) {
                out.push(ConfigProblem::at(
                    "format",
                    format!(
                        "`format: {}` needs {} schema",
                        if avsc { "json" } else { "avro" },
                        if avsc { "a JSON" } else { "an Avro (.avsc)" }
                    ),
                ));
            }
        }
        for (k, t) in [
            ("table", Some(&self.table)),
            ("dead_letter_table", self.dead_letter_table.as_ref()),
        ] {
            if let Some(t) = t.filter(|t| !is_template(t))
                && let Err(e) = split_table(t)
            {
                out.push(ConfigProblem::at(k, e));
            }
        }
        for (field, columns) in [("key", &self.key), ("order_by", &self.order_by)] {
            for c in columns.iter().filter(|c| !is_template(c)) {
                if let Err(e) = check_column(c) {
                    out.push(ConfigProblem::at(field, e));
                }
            }
        }
        if self.batch_size == 0 {
            out.push(ConfigProblem::at(
                "batch_size",
                "`batch_size` must be at least 1",
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
            let schema =
                MessageSchema::load(&ctx.resolve(Path::new(&self.schema))).map_err(Error::fatal)?;
            let settings = kafka::settings(ctx.profile, &ctx.home)?;
            let wh = warehouse::open(ctx.profile, &ctx.home, Some(&ctx.query_tag()))?;
            let registry_id = match (&schema, &settings.registry) {
                (MessageSchema::Avro { text, .. }, Some(r)) => {
                    Some(registry::register(r, &format!("{}-value", self.topic), text).await?)
                }
                _ => None,
            };
            let (_stop_on_drop, cancelled) = ctx.stop_guard();
            let job = Land {
                cfg: self.clone(),
                group: self
                    .group
                    .clone()
                    .unwrap_or_else(|| format!("windsock.{}.{}", ctx.dag, ctx.task)),
                settings,
                schema,
                framed: registry_id.is_some(),
                wh,
                tmp: ctx.home.join("tmp"),
                log: ctx.log.clone(),
                handle: tokio::runtime::Handle::current(),
            };
            let report = tokio::task::spawn_blocking(move || job.run(&cancelled))
                .await
                .map_err(|e| Error::fatal(format!("the landing stopped: {e}")))??;
            TaskResult::output(&report)
        })
    }
}

/// The task's output.
#[derive(Debug, Default, Serialize)]
pub(crate) struct LandReport {
    pub(crate) topic: String,
    pub(crate) table: String,
    pub(crate) group: String,
    pub(crate) consumed: u64,
    pub(crate) inserted: u64,
    pub(crate) updated: u64,
    /// Messages that were in a batch twice (only the later one counts).
    pub(crate) duplicates_in_batch: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) dead_letter_table: String,
    pub(crate) batches: u64,
    /// Offsets consumed per partition: (from, to exclusive).
    pub(crate) partitions: BTreeMap<i32, (i64, i64)>,
    pub(crate) seconds: f64,
}

struct Land {
    cfg: KafkaToWarehouseConfig,
    group: String,
    settings: KafkaSettings,
    schema: MessageSchema,
    framed: bool,
    wh: Arc<dyn Warehouse>,
    tmp: PathBuf,
    log: super::TaskLog,
    handle: tokio::runtime::Handle,
}

/// Rows for the dead-letter table.
#[derive(Default)]
struct DeadRows {
    topic: Vec<String>,
    partition: Vec<i32>,
    offset: Vec<i64>,
    timestamp: Vec<Option<i64>>,
    key: Vec<Option<String>>,
    value: Vec<Option<String>>,
    reason: Vec<String>,
}

impl Land {
    fn run(self, cancelled: &AtomicBool) -> Result<LandReport, Error> {
        let started = Instant::now();
        let topic = self.cfg.topic.as_str();
        if self.cfg.follow {
            self.log.info(&format!(
                "following {topic} as group {} (waiting for the topic if it does not exist yet)",
                self.group
            ));
        }
        let consumer::Assigned {
            consumer,
            from,
            mut ends,
            ..
        } = consumer::assign_from_committed(
            &self.settings,
            &[],
            &self.cfg.properties,
            &self.group,
            topic,
            self.cfg.follow,
            cancelled,
        )?;
        // Next offset to land per partition, and (bounded) where to stop.
        let mut next = from.clone();
        let mut report = LandReport {
            topic: topic.to_string(),
            table: self.cfg.table.clone(),
            group: self.group.clone(),
            partitions: from.iter().map(|(p, o)| (*p, (*o, *o))).collect(),
            ..Default::default()
        };
        let key: Vec<String> = if self.cfg.key.is_empty() {
            META_COLUMNS[..3].iter().map(|s| s.to_string()).collect()
        } else {
            self.cfg.key.clone()
        };
        let dead_table = self
            .cfg
            .dead_letter_table
            .clone()
            .unwrap_or_else(|| format!("{}_DEAD_LETTER", self.cfg.table));
        report.dead_letter_table = dead_table.clone();
        // The dead-letter table exists from the first landing on, empty or not, so that queries
        // and dashboards over it never fail.
        self.load_dead(DeadRows::default(), &dead_table)?;
        self.log.info(&format!(
            "landing {topic} into {} as group {} from offsets {:?}{}",
            self.cfg.table,
            self.group,
            next,
            if self.cfg.follow {
                String::new()
            } else {
                format!(" up to {ends:?}")
            }
        ));
        let columns = self.schema.columns().to_vec();
        let mut rows = RowBatch::new(&columns);
        let mut dead = DeadRows::default();
        let mut last_flush = Instant::now();
        loop {
            if cancelled.load(Ordering::Relaxed) {
                // Whatever was landed is committed; the rest is read again next time.
                break;
            }
            let done = !self.cfg.follow && ends.is_empty();
            let pending = rows.len() + dead.offset.len();
            let full = pending >= self.cfg.batch_size;
            let idle_flush =
                self.cfg.follow && pending > 0 && last_flush.elapsed() > Duration::from_secs(1);
            if pending > 0 && (done || full || idle_flush) {
                let batch = std::mem::replace(&mut rows, RowBatch::new(&columns));
                let dl = std::mem::take(&mut dead);
                self.flush(batch, dl, &key, &dead_table, &next, &consumer, &mut report)?;
                last_flush = Instant::now();
            }
            if done {
                break;
            }
            let Some(m) =
                consumer::next_message(&consumer, Duration::from_millis(100), self.cfg.follow)?
            else {
                continue;
            };
            let (p, off) = (m.partition(), m.offset());
            if !self.cfg.follow && ends.get(&p).is_none_or(|end| off >= *end) {
                // Past the bounded range (produced after we started): next time.
                ends.remove(&p);
                continue;
            }
            report.consumed += 1;
            let meta = Meta {
                topic,
                partition: p,
                offset: off,
                timestamp: m.timestamp().to_millis(),
                key: m.key(),
            };
            if let Err(reason) = self.decode(m.payload(), &meta, &mut rows) {
                dead.topic.push(topic.to_string());
                dead.partition.push(p);
                dead.offset.push(off);
                dead.timestamp.push(meta.timestamp);
                dead.key
                    .push(m.key().map(|k| String::from_utf8_lossy(k).into_owned()));
                dead.value
                    .push(m.payload().map(|v| String::from_utf8_lossy(v).into_owned()));
                dead.reason.push(reason);
            }
            next.insert(p, off + 1);
            if let Some(r) = report.partitions.get_mut(&p) {
                r.1 = off + 1;
            }
            if !self.cfg.follow && ends.get(&p).is_some_and(|end| off + 1 >= *end) {
                ends.remove(&p);
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        self.log.info(&format!(
            "consumed {} message(s): {} inserted, {} updated, {} dead-lettered in {} batch(es), {:.2} s",
            report.consumed,
            report.inserted,
            report.updated,
            report.dead_lettered,
            report.batches,
            report.seconds
        ));
        Ok(report)
    }

    /// One message into the batch, or the reason it cannot go in.
    fn decode(
        &self,
        payload: Option<&[u8]>,
        meta: &Meta<'_>,
        rows: &mut RowBatch,
    ) -> Result<(), String> {
        let payload = payload.ok_or("the message has no value")?;
        let cells = match &self.schema {
            MessageSchema::Json { columns, validator } => {
                let v: serde_json::Value =
                    serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
                if let Some(reason) = schema::violations(validator, &v) {
                    return Err(format!("schema: {reason}"));
                }
                batch::json_cells(&v, columns)?
            }
            MessageSchema::Avro {
                columns, schema, ..
            } => {
                let datum = if self.framed {
                    registry::unframe(payload)
                        .ok_or("not in the Confluent wire format")?
                        .1
                } else {
                    payload
                };
                let mut reader = datum;
                let v = apache_avro::from_avro_datum(schema, &mut reader, None)
                    .map_err(|e| format!("not an Avro datum of the schema: {e}"))?;
                batch::avro_cells(&v, columns)?
            }
        };
        rows.push(cells, meta)
    }

    #[allow(clippy::too_many_arguments)]
    fn flush(
        &self,
        rows: RowBatch,
        dead: DeadRows,
        key: &[String],
        dead_table: &str,
        next: &BTreeMap<i32, i64>,
        consumer: &BaseConsumer,
        report: &mut LandReport,
    ) -> Result<(), Error> {
        let n = rows.len();
        if n > 0 {
            let mut df = rows
                .into_frame(key)
                .map_err(|e| Error::fatal(format!("building the batch: {e}")))?;
            report.duplicates_in_batch += (n - df.height()) as u64;
            let r = self.merge(&mut df, &self.cfg.table, key, &self.cfg.order_by)?;
            report.inserted += r.inserted;
            report.updated += r.updated;
        }
        let d = dead.offset.len();
        if d > 0 {
            self.load_dead(dead, dead_table)?;
            report.dead_lettered += d as u64;
        }
        // Only now, with the rows in the warehouse, move the group on.
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (p, off) in next {
            tpl.add_partition_offset(&self.cfg.topic, *p, rdkafka::Offset::Offset(*off))?;
        }
        consumer.commit(&tpl, CommitMode::Sync)?;
        report.batches += 1;
        self.log.info(&format!(
            "batch {}: {n} row(s) and {d} dead letter(s) landed; offsets {next:?} committed",
            report.batches
        ));
        Ok(())
    }

    /// Merges dead letters into their table (on topic, partition, offset: a replay adds none).
    fn load_dead(&self, dead: DeadRows, table: &str) -> Result<(), Error> {
        let mut df = dead_frame(dead)
            .map_err(|e| Error::fatal(format!("building the dead letters: {e}")))?;
        let key: Vec<String> = META_COLUMNS[..3].iter().map(|s| s.to_string()).collect();
        self.merge(&mut df, table, &key, &[])?;
        Ok(())
    }

    /// Merges a frame into `table` on `key` in one warehouse transaction, through a temporary
    /// Parquet file (the input both warehouse loaders read).
    fn merge(
        &self,
        df: &mut DataFrame,
        table: &str,
        key: &[String],
        order_by: &[String],
    ) -> Result<warehouse::LoadResult, Error> {
        std::fs::create_dir_all(&self.tmp)
            .map_err(|e| Error::fatal(format!("cannot create {}: {e}", self.tmp.display())))?;
        let file = TmpFile(
            self.tmp
                .join(format!("land-{}.parquet", uuid::Uuid::new_v4())),
        );
        crate::parquet::write(&file.0, df).map_err(Error::transient)?;
        let spec = LoadSpec {
            files: vec![file.0.clone()],
            table: table.to_string(),
            mode: LoadMode::Merge,
            key: key.to_vec(),
            order_by: order_by.to_vec(),
        };
        self.handle.block_on(self.wh.load(&spec))
    }
}

fn dead_frame(d: DeadRows) -> PolarsResult<DataFrame> {
    let n = d.offset.len();
    let now = chrono::Utc::now().timestamp_micros();
    DataFrame::new(
        n,
        vec![
            StringChunked::from_iter_values("kafka_topic".into(), d.topic.into_iter())
                .into_series()
                .into(),
            Int32Chunked::from_vec("kafka_partition".into(), d.partition)
                .into_series()
                .into(),
            Int64Chunked::from_vec("kafka_offset".into(), d.offset)
                .into_series()
                .into(),
            Int64Chunked::from_iter_options("kafka_timestamp".into(), d.timestamp.into_iter())
                .into_datetime(TimeUnit::Milliseconds, None)
                .into_series()
                .into(),
            StringChunked::from_iter_options("kafka_key".into(), d.key.into_iter())
                .into_series()
                .into(),
            StringChunked::from_iter_options("value".into(), d.value.into_iter())
                .into_series()
                .into(),
            StringChunked::from_iter_values("reason".into(), d.reason.into_iter())
                .into_series()
                .into(),
            Int64Chunked::from_vec("landed_at".into(), vec![now; n])
                .into_datetime(TimeUnit::Microseconds, None)
                .into_series()
                .into(),
        ],
    )
}

/// A temporary file removed when dropped.
struct TmpFile(PathBuf);

impl Drop for TmpFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
