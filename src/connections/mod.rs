//! Connections to the systems a pipeline talks to, per profile: the warehouse (embedded DuckDB
//! under `local`) and Kafka (an embedded broker under `local`).

pub(crate) mod kafka;
pub(crate) mod warehouse;
