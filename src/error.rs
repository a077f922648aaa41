//! One vocabulary for failures of work that talks to the outside world: operators, the Kafka and
//! warehouse connections, downloads. Every such failure is an [`Error`]: a sentence for a person
//! and a [`Class`] that says whether trying again may help. The executor retries transient
//! failures under the task's policy and stops at fatal ones; the CLI prints the sentence.
//!
//! Conversions from library errors (librdkafka, DuckDB, Snowflake, I/O) live beside the code that
//! calls those libraries, which knows what a given error means.

use std::fmt;

/// Whether another try could succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// A broker away, a timeout, a lock held by another process: retrying may succeed.
    Transient,
    /// A wrong setting, a bad file, a SQL error: the same try fails the same way.
    Fatal,
}

/// A failure: what happened, as one sentence, and whether it is worth retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Error {
    class: Class,
    message: String,
}

impl Error {
    pub(crate) fn new(class: Class, message: impl Into<String>) -> Self {
        Error {
            class,
            message: message.into(),
        }
    }

    pub(crate) fn transient(message: impl Into<String>) -> Self {
        Self::new(Class::Transient, message)
    }

    pub(crate) fn fatal(message: impl Into<String>) -> Self {
        Self::new(Class::Fatal, message)
    }

    pub(crate) fn is_transient(&self) -> bool {
        self.class == Class::Transient
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// The same failure, introduced by `what` (`"reading x.parquet"` → `"reading x.parquet: …"`).
    pub(crate) fn context(self, what: impl fmt::Display) -> Self {
        Error {
            class: self.class,
            message: format!("{what}: {}", self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_class() {
        let e = Error::transient("connection refused").context("Kafka");
        assert_eq!(e.to_string(), "Kafka: connection refused");
        assert!(e.is_transient());
        assert!(
            !Error::fatal("bad").context("x").is_transient(),
            "a fatal error stays fatal"
        );
    }
}
