//! The integration tests: each module starts the real `windsock` binary, and the servers it
//! talks to (tansu, fakesnow, PostgreSQL, Chromium), as a user would.
//!
//! One test binary rather than one per file: cargo runs test binaries one after another, so
//! with one per file the two test threads idled while a file's last slow test (the PostgreSQL
//! scheduler test alone takes over three minutes) ran alone; and every binary was another
//! crate to compile and link. Run one module with a filter: `cargo test --release --test
//! integration kafka::`.

mod common;

mod compat;
mod data;
mod download;
mod kafka;
mod layers;
mod postgres;
mod run;
mod scheduler;
mod sensors;
mod showcase;
mod snowflake;
mod ui;
mod validate;
mod warehouse;
