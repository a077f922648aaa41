//! `stream` (a DAG's streaming tasks outside a run) and `broker` (the embedded Kafka broker in
//! the foreground).

use std::process::ExitCode;
use std::sync::atomic::Ordering;

use crate::cli::args::Target;
use crate::cli::{CliResult, Session, fail, task, wait_for_signal};
use crate::executor::{TryPlan, prepare_try};
use crate::operators::TaskResult;

/// Runs the DAG's streaming tasks (or those named) side by side: to the end of their topics, or
/// with `follow` until Ctrl-C, when they finish their batch and commit.
pub(super) async fn stream(
    s: &Session,
    dag: &str,
    names: &[String],
    follow: bool,
    target: &Target,
) -> CliResult {
    let dag = s.dag(dag)?;
    let p = &dag.pipeline;
    let env = s.run_env();
    let plan = s.plan(&dag, target, None)?;
    let run_id = format!("stream__{}", chrono::Utc::now().format("%Y%m%dT%H%M%S"));
    let wanted: Vec<&str> = if names.is_empty() {
        p.tasks.keys().map(String::as_str).collect()
    } else {
        names.iter().map(String::as_str).collect()
    };
    let mut jobs = Vec::new();
    for name in wanted {
        let t = task(&dag, name)?;
        let op_name = t.for_profile(env.profile).0;
        let streams = crate::operators::lookup(op_name).is_some_and(|e| e.streams);
        if !streams {
            if names.is_empty() {
                continue;
            }
            return Err(fail(format!(
                "task `{name}` ({op_name}) does not stream; `windsock stream` runs kafka_to_warehouse and stream_aggregate tasks"
            )));
        }
        let ready = prepare_try(
            &env,
            &s.project.templates,
            TryPlan {
                dag: &dag,
                plan: &plan,
                run_id: &run_id,
                task: name,
                try_number: 1,
                upstream: Default::default(),
            },
        )?;
        let operator = if follow {
            ready.operator.follow().unwrap_or(ready.operator)
        } else {
            ready.operator
        };
        eprintln!("{name}: {op_name}, log {}", ready.ctx.log.path().display());
        jobs.push((name.to_string(), operator, ready.ctx));
    }
    if jobs.is_empty() {
        return Err(fail(format!(
            "DAG `{}` has no streaming task (kafka_to_warehouse or stream_aggregate)",
            p.dag
        )));
    }
    if follow {
        eprintln!("streaming until Ctrl-C");
    }
    let stops: Vec<_> = jobs.iter().map(|(_, _, c)| c.stop.clone()).collect();
    let all = futures_util::future::join_all(
        jobs.iter()
            .map(|(name, op, ctx)| async move { (name.clone(), op.run(ctx).await) }),
    );
    tokio::pin!(all);
    let results = tokio::select! {
        r = &mut all => r,
        _ = wait_for_signal() => {
            eprintln!("stopping: finishing the current batches");
            for s in &stops {
                s.store(true, Ordering::Relaxed);
            }
            all.await
        }
    };
    let mut ok = true;
    for (name, r) in results {
        match r {
            Ok(TaskResult::Success(v)) => println!("{name}: {}", serde_json::to_string(&v)?),
            Ok(TaskResult::Skipped(why)) => println!("{name}: skipped: {why}"),
            Ok(TaskResult::Defer { .. }) => println!("{name}: not finished"),
            Err(e) => {
                ok = false;
                eprintln!("error: {name}: {e}");
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs the local profile's embedded broker until Ctrl-C.
pub(super) async fn broker(s: &Session) -> CliResult {
    let addr = crate::connections::kafka::broker::ensure(s.home())?;
    println!("{addr}");
    eprintln!(
        "the embedded Kafka broker of {} listens on {addr}; Ctrl-C stops it",
        s.home().display()
    );
    wait_for_signal().await;
    Ok(ExitCode::SUCCESS)
}
