//! The embedded DuckDB warehouse. DuckDB is synchronous; statements run on a blocking thread,
//! one at a time per database (DuckDB serializes writers anyway).

use std::path::Path;
use std::sync::Arc;

use duckdb::types::Value;

use futures_util::future::BoxFuture;

use super::{LoadMode, LoadNames, LoadResult, LoadSpec, QueryResult, ScriptError, Warehouse};
use crate::error::{Class, Error};
use crate::ident::check_column;

pub(crate) struct DuckDbWarehouse {
    /// An async lock: statements queue here without taking a thread each, so a thousand
    /// sensors poking the warehouse need one blocking thread, not a thousand.
    conn: Arc<tokio::sync::Mutex<duckdb::Connection>>,
}

/// A DuckDB error: transient when another process holds the database file (it may let go),
/// fatal otherwise (SQL errors).
fn err(e: duckdb::Error) -> Error {
    let message = e.to_string();
    let locked = message.contains("Could not set lock") || message.contains("Conflicting lock");
    Error::new(
        if locked {
            Class::Transient
        } else {
            Class::Fatal
        },
        message,
    )
}

impl DuckDbWarehouse {
    pub(crate) fn open(path: &Path) -> Result<DuckDbWarehouse, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::fatal(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = duckdb::Connection::open(path).map_err(|e| {
            err(e).context(format_args!(
                "cannot open the DuckDB warehouse {}",
                path.display()
            ))
        })?;
        Ok(DuckDbWarehouse {
            conn: Arc::new(tokio::sync::Mutex::new(conn)),
        })
    }

    /// The database opened for reading only, by a process that does not write it (the web UI):
    /// nothing is created, and a process that writes it can still open it once this is dropped.
    pub(crate) fn open_read_only(path: &Path) -> Result<DuckDbWarehouse, Error> {
        if !path.exists() {
            return Err(Error::fatal(format!(
                "there is no warehouse yet at {}: run a pipeline first",
                path.display()
            )));
        }
        let config = duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .map_err(err)?;
        let conn = duckdb::Connection::open_with_flags(path, config).map_err(|e| {
            let e = err(e);
            if e.is_transient() {
                Error::transient(format!(
                    "the warehouse {} is in use by another windsock process (DuckDB lets one process write it): serve the UI from the scheduler (windsock scheduler --ui), or try again when that process is done",
                    path.display()
                ))
            } else {
                e.context(format_args!("cannot open the DuckDB warehouse {}", path.display()))
            }
        })?;
        Ok(DuckDbWarehouse {
            conn: Arc::new(tokio::sync::Mutex::new(conn)),
        })
    }

    /// Runs `f` on a blocking thread once the connection is free. `stopped` turns a thread
    /// that ended without an answer into the caller's error type.
    fn blocking<'a, T: Send + 'static, E: Send + 'static>(
        &'a self,
        f: impl FnOnce(&mut duckdb::Connection) -> Result<T, E> + Send + 'static,
        stopped: impl FnOnce(Error) -> E + Send + 'a,
    ) -> BoxFuture<'a, Result<T, E>> {
        let conn = self.conn.clone();
        Box::pin(async move {
            let mut guard = conn.lock_owned().await;
            tokio::task::spawn_blocking(move || f(&mut guard))
                .await
                .map_err(|e| {
                    stopped(Error::transient(format!(
                        "the warehouse thread stopped: {e}"
                    )))
                })?
        })
    }
}

fn to_json(v: Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Boolean(b) => J::Bool(b),
        Value::TinyInt(i) => J::from(i),
        Value::SmallInt(i) => J::from(i),
        Value::Int(i) => J::from(i),
        Value::BigInt(i) => J::from(i),
        Value::HugeInt(i) => i64::try_from(i)
            .map(J::from)
            .unwrap_or_else(|_| J::String(i.to_string())),
        Value::UHugeInt(i) => u64::try_from(i)
            .map(J::from)
            .unwrap_or_else(|_| J::String(i.to_string())),
        Value::UTinyInt(i) => J::from(i),
        Value::USmallInt(i) => J::from(i),
        Value::UInt(i) => J::from(i),
        Value::UBigInt(i) => J::from(i),
        Value::Float(f) => serde_json::Number::from_f64(f64::from(f))
            .map(J::Number)
            .unwrap_or(J::Null),
        Value::Double(f) => serde_json::Number::from_f64(f)
            .map(J::Number)
            .unwrap_or(J::Null),
        Value::Decimal(d) => {
            let s = d.to_string();
            s.parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(J::Number)
                .unwrap_or(J::String(s))
        }
        Value::Timestamp(unit, v) => {
            let micros = match unit {
                duckdb::types::TimeUnit::Second => v * 1_000_000,
                duckdb::types::TimeUnit::Millisecond => v * 1_000,
                duckdb::types::TimeUnit::Microsecond => v,
                duckdb::types::TimeUnit::Nanosecond => v / 1_000,
            };
            chrono::DateTime::from_timestamp_micros(micros)
                .map(|t| J::String(t.format("%Y-%m-%d %H:%M:%S").to_string()))
                .unwrap_or(J::Null)
        }
        Value::Date32(d) => {
            let date = chrono::NaiveDate::default() + chrono::Duration::days(i64::from(d));
            J::String(date.format("%Y-%m-%d").to_string())
        }
        Value::Text(s) | Value::Enum(s) => J::String(s),
        Value::List(items) | Value::Array(items) => {
            J::Array(items.into_iter().map(to_json).collect())
        }
        other => J::String(format!("{other:?}")),
    }
}

fn run_query(c: &duckdb::Connection, sql: &str) -> Result<QueryResult, Error> {
    let mut stmt = c.prepare(sql).map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    let mut out = QueryResult::default();
    while let Some(row) = rows.next().map_err(err)? {
        if out.columns.is_empty() {
            out.columns = row.as_ref().column_names();
        }
        let n = out.columns.len();
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            values.push(to_json(row.get::<_, Value>(i).map_err(err)?));
        }
        out.rows.push(values);
    }
    drop(rows);
    if out.columns.is_empty() {
        out.columns = stmt.column_names();
    }
    Ok(out)
}

/// (name, type) of each column a DESCRIBE statement lists.
fn described_columns(c: &duckdb::Connection, sql: &str) -> Result<Vec<(String, String)>, Error> {
    Ok(run_query(c, sql)?
        .rows
        .into_iter()
        .filter_map(|row| match (row.first(), row.get(1)) {
            (Some(serde_json::Value::String(n)), Some(serde_json::Value::String(t))) => {
                Some((n.clone(), t.clone()))
            }
            _ => None,
        })
        .collect())
}

fn count(c: &duckdb::Connection, sql: &str) -> Result<u64, Error> {
    c.query_row(sql, [], |r| r.get::<_, i64>(0))
        .map(|n| n.max(0) as u64)
        .map_err(err)
}

fn load(c: &mut duckdb::Connection, spec: &LoadSpec) -> Result<LoadResult, Error> {
    let LoadNames {
        schema,
        table,
        key,
        order_by,
    } = spec.names()?;
    let files: Vec<String> = spec
        .files
        .iter()
        .map(|f| format!("'{}'", f.display().to_string().replace('\'', "''")))
        .collect();
    let parquet = spec
        .files
        .iter()
        .all(|f| f.extension().is_some_and(|e| e == "parquet"));
    let source = if parquet {
        format!("read_parquet([{}], union_by_name = true)", files.join(", "))
    } else {
        format!(
            "read_csv([{}], header = true, union_by_name = true)",
            files.join(", ")
        )
    };
    let target = format!("{schema}.{table}");
    let order = if order_by.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", order_by.join(", "))
    };
    c.execute_batch(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .map_err(err)?;
    let tx = c.transaction().map_err(err)?;
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {target} AS SELECT * FROM {source} LIMIT 0"
    ))
    .map_err(err)?;
    // Columns the input has and the table lacks are added (RAW.EVENTS loaded by the batch DAG,
    // then landed from Kafka with its metadata columns); existing rows get nulls there.
    let have: Vec<(String, String)> = described_columns(&tx, &format!("DESCRIBE {target}"))?
        .into_iter()
        .map(|(name, ty)| (name.to_ascii_lowercase(), ty))
        .collect();
    for (name, ty) in described_columns(&tx, &format!("DESCRIBE SELECT * FROM {source}"))? {
        let name = check_column(&name).map_err(Error::fatal)?;
        match have.iter().find(|(n, _)| *n == name.to_ascii_lowercase()) {
            None => {
                tx.execute_batch(&format!("ALTER TABLE {target} ADD COLUMN {name} {ty}"))
                    .map_err(err)?;
            }
            // Instants land as UTC TIMESTAMPs, which need no time-zone extension; tables that
            // an earlier windsock made with TIMESTAMPTZ are converted (the same instants).
            Some((_, old)) if old == "TIMESTAMP WITH TIME ZONE" && ty == "TIMESTAMP" => {
                tx.execute_batch(&format!(
                    "ALTER TABLE {target} ALTER COLUMN {name} SET DATA TYPE TIMESTAMP \
                     USING make_timestamp(epoch_us({name}))"
                ))
                .map_err(err)?;
            }
            Some(_) => {}
        }
    }
    let (inserted, updated) = match spec.mode {
        LoadMode::Append => {
            let n = tx
                .execute(
                    &format!("INSERT INTO {target} BY NAME SELECT * FROM {source}{order}"),
                    [],
                )
                .map_err(err)?;
            (n as u64, 0)
        }
        LoadMode::Replace => {
            tx.execute(&format!("DELETE FROM {target}"), [])
                .map_err(err)?;
            let n = tx
                .execute(
                    &format!("INSERT INTO {target} BY NAME SELECT * FROM {source}{order}"),
                    [],
                )
                .map_err(err)?;
            (n as u64, 0)
        }
        LoadMode::Merge => {
            tx.execute_batch(&format!(
                "CREATE OR REPLACE TEMP TABLE windsock_stage AS SELECT * FROM {source}"
            ))
            .map_err(err)?;
            let on: Vec<String> = key.iter().map(|k| format!("t.{k} = s.{k}")).collect();
            let on = on.join(" AND ");
            let cols = run_query(&tx, "SELECT * FROM windsock_stage LIMIT 0")?.columns;
            let set: Vec<String> = cols
                .iter()
                .filter(|c| !key.contains(&c.as_str()))
                .map(|c| format!("{c} = s.{c}"))
                .collect();
            let updated = if set.is_empty() {
                0
            } else {
                tx.execute(
                    &format!(
                        "UPDATE {target} AS t SET {} FROM windsock_stage AS s WHERE {on} AND ({})",
                        set.join(", "),
                        cols.iter()
                            .filter(|c| !key.contains(&c.as_str()))
                            .map(|c| format!("t.{c} IS DISTINCT FROM s.{c}"))
                            .collect::<Vec<_>>()
                            .join(" OR ")
                    ),
                    [],
                )
                .map_err(err)? as u64
            };
            let inserted = tx
                .execute(
                    &format!(
                        "INSERT INTO {target} BY NAME SELECT * FROM windsock_stage AS s
                         WHERE NOT EXISTS (SELECT 1 FROM {target} AS t WHERE {on}){order}"
                    ),
                    [],
                )
                .map_err(err)? as u64;
            tx.execute_batch("DROP TABLE windsock_stage").map_err(err)?;
            (inserted, updated)
        }
    };
    let total = count(&tx, &format!("SELECT count(*) FROM {target}"))?;
    tx.commit().map_err(err)?;
    // Write the load into the database file now rather than leaving it in the WAL.
    c.execute_batch("CHECKPOINT").map_err(err)?;
    Ok(LoadResult {
        table: spec.table.clone(),
        inserted,
        updated,
        total,
    })
}

impl Warehouse for DuckDbWarehouse {
    fn query<'a>(&'a self, sql: &'a str) -> BoxFuture<'a, Result<QueryResult, Error>> {
        let sql = sql.to_string();
        self.blocking(move |c| run_query(c, &sql), |e| e)
    }

    fn load<'a>(&'a self, spec: &'a LoadSpec) -> BoxFuture<'a, Result<LoadResult, Error>> {
        let spec = spec.clone();
        self.blocking(move |c| load(c, &spec), |e| e)
    }

    fn script<'a>(
        &'a self,
        statements: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<QueryResult>, ScriptError>> {
        let statements = statements.to_vec();
        let last = statements.len().saturating_sub(1);
        self.blocking(
            move |c| {
                // A failure outside any one statement (begin, commit) is laid on the last one.
                let whole = |error| ScriptError {
                    statement: last,
                    error,
                };
                let tx = c.transaction().map_err(|e| whole(err(e)))?;
                let mut out = Vec::with_capacity(statements.len());
                for (i, sql) in statements.iter().enumerate() {
                    // Dropping the transaction on an error rolls it back.
                    let r = run_query(&tx, sql).map_err(|error| ScriptError {
                        statement: i,
                        error,
                    })?;
                    out.push(r);
                }
                tx.commit().map_err(|e| whole(err(e)))?;
                c.execute_batch("CHECKPOINT").map_err(|e| whole(err(e)))?;
                Ok(out)
            },
            move |error| ScriptError {
                statement: last,
                error,
            },
        )
    }
}
