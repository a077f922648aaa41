//! Command-line arguments (clap). Names here are a contract: users' scripts rely on them.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::spec::Profile;

#[derive(Debug, Parser)]
#[command(
    name = "windsock",
    version,
    about = "Declarative pipeline-as-code orchestrator: YAML pipelines, native operators, durable run state.",
    propagate_version = true
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Args)]
pub(crate) struct Global {
    /// State directory (run database and logs).
    #[arg(
        long,
        global = true,
        env = "WINDSOCK_HOME",
        default_value = ".windsock"
    )]
    pub(crate) home: PathBuf,
    /// Connection profile: `local` (embedded services) or `cloud`.
    #[arg(
        long,
        global = true,
        env = "WINDSOCK_PROFILE",
        default_value = "local",
        value_parser = PossibleValuesParser::new(Profile::ALL.map(Profile::name))
            .try_map(|s| s.parse::<Profile>())
    )]
    pub(crate) profile: Profile,
    /// Where run state lives: `postgres://user:password@host:port/database` for one database
    /// shared by several schedulers (or $WINDSOCK_STATE_URL); by default the SQLite database
    /// state.db in --home. With `runs`, a run state (queued, running, success, failed) filters
    /// the list instead.
    #[arg(long = "state", global = true, value_name = "URL")]
    pub(crate) state: Option<String>,
    /// Project folder holding pipelines/, sql/, templates/ and schemas/.
    #[arg(long, global = true, env = "WINDSOCK_PROJECT", default_value = ".")]
    pub(crate) project: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, default_value = "human")]
    pub(crate) log_format: LogFormat,
    /// More log output (-v info, -vv debug). WINDSOCK_LOG=filter overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum QueryFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum GraphFormat {
    Text,
    Dot,
}

/// Where the web UI listens, and the token it asks for.
#[derive(Debug, Args)]
pub(crate) struct UiArgs {
    /// The address to listen on. Any address other than loopback (127.0.0.1, ::1) needs an
    /// access token.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) bind: std::net::SocketAddr,
    /// A file holding the access token (default: the WINDSOCK_UI_TOKEN variable).
    #[arg(long, value_name = "PATH")]
    pub(crate) token_file: Option<PathBuf>,
    /// A host name the UI answers to besides its address and `localhost`, such as a reverse
    /// proxy's (repeatable). Requests naming any other host are refused.
    #[arg(long = "allowed-host", value_name = "NAME")]
    pub(crate) allowed_hosts: Vec<String>,
}

#[derive(Debug, Args)]
#[group(multiple = false)]
pub(crate) struct Target {
    /// The partition to cover, e.g. `2019-10` (partitioned DAGs).
    #[arg(long)]
    pub(crate) partition: Option<String>,
    /// The logical date, YYYY-MM-DD (DAGs without partitions).
    #[arg(long)]
    pub(crate) date: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Check pipeline files and report every problem as file:line:column.
    Validate {
        /// Files or folders (default: every file in pipelines/).
        paths: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the pipeline format.
    Schema,
    /// Print a task's fully rendered configuration without running anything.
    Render {
        /// DAG id or pipeline file.
        dag: String,
        task: String,
        #[command(flatten)]
        target: Target,
    },
    /// Show a DAG's tasks in dependency order (text) or as Graphviz source (dot).
    Graph {
        dag: String,
        #[arg(long, default_value = "text")]
        format: GraphFormat,
    },
    /// Run a DAG now, in the foreground; exits 0 exactly when the run succeeded.
    Run {
        /// DAG id or pipeline file (optional with --resume).
        dag: Option<String>,
        #[command(flatten)]
        target: Target,
        /// Continue an existing run: tasks that succeeded are not run again.
        #[arg(long, value_name = "RUN_ID", conflicts_with_all = ["partition", "date"])]
        resume: Option<String>,
        /// Tasks that may run at once.
        #[arg(long, default_value_t = 8, env = "WINDSOCK_CONCURRENCY")]
        concurrency: usize,
    },
    /// Run a DAG's streaming tasks (kafka_to_warehouse, stream_aggregate) outside a run: to the
    /// end of their topics, or with --follow until Ctrl-C (then they finish their batch, commit
    /// and print what they did).
    Stream {
        /// DAG id or pipeline file.
        dag: String,
        /// The tasks to run (default: every streaming task of the DAG).
        tasks: Vec<String>,
        /// Keep consuming until stopped.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Run the local profile's embedded Kafka broker in the foreground (for tools like kcat, or
    /// to keep it up between runs); prints its address, stops on Ctrl-C.
    Broker,
    /// List runs, newest first.
    Runs {
        dag: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show the task instances of a run.
    Tasks {
        run_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Print the log of a task's try (default: the latest try).
    Logs {
        run_id: String,
        task: String,
        #[arg(long = "try", value_name = "N")]
        try_number: Option<u32>,
        /// Keep printing while the try runs.
        #[arg(long, short = 'f', conflicts_with = "json")]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Run the scheduler daemon: every pipeline on its cron, crash-safe, hot-reloaded.
    Scheduler {
        /// The folder of pipeline files (default: pipelines/ in the project).
        #[arg(long)]
        pipelines: Option<PathBuf>,
        /// Tasks that may run at once across all runs.
        #[arg(long, default_value_t = 16)]
        max_tasks: usize,
        /// On SIGTERM or Ctrl-C, how long running tasks may take to finish before they are killed.
        #[arg(long, default_value = "30s")]
        grace: crate::spec::Duration,
        /// How often pipeline files and the database are checked without a wake-up.
        #[arg(long, default_value = "1s")]
        poll: crate::spec::Duration,
        /// Delete finished runs, their tries and logs, once they ended longer ago than this
        /// (e.g. 30d); partition runs and each DAG's newest scheduled run are kept. Default:
        /// keep everything.
        #[arg(long, env = "WINDSOCK_KEEP_RUNS", value_name = "AGE")]
        keep_runs: Option<crate::spec::Duration>,
        /// Also serve the web UI (and the dashboard) from the daemon.
        #[arg(long)]
        ui: bool,
        #[command(flatten)]
        web: UiArgs,
    },
    /// Serve the web UI: DAGs, runs, tries and their logs, the graph, partitions, the dashboard.
    Ui {
        #[command(flatten)]
        web: UiArgs,
    },
    /// Stop scheduling new runs of a DAG (runs in flight finish).
    Pause { dag: String },
    /// Resume scheduling a paused DAG.
    Unpause { dag: String },
    /// Ask the scheduler to run a DAG now (for a partition or date).
    Trigger {
        dag: String,
        #[command(flatten)]
        target: Target,
        /// Wait for the run to finish; exit 0 exactly when it succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// List DAGs with their schedule, paused flag, last run, next run time and next partition.
    Dags {
        #[arg(long)]
        json: bool,
    },
    /// Run a range of partitions (or dates) in the foreground, skipping what already succeeded.
    Backfill {
        dag: String,
        /// First partition (`2019-10`) or date (`2019-10-01`).
        #[arg(long)]
        from: String,
        /// Last partition or date, inclusive.
        #[arg(long)]
        to: String,
        /// Run again the runs that failed before.
        #[arg(long)]
        rerun_failed: bool,
        /// Run again every run, including those that succeeded.
        #[arg(long)]
        rerun_all: bool,
        /// Print the plan and do nothing.
        #[arg(long)]
        dry_run: bool,
        /// Runs at once (default: the DAG's max_active_runs).
        #[arg(long)]
        max_active: Option<usize>,
    },
    /// Write generated months of the e-commerce dataset, in its exact format.
    SampleData {
        /// A month or a range: `2019-10` or `2019-10..2020-04`.
        #[arg(long)]
        months: String,
        /// Lines per day, exactly.
        #[arg(long, default_value_t = 10_000)]
        rows_per_day: u64,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Add the dirt real files have (duplicates, empty sessions, malformed lines) at this rate
        /// per kind, e.g. 0.01.
        #[arg(long)]
        dirt: Option<f64>,
    },
    /// Run one SQL statement on a warehouse connection of the active profile and print the rows.
    Query {
        sql: String,
        /// A named connection (default: the profile's warehouse).
        #[arg(long, default_value = "warehouse")]
        connection: String,
        #[arg(long, default_value = "table")]
        format: QueryFormat,
    },
    /// Delete finished runs, their tries and logs, that ended longer ago than AGE (what
    /// `scheduler --keep-runs` does as it goes). Partition runs and each DAG's newest scheduled
    /// run are kept: the scheduler reads them.
    Prune {
        #[arg(long, value_name = "AGE")]
        older_than: crate::spec::Duration,
    },
    /// Reset tasks of a run so that `windsock run --resume` runs them again.
    Clear {
        run_id: String,
        /// Only this task (repeatable); default: every task of the run.
        #[arg(long = "task", value_name = "TASK")]
        tasks: Vec<String>,
        /// Also clear everything downstream of the given tasks.
        #[arg(long)]
        downstream: bool,
    },
}
