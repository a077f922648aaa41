//! windsock: a declarative pipeline-as-code orchestrator.
//!
//! Data flows one way through the modules:
//! YAML ([`spec`]) → validated DAG ([`project`], [`graph`]) → planned run ([`plan`]) →
//! [`executor`] → [`operators`] → [`connections`], [`stream`], [`dataset`] → [`state`].
//! Templating ([`template`]) serves the planning step. Lower modules never reach up: the
//! connections, streaming pieces, dataset, state, spec, graph and template modules know nothing
//! of operators, the executor, the scheduler or the CLI, and no operator imports another.
//! At the bottom sit [`error`] (one transient/fatal vocabulary), [`diag`] (located problems),
//! [`sys`] (the operating system), [`ident`] (SQL identifiers) and [`parquet`].
//! The [`cli`] is the edge where errors become messages for people.

pub mod cli;
mod connections;
mod dashboard;
mod dataset;
mod diag;
mod error;
mod executor;
mod graph;
mod html;
mod ident;
mod operators;
mod parquet;
mod plan;
mod project;
mod scheduler;
mod secrets;
mod spec;
mod state;
mod stream;
mod sys;
mod template;
mod ui;
