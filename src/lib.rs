//! windsock: a declarative pipeline-as-code orchestrator.
//!
//! Data flows one way through the modules:
//! YAML ([`spec`]) → validated DAG ([`project`], [`graph`]) → planned run ([`plan`]) →
//! [`executor`] → [`operators`] → [`state`]. Templating ([`template`]) serves the planning step.
//! The [`cli`] is the edge where errors become messages for people.

pub mod cli;
pub mod connections;
pub mod dataset;
pub mod diag;
pub mod executor;
pub mod graph;
pub mod operators;
pub mod plan;
pub mod project;
pub mod scheduler;
pub mod spec;
pub mod state;
pub mod stream;
pub mod template;
