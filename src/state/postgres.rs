//! The shared state store: one PostgreSQL database for several schedulers on several machines.
//!
//! PostgreSQL does the coordinating: a unique index makes run creation idempotent (two daemons
//! ticking the same cron create one run), tries are claimed with `SELECT … FOR UPDATE SKIP
//! LOCKED` and held under leases, and a transaction-scoped advisory lock serialises what must
//! count before it writes (migrations, `max_active_runs`). No protocol of windsock's own.
//!
//! The trait is synchronous (SQLite is called in place), so queries run on tokio-postgres
//! clients whose connections live on a small runtime of their own: a caller blocks on the
//! client's channel like it blocks on SQLite's file lock, from any thread, inside or outside
//! the daemon's runtime.
//!
//! One file: the one implementation of the `StateStore` trait over PostgreSQL, a method per
//! trait method, its connection pool and its migrations.

use std::sync::{Mutex, MutexGuard};

use chrono::Utc;
use futures_executor::block_on;
use tokio_postgres::{Client, GenericClient, NoTls, Row};

use super::*;

/// Schema migrations, applied in order; `windsock_schema.version` records how many have run.
/// The same tables as SQLite's, in PostgreSQL's types.
const MIGRATIONS: &[&str] = &[r#"
    CREATE TABLE dag_runs (
        run_id              TEXT PRIMARY KEY,
        dag                 TEXT NOT NULL,
        run_key             TEXT NOT NULL,
        partition_key       TEXT,
        logical_date        TIMESTAMPTZ NOT NULL,
        data_interval_start TIMESTAMPTZ NOT NULL,
        data_interval_end   TIMESTAMPTZ NOT NULL,
        trigger             TEXT NOT NULL,
        state               TEXT NOT NULL,
        created_at          TIMESTAMPTZ NOT NULL,
        started_at          TIMESTAMPTZ,
        ended_at            TIMESTAMPTZ,
        pipeline_file       TEXT NOT NULL,
        owner               TEXT,
        lease_expires_at    TIMESTAMPTZ
    );
    -- Scheduled and backfill runs are unique per DAG and partition/interval: the database, not a
    -- check-then-insert, guarantees no double run, whichever daemon ticks first.
    CREATE UNIQUE INDEX dag_runs_unique_key ON dag_runs (dag, run_key)
        WHERE trigger IN ('scheduled', 'backfill');
    CREATE INDEX dag_runs_by_dag ON dag_runs (dag, created_at);
    CREATE INDEX dag_runs_active ON dag_runs (state) WHERE state IN ('queued', 'running');
    CREATE INDEX dag_runs_by_partition ON dag_runs (dag, partition_key, created_at)
        WHERE partition_key IS NOT NULL;
    CREATE TABLE task_instances (
        seq              BIGINT GENERATED ALWAYS AS IDENTITY,
        run_id           TEXT NOT NULL REFERENCES dag_runs (run_id) ON DELETE CASCADE,
        task             TEXT NOT NULL,
        state            TEXT NOT NULL,
        try_number       INTEGER NOT NULL DEFAULT 0,
        first_try        INTEGER NOT NULL DEFAULT 1,
        next_try_at      TIMESTAMPTZ,
        started_at       TIMESTAMPTZ,
        ended_at         TIMESTAMPTZ,
        duration_ms      BIGINT,
        output           JSONB,
        error            TEXT,
        log_path         TEXT,
        owner            TEXT,
        lease_expires_at TIMESTAMPTZ,
        PRIMARY KEY (run_id, task)
    );
    CREATE TABLE task_tries (
        run_id      TEXT NOT NULL,
        task        TEXT NOT NULL,
        try_number  INTEGER NOT NULL,
        state       TEXT NOT NULL,
        started_at  TIMESTAMPTZ NOT NULL,
        ended_at    TIMESTAMPTZ,
        error       TEXT,
        log_path    TEXT NOT NULL,
        pid         BIGINT,
        interrupted BOOLEAN NOT NULL DEFAULT FALSE,
        rendered    TEXT,
        PRIMARY KEY (run_id, task, try_number),
        FOREIGN KEY (run_id, task) REFERENCES task_instances (run_id, task) ON DELETE CASCADE
    );
    CREATE TABLE dag_state (
        dag        TEXT PRIMARY KEY,
        paused     BOOLEAN NOT NULL DEFAULT FALSE,
        updated_at TIMESTAMPTZ NOT NULL
    );
    "#];

/// Connections kept open: enough for the tries of one daemon to commit side by side (each
/// commit waits for PostgreSQL's WAL flush; concurrent ones share it).
const POOL: usize = 8;

/// The advisory lock key under which migrations run (one process migrates, the others wait).
const MIGRATION_LOCK: i64 = 0x7769_6e64_736f_636b; // "windsock"

/// How long one call may wait for the database (a statement, a transaction's round trips):
/// past it the connection is dropped and the call fails as unavailable, so that a network that
/// drops packets holds no thread, and no lease renewal, for longer. Well inside the lease, so
/// that a daemon cut off notices in time to stop its tries before their leases end.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connection settings applied unless the URL sets them: connecting, and how soon the kernel
/// gives up on a peer that stopped answering (keepalives while idle, unacknowledged data).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const TCP_USER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const KEEPALIVES_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) struct PostgresStore {
    url: String,
    config: tokio_postgres::Config,
    /// Where the connections' I/O runs: a runtime of the store's own, on its own thread.
    io: tokio::runtime::Handle,
    clients: Vec<Mutex<Option<Client>>>,
    next: std::sync::atomic::AtomicUsize,
}

fn ctx(context: &str) -> impl FnOnce(tokio_postgres::Error) -> StoreError + '_ {
    move |source| {
        let io = std::error::Error::source(&source).is_some_and(|s| s.is::<std::io::Error>());
        // The server going away says so before it closes the connection: class 08 (connection
        // exceptions) and 57P01–57P03 (shut down by an administrator or a crash, starting up).
        let going = source.code().is_some_and(|c| {
            let c = c.code();
            c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03")
        });
        if source.is_closed() || io || going {
            StoreError::Unavailable {
                context: context.to_string(),
                reason: source.to_string(),
            }
        } else {
            StoreError::Postgres {
                context: context.to_string(),
                source,
            }
        }
    }
}

fn io_runtime() -> Result<tokio::runtime::Handle> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("windsock-postgres".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    let _ = tx.send(Ok(rt.handle().clone()));
                    // Lives as long as the process: the connections run here.
                    rt.block_on(std::future::pending::<()>());
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })
        .map_err(|source| StoreError::Io {
            path: "a thread for the PostgreSQL connections".into(),
            source,
        })?;
    rx.recv()
        .map_err(|_| StoreError::Corrupt("the PostgreSQL connection thread did not start".into()))?
        .map_err(|source| StoreError::Io {
            path: "a runtime for the PostgreSQL connections".into(),
            source,
        })
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and applies pending
    /// migrations.
    pub(crate) fn open(url: &str) -> Result<PostgresStore> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::BadUrl {
            url: redacted(url),
            reason: format!("{e}"),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        config.keepalives(true);
        if config.get_keepalives_idle() == std::time::Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(KEEPALIVES_IDLE);
        }
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(StoreError::BadUrl {
                url: redacted(url),
                reason: "sslmode=require is not supported yet: connect over a local socket, a private network or an SSH tunnel".into(),
            });
        }
        let store = PostgresStore {
            url: url.to_string(),
            config,
            io: io_runtime()?,
            clients: (0..POOL).map(|_| Mutex::new(None)).collect(),
            next: Default::default(),
        };
        store.migrate()?;
        Ok(store)
    }

    fn connect(&self) -> Result<Client> {
        let config = self.config.clone();
        let connected = block_on(self.io.spawn(async move {
            // Bounded as a whole: `connect_timeout` covers the TCP handshake only, and a peer
            // that stopped answering after it would hold the startup exchange for ever.
            let (client, connection) = tokio::time::timeout(CALL_TIMEOUT, config.connect(NoTls))
                .await
                .map_err(|_| format!("no answer within {} s", CALL_TIMEOUT.as_secs()))?
                .map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!("the connection to the state database ended: {e}");
                }
            });
            Ok::<_, String>(client)
        }));
        match connected {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(StoreError::Unavailable {
                context: format!("connecting to {}", redacted(&self.url)),
                reason: e.to_string(),
            }),
            Err(e) => Err(StoreError::Unavailable {
                context: format!("connecting to {}", redacted(&self.url)),
                reason: e.to_string(),
            }),
        }
    }

    /// A connected client for one call: a free one if there is, reconnecting a closed one.
    fn client(&self) -> Result<MutexGuard<'_, Option<Client>>> {
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut guard = None;
        for i in 0..self.clients.len() {
            if let Ok(g) = self.clients[(start + i) % self.clients.len()].try_lock() {
                guard = Some(g);
                break;
            }
        }
        let mut guard = match guard {
            Some(g) => g,
            // Every connection is busy: wait for one. A panic while holding a client leaves
            // nothing half-written (the transaction rolls back with the dropped client), so a
            // poisoned lock is reused.
            None => self.clients[start % self.clients.len()]
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        };
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            *guard = Some(self.connect()?);
        }
        Ok(guard)
    }

    /// Runs `f` on a client, blocking this thread until it is done, for at most
    /// [`CALL_TIMEOUT`]. On a worker of a
    /// multi-threaded runtime (the daemon's), the worker's other tasks move to another thread
    /// meanwhile, so that a round trip to the database holds up nothing else.
    fn with<T>(&self, f: impl AsyncFnOnce(&mut Client) -> Result<T>) -> Result<T> {
        self.with_limit(CALL_TIMEOUT, f)
    }

    /// [`PostgresStore::with`], waiting at most `limit`.
    fn with_limit<T>(
        &self,
        limit: std::time::Duration,
        f: impl AsyncFnOnce(&mut Client) -> Result<T>,
    ) -> Result<T> {
        let call = || {
            let mut guard = self.client()?;
            let client = guard
                .as_mut()
                .ok_or_else(|| StoreError::Corrupt("no PostgreSQL connection".into()))?;
            // The timer runs on the connections' runtime.
            let answer = {
                let _timers = self.io.enter();
                block_on(tokio::time::timeout(limit, f(client)))
            };
            match answer {
                Ok(result) => result,
                Err(_) => {
                    // In the middle of who knows what: this connection is not used again.
                    *guard = None;
                    Err(StoreError::Unavailable {
                        context: format!("waiting for {}", redacted(&self.url)),
                        reason: format!("no answer within {} s", limit.as_secs()),
                    })
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(call)
            }
            _ => call(),
        }
    }

    fn migrate(&self) -> Result<()> {
        let supported = MIGRATIONS.len() as i32;
        let url = redacted(&self.url);
        // Waits for other processes' migrations, however long they take.
        self.with_limit(std::time::Duration::from_secs(600), async |c| {
            let tx = c.transaction().await.map_err(ctx("starting a migration"))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(ctx("waiting for other processes' migrations"))?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS windsock_schema (version INTEGER NOT NULL)",
            )
            .await
            .map_err(ctx("creating the schema table"))?;
            let version: i32 = match tx
                .query_opt("SELECT version FROM windsock_schema", &[])
                .await
                .map_err(ctx("reading the schema version"))?
            {
                Some(row) => row.get(0),
                None => {
                    tx.execute("INSERT INTO windsock_schema (version) VALUES (0)", &[])
                        .await
                        .map_err(ctx("recording the schema version"))?;
                    0
                }
            };
            if version > supported {
                return Err(StoreError::NewerSchema {
                    path: url,
                    found: version.into(),
                    supported: supported.into(),
                });
            }
            for sql in MIGRATIONS.iter().skip(version as usize) {
                tx.batch_execute(sql)
                    .await
                    .map_err(ctx("applying a migration"))?;
            }
            tx.execute("UPDATE windsock_schema SET version = $1", &[&supported])
                .await
                .map_err(ctx("recording the schema version"))?;
            tx.commit().await.map_err(ctx("committing a migration"))
        })
    }
}

fn parse_enum<T: FromStr<Err = String>>(s: &str) -> Result<T> {
    s.parse().map_err(StoreError::Corrupt)
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a Row, i: usize) -> Result<T> {
    r.try_get(i)
        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
}

fn get_u32(r: &Row, i: usize) -> Result<u32> {
    let v: i32 = get(r, i)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("column {i}: {v}")))
}

const RUN_COLUMNS: &str = "run_id, dag, run_key, partition_key, logical_date, data_interval_start, data_interval_end, trigger, state, created_at, started_at, ended_at, pipeline_file, owner, lease_expires_at";

fn run_row(r: &Row) -> Result<RunRecord> {
    Ok(RunRecord {
        run_id: get(r, 0)?,
        dag: get(r, 1)?,
        run_key: get(r, 2)?,
        partition: get(r, 3)?,
        logical_date: get(r, 4)?,
        data_interval_start: get(r, 5)?,
        data_interval_end: get(r, 6)?,
        trigger: parse_enum(get(r, 7)?)?,
        state: parse_enum(get(r, 8)?)?,
        created_at: get(r, 9)?,
        started_at: get(r, 10)?,
        ended_at: get(r, 11)?,
        pipeline_file: get(r, 12)?,
        owner: get(r, 13)?,
        lease_expires_at: get(r, 14)?,
    })
}

const TI_COLUMNS: &str = "run_id, task, state, try_number, first_try, next_try_at, started_at, ended_at, duration_ms, output, error, log_path, owner, lease_expires_at";

fn ti_row(r: &Row) -> Result<TaskInstance> {
    Ok(TaskInstance {
        run_id: get(r, 0)?,
        task: get(r, 1)?,
        state: parse_enum(get(r, 2)?)?,
        try_number: get_u32(r, 3)?,
        first_try: get_u32(r, 4)?,
        next_try_at: get(r, 5)?,
        started_at: get(r, 6)?,
        ended_at: get(r, 7)?,
        duration_ms: get(r, 8)?,
        output: get(r, 9)?,
        error: get(r, 10)?,
        log_path: get(r, 11)?,
        owner: get(r, 12)?,
        lease_expires_at: get(r, 13)?,
    })
}

fn rows<T>(rows: Vec<Row>, f: impl Fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(f).collect()
}

/// A lease's length in milliseconds, for `now() + $n::BIGINT * interval '1 millisecond'` (NULL
/// for no lease): leases are written and judged by the database's clock, never by a host's, so
/// that hosts whose clocks disagree agree on when a lease ends.
fn lease_ms(owner: &Owner) -> i64 {
    i64::try_from(owner.lease.as_millis()).unwrap_or(i64::MAX)
}

fn try_no(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

async fn read_run(c: &impl GenericClient, run_id: &str) -> Result<Option<RunRecord>> {
    c.query_opt(
        &format!("SELECT {RUN_COLUMNS} FROM dag_runs WHERE run_id = $1"),
        &[&run_id],
    )
    .await
    .map_err(ctx("reading a run"))?
    .as_ref()
    .map(run_row)
    .transpose()
}

impl StateStore for PostgresStore {
    fn shared(&self) -> bool {
        true
    }

    fn create_run(&self, run: &NewRun, tasks: &[String]) -> Result<RunRecord> {
        self.with(async |c| {
            let tx = c.transaction().await.map_err(ctx("creating a run"))?;
            let now = Utc::now();
            let owner = run.owner.as_ref().map(|o| o.id.clone());
            let lease = run.owner.as_ref().map(lease_ms);
            // ON CONFLICT DO NOTHING: a duplicate neither fails the transaction nor waits.
            let inserted = tx
                .execute(
                    &format!(
                        "INSERT INTO dag_runs ({RUN_COLUMNS}) VALUES
                         ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9, NULL, NULL, $10, $11,
                          now() + $12::BIGINT * interval '1 millisecond')
                         ON CONFLICT DO NOTHING"
                    ),
                    &[
                        &run.run_id,
                        &run.dag,
                        &run.run_key,
                        &run.partition,
                        &run.logical_date,
                        &run.data_interval_start,
                        &run.data_interval_end,
                        &run.trigger.as_str(),
                        &now,
                        &run.pipeline_file,
                        &owner,
                        &lease,
                    ],
                )
                .await
                .map_err(ctx("creating a run"))?;
            if inserted == 0 {
                if read_run(&tx, &run.run_id).await?.is_some() {
                    return Err(StoreError::RunIdTaken(run.run_id.clone()));
                }
                let existing = tx
                    .query_opt(
                        "SELECT run_id FROM dag_runs WHERE dag = $1 AND run_key = $2
                         AND trigger IN ('scheduled', 'backfill')",
                        &[&run.dag, &run.run_key],
                    )
                    .await
                    .map_err(ctx("looking up an existing run"))?
                    .map(|r| get::<String>(&r, 0))
                    .transpose()?;
                return Err(StoreError::RunExists {
                    dag: run.dag.clone(),
                    key: run.run_key.clone(),
                    run_id: existing.unwrap_or_else(|| run.run_id.clone()),
                });
            }
            for task in tasks {
                tx.execute(
                    "INSERT INTO task_instances (run_id, task, state) VALUES ($1, $2, 'queued')",
                    &[&run.run_id, task],
                )
                .await
                .map_err(ctx("creating task instances"))?;
            }
            let rec = read_run(&tx, &run.run_id)
                .await?
                .ok_or_else(|| StoreError::NoSuchRun(run.run_id.clone()))?;
            tx.commit().await.map_err(ctx("creating a run"))?;
            Ok(rec)
        })
    }

    fn run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        self.with(async |c| read_run(&*c, run_id).await)
    }

    fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let limit = filter.limit.map(|l| l as i64);
        let state = filter.state.map(|s| s.as_str());
        self.with(async |c| {
            let found = c
                .query(
                    &format!(
                        "SELECT {RUN_COLUMNS} FROM dag_runs
                         WHERE ($1::TEXT IS NULL OR dag = $1) AND ($2::TEXT IS NULL OR state = $2)
                         ORDER BY created_at DESC, run_id DESC LIMIT $3"
                    ),
                    &[&filter.dag, &state, &limit],
                )
                .await
                .map_err(ctx("listing runs"))?;
            rows(found, run_row)
        })
    }

    fn set_run_state(&self, run_id: &str, state: RunState) -> Result<()> {
        self.with(async |c| {
            let n = c
                .execute(
                    "UPDATE dag_runs SET state = $2,
                        started_at = CASE WHEN $2 = 'running' THEN COALESCE(started_at, $3) ELSE started_at END,
                        ended_at = CASE WHEN $2 IN ('success', 'failed') THEN $3 ELSE NULL END
                     WHERE run_id = $1",
                    &[&run_id, &state.as_str(), &Utc::now()],
                )
                .await
                .map_err(ctx("updating a run"))?;
            if n == 0 {
                return Err(StoreError::NoSuchRun(run_id.to_string()));
            }
            Ok(())
        })
    }

    fn finish_run(&self, run_id: &str, tasks: &[String]) -> Result<Option<RunState>> {
        self.with(async |c| {
            let row = c
                .query_opt(
                    "UPDATE dag_runs SET
                        state = CASE WHEN EXISTS (SELECT 1 FROM task_instances
                                     WHERE run_id = $1 AND task = ANY($3)
                                       AND state NOT IN ('success', 'skipped'))
                                THEN 'failed' ELSE 'success' END,
                        ended_at = $2
                     WHERE run_id = $1 AND NOT EXISTS (SELECT 1 FROM task_instances
                         WHERE run_id = $1 AND task = ANY($3)
                           AND state NOT IN ('success', 'failed', 'upstream_failed', 'skipped'))
                     RETURNING state",
                    &[&run_id, &Utc::now(), &tasks],
                )
                .await
                .map_err(ctx("ending a run"))?;
            row.map(|r| parse_enum(get(&r, 0)?)).transpose()
        })
    }

    fn ensure_tasks(&self, run_id: &str, tasks: &[String]) -> Result<()> {
        self.with(async |c| {
            c.execute(
                "INSERT INTO task_instances (run_id, task, state)
                 SELECT $1, t, 'queued' FROM unnest($2::TEXT[]) WITH ORDINALITY AS x (t, i)
                 ORDER BY i ON CONFLICT DO NOTHING",
                &[&run_id, &tasks],
            )
            .await
            .map_err(ctx("adding task instances"))?;
            Ok(())
        })
    }

    fn task_instances(&self, run_id: &str) -> Result<Vec<TaskInstance>> {
        self.with(async |c| {
            let found = c
                .query(
                    &format!(
                        "SELECT {TI_COLUMNS} FROM task_instances WHERE run_id = $1 ORDER BY seq"
                    ),
                    &[&run_id],
                )
                .await
                .map_err(ctx("reading task instances"))?;
            rows(found, ti_row)
        })
    }

    fn start_try(
        &self,
        run_id: &str,
        task: &str,
        try_number: u32,
        log_path: &str,
        owner: Option<&Owner>,
    ) -> Result<bool> {
        let n = try_no(try_number);
        let now = Utc::now();
        let holder = owner.map(|o| o.id.clone());
        let lease = owner.map(lease_ms);
        self.with(async |c| {
            let tx = c.transaction().await.map_err(ctx("starting a try"))?;
            // A claimer that finds the row locked by another claimer skips it: the other one
            // takes the try, this one moves on.
            let claimed = tx
                .execute(
                    "WITH waiting AS (
                         SELECT run_id, task FROM task_instances
                         WHERE run_id = $1 AND task = $2 AND try_number = $3 - 1
                           AND state IN ('queued', 'up_for_retry', 'deferred')
                         FOR UPDATE SKIP LOCKED)
                     UPDATE task_instances AS t SET state = 'running', try_number = $3,
                         next_try_at = NULL, started_at = $4, ended_at = NULL, duration_ms = NULL,
                         error = NULL, log_path = $5, owner = $6,
                         lease_expires_at = now() + $7::BIGINT * interval '1 millisecond'
                     FROM waiting WHERE t.run_id = waiting.run_id AND t.task = waiting.task",
                    &[&run_id, &task, &n, &now, &log_path, &holder, &lease],
                )
                .await
                .map_err(ctx("starting a try"))?;
            if claimed == 0 {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO task_tries (run_id, task, try_number, state, started_at, log_path)
                 VALUES ($1, $2, $3, 'running', $4, $5)
                 ON CONFLICT (run_id, task, try_number) DO UPDATE SET state = 'running',
                     started_at = $4, ended_at = NULL, error = NULL, log_path = $5, pid = NULL,
                     interrupted = FALSE, rendered = NULL",
                &[&run_id, &task, &n, &now, &log_path],
            )
            .await
            .map_err(ctx("starting a try"))?;
            tx.commit().await.map_err(ctx("starting a try"))?;
            Ok(true)
        })
    }

    fn finish_try(
        &self,
        run_id: &str,
        task: &str,
        try_number: u32,
        outcome: &TryOutcome,
        owner: Option<&Owner>,
    ) -> Result<bool> {
        let n = try_no(try_number);
        let now = Utc::now();
        let holder = owner.map(|o| o.id.clone());
        let refund = i32::from(outcome.refund_try);
        self.with(async |c| {
            let tx = c.transaction().await.map_err(ctx("finishing a try"))?;
            // The end of a try does not wait for the WAL flush: a daemon killed now loses nothing
            // (the server has the commit), and a crash of the server itself may only forget a
            // moment of finished tries, which then run again. Claims, which keep a try from
            // running twice at once, always wait for it.
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await
                .map_err(ctx("finishing a try"))?;
            let updated = tx
                .execute(
                    "UPDATE task_instances SET state = $3, ended_at = $4,
                        duration_ms = (EXTRACT(EPOCH FROM ($4 - started_at)) * 1000)::BIGINT,
                        output = COALESCE($5, output), error = $6, next_try_at = $7,
                        first_try = first_try + $8, owner = NULL, lease_expires_at = NULL
                     WHERE run_id = $1 AND task = $2 AND try_number = $9 AND state = 'running'
                       AND owner IS NOT DISTINCT FROM $10",
                    &[
                        &run_id,
                        &task,
                        &outcome.task_state.as_str(),
                        &now,
                        &outcome.output,
                        &outcome.error,
                        &outcome.next_try_at,
                        &refund,
                        &n,
                        &holder,
                    ],
                )
                .await
                .map_err(ctx("finishing a try"))?;
            if updated == 0 {
                // Recorded already by an earlier call whose COMMIT reply was lost: the same end
                // stands.
                let recorded = tx
                    .query_opt(
                        "SELECT 1 FROM task_instances AS i JOIN task_tries AS t USING (run_id, task)
                         WHERE i.run_id = $1 AND i.task = $2 AND i.try_number = $3
                           AND t.try_number = $3 AND i.state = $4 AND t.state = $5
                           AND t.ended_at IS NOT NULL AND i.error IS NOT DISTINCT FROM $6
                           AND i.owner IS NULL",
                        &[
                            &run_id,
                            &task,
                            &n,
                            &outcome.task_state.as_str(),
                            &outcome.try_state().as_str(),
                            &outcome.error,
                        ],
                    )
                    .await
                    .map_err(ctx("finishing a try"))?;
                return Ok(recorded.is_some());
            }
            tx.execute(
                "UPDATE task_tries SET state = $4, ended_at = $5, error = $6, interrupted = $7
                 WHERE run_id = $1 AND task = $2 AND try_number = $3",
                &[
                    &run_id,
                    &task,
                    &n,
                    &outcome.try_state().as_str(),
                    &now,
                    &outcome.error,
                    &outcome.interrupted,
                ],
            )
            .await
            .map_err(ctx("finishing a try"))?;
            tx.commit().await.map_err(ctx("finishing a try"))?;
            Ok(true)
        })
    }

    fn renew_tries(&self, run_id: &str, owner: &Owner) -> Result<Vec<String>> {
        let lease = lease_ms(owner);
        self.with(async |c| {
            let found = c
                .query(
                    "UPDATE task_instances
                     SET lease_expires_at = now() + $3::BIGINT * interval '1 millisecond'
                     WHERE run_id = $1 AND owner = $2 AND state = 'running' RETURNING task",
                    &[&run_id, &owner.id, &lease],
                )
                .await
                .map_err(ctx("renewing the leases of tries"))?;
            rows(found, |r| get(r, 0))
        })
    }

    fn take_over_try(
        &self,
        run_id: &str,
        task: &str,
        try_number: u32,
        owner: &Owner,
        is_dead: &dyn Fn(&str) -> bool,
    ) -> Result<bool> {
        let n = try_no(try_number);
        let lease = lease_ms(owner);
        self.with(async |c| {
            let tx = c.transaction().await.map_err(ctx("taking over a try"))?;
            let Some(row) = tx
                .query_opt(
                    "SELECT owner, lease_expires_at, now() FROM task_instances
                     WHERE run_id = $1 AND task = $2 AND try_number = $3 AND state = 'running'
                     FOR UPDATE SKIP LOCKED",
                    &[&run_id, &task, &n],
                )
                .await
                .map_err(ctx("reading a try's holder"))?
            else {
                return Ok(false);
            };
            let holder: Option<String> = get(&row, 0)?;
            let expires: Option<DateTime<Utc>> = get(&row, 1)?;
            let now: DateTime<Utc> = get(&row, 2)?;
            if !holder_gone(holder.as_deref(), expires, now, owner, is_dead) {
                return Ok(false);
            }
            tx.execute(
                "UPDATE task_instances SET owner = $4,
                     lease_expires_at = now() + $5::BIGINT * interval '1 millisecond'
                 WHERE run_id = $1 AND task = $2 AND try_number = $3",
                &[&run_id, &task, &n, &owner.id, &lease],
            )
            .await
            .map_err(ctx("taking over a try"))?;
            tx.commit().await.map_err(ctx("taking over a try"))?;
            Ok(true)
        })
    }

    fn activate_run(&self, run_id: &str, max_active: usize) -> Result<bool> {
        let max = max_active as i64;
        self.with(async |c| {
            let tx = c.transaction().await.map_err(ctx("starting a run"))?;
            let Some(rec) = read_run(&tx, run_id).await? else {
                return Err(StoreError::NoSuchRun(run_id.to_string()));
            };
            if rec.state != RunState::Queued {
                return Ok(rec.state == RunState::Running);
            }
            // Counting then writing is only safe one process at a time per DAG.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('windsock-dag:' || $1, 0))",
                &[&rec.dag],
            )
            .await
            .map_err(ctx("starting a run"))?;
            let n = tx
                .execute(
                    "UPDATE dag_runs SET state = 'running', started_at = COALESCE(started_at, $3)
                     WHERE run_id = $1 AND state = 'queued'
                       AND (SELECT count(*) FROM dag_runs
                            WHERE dag = $4 AND state = 'running') < $2",
                    &[&run_id, &max, &Utc::now(), &rec.dag],
                )
                .await
                .map_err(ctx("starting a run"))?;
            tx.commit().await.map_err(ctx("starting a run"))?;
            Ok(n == 1)
        })
    }

    fn set_task_state(
        &self,
        run_id: &str,
        task: &str,
        state: TaskState,
        error: Option<&str>,
    ) -> Result<()> {
        self.with(async |c| {
            c.execute(
                "UPDATE task_instances SET state = $3, error = $4,
                    ended_at = CASE WHEN $3 IN ('upstream_failed', 'skipped', 'failed') THEN $5 ELSE ended_at END
                 WHERE run_id = $1 AND task = $2",
                &[&run_id, &task, &state.as_str(), &error, &Utc::now()],
            )
            .await
            .map_err(ctx("updating a task"))?;
            Ok(())
        })
    }

    fn tries(&self, run_id: &str, task: &str) -> Result<Vec<TryRecord>> {
        self.with(async |c| {
            let found = c
                .query(
                    "SELECT run_id, task, try_number, state, started_at, ended_at, error, log_path,
                            pid, interrupted
                     FROM task_tries WHERE run_id = $1 AND task = $2 ORDER BY try_number",
                    &[&run_id, &task],
                )
                .await
                .map_err(ctx("reading tries"))?;
            rows(found, |r| {
                Ok(TryRecord {
                    run_id: get(r, 0)?,
                    task: get(r, 1)?,
                    try_number: get_u32(r, 2)?,
                    state: parse_enum(get(r, 3)?)?,
                    started_at: get(r, 4)?,
                    ended_at: get(r, 5)?,
                    error: get(r, 6)?,
                    log_path: get(r, 7)?,
                    pid: get::<Option<i64>>(r, 8)?.and_then(|p| u32::try_from(p).ok()),
                    interrupted: get(r, 9)?,
                })
            })
        })
    }

    fn clear_tasks(
        &self,
        run_id: &str,
        tasks: &[String],
        claimer: &Owner,
        is_dead: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
        self.with(async |c| {
            let tx = c.transaction().await.map_err(ctx("clearing tasks"))?;
            let now = Utc::now();
            // Locked until the commit: no try of these tasks starts or ends meanwhile.
            let running = tx
                .query(
                    "SELECT task, try_number, owner, lease_expires_at, now() FROM task_instances
                     WHERE run_id = $1 AND task = ANY($2) AND state = 'running'
                     FOR UPDATE",
                    &[&run_id, &tasks],
                )
                .await
                .map_err(ctx("clearing tasks"))?;
            for row in running {
                let holder: Option<String> = get(&row, 2)?;
                let expires: Option<DateTime<Utc>> = get(&row, 3)?;
                let db_now: DateTime<Utc> = get(&row, 4)?;
                if !holder_gone(holder.as_deref(), expires, db_now, claimer, is_dead) {
                    return Err(StoreError::TaskRunning {
                        run_id: run_id.to_string(),
                        task: get(&row, 0)?,
                        try_number: get_u32(&row, 1)?,
                        holder: holder.unwrap_or_default(),
                    });
                }
            }
            // A try still marked running belonged to a process that died: close it.
            tx.execute(
                "UPDATE task_tries SET state = 'failed', ended_at = $3, interrupted = TRUE,
                    error = COALESCE(error, 'interrupted: the process running this try exited before it finished')
                 WHERE run_id = $1 AND task = ANY($2) AND state = 'running'",
                &[&run_id, &tasks, &now],
            )
            .await
            .map_err(ctx("clearing tasks"))?;
            tx.execute(
                "UPDATE task_instances SET state = 'queued', first_try = try_number + 1,
                    next_try_at = NULL, ended_at = NULL, error = NULL, output = NULL,
                    owner = NULL, lease_expires_at = NULL
                 WHERE run_id = $1 AND task = ANY($2)",
                &[&run_id, &tasks],
            )
            .await
            .map_err(ctx("clearing tasks"))?;
            let n = tx
                .execute(
                    "UPDATE dag_runs SET ended_at = NULL,
                        state = CASE WHEN state = 'running' THEN 'running' ELSE 'queued' END
                     WHERE run_id = $1",
                    &[&run_id],
                )
                .await
                .map_err(ctx("clearing tasks"))?;
            if n == 0 {
                return Err(StoreError::NoSuchRun(run_id.to_string()));
            }
            tx.commit().await.map_err(ctx("clearing tasks"))
        })
    }

    fn claim_run(
        &self,
        run_id: &str,
        owner: &Owner,
        is_dead: &dyn Fn(&str) -> bool,
    ) -> Result<bool> {
        let lease = lease_ms(owner);
        self.with(async |c| {
            let tx = c.transaction().await.map_err(ctx("claiming a run"))?;
            let Some(row) = tx
                .query_opt(
                    "SELECT owner, lease_expires_at, state, now() FROM dag_runs WHERE run_id = $1
                     FOR UPDATE",
                    &[&run_id],
                )
                .await
                .map_err(ctx("reading a run's owner"))?
            else {
                return Err(StoreError::NoSuchRun(run_id.to_string()));
            };
            let holder: Option<String> = get(&row, 0)?;
            let expires: Option<DateTime<Utc>> = get(&row, 1)?;
            let state: RunState = parse_enum(get(&row, 2)?)?;
            let now: DateTime<Utc> = get(&row, 3)?;
            if state.is_finished() {
                return Ok(false);
            }
            if !holder_gone(holder.as_deref(), expires, now, owner, is_dead) {
                return Ok(false);
            }
            tx.execute(
                "UPDATE dag_runs SET owner = $2,
                     lease_expires_at = now() + $3::BIGINT * interval '1 millisecond'
                 WHERE run_id = $1",
                &[&run_id, &owner.id, &lease],
            )
            .await
            .map_err(ctx("claiming a run"))?;
            tx.commit().await.map_err(ctx("claiming a run"))?;
            Ok(true)
        })
    }

    fn renew_lease(&self, run_id: &str, owner: &Owner) -> Result<bool> {
        let lease = lease_ms(owner);
        self.with(async |c| {
            let n = c
                .execute(
                    "UPDATE dag_runs SET lease_expires_at = now() + $3::BIGINT * interval '1 millisecond'
                     WHERE run_id = $1 AND owner = $2",
                    &[&run_id, &owner.id, &lease],
                )
                .await
                .map_err(ctx("renewing a lease"))?;
            Ok(n == 1)
        })
    }

    fn release_run(&self, run_id: &str, owner: &Owner) -> Result<()> {
        self.with(async |c| {
            c.execute(
                "UPDATE dag_runs SET owner = NULL, lease_expires_at = NULL
                 WHERE run_id = $1 AND owner = $2",
                &[&run_id, &owner.id],
            )
            .await
            .map_err(ctx("releasing a run"))?;
            Ok(())
        })
    }

    fn active_runs(&self) -> Result<Vec<RunRecord>> {
        self.with(async |c| {
            let found = c
                .query(
                    &format!(
                        "SELECT {RUN_COLUMNS} FROM dag_runs WHERE state IN ('queued', 'running')
                         ORDER BY logical_date, created_at"
                    ),
                    &[],
                )
                .await
                .map_err(ctx("listing active runs"))?;
            rows(found, run_row)
        })
    }

    fn unique_run(&self, dag: &str, run_key: &str) -> Result<Option<RunRecord>> {
        self.with(async |c| {
            c.query_opt(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM dag_runs WHERE dag = $1 AND run_key = $2
                     AND trigger IN ('scheduled', 'backfill')"
                ),
                &[&dag, &run_key],
            )
            .await
            .map_err(ctx("reading a run"))?
            .as_ref()
            .map(run_row)
            .transpose()
        })
    }

    fn set_paused(&self, dag: &str, paused: bool) -> Result<()> {
        self.with(async |c| {
            c.execute(
                "INSERT INTO dag_state (dag, paused, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (dag) DO UPDATE SET paused = $2, updated_at = $3",
                &[&dag, &paused, &Utc::now()],
            )
            .await
            .map_err(ctx("pausing a DAG"))?;
            Ok(())
        })
    }

    fn paused_dags(&self) -> Result<std::collections::BTreeSet<String>> {
        self.with(async |c| {
            let found = c
                .query("SELECT dag FROM dag_state WHERE paused", &[])
                .await
                .map_err(ctx("reading paused DAGs"))?;
            Ok(rows(found, |r| get::<String>(r, 0))?.into_iter().collect())
        })
    }

    fn set_try_pid(&self, run_id: &str, task: &str, try_number: u32, pid: u32) -> Result<()> {
        let (n, pid) = (try_no(try_number), i64::from(pid));
        self.with(async |c| {
            c.execute(
                "UPDATE task_tries SET pid = $4 WHERE run_id = $1 AND task = $2 AND try_number = $3",
                &[&run_id, &task, &n, &pid],
            )
            .await
            .map_err(ctx("recording a try's process"))?;
            Ok(())
        })
    }

    fn set_try_rendered(
        &self,
        run_id: &str,
        task: &str,
        try_number: u32,
        rendered: &str,
    ) -> Result<()> {
        let n = try_no(try_number);
        self.with(async |c| {
            c.execute(
                "UPDATE task_tries SET rendered = $4
                 WHERE run_id = $1 AND task = $2 AND try_number = $3",
                &[&run_id, &task, &n, &rendered],
            )
            .await
            .map_err(ctx("recording a try's rendered config"))?;
            Ok(())
        })
    }

    fn try_rendered(&self, run_id: &str, task: &str, try_number: u32) -> Result<Option<String>> {
        let n = try_no(try_number);
        self.with(async |c| {
            c.query_opt(
                "SELECT rendered FROM task_tries WHERE run_id = $1 AND task = $2 AND try_number = $3",
                &[&run_id, &task, &n],
            )
            .await
            .map_err(ctx("reading a try's rendered config"))?
            .map(|r| get::<Option<String>>(&r, 0))
            .transpose()
            .map(Option::flatten)
        })
    }

    fn task_instances_of(&self, run_ids: &[String]) -> Result<Vec<TaskInstance>> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.with(async |c| {
            let found = c
                .query(
                    &format!(
                        "SELECT {TI_COLUMNS} FROM task_instances WHERE run_id = ANY($1) ORDER BY seq"
                    ),
                    &[&run_ids],
                )
                .await
                .map_err(ctx("reading task instances"))?;
            rows(found, ti_row)
        })
    }

    fn latest_run_per_partition(&self, dag: &str) -> Result<Vec<RunRecord>> {
        self.with(async |c| {
            let found = c
                .query(
                    &format!(
                        "SELECT DISTINCT ON (partition_key) {RUN_COLUMNS} FROM dag_runs
                         WHERE dag = $1 AND partition_key IS NOT NULL
                         ORDER BY partition_key, created_at DESC"
                    ),
                    &[&dag],
                )
                .await
                .map_err(ctx("listing partitions"))?;
            rows(found, run_row)
        })
    }

    fn succeeded_partitions(&self, dag: &str) -> Result<std::collections::BTreeSet<String>> {
        self.with(async |c| {
            let found = c
                .query(
                    "SELECT DISTINCT partition_key FROM dag_runs
                     WHERE dag = $1 AND partition_key IS NOT NULL AND state = 'success'",
                    &[&dag],
                )
                .await
                .map_err(ctx("listing partitions"))?;
            Ok(rows(found, |r| get::<String>(r, 0))?.into_iter().collect())
        })
    }

    fn prune_runs(&self, cutoff: DateTime<Utc>) -> Result<Vec<(String, String)>> {
        self.with(async |c| {
            let found = c
                .query(
                    "DELETE FROM dag_runs AS r
                     WHERE state IN ('success', 'failed') AND ended_at < $1
                       AND partition_key IS NULL
                       AND run_id IS DISTINCT FROM (
                           SELECT n.run_id FROM dag_runs AS n
                           WHERE n.dag = r.dag AND n.trigger IN ('scheduled', 'backfill')
                             AND n.partition_key IS NULL
                           ORDER BY n.data_interval_end DESC, n.created_at DESC LIMIT 1)
                     RETURNING dag, run_id",
                    &[&cutoff],
                )
                .await
                .map_err(ctx("pruning old runs"))?;
            rows(found, |r| Ok((get(r, 0)?, get(r, 1)?)))
        })
    }
}
