//! Streaming building blocks shared by the Kafka operators, free of Kafka itself:
//! [`schema`] (message schemas: the JSON Schema of raw events, the Avro schemas of aggregates, and
//! the warehouse columns they map to), [`batch`] (messages into typed columns and a Parquet file
//! for the warehouse loader), [`window`] (event-time tumbling windows with watermarks) and
//! [`json`] (the raw event's JSON, written column by column).

pub(crate) mod batch;
pub(crate) mod json;
pub(crate) mod schema;
pub(crate) mod window;

/// Percentiles of a list of samples (microseconds), for latency reports.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
