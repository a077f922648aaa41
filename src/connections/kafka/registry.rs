//! A Confluent Schema Registry client (the two calls windsock needs) and the Confluent wire format:
//! magic byte 0, the schema id as a big-endian u32, then the Avro datum.

use super::RegistrySettings;
use crate::error::{Class, Error};

/// Registers `schema` (Avro JSON) under `subject` (`<topic>-value`); the registry answers with the
/// existing id when the same schema is there already.
pub(crate) async fn register(
    settings: &RegistrySettings,
    subject: &str,
    schema: &str,
) -> Result<u32, Error> {
    let url = format!(
        "{}/subjects/{subject}/versions",
        settings.url.trim_end_matches('/')
    );
    let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" });
    let client = reqwest::Client::new();
    let mut req = client
        .post(&url)
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&body);
    if let Some((k, s)) = &settings.credentials {
        req = req.basic_auth(k, Some(s));
    }
    let resp = req
        .send()
        .await
        .map_err(|e| Error::transient(format!("Schema Registry {}: {e}", settings.url)))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        let class = if status.is_server_error() {
            Class::Transient
        } else {
            Class::Fatal
        };
        return Err(Error::new(
            class,
            format!("Schema Registry refused subject `{subject}` ({status}): {text}"),
        ));
    }
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("id").and_then(|i| i.as_u64()))
        .map(|id| id as u32)
        .ok_or_else(|| Error::fatal(format!("Schema Registry answered without an id: {text}")))
}

/// Frames an Avro datum in the Confluent wire format.
pub(crate) fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(datum.len() + 5);
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// Splits a Confluent-framed message into schema id and datum; `None` if it is not framed.
pub(crate) fn unframe(bytes: &[u8]) -> Option<(u32, &[u8])> {
    if bytes.len() >= 5 && bytes[0] == 0 {
        let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        Some((id, &bytes[5..]))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn wire_format_round_trips() {
        let f = super::frame(42, b"abc");
        assert_eq!(&f[..5], &[0, 0, 0, 0, 42]);
        assert_eq!(super::unframe(&f), Some((42, &b"abc"[..])));
        assert_eq!(super::unframe(b"{\"a\":1}"), None);
    }
}
