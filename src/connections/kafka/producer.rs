//! Producing as windsock's operators do: safe defaults, backpressure that keeps librdkafka's
//! queue about as deep as what can be in flight, a tally of negative delivery reports, and a
//! flush that does not spin.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};

use crate::error::Error;
use crate::spec::Profile;

/// The producer settings windsock starts from: safe (idempotent, every replica) and tuned for
/// throughput (large batches; the broker's cost is per request as much as per message).
pub(crate) const DEFAULTS: [(&str, &str); 8] = [
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
pub(crate) fn default_compression(profile: Profile) -> &'static str {
    match profile {
        Profile::Local => "none",
        Profile::Cloud => "lz4",
    }
}

/// Negative delivery reports: how many, and the first one's reason.
#[derive(Default)]
pub(crate) struct DeliveryFailures {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl DeliveryFailures {
    pub(crate) fn record(&self, e: &impl std::fmt::Display) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| e.to_string());
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// A transient error naming how many `what` failed and why, if any did.
    pub(crate) fn check(&self, what: &str) -> Result<(), Error> {
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
        Err(Error::transient(format!(
            "{n} {what} not delivered (first error: {first})"
        )))
    }
}

/// Messages handed to librdkafka and not yet reported on, bounded. With a deeper queue its
/// broker thread busy-polls while every in-flight slot is taken (idempotence allows five
/// requests per connection), burning a core for nothing; this keeps the queue about as deep as
/// what can be in flight. A producer context holds one and calls [`Window::reported`] from its
/// delivery callback.
pub(crate) struct Window {
    sent: AtomicU64,
    reported: AtomicU64,
    limit: u64,
}

impl Window {
    /// A window of `limit` messages; `WINDSOCK_PRODUCE_WINDOW` overrides it (for benchmarks).
    pub(crate) fn new(limit: u64) -> Window {
        let limit = std::env::var("WINDSOCK_PRODUCE_WINDOW")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(limit);
        Window {
            sent: AtomicU64::new(0),
            reported: AtomicU64::new(0),
            limit: limit.max(1),
        }
    }

    /// A delivery report arrived (positive or negative).
    pub(crate) fn reported(&self) {
        self.reported.fetch_add(1, Ordering::Relaxed);
    }

    /// Hands a record to librdkafka once fewer than the window's messages await their report.
    pub(crate) fn send<C, K, P>(
        &self,
        producer: &BaseProducer<C>,
        rec: BaseRecord<'_, K, P, C::DeliveryOpaque>,
    ) -> Result<(), Error>
    where
        C: ProducerContext,
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        let sent = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        while sent.saturating_sub(self.reported.load(Ordering::Relaxed)) > self.limit {
            serve_then_nap(producer);
        }
        enqueue(producer, rec)
    }
}

/// Hands a record to librdkafka; while its local queue is full, serves delivery reports until
/// there is room.
pub(crate) fn enqueue<C, K, P>(
    producer: &BaseProducer<C>,
    mut rec: BaseRecord<'_, K, P, C::DeliveryOpaque>,
) -> Result<(), Error>
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
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Serves the delivery reports that are there, then sleeps a moment. rdkafka's
/// `poll(timeout)` spins through the last millisecond of its timeout (its deadline rounds down to
/// a zero-millisecond wait), which showed as a third of the producer's CPU when it waited.
pub(crate) fn serve_then_nap<C: ProducerContext>(producer: &BaseProducer<C>) {
    producer.poll(Duration::ZERO);
    std::thread::sleep(Duration::from_millis(2));
    producer.poll(Duration::ZERO);
}

/// Waits until every message has its delivery report served (or `timeout` passes), napping
/// between checks for the reason given at [`serve_then_nap`].
pub(crate) fn flush<C: ProducerContext>(
    producer: &BaseProducer<C>,
    timeout: Duration,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if Instant::now() > deadline {
            return Err(Error::transient(format!(
                "{} message(s) not acknowledged within {} s",
                producer.in_flight_count(),
                timeout.as_secs()
            )));
        }
        serve_then_nap(producer);
    }
    Ok(())
}
