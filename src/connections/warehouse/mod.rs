//! The warehouse: one trait, backends per profile. Under `local` it is an embedded DuckDB
//! database in the state directory (`warehouse.duckdb`).

pub(crate) mod duckdb;
pub(crate) mod snowflake;
pub(crate) mod split;

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use futures_util::future::BoxFuture;

use crate::error::Error;
use crate::ident::{check_column, split_table};
use crate::spec::Profile;

/// SQL dialects, for templates (`warehouse.dialect`) and for the SQL windsock writes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    DuckDb,
    Snowflake,
}

impl Dialect {
    /// The dialect of a profile's warehouse.
    pub(crate) fn of(profile: Profile) -> Dialect {
        match profile {
            Profile::Local => Dialect::DuckDb,
            Profile::Cloud => Dialect::Snowflake,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Dialect::DuckDb => "duckdb",
            Dialect::Snowflake => "snowflake",
        }
    }
}

/// Rows of a statement, as JSON values (small results: for people and for templates).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(crate) struct QueryResult {
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<Vec<serde_json::Value>>,
}

/// A script that failed: which statement (0-based), and why.
#[derive(Debug, Clone)]
pub(crate) struct ScriptError {
    pub(crate) statement: usize,
    pub(crate) error: Error,
}

/// How `load_table` writes into its table.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LoadMode {
    Append,
    Replace,
    Merge,
}

/// What to load where.
#[derive(Debug, Clone)]
pub(crate) struct LoadSpec {
    pub(crate) files: Vec<PathBuf>,
    /// `SCHEMA.TABLE`.
    pub(crate) table: String,
    pub(crate) mode: LoadMode,
    pub(crate) key: Vec<String>,
    /// Rows are written in this order (DuckDB keeps zone maps per row group, so a table
    /// written sorted by event time prunes well on time filters).
    pub(crate) order_by: Vec<String>,
}

/// The names of a load, checked before they are spliced into SQL.
pub(crate) struct LoadNames<'a> {
    pub(crate) schema: &'a str,
    pub(crate) table: &'a str,
    pub(crate) key: Vec<&'a str>,
    pub(crate) order_by: Vec<&'a str>,
}

impl LoadSpec {
    /// The schema, table, key and sort columns, each checked to be a plain identifier.
    pub(crate) fn names(&self) -> Result<LoadNames<'_>, Error> {
        let (schema, table) = split_table(&self.table).map_err(Error::fatal)?;
        fn columns(cols: &[String]) -> Result<Vec<&str>, Error> {
            cols.iter()
                .map(|c| check_column(c))
                .collect::<Result<_, _>>()
                .map_err(Error::fatal)
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
pub(crate) struct LoadResult {
    pub(crate) table: String,
    pub(crate) inserted: u64,
    pub(crate) updated: u64,
    pub(crate) total: u64,
}

/// A warehouse connection.
pub(crate) trait Warehouse: Send + Sync {
    /// Runs one statement; its rows, if it returns any.
    fn query<'a>(&'a self, sql: &'a str) -> BoxFuture<'a, Result<QueryResult, Error>>;
    /// Runs statements in order in one transaction; on failure nothing of them remains and the
    /// error says which statement failed.
    fn script<'a>(
        &'a self,
        statements: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<QueryResult>, ScriptError>>;
    /// Loads files into a table in one transaction: a failed load leaves the table as it was.
    fn load<'a>(&'a self, spec: &'a LoadSpec) -> BoxFuture<'a, Result<LoadResult, Error>>;
}

/// DuckDB allows one process to write a database file, and wants one instance per file in a
/// process: every task of this process shares it.
type OpenDatabases = Vec<(PathBuf, Arc<duckdb::DuckDbWarehouse>)>;

static OPEN: LazyLock<Mutex<OpenDatabases>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// The warehouse of a profile. `local`: DuckDB in `<home>/warehouse.duckdb`; `cloud`: Snowflake,
/// configured by `SNOWFLAKE_*` variables, its queries tagged with `tag`.
pub(crate) fn open(
    profile: Profile,
    home: &Path,
    tag: Option<&str>,
) -> Result<Arc<dyn Warehouse>, Error> {
    match profile {
        Profile::Local => {
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
        Profile::Cloud => {
            let settings = snowflake::Settings::from_env()?;
            Ok(Arc::new(snowflake::SnowflakeWarehouse::connect(
                &settings,
                tag.map(str::to_string),
            )?))
        }
    }
}

/// The profile's warehouse for reading, by a process that may not be the one writing it (the web
/// UI): the instance this process already has open if it has one, else (under `local`) a
/// read-only DuckDB connection that goes away with the returned handle, so that it never keeps a
/// pipeline from writing the file.
pub(crate) fn open_for_reading(profile: Profile, home: &Path) -> Result<Arc<dyn Warehouse>, Error> {
    match profile {
        Profile::Local => {
            let path = std::path::absolute(home.join("warehouse.duckdb"))
                .unwrap_or_else(|_| home.join("warehouse.duckdb"));
            let open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, w)) = open.iter().find(|(p, _)| *p == path) {
                return Ok(w.clone());
            }
            drop(open);
            Ok(Arc::new(duckdb::DuckDbWarehouse::open_read_only(&path)?))
        }
        Profile::Cloud => open(profile, home, Some("windsock ui")),
    }
}

/// Closes every warehouse this process opened. DuckDB writes its database file cleanly only when
/// closed; the CLI calls this before it exits.
pub(crate) fn close_all() {
    OPEN.lock().unwrap_or_else(|p| p.into_inner()).clear();
}
