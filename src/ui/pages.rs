//! The UI's pages and actions. Each handler reads the state store (and the pipelines) and hands
//! a plain context to its template; actions change state through the same functions the CLI
//! uses (create, clear, pause) and wake a running scheduler.
//!
//! One file: a short handler per page or action over the same context helpers; the markup is
//! in the templates.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Ui, graph, view};
use crate::dashboard;
use crate::plan::RunPlan;
use crate::project::Dag;
use crate::scheduler::control;
use crate::state::{RunFilter, RunRecord, StoreError, TaskState, Trigger};

/// Runs shown in a DAG's grid, and as squares on the DAGs page.
const GRID_RUNS: usize = 25;
const SQUARES: usize = 12;
/// The most of a log one request returns (the page follows the rest).
const LOG_CHUNK: u64 = 1 << 20;

/// Why a page cannot be shown; it becomes an error page (or, for an action, a JSON refusal)
/// in one place.
pub(super) struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::NOT_FOUND, message)
    }
}

/// A store error is the daemon's problem, not the visitor's.
impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        view::error(self.status, &self.message)
    }
}

/// An action's refusal: JSON with the sentence, for the page's script to show.
pub(super) struct ActionRefusal(Refusal);

impl<E: Into<Refusal>> From<E> for ActionRefusal {
    fn from(e: E) -> Self {
        ActionRefusal(e.into())
    }
}

impl IntoResponse for ActionRefusal {
    fn into_response(self) -> Response {
        (
            self.0.status,
            Json(Done {
                message: self.0.message,
                run_id: None,
            }),
        )
            .into_response()
    }
}

type Page = Result<Response, Refusal>;
type Action = Result<Response, ActionRefusal>;

/// What every page shows in its frame.
fn frame(ui: &Ui, title: &str) -> serde_json::Map<String, Value> {
    let home = std::path::absolute(&ui.env.home).unwrap_or_else(|_| ui.env.home.clone());
    let mut m = serde_json::Map::new();
    m.insert("title".into(), json!(title));
    m.insert("csrf".into(), json!(ui.csrf));
    m.insert("profile".into(), json!(ui.env.profile.name()));
    m.insert("home".into(), json!(home.display().to_string()));
    m.insert(
        "scheduler".into(),
        json!(control::running(&ui.env.home).is_some()),
    );
    m
}

fn with(mut m: serde_json::Map<String, Value>, more: Value) -> Value {
    if let Value::Object(o) = more {
        m.extend(o);
    }
    Value::Object(m)
}

/// `2019-11`, or the logical date of a run without a partition.
fn label(r: &RunRecord) -> String {
    r.partition
        .clone()
        .unwrap_or_else(|| r.logical_date.format("%Y-%m-%d %H:%M").to_string())
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn duration(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{}m {:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h {:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

fn state_names() -> Vec<&'static str> {
    [
        TaskState::Queued,
        TaskState::Running,
        TaskState::Deferred,
        TaskState::UpForRetry,
        TaskState::Success,
        TaskState::Failed,
        TaskState::UpstreamFailed,
        TaskState::Skipped,
    ]
    .iter()
    .map(|s| s.as_str())
    .collect()
}

fn run_json(r: &RunRecord) -> Value {
    json!({
        "run_id": r.run_id,
        "label": label(r),
        "state": r.state.as_str(),
        "trigger": r.trigger.as_str(),
        "covers": format!(
            "{} .. {}",
            r.data_interval_start.format("%Y-%m-%d %H:%M"),
            r.data_interval_end.format("%Y-%m-%d %H:%M")
        ),
    })
}

/// The newest `limit` runs of a DAG, oldest first (left to right).
fn recent_runs(ui: &Ui, dag: &str, limit: usize) -> Result<Vec<RunRecord>, Refusal> {
    let mut runs = ui.store.runs(&RunFilter {
        dag: Some(dag.to_string()),
        state: None,
        limit: Some(limit),
    })?;
    runs.reverse();
    Ok(runs)
}

fn find_dag(ui: &Ui, id: &str) -> Result<Arc<Dag>, Refusal> {
    ui.dag(id).ok_or_else(|| {
        Refusal::not_found(format!(
            "no DAG `{id}` in {} (or its file does not validate)",
            ui.project.pipelines_dir.display()
        ))
    })
}

pub(super) async fn dags(State(ui): State<Arc<Ui>>) -> Page {
    let (dags, broken) = ui.dags();
    let paused = ui.store.paused_dags()?;
    let mut rows = Vec::new();
    for dag in &dags {
        let p = &dag.pipeline;
        let status = crate::scheduler::dag_status(ui.store.as_ref(), dag, &paused)?;
        let runs = recent_runs(&ui, &p.dag, SQUARES)?;
        let partitions: Vec<String> = p
            .partitions
            .as_ref()
            .map(|parts| {
                parts
                    .monthly
                    .months()
                    .iter()
                    .map(|m| m.to_string())
                    .collect()
            })
            .unwrap_or_default();
        rows.push(json!({
            "id": p.dag,
            "description": p.description,
            "schedule": status.schedule,
            "paused": status.paused,
            "next_run": status.next_run_time.map(|t| t.format("%Y-%m-%d %H:%M").to_string()),
            "next_partition": status.next_partition,
            "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
            "partitions": partitions,
        }));
    }
    let ctx = with(
        frame(&ui, "DAGs"),
        json!({
            "dags": rows,
            "broken": broken,
            "pipelines_dir": ui.project.pipelines_dir.display().to_string(),
        }),
    );
    Ok(view::page("dags.html", &ctx))
}

pub(super) async fn grid(State(ui): State<Arc<Ui>>, Path(dag_id): Path<String>) -> Page {
    let dag = find_dag(&ui, &dag_id)?;
    let runs = recent_runs(&ui, &dag_id, GRID_RUNS)?;
    let ids: Vec<String> = runs.iter().map(|r| r.run_id.clone()).collect();
    let instances = ui.store.task_instances_of(&ids)?;
    let by: HashMap<(&str, &str), &crate::state::TaskInstance> = instances
        .iter()
        .map(|t| ((t.run_id.as_str(), t.task.as_str()), t))
        .collect();
    let tasks: Vec<Value> = dag
        .graph
        .order()
        .iter()
        .map(|name| {
            let cells: Vec<Value> = runs
                .iter()
                .map(|r| match by.get(&(r.run_id.as_str(), name.as_str())) {
                    Some(t) => json!({
                        "run_id": r.run_id,
                        "state": t.state.as_str(),
                        "try_number": t.try_number,
                    }),
                    None => json!({ "run_id": r.run_id, "state": "none", "try_number": 0 }),
                })
                .collect();
            json!({
                "name": name,
                "operator": dag.pipeline.task(name).map(|t| t.for_profile(ui.env.profile).0),
                "cells": cells,
            })
        })
        .collect();
    let ctx = with(
        frame(&ui, &dag_id),
        json!({
            "dag": dag_id,
            "description": dag.pipeline.description,
            "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
            "tasks": tasks,
            "states": state_names(),
        }),
    );
    Ok(view::page("grid.html", &ctx))
}

#[derive(Deserialize)]
pub(super) struct GraphQuery {
    run: Option<String>,
}

pub(super) async fn graph(
    State(ui): State<Arc<Ui>>,
    Path(dag_id): Path<String>,
    Query(q): Query<GraphQuery>,
) -> Page {
    let dag = find_dag(&ui, &dag_id)?;
    let runs = recent_runs(&ui, &dag_id, GRID_RUNS)?;
    let run_id = q
        .run
        .filter(|r| runs.iter().any(|x| x.run_id == *r))
        .or_else(|| runs.last().map(|r| r.run_id.clone()));
    let states: HashMap<String, TaskState> = match &run_id {
        None => HashMap::new(),
        Some(id) => ui
            .store
            .task_instances(id)?
            .into_iter()
            .map(|t| (t.task, t.state))
            .collect(),
    };
    let link = |task: &str| {
        run_id
            .as_ref()
            .map(|r| format!("/runs/{}/tasks/{}", urlencoding(r), urlencoding(task)))
    };
    let svg = graph::svg(&dag.pipeline, ui.env.profile, &dag.graph, &states, &link);
    let mut listed: Vec<Value> = runs.iter().map(run_json).collect();
    listed.reverse();
    let ctx = with(
        frame(&ui, &format!("{dag_id}: graph")),
        json!({
            "dag": dag_id,
            "description": dag.pipeline.description,
            "runs": listed,
            "run_id": run_id,
            "svg": svg,
            "states": state_names(),
        }),
    );
    Ok(view::page("graph.html", &ctx))
}

/// Percent-encodes a path segment.
fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) async fn partitions(State(ui): State<Arc<Ui>>, Path(dag_id): Path<String>) -> Page {
    let dag = find_dag(&ui, &dag_id)?;
    let p = &dag.pipeline;
    let mut ctx = json!({
        "dag": dag_id,
        "description": p.description,
        "partitioned": p.partitions.is_some(),
    });
    if let Some(parts) = &p.partitions {
        let latest = ui.store.latest_run_per_partition(&dag_id)?;
        let by: HashMap<&str, &RunRecord> = latest
            .iter()
            .filter_map(|r| r.partition.as_deref().map(|k| (k, r)))
            .collect();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        let months: Vec<Value> = parts
            .monthly
            .months()
            .iter()
            .map(|m| {
                let key = m.to_string();
                let run = by.get(key.as_str());
                let state = run.map_or("none", |r| r.state.as_str());
                let bucket = match state {
                    "success" => "success",
                    "failed" => "failed",
                    "none" => "none",
                    _ => "active",
                };
                *counts.entry(bucket).or_default() += 1;
                json!({
                    "key": key,
                    "name": m.name(),
                    "state": state,
                    "run_id": run.map(|r| r.run_id.clone()),
                    "trigger": run.map(|r| r.trigger.as_str()),
                    "ended": run.and_then(|r| r.ended_at).map(|t| t.format("%Y-%m-%d %H:%M").to_string()),
                })
            })
            .collect();
        ctx["months"] = json!(months);
        ctx["counts"] = json!({
            "success": counts.get("success").copied().unwrap_or(0),
            "failed": counts.get("failed").copied().unwrap_or(0),
            "active": counts.get("active").copied().unwrap_or(0),
            "none": counts.get("none").copied().unwrap_or(0),
        });
        ctx["from"] = json!(parts.monthly.from.to_string());
        ctx["to"] = json!(parts.monthly.to.to_string());
    }
    Ok(view::page(
        "partitions.html",
        &with(frame(&ui, &format!("{dag_id}: partitions")), ctx),
    ))
}

#[derive(Deserialize)]
pub(super) struct TaskQuery {
    #[serde(rename = "try")]
    try_number: Option<u32>,
}

/// The bytes of a file from `offset` (at most [`LOG_CHUNK`]), as text.
fn read_from(path: &str, offset: u64) -> (String, u64) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return (String::new(), offset);
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return (String::new(), offset);
    }
    let mut buf = Vec::new();
    let _ = f.take(LOG_CHUNK).read_to_end(&mut buf);
    // Stop at the last whole line, so a line being written is not split between reads.
    let keep = match buf.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None if buf.len() as u64 == LOG_CHUNK => buf.len(),
        None => 0,
    };
    buf.truncate(keep);
    (
        String::from_utf8_lossy(&buf).into_owned(),
        offset + keep as u64,
    )
}

pub(super) async fn task(
    State(ui): State<Arc<Ui>>,
    Path((run_id, task)): Path<(String, String)>,
    Query(q): Query<TaskQuery>,
) -> Page {
    let run = ui
        .store
        .run(&run_id)?
        .ok_or_else(|| Refusal::not_found(format!("no run `{run_id}`")))?;
    let instances = ui.store.task_instances(&run_id)?;
    let Some(ti) = instances.into_iter().find(|t| t.task == task) else {
        return Err(Refusal::not_found(format!(
            "run `{run_id}` has no task `{task}`"
        )));
    };
    let tries = ui.store.tries(&run_id, &task)?;
    let shown = q
        .try_number
        .and_then(|n| tries.iter().find(|t| t.try_number == n))
        .or(tries.last());
    let (log, log_offset) = shown.map(|t| read_from(&t.log_path, 0)).unwrap_or_default();
    let rendered = match shown {
        Some(t) => ui
            .store
            .try_rendered(&run_id, &task, t.try_number)
            .ok()
            .flatten(),
        None => None,
    };
    let dag = ui.dag(&run.dag);
    let spec_task = dag.as_ref().and_then(|d| d.pipeline.task(&task).cloned());
    let tries_json: Vec<Value> = tries
        .iter()
        .map(|t| {
            json!({
                "try_number": t.try_number,
                "state": t.state.as_str(),
                "interrupted": t.interrupted,
                "started": time(Some(t.started_at)),
                "ended": time(t.ended_at),
                "duration": t.ended_at.map(|e| duration((e - t.started_at).num_milliseconds())),
                "error": t.error,
            })
        })
        .collect();
    let ctx = with(
        frame(&ui, &format!("{task} · {}", label(&run))),
        json!({
            "dag": run.dag,
            "run": run_json(&run),
            "task": task,
            "state": ti.state.as_str(),
            "description": spec_task.as_ref().and_then(|t| t.description.clone()),
            "operator": spec_task.as_ref().map(|t| t.for_profile(ui.env.profile).0.to_string()),
            "error": ti.error,
            "tries": tries_json,
            "shown_try": shown.map(|t| t.try_number),
            "output": ti.output.as_ref().and_then(|o| serde_json::to_string_pretty(o).ok()),
            "rendered": rendered,
            "log": log,
            "log_offset": log_offset,
            "log_path": shown.map(|t| t.log_path.clone()),
            "log_running": shown.is_some_and(|t| t.state == TaskState::Running),
        }),
    );
    Ok(view::page("task.html", &ctx))
}

#[derive(Deserialize)]
pub(super) struct LogQuery {
    run: String,
    task: String,
    #[serde(rename = "try")]
    try_number: u32,
    #[serde(default)]
    offset: u64,
}

/// The part of a try's log after `offset`, and whether the try is still running.
pub(super) async fn log_tail(State(ui): State<Arc<Ui>>, Query(q): Query<LogQuery>) -> Page {
    let tries = ui.store.tries(&q.run, &q.task)?;
    let Some(t) = tries.iter().find(|t| t.try_number == q.try_number) else {
        return Err(Refusal::not_found(format!(
            "no try {} of `{}` in `{}`",
            q.try_number, q.task, q.run
        )));
    };
    let (text, offset) = read_from(&t.log_path, q.offset);
    Ok(Json(json!({
        "text": text,
        "offset": offset,
        "running": t.state == TaskState::Running,
    }))
    .into_response())
}

#[derive(Deserialize)]
pub(super) struct DashboardQuery {
    period: Option<String>,
}

pub(super) async fn dashboard(State(ui): State<Arc<Ui>>, Query(q): Query<DashboardQuery>) -> Page {
    let period: dashboard::Period = q
        .period
        .as_deref()
        .unwrap_or("all")
        .parse()
        .map_err(|e: String| Refusal::new(StatusCode::BAD_REQUEST, e))?;
    let wh = crate::connections::warehouse::open_for_reading(ui.env.profile, &ui.env.home)
        .map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, e.message()))?;
    let d = dashboard::collect(wh.as_ref(), "E-commerce analytics", period).await;
    // Let go of a read-only warehouse at once: a pipeline may want to write it.
    drop(wh);
    let live = dashboard::page::Live {
        path: "/dashboard".into(),
        back: Some("/".into()),
        refresh_seconds: 300,
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        dashboard::page::render(&d, Some(&live)),
    )
        .into_response())
}

pub(super) async fn asset(Path(file): Path<String>) -> Page {
    let (_, content_type, body) = view::ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| Refusal::not_found(format!("no asset `{file}`")))?;
    Ok((
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        *body,
    )
        .into_response())
}

/// What an action answers: a sentence for the page, and what it made.
#[derive(Serialize)]
struct Done {
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<String>,
}

fn done(message: String, run_id: Option<String>) -> Action {
    Ok(Json(Done { message, run_id }).into_response())
}

fn set_paused(ui: &Ui, dag_id: &str, paused: bool) -> Action {
    find_dag(ui, dag_id)?;
    ui.store.set_paused(dag_id, paused)?;
    control::wake(&ui.env.home);
    done(
        format!("{} {dag_id}", if paused { "paused" } else { "unpaused" }),
        None,
    )
}

pub(super) async fn pause(State(ui): State<Arc<Ui>>, Path(dag_id): Path<String>) -> Action {
    set_paused(&ui, &dag_id, true)
}

pub(super) async fn unpause(State(ui): State<Arc<Ui>>, Path(dag_id): Path<String>) -> Action {
    set_paused(&ui, &dag_id, false)
}

#[derive(Deserialize)]
pub(super) struct TriggerForm {
    partition: Option<String>,
    date: Option<String>,
}

pub(super) async fn trigger(
    State(ui): State<Arc<Ui>>,
    Path(dag_id): Path<String>,
    Form(f): Form<TriggerForm>,
) -> Action {
    let dag = find_dag(&ui, &dag_id)?;
    let partition = f.partition.filter(|p| !p.is_empty());
    let date = f.date.filter(|d| !d.is_empty());
    let plan = RunPlan::for_target(
        &dag,
        partition.as_deref(),
        date.as_deref(),
        Some(ui.store.as_ref()),
    )
    .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let rec = crate::executor::create_run(ui.store.as_ref(), &dag, &plan, Trigger::Manual, None)
        .map_err(|e| Refusal::new(StatusCode::CONFLICT, e.to_string()))?;
    control::wake(&ui.env.home);
    let waits = if control::running(&ui.env.home).is_some() {
        ""
    } else {
        "; it waits for a scheduler (windsock scheduler)"
    };
    done(format!("queued {}{waits}", rec.run_id), Some(rec.run_id))
}

#[derive(Deserialize)]
pub(super) struct ClearForm {
    task: Option<String>,
    #[serde(default)]
    downstream: Option<String>,
}

pub(super) async fn clear(
    State(ui): State<Arc<Ui>>,
    Path(run_id): Path<String>,
    Form(f): Form<ClearForm>,
) -> Action {
    let run = ui
        .store
        .run(&run_id)?
        .ok_or_else(|| Refusal::not_found(format!("no run `{run_id}`")))?;
    let only: Vec<String> = f.task.into_iter().filter(|t| !t.is_empty()).collect();
    let downstream = f.downstream.is_some_and(|d| d == "true");
    let dag = match downstream {
        true => Some(find_dag(&ui, &run.dag)?),
        false => None,
    };
    let cleared = crate::executor::clear_tasks(ui.store.as_ref(), &run_id, &only, dag.as_deref())
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    control::wake(&ui.env.home);
    done(
        format!(
            "cleared {} of {run_id}: {}",
            cleared.len(),
            cleared.join(", ")
        ),
        Some(run_id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_read_in_whole_lines_and_paths_are_encoded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("try-1.log");
        std::fs::write(&path, "one\ntwo\nthr").unwrap();
        let p = path.display().to_string();
        let (text, offset) = read_from(&p, 0);
        assert_eq!((text.as_str(), offset), ("one\ntwo\n", 8));
        let (text, offset) = read_from(&p, offset);
        assert_eq!((text.as_str(), offset), ("", 8));
        assert_eq!(read_from("/nonexistent", 3), (String::new(), 3));
        assert_eq!(urlencoding("a b/<c>"), "a%20b%2F%3Cc%3E");
        assert_eq!(duration(1500), "1.5 s");
        assert_eq!(duration(125_000), "2m 05s");
    }
}
