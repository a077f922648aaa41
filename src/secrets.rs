//! Secrets, masked wherever windsock writes: task logs, its own log, the state database (rendered
//! configs, outputs, errors), and so every page and command that shows them.
//!
//! As Airflow's secrets masker does, but from what windsock knows: the value of every
//! environment variable whose name looks secret ([`looks_secret`]: windsock's own credentials,
//! and anything a pipeline reads with `{{ env('…') }}` under such a name), the password of the
//! state store's URL, and the variables a pipeline lists under `secrets:` are registered, and
//! [`mask`] replaces each occurrence with `***`. windsock's own credentials are also kept from
//! the processes tasks start ([`withheld_from_tasks`]) unless a task passes one on by name.

use std::borrow::Cow;
use std::sync::{LazyLock, RwLock};

/// What a secret's value becomes.
pub(crate) const MASK: &str = "***";

/// Shorter values are not masked: a two-letter "secret" would blank every word containing it.
const MIN_LEN: usize = 4;

/// Variables windsock itself reads credentials from (and, for the store's URL, a password).
const OWN: &[&str] = &[
    "WINDSOCK_STATE_URL",
    "WINDSOCK_UI_TOKEN",
    "SNOWFLAKE_PASSWORD",
    "SNOWFLAKE_PRIVATE_KEY",
    "KAFKA_API_SECRET",
    "SCHEMA_REGISTRY_API_SECRET",
];

/// Registered values, longest first (so that a secret containing another is masked whole).
static SECRETS: LazyLock<RwLock<Vec<String>>> = LazyLock::new(Default::default);

/// Whether an environment variable's name says it holds a secret (`SNOWFLAKE_PASSWORD`,
/// `SLACK_TOKEN`, `AWS_SECRET_ACCESS_KEY`, …). Names of places where a secret is kept
/// (`…_PATH`, `…_FILE`, `…_LOCATION`, `…_DIR`, `…_SOCK` such as `SSH_AUTH_SOCK`) are not secrets
/// themselves.
pub(crate) fn looks_secret(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    if ["_PATH", "_FILE", "_LOCATION", "_DIR", "_SOCK"]
        .iter()
        .any(|s| n.ends_with(s))
    {
        return false;
    }
    [
        "PASSWORD",
        "PASSWD",
        "PASSPHRASE",
        "SECRET",
        "TOKEN",
        "KEY",
        "CREDENTIAL",
        "PRIVATE",
        "AUTH",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// Masks `value` from now on, wherever this process writes it.
pub(crate) fn register(value: &str) {
    let value = value.trim();
    if value.chars().count() < MIN_LEN {
        return;
    }
    let mut all = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    if !all.iter().any(|v| v == value) {
        all.push(value.to_string());
        all.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }
}

/// Registers the value of environment variable `name`, if set.
pub(crate) fn register_var(name: &str) {
    if let Ok(v) = std::env::var(name) {
        register(&v);
    }
}

/// Registers what this process's environment holds that is secret: windsock's own credentials,
/// every variable whose name looks secret, and the password in the state store's URL. Called
/// once at start.
pub(crate) fn register_environment() {
    // windsock's own credentials all have secret-looking names, but for the store's URL, whose
    // password alone is secret.
    for (name, value) in std::env::vars() {
        if looks_secret(&name) {
            register(&value);
        }
    }
    if let Ok(url) = std::env::var("WINDSOCK_STATE_URL") {
        register_url_password(&url);
    }
}

/// Registers the password of a URL (`postgres://user:password@host/db`, or `?password=`).
pub(crate) fn register_url_password(url: &str) {
    if let Some(p) = url_password(url) {
        register(&p);
    }
}

fn url_password(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let in_user = rest
        .rsplit_once('@')
        .and_then(|(user, _)| user.split_once(':'))
        .map(|(_, p)| p.to_string());
    let in_query = rest
        .split_once('?')
        .and_then(|(_, q)| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k.eq_ignore_ascii_case("password"))
        })
        .map(|(_, p)| p.to_string());
    in_user.or(in_query).filter(|p| !p.is_empty())
}

/// `text` with every registered secret replaced by `***`.
pub(crate) fn mask(text: &str) -> Cow<'_, str> {
    let all = SECRETS.read().unwrap_or_else(|p| p.into_inner());
    let mut out = Cow::Borrowed(text);
    for secret in all.iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), MASK));
        }
    }
    out
}

/// Masks every string inside a JSON value (a try's output).
pub(crate) fn mask_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            if let Cow::Owned(masked) = mask(s) {
                *s = masked;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_json),
        serde_json::Value::Object(map) => map.values_mut().for_each(mask_json),
        _ => {}
    }
}

/// The variables of windsock's own that a task's process does not inherit (it may be given one
/// by naming it in its own environment settings).
pub(crate) fn withheld_from_tasks() -> impl Iterator<Item = &'static str> {
    OWN.iter().copied()
}

/// A writer for windsock's own log that masks what it writes (each event is written whole).
pub(crate) struct MaskingWriter<W>(pub(crate) W);

impl<W: std::io::Write> std::io::Write for MaskingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => {
                self.0.write_all(mask(text).as_bytes())?;
                Ok(buf.len())
            }
            Err(_) => self.0.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windsocks_own_credentials_look_secret_but_the_store_url() {
        for name in OWN {
            assert_eq!(looks_secret(name), *name != "WINDSOCK_STATE_URL", "{name}");
        }
    }

    #[test]
    fn secret_names_and_values_are_told_and_masked() {
        for name in [
            "SNOWFLAKE_PASSWORD",
            "SLACK_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "my_api_key",
            "DB_CREDENTIALS",
            "SSH_PRIVATE",
            "PG_PASSWD",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        for name in [
            "SNOWFLAKE_USER",
            "HOME",
            "SNOWFLAKE_PRIVATE_KEY_PATH",
            "PATH",
        ] {
            assert!(!looks_secret(name), "{name}");
        }
        register("hunter2-secret-value");
        register("abc"); // too short to mask
        register("hunter2-secret-value-longer");
        assert_eq!(
            mask("pw=hunter2-secret-value-longer; again hunter2-secret-value. abc"),
            "pw=***; again ***. abc"
        );
        let mut v = serde_json::json!({"stdout": "got hunter2-secret-value", "n": [1, "hunter2-secret-value"]});
        mask_json(&mut v);
        assert_eq!(v, serde_json::json!({"stdout": "got ***", "n": [1, "***"]}));
        assert!(matches!(mask("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_urls_password_is_found_where_it_is_written() {
        assert_eq!(
            url_password("postgres://u:s3cr3t@db:5432/w").as_deref(),
            Some("s3cr3t")
        );
        assert_eq!(
            url_password("postgres://u@db/w?sslmode=require&password=q-pass").as_deref(),
            Some("q-pass")
        );
        assert_eq!(url_password("postgres://u@db/w"), None);
    }
}
