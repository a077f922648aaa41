//! The warehouse: one trait, backends per profile. Under `local` it is an embedded DuckDB
//! database in the state directory (`warehouse.duckdb`).

pub mod duckdb;
pub mod snowflake;
pub mod split;

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use crate::operators::BoxFuture;

/// SQL dialects, for templates (`warehouse.dialect`) and for the SQL windsock writes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    DuckDb,
    Snowflake,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::DuckDb => "duckdb",
            Dialect::Snowflake => "snowflake",
        }
    }
}

/// Rows of a statement, as JSON values (small results: for people and for templates).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct WarehouseError {
    pub message: String,
    /// Whether another try may succeed (a lock, a lost connection), not a SQL error.
    pub transient: bool,
    /// In a script, the index of the statement that failed.
    pub statement: Option<usize>,
}

impl WarehouseError {
    pub fn sql(message: impl Into<String>) -> Self {
        WarehouseError {
            message: message.into(),
            transient: false,
            statement: None,
        }
    }
}

/// How `load_table` writes into its table.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LoadMode {
    Append,
    Replace,
    Merge,
}

/// What to load where.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub files: Vec<PathBuf>,
    /// `SCHEMA.TABLE`.
    pub table: String,
    pub mode: LoadMode,
    pub key: Vec<String>,
    /// Rows are written in this order (DuckDB keeps zone maps per row group, so a table
    /// written sorted by event time prunes well on time filters).
    pub order_by: Vec<String>,
}

/// The names of a load, checked before they are spliced into SQL.
pub struct LoadNames<'a> {
    pub schema: &'a str,
    pub table: &'a str,
    pub key: Vec<&'a str>,
    pub order_by: Vec<&'a str>,
}

impl LoadSpec {
    /// The schema, table, key and sort columns, each checked to be a plain identifier.
    pub fn names(&self) -> Result<LoadNames<'_>, WarehouseError> {
        let (schema, table) = split_table(&self.table).map_err(WarehouseError::sql)?;
        fn columns(cols: &[String]) -> Result<Vec<&str>, WarehouseError> {
            cols.iter()
                .map(|c| check_column(c))
                .collect::<Result<_, _>>()
                .map_err(WarehouseError::sql)
        }
        Ok(LoadNames {
            schema,
            table,
            key: columns(&self.key)?,
            order_by: columns(&self.order_by)?,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LoadResult {
    pub table: String,
    pub inserted: u64,
    pub updated: u64,
    pub total: u64,
}

/// A warehouse connection.
pub trait Warehouse: Send + Sync {
    fn dialect(&self) -> Dialect;
    /// Runs one statement; its rows, if it returns any.
    fn query<'a>(&'a self, sql: &'a str) -> BoxFuture<'a, Result<QueryResult, WarehouseError>>;
    /// Runs statements in order in one transaction; on failure nothing of them remains and the
    /// error says which statement failed.
    fn script<'a>(
        &'a self,
        statements: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<QueryResult>, WarehouseError>>;
    /// Loads files into a table in one transaction: a failed load leaves the table as it was.
    fn load<'a>(&'a self, spec: &'a LoadSpec) -> BoxFuture<'a, Result<LoadResult, WarehouseError>>;
}

/// DuckDB allows one process to write a database file, and wants one instance per file in a
/// process: every task of this process shares it.
type OpenDatabases = Vec<(PathBuf, Arc<duckdb::DuckDbWarehouse>)>;

static OPEN: LazyLock<Mutex<OpenDatabases>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// The warehouse of a profile. `local`: DuckDB in `<home>/warehouse.duckdb`; `cloud`: Snowflake,
/// configured by `SNOWFLAKE_*` variables, its queries tagged with `tag`.
pub fn open(
    profile: &str,
    home: &Path,
    tag: Option<&str>,
) -> Result<Arc<dyn Warehouse>, WarehouseError> {
    match profile {
        "local" => {
            let path = std::path::absolute(home.join("warehouse.duckdb"))
                .unwrap_or_else(|_| home.join("warehouse.duckdb"));
            let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, w)) = open.iter().find(|(p, _)| *p == path) {
                return Ok(w.clone());
            }
            let w = Arc::new(duckdb::DuckDbWarehouse::open(&path)?);
            open.push((path, w.clone()));
            Ok(w)
        }
        "cloud" => {
            let settings = snowflake::Settings::from_env()?;
            Ok(Arc::new(snowflake::SnowflakeWarehouse::connect(
                &settings,
                tag.map(str::to_string),
            )?))
        }
        other => Err(WarehouseError::sql(format!(
            "the `{other}` profile has no warehouse"
        ))),
    }
}

/// Closes every warehouse this process opened. DuckDB writes its database file cleanly only when
/// closed; the CLI calls this before it exits.
pub fn close_all() {
    OPEN.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// Splits `SCHEMA.TABLE`, checking both are plain identifiers (they are spliced into SQL).
pub fn split_table(table: &str) -> Result<(&str, &str), String> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    match table.split_once('.') {
        Some((s, t)) if ok(s) && ok(t) => Ok((s, t)),
        _ => Err(format!(
            "`table` must be SCHEMA.TABLE with letters, digits and `_`, not `{table}`"
        )),
    }
}

/// Checks a column name before it is spliced into SQL.
pub fn check_column(c: &str) -> Result<&str, String> {
    if !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
        Ok(c)
    } else {
        Err(format!("invalid column name `{c}`"))
    }
}
