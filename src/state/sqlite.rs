//! The embedded state store: one SQLite database in WAL mode.
//!
//! Every state change is its own short transaction, so a process killed at any point leaves the
//! database consistent; SQLite's journal makes a half-written transaction vanish on the next open.
//!
//! One file: the one implementation of the `StateStore` trait over SQLite, a method per trait
//! method, and its migrations.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::*;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: runs, task instances, tries.
    r#"
    CREATE TABLE dag_runs (
        run_id              TEXT PRIMARY KEY,
        dag                 TEXT NOT NULL,
        run_key             TEXT NOT NULL,
        partition_key       TEXT,
        logical_date        TEXT NOT NULL,
        data_interval_start TEXT NOT NULL,
        data_interval_end   TEXT NOT NULL,
        trigger             TEXT NOT NULL,
        state               TEXT NOT NULL,
        created_at          TEXT NOT NULL,
        started_at          TEXT,
        ended_at            TEXT,
        pipeline_file       TEXT NOT NULL
    );
    -- Scheduled and backfill runs are unique per DAG and partition/interval: the database, not a
    -- check-then-insert, guarantees no double run. Manual runs may repeat a partition.
    CREATE UNIQUE INDEX dag_runs_unique_key ON dag_runs (dag, run_key)
        WHERE trigger IN ('scheduled', 'backfill');
    CREATE INDEX dag_runs_by_dag ON dag_runs (dag, created_at);
    CREATE TABLE task_instances (
        run_id      TEXT NOT NULL REFERENCES dag_runs (run_id) ON DELETE CASCADE,
        task        TEXT NOT NULL,
        state       TEXT NOT NULL,
        try_number  INTEGER NOT NULL DEFAULT 0,
        first_try   INTEGER NOT NULL DEFAULT 1,
        next_try_at TEXT,
        started_at  TEXT,
        ended_at    TEXT,
        duration_ms INTEGER,
        output      TEXT,
        error       TEXT,
        log_path    TEXT,
        PRIMARY KEY (run_id, task)
    );
    CREATE TABLE task_tries (
        run_id     TEXT NOT NULL,
        task       TEXT NOT NULL,
        try_number INTEGER NOT NULL,
        state      TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at   TEXT,
        error      TEXT,
        log_path   TEXT NOT NULL,
        PRIMARY KEY (run_id, task, try_number),
        FOREIGN KEY (run_id, task) REFERENCES task_instances (run_id, task) ON DELETE CASCADE
    );
    "#,
    // 2: run ownership (a lease renewed by the executing process), paused DAGs, try pids.
    r#"
    ALTER TABLE dag_runs ADD COLUMN owner TEXT;
    ALTER TABLE dag_runs ADD COLUMN lease_expires_at TEXT;
    CREATE INDEX dag_runs_active ON dag_runs (state) WHERE state IN ('queued', 'running');
    ALTER TABLE task_tries ADD COLUMN pid INTEGER;
    CREATE TABLE dag_state (
        dag        TEXT PRIMARY KEY,
        paused     INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL
    );
    "#,
    // 3: whether a try was cut short by windsock (a stop, a crash) rather than by the task; such
    // tries were recognised by their error text before.
    r#"
    ALTER TABLE task_tries ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;
    UPDATE task_tries SET interrupted = 1 WHERE error LIKE 'interrupted%';
    "#,
    // 4: what each try ran (for the web UI), and partitions looked up by DAG without a scan.
    r#"
    ALTER TABLE task_tries ADD COLUMN rendered TEXT;
    CREATE INDEX dag_runs_by_partition ON dag_runs (dag, partition_key, created_at)
        WHERE partition_key IS NOT NULL;
    "#,
    // 5: tries held by a process under a lease (task-level claims).
    r#"
    ALTER TABLE task_instances ADD COLUMN owner TEXT;
    ALTER TABLE task_instances ADD COLUMN lease_expires_at TEXT;
    "#,
];

pub(crate) struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

fn ctx(context: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |source| {
        if is_busy(&source) {
            StoreError::Busy {
                context: context.to_string(),
            }
        } else {
            StoreError::Sqlite {
                context: context.to_string(),
                source,
            }
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database and applies pending migrations.
    pub(crate) fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(ctx("opening the database"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(ctx("setting the busy timeout"))?;
        // WAL is a property of the file: set once, by whichever process creates the database.
        // Switching needs a moment alone with it, so a process racing another one retries.
        let mut tries = 0;
        loop {
            let mode: rusqlite::Result<String> =
                conn.query_row("PRAGMA journal_mode", [], |r| r.get(0));
            match mode {
                Ok(m) if m.eq_ignore_ascii_case("wal") => break,
                Ok(_) => match conn.pragma_update(None, "journal_mode", "WAL") {
                    Ok(()) => break,
                    Err(e) if tries < 100 && is_busy(&e) => {}
                    Err(e) => return Err(ctx("enabling WAL")(e)),
                },
                Err(e) if tries < 100 && is_busy(&e) => {}
                Err(e) => return Err(ctx("reading the journal mode")(e)),
            }
            tries += 1;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // NORMAL in WAL mode: a committed transaction survives a process crash; only a power
        // loss may drop the last commits, never corrupt the file.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(ctx("setting synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(ctx("enabling foreign keys"))?;
        let store = SqliteStore {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(ctx("reading the schema version"))?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(StoreError::NewerSchema {
                path: self.path.display().to_string(),
                found: version,
                supported,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(ctx("starting a migration"))?;
            // Another process may have migrated while we waited for the write lock.
            let now: i64 = tx
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(ctx("reading the schema version"))?;
            if now > i as i64 {
                continue;
            }
            tx.execute_batch(sql).map_err(ctx("applying a migration"))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(ctx("recording the schema version"))?;
            tx.commit().map_err(ctx("committing a migration"))?;
        }
        Ok(())
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn parse_enum<T: FromStr<Err = String>>(s: &str) -> Result<T> {
    s.parse().map_err(StoreError::Corrupt)
}

const RUN_COLUMNS: &str = "run_id, dag, run_key, partition_key, logical_date, data_interval_start, data_interval_end, trigger, state, created_at, started_at, ended_at, pipeline_file, owner, lease_expires_at";

/// A text column parsed into `T`; a bad value is a conversion error naming the column.
fn parsed<T>(r: &Row<'_>, i: usize, parse: impl FnOnce(&str) -> Result<T>) -> rusqlite::Result<T> {
    let text: String = r.get(i)?;
    parse(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn parsed_opt<T>(
    r: &Row<'_>,
    i: usize,
    parse: impl FnOnce(&str) -> Result<T>,
) -> rusqlite::Result<Option<T>> {
    match r.get::<_, Option<String>>(i)? {
        None => Ok(None),
        Some(_) => parsed(r, i, parse).map(Some),
    }
}

fn run_row(r: &Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        run_id: r.get(0)?,
        dag: r.get(1)?,
        run_key: r.get(2)?,
        partition: r.get(3)?,
        logical_date: parsed(r, 4, parse_ts)?,
        data_interval_start: parsed(r, 5, parse_ts)?,
        data_interval_end: parsed(r, 6, parse_ts)?,
        trigger: parsed(r, 7, parse_enum)?,
        state: parsed(r, 8, parse_enum)?,
        created_at: parsed(r, 9, parse_ts)?,
        started_at: parsed_opt(r, 10, parse_ts)?,
        ended_at: parsed_opt(r, 11, parse_ts)?,
        pipeline_file: r.get(12)?,
        owner: r.get(13)?,
        lease_expires_at: parsed_opt(r, 14, parse_ts)?,
    })
}

const TI_COLUMNS: &str = "run_id, task, state, try_number, first_try, next_try_at, started_at, ended_at, duration_ms, output, error, log_path, owner, lease_expires_at";

fn ti_row(r: &Row<'_>) -> rusqlite::Result<TaskInstance> {
    Ok(TaskInstance {
        run_id: r.get(0)?,
        task: r.get(1)?,
        state: parsed(r, 2, parse_enum)?,
        try_number: r.get(3)?,
        first_try: r.get(4)?,
        next_try_at: parsed_opt(r, 5, parse_ts)?,
        started_at: parsed_opt(r, 6, parse_ts)?,
        ended_at: parsed_opt(r, 7, parse_ts)?,
        duration_ms: r.get(8)?,
        output: parsed_opt(r, 9, |s| {
            serde_json::from_str(s).map_err(|_| StoreError::Corrupt("a task's output".into()))
        })?,
        error: r.get(10)?,
        log_path: r.get(11)?,
        owner: r.get(12)?,
        lease_expires_at: parsed_opt(r, 13, parse_ts)?,
    })
}

/// Every row of a query, converted.
fn collect<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    what: &str,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare(sql).map_err(ctx(what))?;
    let rows = stmt.query_map(params, row).map_err(ctx(what))?;
    rows.collect::<rusqlite::Result<Vec<T>>>()
        .map_err(ctx(what))
}

impl StateStore for SqliteStore {
    fn create_run(&self, run: &NewRun, tasks: &[String]) -> Result<RunRecord> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(ctx("creating a run"))?;
        let now = ts(Utc::now());
        let inserted = tx.execute(
            &format!("INSERT INTO dag_runs ({RUN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'queued', ?9, NULL, NULL, ?10, ?11, ?12)"),
            params![
                run.run_id,
                run.dag,
                run.run_key,
                run.partition,
                ts(run.logical_date),
                ts(run.data_interval_start),
                ts(run.data_interval_end),
                run.trigger.as_str(),
                now,
                run.pipeline_file,
                run.owner.as_ref().map(|o| o.id.clone()),
                run.owner.as_ref().map(|o| ts(Utc::now() + o.lease_chrono()))
            ],
        );
        if let Err(rusqlite::Error::SqliteFailure(e, _)) = &inserted
            && e.code == rusqlite::ErrorCode::ConstraintViolation
        {
            let same_id: bool = tx
                .query_row(
                    "SELECT count(*) > 0 FROM dag_runs WHERE run_id = ?1",
                    params![run.run_id],
                    |r| r.get(0),
                )
                .map_err(ctx("looking up an existing run"))?;
            if same_id {
                return Err(StoreError::RunIdTaken(run.run_id.clone()));
            }
            {
                let existing: Option<String> = tx
                    .query_row(
                        "SELECT run_id FROM dag_runs WHERE dag = ?1 AND run_key = ?2 AND trigger IN ('scheduled', 'backfill')",
                        params![run.dag, run.run_key],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(ctx("looking up an existing run"))?;
                return Err(StoreError::RunExists {
                    dag: run.dag.clone(),
                    key: run.run_key.clone(),
                    run_id: existing.unwrap_or_else(|| run.run_id.clone()),
                });
            }
        }
        inserted.map_err(ctx("creating a run"))?;
        for task in tasks {
            tx.execute(
                "INSERT INTO task_instances (run_id, task, state) VALUES (?1, ?2, 'queued')",
                params![run.run_id, task],
            )
            .map_err(ctx("creating task instances"))?;
        }
        let rec = tx
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM dag_runs WHERE run_id = ?1"),
                params![run.run_id],
                run_row,
            )
            .map_err(ctx("reading the new run"))?;
        tx.commit().map_err(ctx("creating a run"))?;
        Ok(rec)
    }

    fn run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let conn = self.conn();
        conn.query_row(
            &format!("SELECT {RUN_COLUMNS} FROM dag_runs WHERE run_id = ?1"),
            params![run_id],
            run_row,
        )
        .optional()
        .map_err(ctx("reading a run"))
    }

    fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let conn = self.conn();
        let limit = filter.limit.map(|l| l as i64).unwrap_or(-1);
        // Only the conditions that apply, so that SQLite walks the (dag, created_at) index
        // newest first and stops at the limit: a page of 10,000 runs' history stays fast.
        let mut conditions = Vec::new();
        if filter.dag.is_some() {
            conditions.push("dag = ?1");
        }
        if filter.state.is_some() {
            conditions.push("state = ?2");
        }
        let filter_sql = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        collect(
            &conn,
            &format!(
                "SELECT {RUN_COLUMNS} FROM dag_runs {filter_sql}
                 ORDER BY created_at DESC, run_id DESC LIMIT ?3"
            ),
            params![filter.dag, filter.state.map(|s| s.as_str()), limit],
            run_row,
            "listing runs",
        )
    }

    fn set_run_state(&self, run_id: &str, state: RunState) -> Result<()> {
        let conn = self.conn();
        let now = ts(Utc::now());
        let n = conn
            .execute(
                "UPDATE dag_runs SET state = ?2,
                    started_at = CASE WHEN ?2 = 'running' THEN COALESCE(started_at, ?3) ELSE started_at END,
                    ended_at = CASE WHEN ?2 IN ('success', 'failed') THEN ?3 ELSE NULL END
                 WHERE run_id = ?1",
                params![run_id, state.as_str(), now],
            )
            .map_err(ctx("updating a run"))?;
        if n == 0 {
            return Err(StoreError::NoSuchRun(run_id.to_string()));
        }
        Ok(())
    }

    fn finish_run(&self, run_id: &str, tasks: &[String]) -> Result<Option<RunState>> {
        let conn = self.conn();
        let tasks = serde_json::to_string(tasks).unwrap_or_default();
        let state: Option<String> = conn
            .query_row(
                "UPDATE dag_runs SET
                    state = CASE WHEN EXISTS (SELECT 1 FROM task_instances
                                 WHERE run_id = ?1 AND task IN (SELECT value FROM json_each(?3))
                                   AND state NOT IN ('success', 'skipped'))
                            THEN 'failed' ELSE 'success' END,
                    ended_at = ?2
                 WHERE run_id = ?1 AND NOT EXISTS (SELECT 1 FROM task_instances
                     WHERE run_id = ?1 AND task IN (SELECT value FROM json_each(?3))
                       AND state NOT IN ('success', 'failed', 'upstream_failed', 'skipped'))
                 RETURNING state",
                params![run_id, ts(Utc::now()), tasks],
                |r| r.get(0),
            )
            .optional()
            .map_err(ctx("ending a run"))?;
        state.as_deref().map(parse_enum).transpose()
    }

    fn ensure_tasks(&self, run_id: &str, tasks: &[String]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(ctx("adding task instances"))?;
        for task in tasks {
            tx.execute(
                "INSERT OR IGNORE INTO task_instances (run_id, task, state) VALUES (?1, ?2, 'queued')",
                params![run_id, task],
            )
            .map_err(ctx("adding task instances"))?;
        }
        tx.commit().map_err(ctx("adding task instances"))
    }

    fn task_instances(&self, run_id: &str) -> Result<Vec<TaskInstance>> {
        let conn = self.conn();
        collect(
            &conn,
            &format!("SELECT {TI_COLUMNS} FROM task_instances WHERE run_id = ?1 ORDER BY rowid"),
            params![run_id],
            ti_row,
            "reading task instances",
        )
    }

    fn start_try(
        &self,
        run_id: &str,
        task: &str,
        try_number: u32,
        log_path: &str,
        owner: Option<&Owner>,
    ) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(ctx("starting a try"))?;
        let now = Utc::now();
        let claimed = tx
            .execute(
                "UPDATE task_instances SET state = 'running', try_number = ?3, next_try_at = NULL,
                    started_at = ?4, ended_at = NULL, duration_ms = NULL, error = NULL,
                    log_path = ?5, owner = ?6, lease_expires_at = ?7
                 WHERE run_id = ?1 AND task = ?2 AND try_number = ?3 - 1
                   AND state IN ('queued', 'up_for_retry', 'deferred')",
                params![
                    run_id,
                    task,
                    try_number,
                    ts(now),
                    log_path,
                    owner.map(|o| o.id.clone()),
                    owner.map(|o| ts(now + o.lease_chrono()))
                ],
            )
            .map_err(ctx("starting a try"))?;
        if claimed == 0 {
            return Ok(false);
        }
        tx.execute(
            "INSERT OR REPLACE INTO task_tries (run_id, task, try_number, state, started_at, log_path)
             VALUES (?1, ?2, ?3, 'running', ?4, ?5)",
            params![run_id, task, try_number, ts(now), log_path],
        )
        .map_err(ctx("starting a try"))?;
        tx.commit().map_err(ctx("starting a try"))?;
        Ok(true)
    }

    fn finish_try(
        &self,
        run_id: &str,
        task: &str,
        try_number: u32,
        outcome: &TryOutcome,
        owner: Option<&Owner>,
    ) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(ctx("finishing a try"))?;
        let now = Utc::now();
        let output = outcome.output.as_ref().map(|o| o.to_string());
        let n = tx
            .execute(
                "UPDATE task_instances SET state = ?3, ended_at = ?4,
                    duration_ms = CAST((julianday(?4) - julianday(started_at)) * 86400000 AS INTEGER),
                    output = COALESCE(?5, output), error = ?6, next_try_at = ?7,
                    first_try = first_try + ?8, owner = NULL, lease_expires_at = NULL
                 WHERE run_id = ?1 AND task = ?2 AND try_number = ?9 AND state = 'running'
                   AND owner IS ?10",
                params![
                    run_id,
                    task,
                    outcome.task_state.as_str(),
                    ts(now),
                    output,
                    outcome.error,
                    outcome.next_try_at.map(ts),
                    outcome.refund_try as i64,
                    try_number,
                    owner.map(|o| o.id.clone())
                ],
            )
            .map_err(ctx("finishing a try"))?;
        if n == 0 {
            // Recorded already by an earlier call whose answer was lost: the same end stands.
            let recorded: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM task_instances AS i JOIN task_tries AS t USING (run_id, task)
                     WHERE i.run_id = ?1 AND i.task = ?2 AND i.try_number = ?3
                       AND t.try_number = ?3 AND i.state = ?4 AND t.state = ?5
                       AND t.ended_at IS NOT NULL AND i.error IS ?6 AND i.owner IS NULL",
                    params![
                        run_id,
                        task,
                        try_number,
                        outcome.task_state.as_str(),
                        outcome.try_state().as_str(),
                        outcome.error
                    ],
                    |r| r.get(0),
                )
                .optional()
                .map_err(ctx("finishing a try"))?;
            return Ok(recorded.is_some());
        }
        tx.execute(
            "UPDATE task_tries SET state = ?4, ended_at = ?5, error = ?6, interrupted = ?7
             WHERE run_id = ?1 AND task = ?2 AND try_number = ?3",
            params![
                run_id,
                task,
                try_number,
                outcome.try_state().as_str(),
                ts(now),
                outcome.error,
                outcome.interrupted
            ],
        )
        .map_err(ctx("finishing a try"))?;
        tx.commit().map_err(ctx("finishing a try"))?;
        Ok(true)
    }

    fn renew_tries(&self, run_id: &str, owner: &Owner) -> Result<Vec<String>> {
        let conn = self.conn();
        collect(
            &conn,
            "UPDATE task_instances SET lease_expires_at = ?3
             WHERE run_id = ?1 AND owner = ?2 AND state = 'running' RETURNING task",
            params![run_id, owner.id, ts(Utc::now() + owner.lease_chrono())],
            |r| r.get::<_, String>(0),
            "renewing the leases of tries",
        )
    }

    fn take_over_try(
        &self,
        run_id: &str,
        task: &str,
        try_number: u32,
        owner: &Owner,
        is_dead: &dyn Fn(&str) -> bool,
    ) -> Result<bool> {
        let conn = self.conn();
        let now = Utc::now();
        let current: Option<(Option<String>, Option<String>)> = conn
            .query_row(
                "SELECT owner, lease_expires_at FROM task_instances
                 WHERE run_id = ?1 AND task = ?2 AND try_number = ?3 AND state = 'running'",
                params![run_id, task, try_number],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(ctx("reading a try's holder"))?;
        let Some((holder, expires)) = current else {
            return Ok(false);
        };
        let expires = expires.as_deref().map(parse_ts).transpose()?;
        if !holder_gone(holder.as_deref(), expires, now, owner, is_dead) {
            return Ok(false);
        }
        // Compare-and-swap on the holder seen above: of two processes, exactly one wins.
        let n = conn
            .execute(
                "UPDATE task_instances SET owner = ?4, lease_expires_at = ?5
                 WHERE run_id = ?1 AND task = ?2 AND try_number = ?3 AND state = 'running'
                   AND owner IS ?6",
                params![
                    run_id,
                    task,
                    try_number,
                    owner.id,
                    ts(now + owner.lease_chrono()),
                    holder
                ],
            )
            .map_err(ctx("taking over a try"))?;
        Ok(n == 1)
    }

    fn activate_run(&self, run_id: &str, max_active: usize) -> Result<bool> {
        let conn = self.conn();
        // One statement: SQLite runs one writer at a time, so the count cannot go stale.
        conn.execute(
            "UPDATE dag_runs SET state = 'running', started_at = COALESCE(started_at, ?3)
             WHERE run_id = ?1 AND state = 'queued'
               AND (SELECT count(*) FROM dag_runs AS o
                    WHERE o.dag = dag_runs.dag AND o.state = 'running') < ?2",
            params![run_id, max_active as i64, ts(Utc::now())],
        )
        .map_err(ctx("starting a run"))?;
        let state: Option<String> = conn
            .query_row(
                "SELECT state FROM dag_runs WHERE run_id = ?1",
                params![run_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(ctx("reading a run"))?;
        Ok(state.as_deref() == Some("running"))
    }

    fn set_task_state(
        &self,
        run_id: &str,
        task: &str,
        state: TaskState,
        error: Option<&str>,
    ) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "UPDATE task_instances SET state = ?3, error = ?4,
                ended_at = CASE WHEN ?3 IN ('upstream_failed', 'skipped', 'failed') THEN ?5 ELSE ended_at END
             WHERE run_id = ?1 AND task = ?2",
            params![run_id, task, state.as_str(), error, ts(Utc::now())],
        )
        .map_err(ctx("updating a task"))?;
        Ok(())
    }

    fn tries(&self, run_id: &str, task: &str) -> Result<Vec<TryRecord>> {
        let conn = self.conn();
        collect(
            &conn,
            "SELECT run_id, task, try_number, state, started_at, ended_at, error, log_path, pid,
                    interrupted
             FROM task_tries WHERE run_id = ?1 AND task = ?2 ORDER BY try_number",
            params![run_id, task],
            |r| {
                Ok(TryRecord {
                    run_id: r.get(0)?,
                    task: r.get(1)?,
                    try_number: r.get(2)?,
                    state: parsed(r, 3, parse_enum)?,
                    started_at: parsed(r, 4, parse_ts)?,
                    ended_at: parsed_opt(r, 5, parse_ts)?,
                    error: r.get(6)?,
                    log_path: r.get(7)?,
                    pid: r.get(8)?,
                    interrupted: r.get(9)?,
                })
            },
            "reading tries",
        )
    }

    fn claim_run(
        &self,
        run_id: &str,
        owner: &Owner,
        is_dead: &dyn Fn(&str) -> bool,
    ) -> Result<bool> {
        let conn = self.conn();
        let now = Utc::now();
        let current: Option<(Option<String>, Option<String>, String)> = conn
            .query_row(
                "SELECT owner, lease_expires_at, state FROM dag_runs WHERE run_id = ?1",
                params![run_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(ctx("reading a run's owner"))?;
        let Some((holder, expires, state)) = current else {
            return Err(StoreError::NoSuchRun(run_id.to_string()));
        };
        if state == "success" || state == "failed" {
            return Ok(false);
        }
        let expires = expires.as_deref().map(parse_ts).transpose()?;
        if !holder_gone(holder.as_deref(), expires, now, owner, is_dead) {
            return Ok(false);
        }
        // Compare-and-swap on the holder seen above: of two claimers, exactly one wins.
        let n = conn
            .execute(
                "UPDATE dag_runs SET owner = ?2, lease_expires_at = ?3
                 WHERE run_id = ?1 AND owner IS ?4",
                params![run_id, owner.id, ts(now + owner.lease_chrono()), holder],
            )
            .map_err(ctx("claiming a run"))?;
        Ok(n == 1)
    }

    fn renew_lease(&self, run_id: &str, owner: &Owner) -> Result<bool> {
        let conn = self.conn();
        let n = conn
            .execute(
                "UPDATE dag_runs SET lease_expires_at = ?3 WHERE run_id = ?1 AND owner = ?2",
                params![run_id, owner.id, ts(Utc::now() + owner.lease_chrono())],
            )
            .map_err(ctx("renewing a lease"))?;
        Ok(n == 1)
    }

    fn release_run(&self, run_id: &str, owner: &Owner) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "UPDATE dag_runs SET owner = NULL, lease_expires_at = NULL WHERE run_id = ?1 AND owner = ?2",
            params![run_id, owner.id],
        )
        .map_err(ctx("releasing a run"))?;
        Ok(())
    }

    fn prune_runs(&self, cutoff: DateTime<Utc>) -> Result<Vec<(String, String)>> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(ctx("pruning old runs"))?;
        let doomed: Vec<(String, String)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT dag, run_id FROM dag_runs AS r
                     WHERE state IN ('success', 'failed') AND ended_at < ?1
                       AND partition_key IS NULL
                       AND run_id IS NOT (
                           SELECT n.run_id FROM dag_runs AS n
                           WHERE n.dag = r.dag AND n.trigger IN ('scheduled', 'backfill')
                             AND n.partition_key IS NULL
                           ORDER BY n.data_interval_end DESC, n.created_at DESC LIMIT 1)",
                )
                .map_err(ctx("pruning old runs"))?;
            let rows = stmt
                .query_map(params![ts(cutoff)], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(ctx("pruning old runs"))?;
            rows.collect::<rusqlite::Result<_>>()
                .map_err(ctx("pruning old runs"))?
        };
        for (_, run_id) in &doomed {
            tx.execute("DELETE FROM task_tries WHERE run_id = ?1", params![run_id])
                .map_err(ctx("pruning old runs"))?;
            tx.execute(
                "DELETE FROM task_instances WHERE run_id = ?1",
                params![run_id],
            )
            .map_err(ctx("pruning old runs"))?;
            tx.execute("DELETE FROM dag_runs WHERE run_id = ?1", params![run_id])
                .map_err(ctx("pruning old runs"))?;
        }
        tx.commit().map_err(ctx("pruning old runs"))?;
        Ok(doomed)
    }

    fn active_runs(&self) -> Result<Vec<RunRecord>> {
        let conn = self.conn();
        collect(
            &conn,
            &format!(
                "SELECT {RUN_COLUMNS} FROM dag_runs WHERE state IN ('queued', 'running')
                 ORDER BY logical_date, created_at"
            ),
            [],
            run_row,
            "listing active runs",
        )
    }

    fn unique_run(&self, dag: &str, run_key: &str) -> Result<Option<RunRecord>> {
        let conn = self.conn();
        conn.query_row(
            &format!(
                "SELECT {RUN_COLUMNS} FROM dag_runs WHERE dag = ?1 AND run_key = ?2
                 AND trigger IN ('scheduled', 'backfill')"
            ),
            params![dag, run_key],
            run_row,
        )
        .optional()
        .map_err(ctx("reading a run"))
    }

    fn set_paused(&self, dag: &str, paused: bool) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO dag_state (dag, paused, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (dag) DO UPDATE SET paused = ?2, updated_at = ?3",
            params![dag, paused, ts(Utc::now())],
        )
        .map_err(ctx("pausing a DAG"))?;
        Ok(())
    }

    fn paused_dags(&self) -> Result<std::collections::BTreeSet<String>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT dag FROM dag_state WHERE paused = 1")
            .map_err(ctx("reading paused DAGs"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(ctx("reading paused DAGs"))?;
        let mut out = std::collections::BTreeSet::new();
        for r in rows {
            out.insert(r.map_err(ctx("reading paused DAGs"))?);
        }
        Ok(out)
    }

    fn set_try_pid(&self, run_id: &str, task: &str, try_number: u32, pid: u32) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "UPDATE task_tries SET pid = ?4 WHERE run_id = ?1 AND task = ?2 AND try_number = ?3",
            params![run_id, task, try_number, pid],
        )
        .map_err(ctx("recording a try's process"))?;
        Ok(())
    }

    fn set_try_rendered(
        &self,
        run_id: &str,
        task: &str,
        try_number: u32,
        rendered: &str,
    ) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "UPDATE task_tries SET rendered = ?4 WHERE run_id = ?1 AND task = ?2 AND try_number = ?3",
            params![run_id, task, try_number, rendered],
        )
        .map_err(ctx("recording a try's rendered config"))?;
        Ok(())
    }

    fn try_rendered(&self, run_id: &str, task: &str, try_number: u32) -> Result<Option<String>> {
        let conn = self.conn();
        conn.query_row(
            "SELECT rendered FROM task_tries WHERE run_id = ?1 AND task = ?2 AND try_number = ?3",
            params![run_id, task, try_number],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()
        .map(Option::flatten)
        .map_err(ctx("reading a try's rendered config"))
    }

    fn task_instances_of(&self, run_ids: &[String]) -> Result<Vec<TaskInstance>> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.conn();
        let marks = vec!["?"; run_ids.len()].join(", ");
        collect(
            &conn,
            &format!(
                "SELECT {TI_COLUMNS} FROM task_instances WHERE run_id IN ({marks}) ORDER BY rowid"
            ),
            rusqlite::params_from_iter(run_ids),
            ti_row,
            "reading task instances",
        )
    }

    fn latest_run_per_partition(&self, dag: &str) -> Result<Vec<RunRecord>> {
        let conn = self.conn();
        collect(
            &conn,
            &format!(
                "SELECT {RUN_COLUMNS} FROM dag_runs AS r
                 WHERE dag = ?1 AND partition_key IS NOT NULL
                   AND created_at = (SELECT max(created_at) FROM dag_runs AS o
                                     WHERE o.dag = r.dag AND o.partition_key = r.partition_key)
                 ORDER BY partition_key"
            ),
            params![dag],
            run_row,
            "listing partitions",
        )
    }

    fn succeeded_partitions(&self, dag: &str) -> Result<std::collections::BTreeSet<String>> {
        let conn = self.conn();
        Ok(collect(
            &conn,
            "SELECT DISTINCT partition_key FROM dag_runs
             WHERE dag = ?1 AND partition_key IS NOT NULL AND state = 'success'",
            params![dag],
            |r| r.get::<_, String>(0),
            "listing partitions",
        )?
        .into_iter()
        .collect())
    }

    fn clear_tasks(
        &self,
        run_id: &str,
        tasks: &[String],
        claimer: &Owner,
        is_dead: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(ctx("clearing tasks"))?;
        let now = Utc::now();
        for task in tasks {
            let running: Option<(u32, Option<String>, Option<String>)> = tx
                .query_row(
                    "SELECT try_number, owner, lease_expires_at FROM task_instances
                     WHERE run_id = ?1 AND task = ?2 AND state = 'running'",
                    params![run_id, task],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(ctx("clearing tasks"))?;
            if let Some((try_number, holder, expires)) = running {
                let expires = expires.as_deref().map(parse_ts).transpose()?;
                if !holder_gone(holder.as_deref(), expires, now, claimer, is_dead) {
                    return Err(StoreError::TaskRunning {
                        run_id: run_id.to_string(),
                        task: task.clone(),
                        try_number,
                        holder: holder.unwrap_or_default(),
                    });
                }
            }
        }
        let now = ts(now);
        for task in tasks {
            // A try still marked running belonged to a process that died: close it.
            tx.execute(
                "UPDATE task_tries SET state = 'failed', ended_at = ?3, interrupted = 1,
                    error = COALESCE(error, 'interrupted: the process running this try exited before it finished')
                 WHERE run_id = ?1 AND task = ?2 AND state = 'running'",
                params![run_id, task, now],
            )
            .map_err(ctx("clearing tasks"))?;
            tx.execute(
                "UPDATE task_instances SET state = 'queued', first_try = try_number + 1,
                    next_try_at = NULL, ended_at = NULL, error = NULL, output = NULL,
                    owner = NULL, lease_expires_at = NULL
                 WHERE run_id = ?1 AND task = ?2",
                params![run_id, task],
            )
            .map_err(ctx("clearing tasks"))?;
        }
        let n = tx
            .execute(
                "UPDATE dag_runs SET ended_at = NULL,
                    state = CASE WHEN state = 'running' THEN 'running' ELSE 'queued' END
                 WHERE run_id = ?1",
                params![run_id],
            )
            .map_err(ctx("clearing tasks"))?;
        if n == 0 {
            return Err(StoreError::NoSuchRun(run_id.to_string()));
        }
        tx.commit().map_err(ctx("clearing tasks"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_racing_to_create_the_database_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || SqliteStore::open(&path).map(|_| ()))
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(SqliteStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let e = SqliteStore::open(&path).err().unwrap();
        assert!(
            e.to_string()
                .contains("written by a newer windsock (schema version 99"),
            "{e}"
        );
    }
}
