//! Kafka, per profile. Under `local` it is the embedded broker ([`broker`]): windsock's own
//! ([`native`], in process) or a tansu process, on 127.0.0.1 with its data in `<home>/broker/`.
//! Under `cloud` it is Confluent Cloud (or any Kafka), configured by environment variables:
//!
//! | variable | meaning |
//! |---|---|
//! | `KAFKA_BOOTSTRAP_SERVERS` | `host:port[,host:port…]` (required) |
//! | `KAFKA_API_KEY`, `KAFKA_API_SECRET` | SASL PLAIN credentials; with them the protocol defaults to `SASL_SSL` |
//! | `KAFKA_SECURITY_PROTOCOL` | overrides the protocol (`PLAINTEXT` for a broker on a private network) |
//! | `KAFKA_PROPERTY_<NAME>` | any librdkafka property: `KAFKA_PROPERTY_SSL_CA_LOCATION` → `ssl.ca.location` |
//! | `SCHEMA_REGISTRY_URL`, `SCHEMA_REGISTRY_API_KEY`, `SCHEMA_REGISTRY_API_SECRET` | optional Schema Registry |
//!
//! Secrets live only in [`KafkaSettings`], whose `Debug` redacts them; nothing else keeps them.

pub mod broker;
pub mod native;
pub mod registry;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct KafkaError {
    pub message: String,
    /// Whether another try may succeed (a broker away, a timeout), not a wrong setting.
    pub transient: bool,
}

impl KafkaError {
    pub fn fatal(message: impl Into<String>) -> Self {
        KafkaError {
            message: message.into(),
            transient: false,
        }
    }
    pub fn transient(message: impl Into<String>) -> Self {
        KafkaError {
            message: message.into(),
            transient: true,
        }
    }
}

impl From<rdkafka::error::KafkaError> for KafkaError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        let fatal = matches!(
            e.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::InvalidConfig
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::InvalidArgument
            )
        ) || matches!(e, rdkafka::error::KafkaError::ClientConfig(..));
        KafkaError {
            message: format!("Kafka: {e}"),
            transient: !fatal,
        }
    }
}

/// Where the Schema Registry is, if one is configured.
#[derive(Clone)]
pub struct RegistrySettings {
    pub url: String,
    pub credentials: Option<(String, String)>,
}

/// How to reach a cluster. Properties may hold secrets: `Debug` prints their names only.
#[derive(Clone)]
pub struct KafkaSettings {
    pub bootstrap: String,
    properties: Vec<(String, String)>,
    pub registry: Option<RegistrySettings>,
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let props: Vec<String> = self
            .properties
            .iter()
            .map(|(k, v)| {
                if is_secret(k) {
                    format!("{k}=<redacted>")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        f.debug_struct("KafkaSettings")
            .field("bootstrap", &self.bootstrap)
            .field("properties", &props)
            .field("registry", &self.registry.as_ref().map(|r| r.url.as_str()))
            .finish()
    }
}

/// Property names whose values must never be printed.
pub fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "sasl.oauthbearer.config",
        "ssl.key.pem",
    ]
    .iter()
    .any(|s| n.contains(s))
}

impl KafkaSettings {
    /// A plain connection to a broker on a trusted address (the embedded broker, tests).
    pub fn plaintext(bootstrap: impl Into<String>) -> Self {
        KafkaSettings {
            bootstrap: bootstrap.into(),
            properties: Vec::new(),
            registry: None,
        }
    }

    /// The `cloud` profile's settings from the environment (see the module docs).
    pub fn from_env() -> Result<Self, KafkaError> {
        Self::from_vars(
            |n| std::env::var(n).ok().filter(|v| !v.is_empty()),
            std::env::vars(),
        )
    }

    fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        all: impl Iterator<Item = (String, String)>,
    ) -> Result<Self, KafkaError> {
        let bootstrap = var("KAFKA_BOOTSTRAP_SERVERS").ok_or_else(|| {
            KafkaError::fatal(
                "the cloud profile needs KAFKA_BOOTSTRAP_SERVERS in the environment (Kafka connection)",
            )
        })?;
        let mut properties = Vec::new();
        let key = var("KAFKA_API_KEY");
        let secret = var("KAFKA_API_SECRET");
        match (key, secret) {
            (Some(k), Some(s)) => {
                properties.push(("security.protocol".into(), "SASL_SSL".into()));
                properties.push(("sasl.mechanisms".into(), "PLAIN".into()));
                properties.push(("sasl.username".into(), k));
                properties.push(("sasl.password".into(), s));
            }
            (None, None) => {}
            _ => {
                return Err(KafkaError::fatal(
                    "KAFKA_API_KEY and KAFKA_API_SECRET go together: set both or neither",
                ));
            }
        }
        if let Some(p) = var("KAFKA_SECURITY_PROTOCOL") {
            properties.retain(|(k, _)| k != "security.protocol");
            properties.push(("security.protocol".into(), p));
        }
        let mut passthrough: Vec<(String, String)> = all
            .filter_map(|(k, v)| {
                let name = k.strip_prefix("KAFKA_PROPERTY_")?;
                Some((name.to_ascii_lowercase().replace('_', "."), v))
            })
            .collect();
        passthrough.sort();
        for (k, v) in passthrough {
            properties.retain(|(p, _)| *p != k);
            properties.push((k, v));
        }
        let registry = var("SCHEMA_REGISTRY_URL").map(|url| RegistrySettings {
            url,
            credentials: var("SCHEMA_REGISTRY_API_KEY").zip(var("SCHEMA_REGISTRY_API_SECRET")),
        });
        Ok(KafkaSettings {
            bootstrap,
            properties,
            registry,
        })
    }

    /// A client config with the connection's settings, then `extra` (an operator's
    /// `properties:`), which win.
    pub fn client_config<'a>(
        &self,
        extra: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> ClientConfig {
        self.client_config_over(&[], extra)
    }

    /// As [`Self::client_config`], over `defaults` that both the connection and `extra` override.
    pub fn client_config_over<'a>(
        &self,
        defaults: &[(&str, &str)],
        extra: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        for (k, v) in extra {
            c.set(k, v);
        }
        c
    }
}

/// The settings of a profile: `local` starts (or finds) the embedded broker in `home`; `cloud`
/// reads the environment.
pub fn settings(profile: &str, home: &Path) -> Result<KafkaSettings, KafkaError> {
    match profile {
        "local" => {
            // A Kafka of your own for the local profile (a broker you already run).
            if let Ok(b) = std::env::var("WINDSOCK_KAFKA_BOOTSTRAP")
                && !b.is_empty()
            {
                return Ok(KafkaSettings::plaintext(b));
            }
            let addr = broker::ensure(home)?;
            Ok(KafkaSettings::plaintext(addr))
        }
        "cloud" => KafkaSettings::from_env(),
        other => Err(KafkaError::fatal(format!(
            "the `{other}` profile has no Kafka connection"
        ))),
    }
}

/// Creates `topic` with `partitions` partitions unless it exists.
pub async fn ensure_topic(
    settings: &KafkaSettings,
    topic: &str,
    partitions: i32,
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = settings
        .client_config(std::iter::empty())
        .create()
        .map_err(KafkaError::from)?;
    // Confluent Cloud wants replication factor 3 and rejects 1; a single broker only takes 1.
    let replication = if settings.bootstrap.contains("confluent.cloud") {
        3
    } else {
        1
    };
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics([&new], &opts).await?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(KafkaError::transient(format!(
                    "could not create topic `{t}`: {code}"
                )));
            }
        }
    }
    Ok(())
}

/// The partitions of `topic` with their low and high watermarks.
pub fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<(i32, i64, i64)>, KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Err(KafkaError::transient(format!("topic `{topic}` not found")));
    };
    if let Some(e) = t.error() {
        return Err(KafkaError::transient(format!(
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
        return Err(KafkaError::transient(format!(
            "topic `{topic}` has no partitions yet"
        )));
    }
    Ok(out)
}

/// As [`watermarks`], but when `wait` is set and the topic does not exist yet, waits for it
/// (a consumer started before its producer) until `stop` turns true.
pub fn watermarks_when_there(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
    wait: bool,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Vec<(i32, i64, i64)>, KafkaError> {
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
pub struct Assigned {
    pub consumer: BaseConsumer,
    pub partitions: Vec<i32>,
    /// Where reading starts per partition: the committed offset, or the partition's start.
    pub from: std::collections::BTreeMap<i32, i64>,
    /// Partitions with messages at start, and their end offsets then: a bounded read's range.
    pub ends: std::collections::BTreeMap<i32, i64>,
}

/// A consumer of `group` (offsets committed by hand, never automatically) assigned to all of
/// `topic` from the group's committed offsets. `defaults` go under the connection and `extra`
/// (an operator's `properties`). With `wait`, a topic that does not exist yet is waited for
/// until `stop`.
pub fn assign_from_committed<'a>(
    settings: &KafkaSettings,
    defaults: &[(&str, &str)],
    extra: impl IntoIterator<Item = (&'a String, &'a String)>,
    group: &str,
    topic: &str,
    wait: bool,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Assigned, KafkaError> {
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
    let mut from = std::collections::BTreeMap::new();
    let mut ends = std::collections::BTreeMap::new();
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
pub fn committed(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<Vec<(i32, Option<i64>)>, KafkaError> {
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
pub fn group_lag(settings: &KafkaSettings, topic: &str, group: &str) -> Result<i64, KafkaError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> KafkaSettings {
        let owned: Vec<(String, String)> = list
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = owned.clone();
        KafkaSettings::from_vars(
            move |n| lookup.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()),
            owned.into_iter(),
        )
        .unwrap()
    }

    #[test]
    fn confluent_settings_use_sasl_ssl_and_hide_the_secret() {
        let s = vars(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "pkc-1.confluent.cloud:9092"),
            ("KAFKA_API_KEY", "KEY"),
            ("KAFKA_API_SECRET", "hunter2"),
            ("KAFKA_PROPERTY_SSL_CA_LOCATION", "/etc/ca.pem"),
            ("SCHEMA_REGISTRY_URL", "https://psrc.example"),
        ]);
        let c = s.client_config(std::iter::empty());
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("sasl.mechanisms"), Some("PLAIN"));
        assert_eq!(c.get("sasl.password"), Some("hunter2"));
        assert_eq!(c.get("ssl.ca.location"), Some("/etc/ca.pem"));
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("sasl.password=<redacted>"));
        assert_eq!(s.registry.unwrap().url, "https://psrc.example");
    }

    #[test]
    fn a_protocol_override_and_missing_bootstrap() {
        let s = vars(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            ("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
        ]);
        assert_eq!(
            s.client_config(std::iter::empty()).get("security.protocol"),
            Some("PLAINTEXT")
        );
        let e = KafkaSettings::from_vars(|_| None, std::iter::empty()).unwrap_err();
        assert!(e.message.contains("KAFKA_BOOTSTRAP_SERVERS"));
    }
}
