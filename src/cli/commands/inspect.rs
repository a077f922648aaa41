//! `runs`, `tasks`, `logs` and `clear`: what happened, and resetting tasks to run again.

use std::process::ExitCode;

use crate::cli::output::{millis, plural, print_table, time};
use crate::cli::{CliResult, Session, fail};
use crate::state::{RunFilter, RunRecord, RunState, StateStore, TaskState, TryRecord};

/// A run by id, or a sentence saying there is none.
fn find_run(
    s: &Session,
    store: &dyn StateStore,
    run_id: &str,
) -> Result<RunRecord, crate::cli::CliError> {
    store.run(run_id)?.ok_or_else(|| {
        fail(format!(
            "no run with id `{run_id}` in {}",
            s.home().display()
        ))
    })
}

pub(super) fn runs(
    s: &Session,
    dag: Option<String>,
    state: Option<&str>,
    limit: usize,
    json: bool,
) -> CliResult {
    let store = s.store()?;
    let state = state
        .map(|s| s.parse::<RunState>())
        .transpose()
        .map_err(fail)?;
    let runs = store.runs(&RunFilter {
        dag,
        state,
        limit: Some(limit),
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.run_id.clone(),
                r.dag.clone(),
                r.partition
                    .clone()
                    .unwrap_or_else(|| r.logical_date.format("%Y-%m-%d %H:%M").to_string()),
                r.trigger.to_string(),
                r.state.to_string(),
                time(r.started_at),
                time(r.ended_at),
            ]
        })
        .collect();
    print_table(
        &[
            "RUN_ID",
            "DAG",
            "PARTITION/DATE",
            "TRIGGER",
            "STATE",
            "STARTED",
            "ENDED",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn tasks(s: &Session, run_id: &str, json: bool) -> CliResult {
    let store = s.store()?;
    find_run(s, store.as_ref(), run_id)?;
    let tis = store.task_instances(run_id)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&tis)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = tis
        .iter()
        .map(|t| {
            vec![
                t.task.clone(),
                t.state.to_string(),
                t.try_number.to_string(),
                time(t.started_at),
                millis(t.duration_ms),
                t.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &["TASK", "STATE", "TRIES", "STARTED", "DURATION", "ERROR"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn logs(
    s: &Session,
    run_id: &str,
    task: &str,
    try_number: Option<u32>,
    follow: bool,
    json: bool,
) -> CliResult {
    let store = s.store()?;
    find_run(s, store.as_ref(), run_id)?;
    let tries = store.tries(run_id, task)?;
    let Some(latest) = tries.last() else {
        return Err(fail(format!(
            "task `{task}` of run `{run_id}` has no tries yet"
        )));
    };
    let chosen = match try_number {
        Some(n) => tries.iter().find(|t| t.try_number == n).ok_or_else(|| {
            fail(format!(
                "task `{task}` has no try {n}; its tries are 1..{}",
                latest.try_number
            ))
        })?,
        None => latest,
    };
    if follow {
        return follow_log(store.as_ref(), chosen).await;
    }
    let text = std::fs::read_to_string(&chosen.log_path)
        .map_err(|e| fail(format!("cannot read the log {}: {e}", chosen.log_path)))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "try": chosen,
                "log": text,
            }))?
        );
    } else {
        print!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a try's log as it grows, until the try has finished.
async fn follow_log(store: &dyn StateStore, t: &TryRecord) -> CliResult {
    use std::io::{Read, Seek, SeekFrom, Write};
    let unreadable = |e: std::io::Error| fail(format!("cannot read the log {}: {e}", t.log_path));
    let mut offset = 0u64;
    loop {
        let finished = store
            .tries(&t.run_id, &t.task)?
            .iter()
            .find(|x| x.try_number == t.try_number)
            .is_none_or(|x| x.state != TaskState::Running);
        if let Ok(mut f) = std::fs::File::open(&t.log_path) {
            f.seek(SeekFrom::Start(offset)).map_err(unreadable)?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).map_err(unreadable)?;
            offset += buf.len() as u64;
            let mut out = std::io::stdout();
            let _ = out.write_all(&buf);
            let _ = out.flush();
        }
        if finished {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

pub(super) fn clear(s: &Session, run_id: &str, only: &[String], downstream: bool) -> CliResult {
    let store = s.store()?;
    let rec = find_run(s, store.as_ref(), run_id)?;
    let dag = match downstream && !only.is_empty() {
        true => Some(s.dag(&rec.dag)?),
        false => None,
    };
    let chosen = crate::executor::clear_tasks(store.as_ref(), run_id, only, dag.as_ref())?;
    println!(
        "cleared {} of {run_id}: {}",
        plural(chosen.len(), "task"),
        chosen.join(", ")
    );
    println!("run them with `windsock run --resume {run_id}`");
    Ok(ExitCode::SUCCESS)
}
