//! Connections to the systems a pipeline talks to, per profile: the warehouse (embedded DuckDB
//! under `local`) and, later, Kafka.

pub mod warehouse;
