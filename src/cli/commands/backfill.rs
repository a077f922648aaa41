//! `backfill`: a range of partitions or dates in the foreground.

use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::output::{plural, print_table};
use crate::cli::{CliResult, Session, display, stop_on_signal};
use crate::scheduler::backfill::{self, Action, BackfillOptions};

/// The command's flags.
pub(super) struct Flags {
    pub(super) rerun_failed: bool,
    pub(super) rerun_all: bool,
    pub(super) dry_run: bool,
    pub(super) max_active: Option<usize>,
}

pub(super) async fn backfill(s: &Session, dag: &str, from: &str, to: &str, f: Flags) -> CliResult {
    let dag = Arc::new(s.dag(dag)?);
    let opts = BackfillOptions {
        rerun_failed: f.rerun_failed,
        rerun_all: f.rerun_all,
        max_active: f
            .max_active
            .unwrap_or(dag.pipeline.max_active_runs as usize),
        concurrency: 8,
    };
    let store = s.store()?;
    let planned = backfill::plan(store.as_ref(), &dag, from, to, &opts)?;
    if f.dry_run {
        let rows: Vec<Vec<String>> = planned
            .iter()
            .map(|p| {
                let (action, why) = match &p.action {
                    Action::Create => ("run".to_string(), String::new()),
                    Action::Skip(why) => ("skip".to_string(), why.clone()),
                    Action::Rerun => ("rerun".to_string(), "cleared and run again".into()),
                    Action::Continue => ("continue".to_string(), "unfinished run".into()),
                };
                vec![
                    p.label(),
                    p.existing
                        .as_ref()
                        .map(|r| r.state.to_string())
                        .unwrap_or_else(|| "-".into()),
                    action,
                    why,
                ]
            })
            .collect();
        print_table(&["PARTITION/DATE", "EXISTING", "ACTION", "WHY"], &rows);
        return Ok(ExitCode::SUCCESS);
    }
    let todo = planned
        .iter()
        .filter(|p| !matches!(p.action, Action::Skip(_)))
        .count();
    eprintln!(
        "backfill {}: {} in range, {todo} to run, up to {} at once",
        dag.pipeline.dag,
        plural(planned.len(), "run"),
        opts.max_active
    );
    let progress = display::backfill_progress(todo);
    let report = backfill::run(
        store.clone(),
        s.project.templates.clone(),
        s.run_env(),
        dag.clone(),
        planned,
        &opts,
        progress.as_ref(),
        stop_on_signal(),
    )
    .await?;
    for (label, why) in &report.skipped {
        eprintln!("skipped {label}: {why}");
    }
    if report.interrupted {
        eprintln!(
            "backfill interrupted after {}; run the same command again to continue",
            plural(report.succeeded.len(), "successful run")
        );
        return Ok(ExitCode::from(130));
    }
    if !report.failed.is_empty() {
        let names: Vec<String> = report
            .failed
            .iter()
            .map(|(label, run_id)| format!("{label} ({run_id})"))
            .collect();
        eprintln!(
            "backfill finished with {}: {}",
            plural(report.failed.len(), "failed run"),
            names.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "backfill {}: {} succeeded, {} skipped",
        dag.pipeline.dag,
        plural(report.succeeded.len(), "run"),
        report.skipped.len()
    );
    Ok(ExitCode::SUCCESS)
}
