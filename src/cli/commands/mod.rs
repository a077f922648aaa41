//! One module per group of commands; [`dispatch`] sends each parsed command to its handler.

mod backfill;
mod data;
mod inspect;
mod query;
mod run;
mod scheduler;
mod stream;
mod ui;
mod validate;

use super::args::{Cli, Command};
use super::{CliResult, Session};

pub(super) async fn dispatch(cli: Cli) -> CliResult {
    let s = Session::new(cli.global);
    // `--state` is the store's URL, except that `runs --state success` filters by run state.
    let filter = s.g.state.clone().filter(|v| !crate::state::is_store_url(v));
    if let (Some(v), false) = (&filter, matches!(cli.command, Command::Runs { .. })) {
        return Err(super::fail(format!(
            "`--state {v}` is not a state store URL: expected postgres://user:password@host:port/database or sqlite:PATH"
        )));
    }
    match cli.command {
        Command::Validate { paths } => validate::validate(&s, &paths),
        Command::Schema => validate::schema(),
        Command::Render { dag, task, target } => validate::render(&s, &dag, &task, &target),
        Command::Graph { dag, format } => validate::graph(&s, &dag, format),
        Command::Run {
            dag,
            target,
            resume,
            concurrency,
        } => match resume {
            Some(run_id) => run::resume(&s, dag.as_deref(), &run_id, concurrency).await,
            None => run::run(&s, dag.as_deref(), &target, concurrency).await,
        },
        Command::Stream {
            dag,
            tasks,
            follow,
            target,
        } => stream::stream(&s, &dag, &tasks, follow, &target).await,
        Command::Broker => stream::broker(&s).await,
        Command::Runs { dag, limit, json } => {
            inspect::runs(&s, dag, filter.as_deref(), limit, json)
        }
        Command::Tasks { run_id, json } => inspect::tasks(&s, &run_id, json),
        Command::Logs {
            run_id,
            task,
            try_number,
            follow,
            json,
        } => inspect::logs(&s, &run_id, &task, try_number, follow, json).await,
        Command::Clear {
            run_id,
            tasks,
            downstream,
        } => inspect::clear(&s, &run_id, &tasks, downstream),
        Command::Scheduler {
            pipelines,
            max_tasks,
            grace,
            poll,
            keep_runs,
            ui,
            web,
        } => {
            let opts = scheduler::Daemon {
                pipelines,
                max_tasks,
                grace,
                poll,
                keep_runs,
                ui: ui.then_some(web),
            };
            scheduler::scheduler(&s, opts).await
        }
        Command::Ui { web } => ui::ui(&s, &web).await,
        Command::Prune { older_than } => scheduler::prune(&s, older_than),
        Command::Pause { dag } => scheduler::pause(&s, &dag, true),
        Command::Unpause { dag } => scheduler::pause(&s, &dag, false),
        Command::Trigger { dag, target, wait } => scheduler::trigger(&s, &dag, &target, wait).await,
        Command::Dags { json } => scheduler::dags(&s, json),
        Command::Backfill {
            dag,
            from,
            to,
            rerun_failed,
            rerun_all,
            dry_run,
            max_active,
        } => {
            let opts = backfill::Flags {
                rerun_failed,
                rerun_all,
                dry_run,
                max_active,
            };
            backfill::backfill(&s, &dag, &from, &to, opts).await
        }
        Command::SampleData {
            months,
            rows_per_day,
            out,
            seed,
            dirt,
        } => data::sample_data(&months, rows_per_day, &out, seed, dirt).await,
        Command::Query {
            sql,
            connection,
            format,
        } => query::query(&s, &sql, &connection, format).await,
    }
}
