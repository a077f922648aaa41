//! Live progress of a run: a task table with bars on a terminal, plain lines otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::executor::{Event, Observer};
use crate::operators::{ProgressReport, Unit};
use crate::state::TaskState;

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn finished_line(
    task: &str,
    state: TaskState,
    try_number: u32,
    duration: Duration,
    error: Option<&str>,
    retry_in: Option<Duration>,
) -> String {
    let err = error.map(|e| format!(": {e}")).unwrap_or_default();
    match state {
        TaskState::Success => format!(
            "✔ {task} succeeded in {} (try {try_number})",
            secs(duration)
        ),
        TaskState::UpForRetry => format!(
            "↻ {task} try {try_number} failed{err}; retrying in {}",
            secs(retry_in.unwrap_or_default())
        ),
        TaskState::Failed => format!("✘ {task} failed after try {try_number}{err}"),
        TaskState::UpstreamFailed => format!("⊘ {task} not run{err}"),
        TaskState::Skipped => format!("⊘ {task} skipped{err}"),
        other => format!("· {task} {other}{err}"),
    }
}

/// An observer printing to stderr: bars on a terminal, one line per event otherwise.
pub(super) fn progress_observer() -> Observer {
    if std::io::stderr().is_terminal() {
        terminal_observer()
    } else {
        Arc::new(|ev: &Event| {
            let now = chrono::Utc::now().format("%H:%M:%S%.3f");
            let line = match ev {
                Event::RunStarted {
                    run_id,
                    tasks,
                    already_done,
                } => {
                    format!("run {run_id}: {tasks} tasks, {already_done} already finished")
                }
                Event::TaskStarted {
                    task,
                    try_number,
                    last_try,
                } => {
                    format!("▶ {task} started (try {try_number}/{last_try})")
                }
                Event::TaskFinished {
                    task,
                    state,
                    try_number,
                    duration,
                    error,
                    retry_in,
                } => finished_line(
                    task,
                    *state,
                    *try_number,
                    *duration,
                    error.as_deref(),
                    *retry_in,
                ),
                Event::RunFinished { run_id, state } => format!("run {run_id} {state}"),
                // Progress is for bars; in a log the task's own log file says it.
                Event::TaskProgress { .. } => return,
            };
            eprintln!("[{now}] {line}");
        })
    }
}

struct Bars {
    multi: MultiProgress,
    total: Option<ProgressBar>,
    tasks: HashMap<String, ProgressBar>,
}

fn terminal_observer() -> Observer {
    let bars = Mutex::new(Bars {
        multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
        total: None,
        tasks: HashMap::new(),
    });
    Arc::new(move |ev: &Event| {
        let mut b = bars.lock().unwrap_or_else(|p| p.into_inner());
        match ev {
            Event::RunStarted {
                run_id,
                tasks,
                already_done,
            } => {
                let _ = b.multi.println(format!("run {run_id}"));
                let bar = b.multi.add(ProgressBar::new(*tasks as u64));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} tasks",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_position(*already_done as u64);
                b.total = Some(bar);
            }
            Event::TaskStarted {
                task,
                try_number,
                last_try,
            } => {
                let bar = b.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(format!("{task} (try {try_number}/{last_try})"));
                bar.enable_steady_tick(Duration::from_millis(120));
                b.tasks.insert(task.clone(), bar);
            }
            Event::TaskProgress { task, progress } => {
                if let Some(bar) = b.tasks.get(task) {
                    show_progress(bar, task, progress);
                }
            }
            Event::TaskFinished {
                task,
                state,
                try_number,
                duration,
                error,
                retry_in,
            } => {
                if let Some(bar) = b.tasks.remove(task) {
                    bar.finish_and_clear();
                    b.multi.remove(&bar);
                }
                let _ = b.multi.println(finished_line(
                    task,
                    *state,
                    *try_number,
                    *duration,
                    error.as_deref(),
                    *retry_in,
                ));
                if state.is_finished() {
                    if let Some(total) = &b.total {
                        total.inc(1);
                    }
                }
            }
            Event::RunFinished { .. } => {
                if let Some(total) = b.total.take() {
                    total.finish_and_clear();
                }
            }
        }
    })
}

/// Turns a task's spinner into a bar of what its operator reports (events, bytes).
fn show_progress(bar: &ProgressBar, task: &str, p: &ProgressReport) {
    let template = match (p.unit, p.total.is_some()) {
        (Unit::Events, true) => "  {msg} [{bar:30}] {pos}/{len} events {per_sec} {eta}",
        (Unit::Events, false) => "  {spinner} {msg} {pos} events {per_sec}",
        (Unit::Bytes, true) => {
            "  {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}"
        }
        (Unit::Bytes, false) => "  {spinner} {msg} {bytes} {binary_bytes_per_sec}",
    };
    if bar.length() != p.total {
        bar.set_style(
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(task.to_string());
        match p.total {
            Some(t) => bar.set_length(t),
            None => bar.unset_length(),
        }
    }
    bar.set_position(p.done);
}

/// Progress of a backfill: a bar of runs on a terminal, one line per run otherwise.
pub(super) fn backfill_progress(
    total: usize,
) -> Box<dyn Fn(&crate::scheduler::backfill::Progress) + Send + Sync> {
    use crate::scheduler::backfill::Progress;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} runs {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    Box::new(move |p: &Progress| {
        let line = match p {
            Progress::Started { label, run_id } => format!("▶ {label} started ({run_id})"),
            Progress::Waiting { label, run_id } => {
                format!("… {label} is being run by another process ({run_id}); waiting")
            }
            Progress::Finished {
                label,
                run_id,
                state,
            } => {
                let mark = if *state == crate::state::RunState::Success {
                    "✔"
                } else {
                    "✘"
                };
                format!("{mark} {label} {state} ({run_id})")
            }
        };
        match &bar {
            Some(bar) => {
                if matches!(p, Progress::Finished { .. }) {
                    bar.inc(1);
                }
                bar.println(line);
            }
            None => eprintln!("{line}"),
        }
    })
}
