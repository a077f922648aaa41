//! The Snowflake warehouse, through the `snowflake-api` crate (its own login and query code).
//!
//! The crate builds `https://ACCOUNT.snowflakecomputing.com` itself and deserializes responses
//! strictly. A reqwest middleware in its HTTP client (built from the crate's default client, so
//! its retries of transient errors, gzip and user agent stay) does two things:
//! - sends requests to `host`/`port`/`protocol` when set, as Snowflake's official connectors
//!   allow (PrivateLink, proxies, and a local Snowflake-protocol server such as fakesnow);
//! - fills in response fields some servers leave out (fakesnow 0.12 omits `sessionId`,
//!   `masterToken`, validity times and the role at login, `returned`/`finalRoleName`/`version`
//!   in results, and `age`/`internalError`/`queryId` in errors), so the crate accepts them.
//!   Fields a server does send are never changed.
//!
//! One file: the backend of one warehouse (settings, login bridge, query results, loads), each
//! part used only by the others here.

use std::fmt;

use arrow_array::RecordBatch;
use arrow_schema::DataType;
use reqwest_middleware::{Middleware, Next};
use serde_json::{Value, json};
use snowflake_api::{AuthArgs, AuthType, CertificateArgs, PasswordArgs, SnowflakeApi};

use futures_util::future::BoxFuture;

use super::{LoadMode, LoadNames, LoadResult, LoadSpec, QueryResult, ScriptError, Warehouse};
use crate::error::{Class, Error};

/// Connection settings, read from `SNOWFLAKE_*` environment variables.
#[derive(Clone, Default)]
pub(crate) struct Settings {
    pub(crate) account: String,
    pub(crate) user: String,
    pub(crate) password: Option<String>,
    pub(crate) private_key_pem: Option<String>,
    pub(crate) role: Option<String>,
    pub(crate) warehouse: Option<String>,
    pub(crate) database: Option<String>,
    pub(crate) schema: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) protocol: Option<String>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Credentials never reach a log.
        f.debug_struct("Settings")
            .field("account", &self.account)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field(
                "private_key_pem",
                &self.private_key_pem.as_ref().map(|_| "***"),
            )
            .field("host", &self.host)
            .field("port", &self.port)
            .finish()
    }
}

impl Settings {
    pub(crate) fn from_env() -> Result<Settings, Error> {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        let need = |n: &str| {
            var(n).ok_or_else(|| {
                Error::fatal(format!(
                    "the cloud profile needs {n} in the environment (Snowflake connection)"
                ))
            })
        };
        let private_key_pem = match var("SNOWFLAKE_PRIVATE_KEY_PATH") {
            Some(p) => Some(std::fs::read_to_string(&p).map_err(|e| {
                Error::fatal(format!("cannot read SNOWFLAKE_PRIVATE_KEY_PATH {p}: {e}"))
            })?),
            None => var("SNOWFLAKE_PRIVATE_KEY"),
        };
        let password = var("SNOWFLAKE_PASSWORD");
        if password.is_none() && private_key_pem.is_none() {
            return Err(Error::fatal(
                "the cloud profile needs SNOWFLAKE_PASSWORD or SNOWFLAKE_PRIVATE_KEY_PATH in the environment",
            ));
        }
        let port =
            match var("SNOWFLAKE_PORT") {
                Some(p) => Some(p.parse().map_err(|_| {
                    Error::fatal(format!("SNOWFLAKE_PORT `{p}` is not a port number"))
                })?),
                None => None,
            };
        Ok(Settings {
            account: need("SNOWFLAKE_ACCOUNT")?,
            user: need("SNOWFLAKE_USER")?,
            password,
            private_key_pem,
            role: var("SNOWFLAKE_ROLE"),
            warehouse: var("SNOWFLAKE_WAREHOUSE"),
            database: var("SNOWFLAKE_DATABASE"),
            schema: var("SNOWFLAKE_SCHEMA"),
            host: var("SNOWFLAKE_HOST"),
            port,
            protocol: var("SNOWFLAKE_PROTOCOL"),
        })
    }
}

/// Redirects requests and completes responses (see the module docs).
struct Bridge {
    protocol: String,
    host: Option<String>,
    port: Option<u16>,
}

#[async_trait::async_trait]
impl Middleware for Bridge {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        if let Some(host) = &self.host {
            let url = req.url_mut();
            let _ = url.set_scheme(&self.protocol);
            let _ = url.set_host(Some(host));
            let _ = url.set_port(self.port);
        }
        let login = req.url().path().contains("login-request");
        let resp = next.run(req, extensions).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await?;
        let body = match serde_json::from_slice::<Value>(&bytes) {
            Ok(mut j) => {
                complete(&mut j, login);
                serde_json::to_vec(&j).unwrap_or_else(|_| bytes.to_vec())
            }
            Err(_) => bytes.to_vec(),
        };
        let mut builder = http::Response::builder().status(status);
        for (k, v) in &headers {
            if k != http::header::CONTENT_LENGTH && k != http::header::CONTENT_ENCODING {
                builder = builder.header(k, v);
            }
        }
        let rebuilt = builder
            .body(body)
            .map_err(reqwest_middleware::Error::middleware)?;
        Ok(reqwest::Response::from(rebuilt))
    }
}

fn default(obj: &mut serde_json::Map<String, Value>, key: &str, value: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj.insert(key.to_string(), value);
    }
}

/// Fills the fields snowflake-api requires that a server left out.
fn complete(j: &mut Value, login: bool) {
    let Some(top) = j.as_object_mut() else { return };
    let success = top.get("success").and_then(Value::as_bool).unwrap_or(true);
    let code = top.get("code").cloned().unwrap_or(Value::Null);
    let data = top.entry("data").or_insert(Value::Null);
    if !data.is_object() {
        *data = json!({});
    }
    let Some(d) = data.as_object_mut() else {
        return;
    };
    if !success {
        default(
            d,
            "errorCode",
            if code.is_null() {
                json!("000000")
            } else {
                code
            },
        );
        default(d, "sqlState", json!(""));
        default(d, "age", json!(0));
        default(d, "internalError", json!(false));
        default(d, "queryId", json!(""));
        return;
    }
    if login {
        default(d, "sessionId", json!(0));
        default(d, "masterToken", json!("windsock-master-token"));
        default(d, "validityInSeconds", json!(3600));
        default(d, "masterValidityInSeconds", json!(14400));
        let info = d.entry("sessionInfo").or_insert_with(|| json!({}));
        if let Some(info) = info.as_object_mut() {
            default(info, "roleName", json!("PUBLIC"));
        }
    } else {
        let total = d.get("total").cloned().unwrap_or(json!(0));
        default(d, "returned", total);
        default(d, "finalRoleName", json!("PUBLIC"));
        default(d, "version", json!(1));
        default(d, "queryId", json!(""));
        default(d, "parameters", json!([]));
        default(d, "rowtype", json!([]));
    }
}

pub(crate) struct SnowflakeWarehouse {
    api: SnowflakeApi,
    /// Every session sets a query tag naming the DAG, task and run (`ALTER SESSION SET QUERY_TAG`).
    tag: Option<String>,
    tagged: tokio::sync::OnceCell<()>,
}

/// Snowflake's answers that mean "log in again": the session or its token expired, or the
/// service restarted. A new try logs in afresh, so they are transient.
const SESSION_GONE: &[&str] = &["390104", "390111", "390112", "390114"];

/// A Snowflake error: transient when the request did not get through (the crate's client has
/// already retried it) or the session is gone, fatal for what Snowflake answered (SQL errors
/// keep its code).
fn api_err(e: snowflake_api::SnowflakeApiError) -> Error {
    use snowflake_api::SnowflakeApiError as E;
    let class = match &e {
        E::RequestError(_) | E::EmptyResponse => Class::Transient,
        E::ApiError(code, _) if SESSION_GONE.contains(&code.as_str()) => Class::Transient,
        _ => Class::Fatal,
    };
    let message = match e {
        E::ApiError(code, msg) => format!("Snowflake error {code}: {msg}"),
        other => format!("Snowflake: {other}"),
    };
    Error::new(class, message)
}

impl SnowflakeWarehouse {
    pub(crate) fn connect(s: &Settings, tag: Option<String>) -> Result<SnowflakeWarehouse, Error> {
        let client = snowflake_api::connection::Connection::default_client_builder()
            .map_err(|e| Error::fatal(format!("cannot build the Snowflake client: {e}")))?
            .with(Bridge {
                protocol: s.protocol.clone().unwrap_or_else(|| "https".into()),
                host: s.host.clone(),
                port: s.port,
            })
            .build();
        let auth_type = match (&s.private_key_pem, &s.password) {
            (Some(pem), _) => AuthType::Certificate(CertificateArgs {
                private_key_pem: pem.clone(),
            }),
            (None, Some(p)) => AuthType::Password(PasswordArgs {
                password: p.clone(),
            }),
            (None, None) => return Err(Error::fatal("no Snowflake credentials")),
        };
        let api = snowflake_api::SnowflakeApiBuilder::new(AuthArgs {
            account_identifier: s.account.clone(),
            warehouse: s.warehouse.clone(),
            database: s.database.clone(),
            schema: s.schema.clone(),
            username: s.user.clone(),
            role: s.role.clone(),
            auth_type,
        })
        .with_client(client)
        .build()
        .map_err(api_err)?;
        Ok(SnowflakeWarehouse {
            api,
            tag,
            tagged: tokio::sync::OnceCell::new(),
        })
    }

    async fn exec(&self, sql: &str) -> Result<QueryResult, Error> {
        if let Some(tag) = &self.tag {
            self.tagged
                .get_or_try_init(|| async {
                    let t = tag.replace('\'', "''");
                    // Best effort: a server without query tags must not fail the task.
                    let _ = self
                        .api
                        .exec(&format!("ALTER SESSION SET QUERY_TAG = '{t}'"))
                        .await;
                    Ok::<(), Error>(())
                })
                .await?;
        }
        match self.api.exec(sql).await.map_err(api_err)? {
            snowflake_api::QueryResult::Arrow(batches) => Ok(from_arrow(&batches)),
            snowflake_api::QueryResult::Json(j) => Ok(QueryResult {
                columns: j.schema.iter().map(|f| f.name.clone()).collect(),
                rows: j
                    .value
                    .as_array()
                    .map(|rows| {
                        rows.iter()
                            .map(|r| r.as_array().cloned().unwrap_or_default())
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            snowflake_api::QueryResult::Empty => Ok(QueryResult::default()),
        }
    }
}

/// Arrow batches as JSON rows: numbers as numbers, everything else as its display text.
fn from_arrow(batches: &[RecordBatch]) -> QueryResult {
    let mut out = QueryResult::default();
    let Some(first) = batches.first() else {
        return out;
    };
    out.columns = first
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let options = arrow_cast::display::FormatOptions::default();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| arrow_cast::display::ArrayFormatter::try_new(c.as_ref(), &options).ok())
            .collect();
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            let mut values = Vec::with_capacity(batch.num_columns());
            for (i, col) in batch.columns().iter().enumerate() {
                if col.is_null(row) {
                    values.push(Value::Null);
                    continue;
                }
                if let Some(t) = timestamp(schema.field(i), col.as_ref(), row) {
                    values.push(Value::String(t));
                    continue;
                }
                let text = formatters[i]
                    .as_ref()
                    .map(|f| f.value(row).to_string())
                    .unwrap_or_default();
                values.push(match col.data_type() {
                    DataType::Boolean => json!(text == "true"),
                    DataType::Int8
                    | DataType::Int16
                    | DataType::Int32
                    | DataType::Int64
                    | DataType::UInt8
                    | DataType::UInt16
                    | DataType::UInt32
                    | DataType::UInt64 => text
                        .parse::<i64>()
                        .map(Value::from)
                        .unwrap_or(Value::String(text)),
                    DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => text
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                        .unwrap_or(Value::String(text)),
                    _ => Value::String(text),
                });
            }
            out.rows.push(values);
        }
    }
    out
}

/// A Snowflake timestamp in its own Arrow form as `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC): a struct
/// of `epoch` seconds and `fraction` nanoseconds, or an integer scaled by the field's `scale`
/// metadata, both marked by `logicalType` (fakesnow leaves the mark off the struct form).
fn timestamp(
    field: &arrow_schema::Field,
    col: &dyn arrow_array::Array,
    row: usize,
) -> Option<String> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type};
    let logical = field.metadata().get("logicalType").map(String::as_str);
    let (secs, nanos) = match col.data_type() {
        DataType::Struct(_) => {
            let s = col.as_struct();
            let epoch = s.column_by_name("epoch")?.as_primitive_opt::<Int64Type>()?;
            let fraction = s
                .column_by_name("fraction")?
                .as_primitive_opt::<Int32Type>()?;
            (epoch.value(row), i64::from(fraction.value(row)))
        }
        DataType::Int64 if logical.is_some_and(|l| l.starts_with("TIMESTAMP")) => {
            let scale: u32 = field.metadata().get("scale")?.parse().ok()?;
            let unit = 10i64.checked_pow(scale)?;
            let v = col.as_primitive::<Int64Type>().value(row);
            (
                v.div_euclid(unit),
                v.rem_euclid(unit) * 10i64.pow(9 - scale.min(9)),
            )
        }
        _ => return None,
    };
    let t = chrono::DateTime::from_timestamp(secs, u32::try_from(nanos).ok()?)?;
    Some(if nanos == 0 {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
    })
}

/// Rows as one `INSERT … SELECT` over a JSON array: Snowflake (and fakesnow) parse one string
/// instead of a literal per value, several times faster to compile than `VALUES` lists. The
/// array rides in a `$$` string, where nothing is an escape; a `$` in the data is written as the
/// JSON escape `\u0024`, so `$$` never occurs inside.
fn insert_json(into: &str, columns: &[(String, String)], rows: &[Vec<Value>]) -> String {
    let array: Vec<serde_json::Map<String, Value>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|(c, _)| c.clone())
                .zip(r.iter().cloned())
                .collect()
        })
        .collect();
    let text = Value::from(array).to_string().replace('$', "\\u0024");
    let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
    let select: Vec<String> = columns
        .iter()
        .map(|(c, t)| format!("value['{}']::{t}", c.replace('\'', "''")))
        .collect();
    format!(
        "INSERT INTO {into} ({}) SELECT {} FROM TABLE(FLATTEN(input => PARSE_JSON($${text}$$)))",
        names.join(", "),
        select.join(", ")
    )
}

/// Rows of one `insert_json` statement: bounded by count and by the JSON text's size, well under
/// Snowflake's limit on a statement's length.
fn statement_chunks(rows: &[Vec<Value>]) -> Vec<&[Vec<Value>]> {
    const MAX_ROWS: usize = 5000;
    const MAX_BYTES: usize = 512 * 1024;
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let size: usize = row.iter().map(|v| v.to_string().len() + 16).sum();
        if i > start && (i - start >= MAX_ROWS || bytes + size > MAX_BYTES) {
            out.push(&rows[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

/// Rows of the input files with their Snowflake column types, read with polars.
/// The input of a load: (column, Snowflake type) pairs and the rows.
struct Input {
    columns: Vec<(String, String)>,
    rows: Vec<Vec<Value>>,
}

fn read_input(spec: &LoadSpec) -> Result<Input, Error> {
    use polars::prelude::*;
    let mut columns: Vec<(String, String)> = Vec::new();
    let mut rows = Vec::new();
    for path in &spec.files {
        let file = std::fs::File::open(path)
            .map_err(|e| Error::fatal(format!("cannot read {}: {e}", path.display())))?;
        let df = if path.extension().is_some_and(|e| e == "parquet") {
            ParquetReader::new(file).finish()
        } else {
            CsvReader::new(file).finish()
        }
        .map_err(|e| Error::fatal(format!("reading {}: {e}", path.display())))?;
        if columns.is_empty() {
            for f in df.schema().iter_fields() {
                let ty = match f.dtype() {
                    DataType::Int8
                    | DataType::Int16
                    | DataType::Int32
                    | DataType::Int64
                    | DataType::UInt8
                    | DataType::UInt16
                    | DataType::UInt32
                    | DataType::UInt64 => "NUMBER(38,0)",
                    DataType::Float32 | DataType::Float64 => "FLOAT",
                    DataType::Boolean => "BOOLEAN",
                    DataType::Date => "DATE",
                    DataType::Datetime(_, _) => "TIMESTAMP_NTZ",
                    _ => "VARCHAR",
                };
                columns.push((f.name().to_string(), ty.to_string()));
            }
        }
        for i in 0..df.height() {
            let mut row = Vec::with_capacity(columns.len());
            for (name, _) in &columns {
                let v = df
                    .column(name)
                    .and_then(|c| c.get(i))
                    .map_err(|e| Error::fatal(format!("reading {}: {e}", path.display())))?;
                row.push(match v {
                    AnyValue::Null => Value::Null,
                    AnyValue::Boolean(b) => json!(b),
                    AnyValue::String(s) => json!(s),
                    AnyValue::Float64(f) => json!(f),
                    AnyValue::Float32(f) => json!(f),
                    AnyValue::Int64(n) => json!(n),
                    AnyValue::Int32(n) => json!(n),
                    AnyValue::UInt64(n) => json!(n),
                    AnyValue::UInt32(n) => json!(n),
                    AnyValue::Date(d) => {
                        let date =
                            chrono::NaiveDate::default() + chrono::Duration::days(i64::from(d));
                        json!(date.format("%Y-%m-%d").to_string())
                    }
                    AnyValue::Datetime(t, unit, _) => {
                        let micros = match unit {
                            TimeUnit::Nanoseconds => t / 1000,
                            TimeUnit::Microseconds => t,
                            TimeUnit::Milliseconds => t * 1000,
                        };
                        chrono::DateTime::from_timestamp_micros(micros)
                            .map(|t| json!(t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()))
                            .unwrap_or(Value::Null)
                    }
                    other => json!(other.to_string()),
                });
            }
            rows.push(row);
        }
    }
    Ok(Input { columns, rows })
}

impl SnowflakeWarehouse {
    async fn run_load(&self, spec: &LoadSpec) -> Result<LoadResult, Error> {
        let LoadNames {
            schema,
            table,
            key,
            order_by,
        } = spec.names()?;
        let target = format!("{schema}.{table}");
        let spec2 = spec.clone();
        let Input { columns, mut rows } = tokio::task::spawn_blocking(move || read_input(&spec2))
            .await
            .map_err(|e| Error::fatal(format!("reading the input stopped: {e}")))??;
        if let Some(first) = order_by.first() {
            if let Some(i) = columns.iter().position(|(c, _)| c == *first) {
                rows.sort_by(|a, b| a[i].to_string().cmp(&b[i].to_string()));
            }
        }
        let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
        let defs: Vec<String> = columns.iter().map(|(c, t)| format!("{c} {t}")).collect();
        self.exec(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await?;
        self.exec(&format!(
            "CREATE TABLE IF NOT EXISTS {target} ({})",
            defs.join(", ")
        ))
        .await?;
        // Columns the input has and the table lacks are added, as on DuckDB (RAW.EVENTS loaded
        // by the batch DAG, then landed from Kafka with its metadata columns).
        let existing = self
            .exec(&format!(
                "SELECT column_name FROM information_schema.columns \
                 WHERE table_schema = '{}' AND table_name = '{}'",
                schema.to_ascii_uppercase(),
                table.to_ascii_uppercase()
            ))
            .await?;
        let have: Vec<String> = existing
            .rows
            .iter()
            .filter_map(|r| r.first().and_then(|v| v.as_str()))
            .map(str::to_ascii_lowercase)
            .collect();
        if !have.is_empty() {
            for (c, t) in &columns {
                if !have.contains(&c.to_ascii_lowercase()) {
                    self.exec(&format!("ALTER TABLE {target} ADD COLUMN {c} {t}"))
                        .await?;
                }
            }
        }
        let into = if spec.mode == LoadMode::Merge {
            self.exec(&format!(
                "CREATE OR REPLACE TEMPORARY TABLE windsock_stage ({})",
                defs.join(", ")
            ))
            .await?;
            "windsock_stage".to_string()
        } else {
            target.clone()
        };
        self.exec("BEGIN").await?;
        let result = async {
            if spec.mode == LoadMode::Replace {
                self.exec(&format!("DELETE FROM {target}")).await?;
            }
            for chunk in statement_chunks(&rows) {
                self.exec(&insert_json(&into, &columns, chunk)).await?;
            }
            let (mut inserted, mut updated) = (rows.len() as u64, 0);
            if spec.mode == LoadMode::Merge {
                let on: Vec<String> = key.iter().map(|k| format!("t.{k} = s.{k}")).collect();
                let on = on.join(" AND ");
                let set: Vec<String> = names
                    .iter()
                    .filter(|c| !key.contains(c))
                    .map(|c| format!("{c} = s.{c}"))
                    .collect();
                let changed: Vec<String> = names
                    .iter()
                    .filter(|c| !key.contains(c))
                    .map(|c| format!("NOT (t.{c} IS NOT DISTINCT FROM s.{c})"))
                    .collect();
                let before = self.count(&format!(
                    "SELECT count(*) FROM {target} AS t JOIN windsock_stage AS s ON {on} WHERE {}",
                    changed.join(" OR ")
                ))
                .await?;
                if !set.is_empty() && before > 0 {
                    self.exec(&format!(
                        "UPDATE {target} AS t SET {} FROM windsock_stage AS s WHERE {on}",
                        set.join(", ")
                    ))
                    .await?;
                }
                updated = before;
                let new = self
                    .count(&format!(
                        "SELECT count(*) FROM windsock_stage AS s WHERE NOT EXISTS (SELECT 1 FROM {target} AS t WHERE {on})"
                    ))
                    .await?;
                self.exec(&format!(
                    "INSERT INTO {target} ({cols}) SELECT {cols} FROM windsock_stage AS s WHERE NOT EXISTS (SELECT 1 FROM {target} AS t WHERE {on})",
                    cols = names.join(", ")
                ))
                .await?;
                inserted = new;
            }
            Ok::<_, Error>((inserted, updated))
        }
        .await;
        match result {
            Ok((inserted, updated)) => {
                self.exec("COMMIT").await?;
                let total = self
                    .count(&format!("SELECT count(*) FROM {target}"))
                    .await?;
                Ok(LoadResult {
                    table: spec.table.clone(),
                    inserted,
                    updated,
                    total,
                })
            }
            Err(e) => {
                let _ = self.exec("ROLLBACK").await;
                Err(e)
            }
        }
    }

    async fn count(&self, sql: &str) -> Result<u64, Error> {
        let r = self.exec(sql).await?;
        let v = r
            .rows
            .first()
            .and_then(|row| row.first())
            .cloned()
            .unwrap_or(Value::Null);
        Ok(match v {
            Value::Number(n) => n.as_u64().unwrap_or(0),
            Value::String(s) => s.parse().unwrap_or(0),
            _ => 0,
        })
    }
}

impl Warehouse for SnowflakeWarehouse {
    fn query<'a>(&'a self, sql: &'a str) -> BoxFuture<'a, Result<QueryResult, Error>> {
        Box::pin(self.exec(sql))
    }

    fn script<'a>(
        &'a self,
        statements: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<QueryResult>, ScriptError>> {
        Box::pin(async move {
            let last = statements.len().saturating_sub(1);
            let at = |statement| move |error| ScriptError { statement, error };
            // One statement per request (the REST API takes one); the session holds the
            // transaction between them.
            self.exec("BEGIN").await.map_err(at(0))?;
            let mut out = Vec::with_capacity(statements.len());
            for (i, sql) in statements.iter().enumerate() {
                match self.exec(sql).await {
                    Ok(r) => out.push(r),
                    Err(e) => {
                        let _ = self.exec("ROLLBACK").await;
                        return Err(at(i)(e));
                    }
                }
            }
            self.exec("COMMIT").await.map_err(at(last))?;
            Ok(out)
        })
    }

    fn load<'a>(&'a self, spec: &'a LoadSpec) -> BoxFuture<'a, Result<LoadResult, Error>> {
        Box::pin(self.run_load(spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_what_fakesnow_leaves_out_and_keeps_the_rest() {
        let mut login = json!({"success": true, "data": {"token": "t"}});
        complete(&mut login, true);
        assert_eq!(login["data"]["token"], "t");
        assert_eq!(login["data"]["masterToken"], "windsock-master-token");
        assert_eq!(login["data"]["sessionInfo"]["roleName"], "PUBLIC");
        let mut q = json!({"success": true, "data": {"total": 3, "finalRoleName": "SYSADMIN"}});
        complete(&mut q, false);
        assert_eq!(q["data"]["returned"], 3);
        assert_eq!(q["data"]["finalRoleName"], "SYSADMIN");
        let mut err =
            json!({"success": false, "code": "002003", "message": "no table", "data": null});
        complete(&mut err, false);
        assert_eq!(err["data"]["errorCode"], "002003");
        assert_eq!(err["data"]["internalError"], false);
    }

    #[test]
    fn credentials_are_not_in_debug_output() {
        let s = Settings {
            account: "acct".into(),
            user: "me".into(),
            password: Some("hunter2".into()),
            ..Settings::default()
        };
        let text = format!("{s:?}");
        assert!(!text.contains("hunter2") && text.contains("***"), "{text}");
    }

    #[test]
    fn rows_ride_in_a_dollar_quoted_json_array_that_nothing_in_the_data_can_end() {
        let columns = vec![
            ("id".to_string(), "NUMBER(38,0)".to_string()),
            ("note".to_string(), "VARCHAR".to_string()),
        ];
        let rows = vec![
            vec![json!(1), json!("it's $$ \\ \"q\"")],
            vec![json!(2), Value::Null],
        ];
        let sql = insert_json("RAW.T", &columns, &rows);
        assert!(sql.starts_with(
            "INSERT INTO RAW.T (id, note) SELECT value['id']::NUMBER(38,0), value['note']::VARCHAR \
             FROM TABLE(FLATTEN(input => PARSE_JSON($$"
        ));
        let body = &sql[sql.find("$$").unwrap() + 2..sql.rfind("$$").unwrap()];
        assert!(!body.contains('$'), "{body}");
        let back: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            back,
            json!([{"id": 1, "note": "it's $$ \\ \"q\""}, {"id": 2, "note": null}])
        );
    }

    #[test]
    fn statements_are_bounded_by_rows_and_bytes_and_lose_no_row() {
        let small: Vec<Vec<Value>> = (0..12_001).map(|i| vec![json!(i)]).collect();
        let chunks = statement_chunks(&small);
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [5000, 5000, 2001]
        );
        let wide: Vec<Vec<Value>> = (0..100).map(|_| vec![json!("x".repeat(20_000))]).collect();
        let chunks = statement_chunks(&wide);
        assert!(chunks.iter().all(|c| c.len() <= 26), "{:?}", chunks.len());
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 100);
        assert!(statement_chunks(&[]).is_empty());
    }

    #[test]
    fn snowflake_timestamps_read_as_text_in_both_arrow_forms() {
        use arrow_array::{Array, ArrayRef, Int32Array, Int64Array, StructArray};
        use arrow_schema::Field;
        use std::sync::Arc;
        let parts = StructArray::from(vec![
            (
                Arc::new(Field::new("epoch", DataType::Int64, false)),
                Arc::new(Int64Array::from(vec![1_569_888_004])) as ArrayRef,
            ),
            (
                Arc::new(Field::new("fraction", DataType::Int32, false)),
                Arc::new(Int32Array::from(vec![500_000_000])) as ArrayRef,
            ),
        ]);
        let field = Field::new("t", parts.data_type().clone(), true);
        assert_eq!(
            timestamp(&field, &parts, 0).as_deref(),
            Some("2019-10-01 00:00:04.500000")
        );
        let scaled = Int64Array::from(vec![1_569_888_004_000]);
        let field = Field::new("t", DataType::Int64, true)
            .with_metadata([("logicalType", "TIMESTAMP_NTZ"), ("scale", "3")]);
        assert_eq!(
            timestamp(&field, &scaled, 0).as_deref(),
            Some("2019-10-01 00:00:04")
        );
        let plain = Field::new("n", DataType::Int64, true);
        assert_eq!(timestamp(&plain, &scaled, 0), None);
    }
}
