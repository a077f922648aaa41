//! The behaviour every state store must have, run against each: SQLite on a temporary file,
//! PostgreSQL on a throwaway server of Debian's package (a fresh database per test).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::*;

#[path = "../../tests/integration/common/postgres.rs"]
mod pg_server;

fn new_run(id: &str, key: &str, trigger: Trigger) -> NewRun {
    let t = Utc::now();
    NewRun {
        run_id: id.into(),
        dag: "d".into(),
        run_key: key.into(),
        partition: Some(key.into()),
        logical_date: t,
        data_interval_start: t,
        data_interval_end: t,
        trigger,
        pipeline_file: "p.yaml".into(),
        owner: None,
    }
}

fn owner(name: &str, lease_ms: u64) -> Owner {
    Owner {
        id: format!("elsewhere:{name}:1"),
        lease: Duration::from_millis(lease_ms),
    }
}

fn nobody_dies(_: &str) -> bool {
    false
}

fn pruning_keeps_partition_runs_unfinished_runs_and_each_dags_newest_scheduled_run(
    s: &dyn StateStore,
) {
    let tasks = vec!["a".to_string()];
    let at = |id: &str, key: &str, trigger: Trigger, minutes_ago: i64| {
        let mut r = new_run(id, key, trigger);
        r.partition = None;
        r.data_interval_end = Utc::now() - chrono::Duration::minutes(minutes_ago);
        r
    };
    // Old and finished: two scheduled (the newer one stays), a manual one, a partition run.
    for r in [
        at("sched-old", "k1", Trigger::Scheduled, 30),
        at("sched-new", "k2", Trigger::Scheduled, 20),
        at("manual", "m", Trigger::Manual, 10),
    ] {
        s.create_run(&r, &tasks).unwrap();
    }
    s.create_run(&new_run("month", "2019-10", Trigger::Scheduled), &tasks)
        .unwrap();
    s.create_run(&at("running", "k3", Trigger::Manual, 5), &tasks)
        .unwrap();
    assert!(s.start_try("sched-old", "a", 1, "/logs/x", None).unwrap());
    for id in ["sched-old", "sched-new", "manual", "month"] {
        s.set_run_state(id, RunState::Success).unwrap();
    }
    s.set_run_state("running", RunState::Running).unwrap();
    // Nothing ended before a minute ago.
    let past = Utc::now() - chrono::Duration::minutes(1);
    assert!(s.prune_runs(past).unwrap().is_empty());
    let mut gone = s
        .prune_runs(Utc::now() + chrono::Duration::seconds(1))
        .unwrap();
    gone.sort();
    assert_eq!(
        gone,
        vec![
            ("d".to_string(), "manual".to_string()),
            ("d".into(), "sched-old".into())
        ]
    );
    let left: Vec<String> = s
        .runs(&RunFilter::default())
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(left.len(), 3, "{left:?}");
    for id in ["sched-new", "month", "running"] {
        assert!(left.contains(&id.to_string()), "{id} was pruned");
    }
    assert!(s.tries("sched-old", "a").unwrap().is_empty());
    assert!(s.task_instances("manual").unwrap().is_empty());
}

fn lifecycle_of_a_run(s: &dyn StateStore) {
    let tasks = vec!["a".to_string(), "b".to_string()];
    s.create_run(&new_run("r1", "2019-10", Trigger::Manual), &tasks)
        .unwrap();
    s.set_run_state("r1", RunState::Running).unwrap();
    let run = s.run("r1").unwrap().unwrap();
    assert_eq!(run.state, RunState::Running);
    assert!(run.started_at.is_some() && run.ended_at.is_none());
    assert!(s.start_try("r1", "a", 1, "/logs/a/1.log", None).unwrap());
    let failed = TryOutcome::failed(TaskState::UpForRetry, "boom", Some(Utc::now()));
    assert!(s.finish_try("r1", "a", 1, &failed, None).unwrap());
    assert!(s.start_try("r1", "a", 2, "/logs/a/2.log", None).unwrap());
    s.set_try_pid("r1", "a", 2, 4242).unwrap();
    s.set_try_rendered("r1", "a", 2, "command: true").unwrap();
    let ok = TryOutcome::success(serde_json::json!({"rows": 3}));
    assert!(s.finish_try("r1", "a", 2, &ok, None).unwrap());
    let tis = s.task_instances("r1").unwrap();
    assert_eq!(
        tis.iter().map(|t| t.task.as_str()).collect::<Vec<_>>(),
        ["a", "b"],
        "instances in the order given"
    );
    assert_eq!(tis[0].state, TaskState::Success);
    assert_eq!(tis[0].try_number, 2);
    assert_eq!(tis[0].output, Some(serde_json::json!({"rows": 3})));
    assert!(tis[0].duration_ms.is_some_and(|d| d >= 0));
    let tries = s.tries("r1", "a").unwrap();
    assert_eq!(tries.len(), 2);
    assert_eq!(tries[0].state, TaskState::Failed);
    assert_eq!(tries[0].error.as_deref(), Some("boom"));
    assert_eq!(tries[1].state, TaskState::Success);
    assert_eq!(tries[1].pid, Some(4242));
    assert_eq!(
        s.try_rendered("r1", "a", 2).unwrap().as_deref(),
        Some("command: true")
    );
    s.set_task_state("r1", "b", TaskState::UpstreamFailed, Some("upstream"))
        .unwrap();
    s.set_run_state("r1", RunState::Failed).unwrap();
    assert!(s.run("r1").unwrap().unwrap().ended_at.is_some());
    s.clear_tasks(
        "r1",
        &["a".to_string()],
        &owner("clearer", 1000),
        &nobody_dies,
    )
    .unwrap();
    let a = &s.task_instances("r1").unwrap()[0];
    assert_eq!(
        (a.state, a.first_try, a.try_number),
        (TaskState::Queued, 3, 2)
    );
    let run = s.run("r1").unwrap().unwrap();
    assert_eq!((run.state, run.ended_at), (RunState::Queued, None));
    // A pipeline that gained a task: the run gets it, once.
    s.ensure_tasks("r1", &["a".into(), "b".into(), "c".into()])
        .unwrap();
    s.ensure_tasks("r1", &["c".into()]).unwrap();
    let names: Vec<String> = s
        .task_instances("r1")
        .unwrap()
        .into_iter()
        .map(|t| t.task)
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(
        s.task_instances_of(&["r1".into(), "nope".into()])
            .unwrap()
            .len(),
        3
    );
}

fn interrupted_tries_are_marked_as_such(s: &dyn StateStore) {
    let tasks = vec!["a".to_string(), "b".to_string()];
    s.create_run(&new_run("r1", "2019-10", Trigger::Manual), &tasks)
        .unwrap();
    s.start_try("r1", "a", 1, "/logs/a/1.log", None).unwrap();
    s.finish_try("r1", "a", 1, &TryOutcome::interrupted("stopped"), None)
        .unwrap();
    s.start_try("r1", "a", 2, "/logs/a/2.log", None).unwrap();
    let failed = TryOutcome::failed(TaskState::Failed, "interrupted-looking text", None);
    s.finish_try("r1", "a", 2, &failed, None).unwrap();
    // A try left running by a dead process, closed by a clear.
    s.start_try("r1", "b", 1, "/logs/b/1.log", None).unwrap();
    s.clear_tasks(
        "r1",
        &["b".to_string()],
        &owner("clearer", 1000),
        &nobody_dies,
    )
    .unwrap();
    let a = s.tries("r1", "a").unwrap();
    assert_eq!((a[0].interrupted, a[1].interrupted), (true, false));
    assert!(s.tries("r1", "b").unwrap()[0].interrupted);
    // The task's retry budget was not used by the interruption.
    assert_eq!(s.task_instances("r1").unwrap()[0].first_try, 2);
}

/// A clear never starts a try beside a running one: a try held by a live process is refused,
/// one whose holder is gone is closed as interrupted.
fn a_clear_refuses_tasks_running_under_a_live_holder(s: &dyn StateStore) {
    let tasks = vec!["a".to_string(), "b".to_string()];
    s.create_run(&new_run("r1", "2019-10", Trigger::Manual), &tasks)
        .unwrap();
    let holder = owner("holder", 60_000);
    let clearer = owner("clearer", 60_000);
    assert!(
        s.start_try("r1", "a", 1, "/logs/a/1", Some(&holder))
            .unwrap()
    );
    let done = TryOutcome::success(serde_json::json!({}));
    assert!(
        s.start_try("r1", "b", 1, "/logs/b/1", Some(&holder))
            .unwrap()
    );
    assert!(s.finish_try("r1", "b", 1, &done, Some(&holder)).unwrap());
    let e = s
        .clear_tasks("r1", &tasks, &clearer, &nobody_dies)
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::TaskRunning { task, try_number: 1, .. } if task == "a"),
        "{e}"
    );
    assert!(e.to_string().contains("is running (try 1"), "{e}");
    // Nothing was changed: not even the finished task.
    let tis = s.task_instances("r1").unwrap();
    assert_eq!(
        (tis[0].state, tis[1].state),
        (TaskState::Running, TaskState::Success)
    );
    // The holder renews and finishes undisturbed.
    assert_eq!(s.renew_tries("r1", &holder).unwrap(), ["a"]);
    // Once the holder is gone, the clear closes its try.
    s.clear_tasks("r1", &tasks, &clearer, &|o: &str| o == holder.id)
        .unwrap();
    assert!(s.tries("r1", "a").unwrap()[0].interrupted);
    assert!(!s.finish_try("r1", "a", 1, &done, Some(&holder)).unwrap());
}

/// The end of a run comes from the store: a task cleared meanwhile keeps it going; the end of
/// a try recorded twice (the reply to the first call lost) is recorded once.
fn a_run_ends_from_the_stored_task_states(s: &dyn StateStore) {
    let tasks = vec!["a".to_string(), "b".to_string()];
    s.create_run(&new_run("r1", "2019-10", Trigger::Manual), &tasks)
        .unwrap();
    s.set_run_state("r1", RunState::Running).unwrap();
    let me = owner("me", 60_000);
    let done = TryOutcome::success(serde_json::json!({"n": 1}));
    for t in &tasks {
        assert!(s.start_try("r1", t, 1, "/logs/x", Some(&me)).unwrap());
        assert!(s.finish_try("r1", t, 1, &done, Some(&me)).unwrap());
    }
    // Sent again: the same end is there, so it counts as recorded; another end does not.
    assert!(s.finish_try("r1", "a", 1, &done, Some(&me)).unwrap());
    let other = TryOutcome::failed(TaskState::Failed, "boom", None);
    assert!(!s.finish_try("r1", "a", 1, &other, Some(&me)).unwrap());
    assert_eq!(s.tries("r1", "a").unwrap().len(), 1);
    // Another process clears `a` before the executor ends the run.
    s.clear_tasks("r1", &["a".to_string()], &me, &nobody_dies)
        .unwrap();
    assert_eq!(s.run("r1").unwrap().unwrap().state, RunState::Running);
    assert_eq!(s.finish_run("r1", &tasks).unwrap(), None);
    assert_eq!(s.run("r1").unwrap().unwrap().state, RunState::Running);
    assert!(s.start_try("r1", "a", 2, "/logs/x", Some(&me)).unwrap());
    let failed = TryOutcome::failed(TaskState::Failed, "boom", None);
    assert!(s.finish_try("r1", "a", 2, &failed, Some(&me)).unwrap());
    assert_eq!(s.finish_run("r1", &tasks).unwrap(), Some(RunState::Failed));
    let run = s.run("r1").unwrap().unwrap();
    assert_eq!(run.state, RunState::Failed);
    assert!(run.ended_at.is_some());
    // Only the DAG's tasks count: an instance of a task the pipeline dropped does not.
    s.ensure_tasks("r1", &["gone".to_string()]).unwrap();
    s.clear_tasks("r1", &["a".to_string()], &me, &nobody_dies)
        .unwrap();
    assert!(s.start_try("r1", "a", 3, "/logs/x", Some(&me)).unwrap());
    assert!(s.finish_try("r1", "a", 3, &done, Some(&me)).unwrap());
    assert_eq!(s.finish_run("r1", &tasks).unwrap(), Some(RunState::Success));
}

fn scheduled_runs_are_unique_per_key_but_manual_runs_repeat(s: &dyn StateStore) {
    s.create_run(&new_run("s1", "2019-10", Trigger::Scheduled), &[])
        .unwrap();
    let e = s
        .create_run(&new_run("b1", "2019-10", Trigger::Backfill), &[])
        .unwrap_err();
    assert!(
        matches!(e, StoreError::RunExists { ref run_id, .. } if run_id == "s1"),
        "{e}"
    );
    s.create_run(&new_run("m1", "2019-10", Trigger::Manual), &[])
        .unwrap();
    s.create_run(&new_run("m2", "2019-10", Trigger::Manual), &[])
        .unwrap();
    assert_eq!(s.runs(&RunFilter::default()).unwrap().len(), 3);
    assert_eq!(
        s.unique_run("d", "2019-10").unwrap().map(|r| r.run_id),
        Some("s1".to_string())
    );
    // A taken id is its own error (the caller picks another id), not a duplicate key.
    let e = s
        .create_run(&new_run("m2", "2019-11", Trigger::Manual), &[])
        .unwrap_err();
    assert!(
        matches!(e, StoreError::RunIdTaken(ref id) if id == "m2"),
        "{e}"
    );
    let only = s
        .runs(&RunFilter {
            dag: Some("d".into()),
            state: Some(RunState::Queued),
            limit: Some(2),
        })
        .unwrap();
    assert_eq!(only.len(), 2);
}

/// Daemons ticking the same cron at once: one run, every other creator told it exists.
fn racing_creators_of_one_scheduled_run_create_it_once(s: Arc<dyn StateStore>) {
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                s.create_run(
                    &new_run(&format!("tick{i}"), "2019-10", Trigger::Scheduled),
                    &["a".to_string(), "b".to_string()],
                )
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(_) | Err(StoreError::RunExists { .. })))
    );
    assert_eq!(s.runs(&RunFilter::default()).unwrap().len(), 1);
}

/// Processes racing for one try: exactly one claims it; the others see it taken.
fn racing_claimers_of_one_try_claim_it_once(s: Arc<dyn StateStore>) {
    s.create_run(&new_run("r", "k", Trigger::Manual), &["a".to_string()])
        .unwrap();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                s.start_try(
                    "r",
                    "a",
                    1,
                    "/logs/a/1.log",
                    Some(&owner(&i.to_string(), 60_000)),
                )
            })
        })
        .collect();
    let won: Vec<bool> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    let a = &s.task_instances("r").unwrap()[0];
    assert_eq!((a.state, a.try_number), (TaskState::Running, 1));
    assert!(a.owner.is_some() && a.lease_expires_at.is_some());
    // The same try cannot be claimed again, nor a later one while it runs.
    assert!(
        !s.start_try("r", "a", 1, "/x", Some(&owner("late", 1000)))
            .unwrap()
    );
    assert!(
        !s.start_try("r", "a", 2, "/x", Some(&owner("late", 1000)))
            .unwrap()
    );
}

fn a_try_is_taken_over_only_after_its_holder_is_gone(s: &dyn StateStore) {
    s.create_run(&new_run("r", "k", Trigger::Manual), &["a".to_string()])
        .unwrap();
    let (first, second) = (owner("first", 300), owner("second", 60_000));
    assert!(s.start_try("r", "a", 1, "/x", Some(&first)).unwrap());
    // Alive and within its lease: kept.
    assert!(!s.take_over_try("r", "a", 1, &second, &nobody_dies).unwrap());
    assert_eq!(s.renew_tries("r", &first).unwrap(), ["a"]);
    // Declared dead (same host, process gone): taken at once.
    let third = owner("third", 60_000);
    assert!(
        s.take_over_try("r", "a", 1, &third, &|h| h == first.id)
            .unwrap()
    );
    // The first holder can neither renew nor finish it any more: its result is dropped.
    assert!(s.renew_tries("r", &first).unwrap().is_empty());
    let ok = TryOutcome::success(serde_json::json!({}));
    assert!(!s.finish_try("r", "a", 1, &ok, Some(&first)).unwrap());
    // The new holder's lease runs out (a host that went away): the next one takes over.
    let short = owner("short", 200);
    assert!(
        s.take_over_try("r", "a", 1, &short, &|h| h == third.id)
            .unwrap()
    );
    assert!(!s.take_over_try("r", "a", 1, &second, &nobody_dies).unwrap());
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.take_over_try("r", "a", 1, &second, &nobody_dies).unwrap());
    let interrupted = TryOutcome::interrupted("interrupted: its process died");
    assert!(
        s.finish_try("r", "a", 1, &interrupted, Some(&second))
            .unwrap()
    );
    let a = &s.task_instances("r").unwrap()[0];
    assert_eq!(a.state, TaskState::UpForRetry);
    assert_eq!((a.owner.as_deref(), a.first_try), (None, 2));
    assert!(s.tries("r", "a").unwrap()[0].interrupted);
    // Nothing running: nothing to take over.
    assert!(!s.take_over_try("r", "a", 1, &second, &nobody_dies).unwrap());
}

fn runs_are_claimed_by_one_process_until_released(s: &dyn StateStore) {
    s.create_run(&new_run("r", "k", Trigger::Manual), &[])
        .unwrap();
    let (a, b) = (owner("a", 60_000), owner("b", 60_000));
    assert!(s.claim_run("r", &a, &nobody_dies).unwrap());
    assert!(!s.claim_run("r", &b, &nobody_dies).unwrap());
    assert!(s.renew_lease("r", &a).unwrap());
    assert!(!s.renew_lease("r", &b).unwrap());
    assert!(s.claim_run("r", &b, &|h| h == a.id).unwrap());
    s.release_run("r", &b).unwrap();
    assert!(s.claim_run("r", &a, &nobody_dies).unwrap());
    assert_eq!(s.run("r").unwrap().unwrap().owner, Some(a.id.clone()));
    s.set_run_state("r", RunState::Success).unwrap();
    assert!(!s.claim_run("r", &b, &|_| true).unwrap());
    assert!(s.active_runs().unwrap().is_empty());
}

fn a_queued_run_starts_only_under_max_active_runs(s: &dyn StateStore) {
    for id in ["r1", "r2", "r3"] {
        s.create_run(&new_run(id, id, Trigger::Scheduled), &[])
            .unwrap();
    }
    assert!(s.activate_run("r1", 2).unwrap());
    assert!(s.activate_run("r1", 1).unwrap(), "running already");
    assert!(s.activate_run("r2", 2).unwrap());
    assert!(!s.activate_run("r3", 2).unwrap());
    assert_eq!(s.run("r3").unwrap().unwrap().state, RunState::Queued);
    s.set_run_state("r1", RunState::Success).unwrap();
    assert!(
        !s.activate_run("r1", 5).unwrap(),
        "finished runs stay finished"
    );
    assert!(s.activate_run("r3", 2).unwrap());
}

fn pauses_and_partitions_are_listed(s: &dyn StateStore) {
    s.set_paused("d", true).unwrap();
    s.set_paused("e", true).unwrap();
    s.set_paused("e", false).unwrap();
    assert_eq!(
        s.paused_dags().unwrap().into_iter().collect::<Vec<_>>(),
        ["d"]
    );
    s.create_run(&new_run("oct1", "2019-10", Trigger::Scheduled), &[])
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let mut again = new_run("oct2", "2019-10#2", Trigger::Scheduled);
    again.partition = Some("2019-10".into());
    s.create_run(&again, &[]).unwrap();
    s.create_run(&new_run("nov", "2019-11", Trigger::Scheduled), &[])
        .unwrap();
    s.set_run_state("oct1", RunState::Success).unwrap();
    let latest: Vec<String> = s
        .latest_run_per_partition("d")
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(latest, ["oct2", "nov"]);
    assert_eq!(
        s.succeeded_partitions("d")
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        ["2019-10"]
    );
}

/// Declares each behaviour as a test against each store.
macro_rules! on_every_store {
    (by_ref: [$($r:ident),* $(,)?], shared: [$($a:ident),* $(,)?]) => {
        mod on_sqlite {
            use super::*;
            fn store() -> (tempfile::TempDir, Arc<dyn StateStore>) {
                let dir = tempfile::tempdir().unwrap();
                let s = SqliteStore::open(&dir.path().join("state.db")).unwrap();
                (dir, Arc::new(s))
            }
            $( #[test] fn $r() { let (_dir, s) = store(); super::$r(s.as_ref()); } )*
            $( #[test] fn $a() { let (_dir, s) = store(); super::$a(s); } )*
        }
        mod on_postgres {
            use super::*;
            fn store() -> Arc<dyn StateStore> {
                let url = pg_server::server().database();
                Arc::new(PostgresStore::open(&url).unwrap())
            }
            $( #[test] fn $r() { super::$r(store().as_ref()); } )*
            $( #[test] fn $a() { super::$a(store()); } )*
        }
    };
}

on_every_store!(
    by_ref: [
        pruning_keeps_partition_runs_unfinished_runs_and_each_dags_newest_scheduled_run,
        lifecycle_of_a_run,
        interrupted_tries_are_marked_as_such,
        a_clear_refuses_tasks_running_under_a_live_holder,
        a_run_ends_from_the_stored_task_states,
        scheduled_runs_are_unique_per_key_but_manual_runs_repeat,
        a_try_is_taken_over_only_after_its_holder_is_gone,
        runs_are_claimed_by_one_process_until_released,
        a_queued_run_starts_only_under_max_active_runs,
        pauses_and_partitions_are_listed,
    ],
    shared: [
        racing_creators_of_one_scheduled_run_create_it_once,
        racing_claimers_of_one_try_claim_it_once,
    ]
);

#[test]
fn postgres_migrations_run_once_when_processes_race_and_a_newer_schema_is_refused() {
    let url = pg_server::server().database();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PostgresStore::open(&url).map(|_| ()))
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    let db = url.rsplit('/').next().unwrap();
    let out = pg_server::server().psql(db, "UPDATE windsock_schema SET version = 99");
    assert!(out.status.success());
    let e = PostgresStore::open(&url).err().unwrap();
    assert!(
        e.to_string()
            .contains("written by a newer windsock (schema version 99"),
        "{e}"
    );
}

#[test]
fn an_unreachable_or_unknown_store_is_one_clear_sentence() {
    let home = tempfile::tempdir().unwrap();
    let e = open(Some("postgres://u:secret@127.0.0.1:1/db"), home.path())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("cannot be reached"), "{e}");
    assert!(!e.contains("secret"), "the password is shown: {e}");
    let e = open(Some("mysql://u:secret@h/db"), home.path())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("expected postgres://"), "{e}");
    assert!(!e.contains("secret"), "{e}");
}

#[test]
fn a_store_url_is_shown_without_its_password_wherever_it_is_written() {
    assert_eq!(
        redacted("postgres://u:s3cret@db:5432/w"),
        "postgres://u@db:5432/w"
    );
    let shown = redacted("postgres://u@db/w?sslmode=require&password=q-s3cret");
    assert_eq!(shown, "postgres://u@db/w?sslmode=require&password=***");
    let shown = redacted("postgres://u:a@db/w?PASSWORD=q-s3cret");
    assert!(
        !shown.contains("s3cret") && !shown.contains(":a@"),
        "{shown}"
    );
}

#[test]
fn only_owners_whose_pids_we_see_are_declared_dead() {
    let me = Owner::current(Duration::from_secs(30));
    assert!(!owner_is_dead(&me.id), "{}", me.id);
    assert!(owner_on_this_host(&me.id));
    let (place, _) = me.id.rsplit_once(':').unwrap();
    let (place, _) = place.rsplit_once(':').unwrap();
    // A process of ours that is gone: same place, a pid that no longer runs.
    assert!(owner_is_dead(&format!("{place}:{}:1", u32::MAX - 7)));
    // The same host name in another PID namespace (a container sharing the host's network),
    // another boot, or an id of the older `host:pid:start` form: asked of the lease instead.
    let host = crate::sys::hostname();
    let (_, rest) = place.split_once('/').unwrap();
    let (boot, _) = rest.split_once('/').unwrap();
    for other in [
        format!("{host}/{boot}/4026530000:{}:1", u32::MAX - 7),
        format!(
            "{host}/000000000000/{}:{}:1",
            rest.split('/').nth(1).unwrap(),
            u32::MAX - 7
        ),
        format!("{host}:{}:1", u32::MAX - 7),
    ] {
        assert!(!owner_is_dead(&other), "{other}");
        assert!(!owner_on_this_host(&other), "{other}");
    }
}
