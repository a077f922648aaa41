//! Consumers as windsock's operators use them: assigned to every partition of a topic from
//! their group's committed offsets (offsets committed by hand, after the work they cover is
//! durable), and the lag of a group.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::KafkaSettings;
use crate::error::Error;

/// The partitions of `topic` with their low and high watermarks.
pub(crate) fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<(i32, i64, i64)>, Error> {
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Err(Error::transient(format!("topic `{topic}` not found")));
    };
    if let Some(e) = t.error() {
        return Err(Error::transient(format!(
            "topic `{topic}`: {:?}",
            rdkafka::error::RDKafkaErrorCode::from(e)
        )));
    }
    let mut out = Vec::new();
    for p in t.partitions() {
        let (lo, hi) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
        out.push((p.id(), lo, hi));
    }
    out.sort();
    if out.is_empty() {
        return Err(Error::transient(format!(
            "topic `{topic}` has no partitions yet"
        )));
    }
    Ok(out)
}

/// As [`watermarks`], but when `wait` is set and the topic does not exist yet, waits for it
/// (a consumer started before its producer) until `stop` turns true.
pub(crate) fn watermarks_when_there(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
    wait: bool,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Vec<(i32, i64, i64)>, Error> {
    loop {
        match watermarks(consumer, topic, timeout) {
            Err(e) if wait && !stop.load(std::sync::atomic::Ordering::Relaxed) => {
                tracing::debug!(topic, error = %e, "waiting for the topic");
                std::thread::sleep(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// A consumer assigned to every partition of a topic from its group's committed offsets.
pub(crate) struct Assigned {
    pub(crate) consumer: BaseConsumer,
    pub(crate) partitions: Vec<i32>,
    /// Where reading starts per partition: the committed offset, or the partition's start.
    pub(crate) from: BTreeMap<i32, i64>,
    /// Partitions with messages at start, and their end offsets then: a bounded read's range.
    pub(crate) ends: BTreeMap<i32, i64>,
}

/// A consumer of `group` (offsets committed by hand, never automatically) assigned to all of
/// `topic` from the group's committed offsets. `defaults` go under the connection and `extra`
/// (an operator's `properties`). With `wait`, a topic that does not exist yet is waited for
/// until `stop`.
pub(crate) fn assign_from_committed<'a>(
    settings: &KafkaSettings,
    defaults: &[(&str, &str)],
    extra: impl IntoIterator<Item = (&'a String, &'a String)>,
    group: &str,
    topic: &str,
    wait: bool,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Assigned, Error> {
    let consumer: BaseConsumer = settings
        .client_config_over(defaults, extra)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .create()?;
    let timeout = Duration::from_secs(30);
    let marks = watermarks_when_there(&consumer, topic, timeout, wait, stop)?;
    let partitions: Vec<i32> = marks.iter().map(|m| m.0).collect();
    let done = committed(&consumer, topic, &partitions, timeout)?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut from = BTreeMap::new();
    let mut ends = BTreeMap::new();
    for ((p, lo, hi), (_, c)) in marks.iter().zip(&done) {
        let start = c.unwrap_or(*lo).max(*lo);
        tpl.add_partition_offset(topic, *p, rdkafka::Offset::Offset(start))?;
        from.insert(*p, start);
        if start < *hi {
            ends.insert(*p, *hi);
        }
    }
    consumer.assign(&tpl)?;
    Ok(Assigned {
        consumer,
        partitions,
        from,
        ends,
    })
}

/// Committed offsets of `group` on `topic`'s partitions (`None` where nothing was committed).
pub(crate) fn committed(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<Vec<(i32, Option<i64>)>, Error> {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    let got = consumer.committed_offsets(tpl, timeout)?;
    Ok(partitions
        .iter()
        .map(|p| {
            let off = got
                .find_partition(topic, *p)
                .and_then(|e| match e.offset() {
                    rdkafka::Offset::Offset(o) => Some(o),
                    _ => None,
                });
            (*p, off)
        })
        .collect())
}

/// Consumer lag of `group` on `topic`: messages between its committed offsets (or the start)
/// and the end of each partition.
pub(crate) fn group_lag(settings: &KafkaSettings, topic: &str, group: &str) -> Result<i64, Error> {
    let consumer: BaseConsumer = settings
        .client_config(std::iter::empty())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let marks = watermarks(&consumer, topic, timeout)?;
    let parts: Vec<i32> = marks.iter().map(|m| m.0).collect();
    let done = committed(&consumer, topic, &parts, timeout)?;
    Ok(marks
        .iter()
        .zip(done)
        .map(|((_, lo, hi), (_, c))| (hi - c.unwrap_or(*lo).max(*lo)).max(0))
        .sum())
}

/// The end offset of each partition of `topic`.
pub(crate) fn end_offsets(
    settings: &KafkaSettings,
    topic: &str,
) -> Result<BTreeMap<i32, i64>, Error> {
    let consumer: BaseConsumer = settings
        .client_config(std::iter::empty())
        .set("group.id", "windsock-offsets")
        .set("enable.auto.commit", "false")
        .create()?;
    let marks = watermarks(&consumer, topic, Duration::from_secs(30))?;
    Ok(marks.iter().map(|(p, _, hi)| (*p, *hi)).collect())
}

/// The values of the string field `field` in every JSON message of `topic` from `from` (per
/// partition; the partition's start where absent) to the end. `on_found` hears how many
/// messages there are to read before reading starts.
pub(crate) fn field_values_since(
    settings: &KafkaSettings,
    topic: &str,
    from: &BTreeMap<i32, i64>,
    field: &str,
    on_found: impl FnOnce(i64),
) -> Result<std::collections::HashSet<String>, Error> {
    use rdkafka::message::Message;
    let consumer: BaseConsumer = settings
        .client_config(std::iter::empty())
        .set("group.id", "windsock-read-range")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let marks = watermarks(&consumer, topic, Duration::from_secs(30))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut remaining = 0i64;
    let mut ends = BTreeMap::new();
    for (p, lo, hi) in &marks {
        let start = from.get(p).copied().unwrap_or(*lo).max(*lo);
        if start < *hi {
            tpl.add_partition_offset(topic, *p, rdkafka::Offset::Offset(start))?;
            remaining += hi - start;
            ends.insert(*p, *hi);
        }
    }
    let mut values = std::collections::HashSet::new();
    if remaining == 0 {
        return Ok(values);
    }
    on_found(remaining);
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(Error::transient(format!(
                "timed out reading {remaining} message(s) of `{topic}`"
            )));
        }
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m?;
        if let Some(v) = m
            .payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .and_then(|v| v.get(field).and_then(|f| f.as_str()).map(str::to_string))
        {
            values.insert(v);
        }
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
    }
    Ok(values)
}

/// The next message within `timeout` (`None`: nothing yet). Following a topic (`follow`), the
/// connection-level errors librdkafka reports while a broker restarts — every broker down, a
/// transport failure — are logged and waited out: librdkafka reconnects by itself, and the
/// broker of the local profile comes back within a second. Otherwise every error ends the read
/// (transient errors are then retried as the task's policy says).
pub(crate) fn next_message(
    consumer: &BaseConsumer,
    timeout: Duration,
    follow: bool,
) -> Result<Option<rdkafka::message::BorrowedMessage<'_>>, Error> {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};
    match consumer.poll(timeout) {
        None => Ok(None),
        Some(Ok(m)) => Ok(Some(m)),
        Some(Err(KafkaError::MessageConsumption(
            code @ (Code::AllBrokersDown
            | Code::BrokerTransportFailure
            | Code::BrokerNotAvailable
            | Code::NetworkException
            | Code::RequestTimedOut),
        ))) if follow => {
            tracing::warn!("the Kafka broker is unreachable for now ({code}); waiting for it");
            Ok(None)
        }
        Some(Err(e)) => Err(e.into()),
    }
}
