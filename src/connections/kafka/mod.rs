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

pub(crate) mod broker;
pub(crate) mod consumer;
pub(crate) mod native;
pub(crate) mod producer;
pub(crate) mod registry;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use indexmap::IndexMap;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use crate::diag::ConfigProblem;
use crate::error::{Class, Error};
use crate::spec::Profile;

/// How a librdkafka error reads, and whether a retry may help: a bad setting or a refused
/// login will not; a broker away or a timeout may.
impl From<rdkafka::error::KafkaError> for Error {
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
        let class = if fatal {
            Class::Fatal
        } else {
            Class::Transient
        };
        Error::new(class, format!("Kafka: {e}"))
    }
}

/// Where the Schema Registry is, if one is configured.
#[derive(Clone)]
pub(crate) struct RegistrySettings {
    pub(crate) url: String,
    pub(crate) credentials: Option<(String, String)>,
}

/// How to reach a cluster. Properties may hold secrets: `Debug` prints their names only.
#[derive(Clone)]
pub(crate) struct KafkaSettings {
    pub(crate) bootstrap: String,
    properties: Vec<(String, String)>,
    pub(crate) registry: Option<RegistrySettings>,
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
pub(crate) fn is_secret(name: &str) -> bool {
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
    pub(crate) fn plaintext(bootstrap: impl Into<String>) -> Self {
        KafkaSettings {
            bootstrap: bootstrap.into(),
            properties: Vec::new(),
            registry: None,
        }
    }

    /// The `cloud` profile's settings from the environment (see the module docs).
    pub(crate) fn from_env() -> Result<Self, Error> {
        Self::from_vars(
            |n| std::env::var(n).ok().filter(|v| !v.is_empty()),
            std::env::vars(),
        )
    }

    fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        all: impl Iterator<Item = (String, String)>,
    ) -> Result<Self, Error> {
        let bootstrap = var("KAFKA_BOOTSTRAP_SERVERS").ok_or_else(|| {
            Error::fatal(
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
                return Err(Error::fatal(
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
    pub(crate) fn client_config<'a>(
        &self,
        extra: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> ClientConfig {
        self.client_config_over(&[], extra)
    }

    /// As [`Self::client_config`], over `defaults` that both the connection and `extra` override.
    pub(crate) fn client_config_over<'a>(
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

/// Problems with a task's Kafka `connection:` and `properties:`: an unknown connection, and
/// properties that belong to the connection (addresses, credentials), which live in the
/// environment, never in a pipeline file.
pub(crate) fn config_problems(
    connection: Option<&str>,
    properties: &IndexMap<String, String>,
) -> Vec<ConfigProblem> {
    let mut out = Vec::new();
    if let Some(c) = connection.filter(|c| *c != "kafka") {
        out.push(ConfigProblem::at(
            "connection",
            format!("unknown connection `{c}`; this build has `kafka`"),
        ));
    }
    for k in properties.keys() {
        if is_secret(k) || k == "bootstrap.servers" || k.starts_with("sasl.") {
            out.push(ConfigProblem::at(
                "properties",
                format!(
                    "`{k}` is part of the connection: set it in the environment (KAFKA_*), not in the pipeline"
                ),
            ));
        }
    }
    out
}

/// The settings of a profile: `local` starts (or finds) the embedded broker in `home`; `cloud`
/// reads the environment.
pub(crate) fn settings(profile: Profile, home: &Path) -> Result<KafkaSettings, Error> {
    match profile {
        Profile::Local => {
            // A Kafka of your own for the local profile (a broker you already run).
            if let Ok(b) = std::env::var("WINDSOCK_KAFKA_BOOTSTRAP")
                && !b.is_empty()
            {
                return Ok(KafkaSettings::plaintext(b));
            }
            let addr = broker::ensure(home)?;
            Ok(KafkaSettings::plaintext(addr))
        }
        Profile::Cloud => KafkaSettings::from_env(),
    }
}

/// Creates `topic` with `partitions` partitions unless it exists.
pub(crate) async fn ensure_topic(
    settings: &KafkaSettings,
    topic: &str,
    partitions: i32,
) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> = settings
        .client_config(std::iter::empty())
        .create()
        .map_err(Error::from)?;
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
                return Err(Error::transient(format!(
                    "could not create topic `{t}`: {code}"
                )));
            }
        }
    }
    Ok(())
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
        assert!(e.message().contains("KAFKA_BOOTSTRAP_SERVERS"));
    }
}
