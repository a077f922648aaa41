//! `windsock run` end to end: retries with per-try logs, timeouts that kill the work, and a run
//! killed mid-way and resumed without repeating what succeeded.

use std::time::{Duration, Instant};

use crate::common::*;

fn run_id_of(stdout: &str) -> String {
    stdout
        .lines()
        .next()
        .expect("run id on stdout")
        .trim()
        .to_string()
}

#[test]
fn a_task_that_fails_twice_then_succeeds_has_three_tries_each_with_its_own_log() {
    let dir = project(&[(
        "pipelines/flaky.yaml",
        r#"
dag: flaky
defaults: { retries: 3, retry_delay: 100ms, retry_backoff: exponential, max_retry_delay: 1s }
tasks:
  flaky:
    operator: shell
    with:
      command: |
        echo "try $WINDSOCK_TRY_NUMBER of {{ task }} starting"
        if [ "$WINDSOCK_TRY_NUMBER" -lt 3 ]; then echo "failing on purpose" >&2; exit 1; fi
        echo "third time lucky"
  after:
    operator: shell
    depends_on: [flaky]
    with: { command: "echo 'upstream said: {{ tasks.flaky.output.stdout | replace(\"\\n\", \" \") }}'" }
"#,
    )]);
    let home = dir.path().join(".windsock");
    let out = run(windsock(dir.path(), &home).args(["run", "flaky"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let run_id = run_id_of(&stdout);

    let tis = json(windsock(dir.path(), &home).args(["tasks", &run_id, "--json"]));
    let flaky = tis
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "flaky")
        .unwrap();
    assert_eq!(flaky["state"], "success");
    assert_eq!(flaky["try_number"], 3);

    let mut paths = std::collections::BTreeSet::new();
    for n in 1..=3 {
        let log = json(windsock(dir.path(), &home).args([
            "logs",
            &run_id,
            "flaky",
            "--try",
            &n.to_string(),
            "--json",
        ]));
        let text = log["log"].as_str().unwrap();
        assert!(
            text.contains(&format!("try {n} of flaky starting")),
            "try {n}: {text}"
        );
        if n < 3 {
            assert_eq!(log["try"]["state"], "failed");
            assert_eq!(log["try"]["error"], "command exited with code 1");
            assert!(text.contains("failing on purpose"), "{text}");
            assert!(!text.lines().any(|l| l == "third time lucky"), "{text}");
        } else {
            assert_eq!(log["try"]["state"], "success");
            assert!(text.lines().any(|l| l == "third time lucky"), "{text}");
        }
        paths.insert(log["try"]["log_path"].as_str().unwrap().to_string());
    }
    assert_eq!(paths.len(), 3, "each try has its own log file");

    let after = run(windsock(dir.path(), &home).args(["logs", &run_id, "after"]));
    let (log, _) = text(&after);
    assert!(
        log.contains("upstream said: try 3 of flaky starting third time lucky"),
        "{log}"
    );
}

#[test]
fn retries_run_out_and_downstream_is_upstream_failed() {
    let dir = project(&[(
        "pipelines/doomed.yaml",
        "dag: doomed\ntasks:\n  bad:\n    operator: shell\n    retries: 1\n    retry_delay: 0s\n    with: { command: \"exit 3\" }\n  next:\n    operator: noop\n    depends_on: [bad]\n  independent:\n    operator: noop\n",
    )]);
    let home = dir.path().join(".windsock");
    let out = run(windsock(dir.path(), &home).args(["run", "doomed"]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("failed task: bad (command exited with code 3)"),
        "{stderr}"
    );
    let run_id = run_id_of(&stdout);
    let tis = json(windsock(dir.path(), &home).args(["tasks", &run_id, "--json"]));
    let state = |name: &str| {
        tis.as_array()
            .unwrap()
            .iter()
            .find(|t| t["task"] == name)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state("bad"), "failed");
    assert_eq!(state("next"), "upstream_failed");
    assert_eq!(state("independent"), "success");
    let runs = json(windsock(dir.path(), &home).args(["runs", "--json"]));
    assert_eq!(runs[0]["state"], "failed");
}

#[test]
fn a_task_over_its_timeout_is_killed_with_its_children_and_retried() {
    let dir = project(&[(
        "pipelines/slow.yaml",
        r#"
dag: slow
tasks:
  slow:
    operator: shell
    timeout: 1s
    retries: 1
    retry_delay: 0s
    with:
      command: |
        if [ "$WINDSOCK_TRY_NUMBER" = 1 ]; then
          sleep 60 &
          echo $! > child.pid
          echo $$ > shell.pid
          wait
        fi
        echo finished
"#,
    )]);
    let home = dir.path().join(".windsock");
    let started = Instant::now();
    let out = run(windsock(dir.path(), &home).args(["run", "slow"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the sleeping try was not cut short"
    );
    let run_id = run_id_of(&stdout);
    let first =
        json(windsock(dir.path(), &home).args(["logs", &run_id, "slow", "--try", "1", "--json"]));
    assert_eq!(first["try"]["state"], "failed");
    assert_eq!(first["try"]["error"], "timed out after 1s");
    let second =
        json(windsock(dir.path(), &home).args(["logs", &run_id, "slow", "--try", "2", "--json"]));
    assert_eq!(second["try"]["state"], "success");
    // The shell and the process it started in the background are both gone (or dead and
    // waiting to be reaped, where PID 1 in a container does not reap orphans).
    for f in ["shell.pid", "child.pid"] {
        let pid = std::fs::read_to_string(dir.path().join(f)).unwrap();
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        assert!(
            matches!(state, None | Some("Z") | Some("X")),
            "{f} ({}) still running after the timeout: {stat}",
            pid.trim()
        );
    }
}

#[test]
fn a_killed_run_resumes_without_repeating_succeeded_tasks() {
    let dir = project(&[(
        "pipelines/chain.yaml",
        r#"
dag: chain
tasks:
  first:
    operator: shell
    with: { command: "echo first >> out.txt" }
  second:
    operator: shell
    depends_on: [first]
    with:
      command: |
        echo second-start >> out.txt
        if [ "$WINDSOCK_TRY_NUMBER" = 1 ]; then sleep 60; fi
        echo second >> out.txt
  third:
    operator: shell
    depends_on: [second]
    with: { command: "echo third >> out.txt" }
"#,
    )]);
    let home = dir.path().join(".windsock");
    let mut child = windsock(dir.path(), &home)
        .args(["run", "chain"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start windsock");
    let out_file = dir.path().join("out.txt");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&out_file)
        .unwrap_or_default()
        .contains("second-start")
    {
        assert!(Instant::now() < deadline, "the second task never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL windsock");
    child.wait().expect("reap");
    let runs = json(windsock(dir.path(), &home).args(["runs", "--json"]));
    let run_id = runs[0]["run_id"].as_str().unwrap().to_string();
    assert_eq!(
        runs[0]["state"], "running",
        "a killed run is left as it was"
    );

    let out = run(windsock(dir.path(), &home).args(["run", "--resume", &run_id]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let lines = std::fs::read_to_string(&out_file).unwrap();
    let count = |l: &str| lines.lines().filter(|x| *x == l).count();
    assert_eq!(count("first"), 1, "{lines}");
    assert_eq!(count("second-start"), 2, "{lines}");
    assert_eq!(count("second"), 1, "{lines}");
    assert_eq!(count("third"), 1, "{lines}");
    let tis = json(windsock(dir.path(), &home).args(["tasks", &run_id, "--json"]));
    for t in tis.as_array().unwrap() {
        assert_eq!(t["state"], "success", "{t}");
    }
    let second = tis
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "second")
        .unwrap();
    assert_eq!(second["try_number"], 2);
    let first_try =
        json(windsock(dir.path(), &home).args(["logs", &run_id, "second", "--try", "1", "--json"]));
    assert_eq!(first_try["try"]["state"], "failed");
    let runs = json(windsock(dir.path(), &home).args(["runs", "--json"]));
    assert_eq!(runs[0]["state"], "success");
}

#[test]
fn clear_resets_a_task_and_its_downstream_for_resume() {
    let dir = project(&[(
        "pipelines/three.yaml",
        "dag: three\ntasks:\n  a: {operator: shell, with: {command: 'echo a >> out.txt'}}\n  b: {operator: shell, depends_on: [a], with: {command: 'echo b >> out.txt'}}\n  c: {operator: shell, depends_on: [b], with: {command: 'echo c >> out.txt'}}\n",
    )]);
    let home = dir.path().join(".windsock");
    let out = run(windsock(dir.path(), &home).args(["run", "three"]));
    assert!(out.status.success());
    let run_id = run_id_of(&text(&out).0);
    let out =
        run(windsock(dir.path(), &home).args(["clear", &run_id, "--task", "b", "--downstream"]));
    let (stdout, _) = text(&out);
    assert!(stdout.contains("cleared 2 tasks"), "{stdout}");
    let out = run(windsock(dir.path(), &home).args(["run", "--resume", &run_id]));
    assert!(out.status.success());
    let lines = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    assert_eq!(lines, "a\nb\nc\nb\nc\n");
}

#[test]
fn partitioned_runs_see_the_partition_and_bad_keys_are_refused() {
    let dir = project(&[(
        "pipelines/months.yaml",
        "dag: months\npartitions:\n  monthly: {from: 2019-10, to: 2020-04}\nparams: {rows_per_day: 10000}\ntasks:\n  show:\n    operator: shell\n    with: {command: 'echo {{ partition.key }} {{ partition.name }} {{ partition.start }} {{ partition.end }} {{ partition.days * params.rows_per_day }} {{ ds }} > out.txt'}\n",
    )]);
    let home = dir.path().join(".windsock");
    let out = run(windsock(dir.path(), &home).args(["run", "months", "--partition", "2019-11"]));
    assert!(out.status.success(), "{:?}", text(&out));
    let got = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    assert_eq!(
        got,
        "2019-11 2019-Nov 2019-11-01 2019-12-01 300000 2019-11-01\n"
    );

    let out = run(windsock(dir.path(), &home).args(["run", "months", "--partition", "2020-05"]));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr.trim(),
        "error: partition `2020-05` is outside DAG `months`'s range 2019-10..2020-04"
    );

    let out = run(windsock(dir.path(), &home).args([
        "render",
        "months",
        "show",
        "--partition",
        "2020-02",
    ]));
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("echo 2020-02 2020-Feb 2020-02-01 2020-03-01 290000 2020-02-01"),
        "{stdout}"
    );
}

#[test]
fn a_pipeline_that_does_not_validate_is_not_run() {
    let dir = project(&[(
        "pipelines/bad.yaml",
        "dag: bad\ntasks:\n  a: {operator: nope}\n",
    )]);
    let home = dir.path().join(".windsock");
    let out = run(windsock(dir.path(), &home).args(["run", "bad"]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("`bad` does not validate (1 problem)"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown operator `nope`"), "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        !home.join("state.db").exists()
            || json(windsock(dir.path(), &home).args(["runs", "--json"]))
                .as_array()
                .unwrap()
                .is_empty()
    );
}

/// A templated value is checked again once rendered: `rate: "{{ params.rate }}"` passes
/// validation (its value is unknown then), and rendering it to 0 fails the try before the
/// producer starts, with the sentence `validate` gives for a literal 0, at the key's line.
#[test]
fn a_rendered_config_that_breaks_a_check_fails_with_the_validate_sentence() {
    let schema = std::fs::read_to_string(repo().join("schemas/raw_event.schema.json")).unwrap();
    let pipeline = |rate: &str| {
        format!(
            r#"dag: paced
params: {{ rate: 0 }}
defaults: {{ retries: 2, retry_delay: 100ms }}
tasks:
  stream:
    operator: kafka_produce
    with:
      input: prepared
      topic: t
      rows_per_day: 10
      rate: {rate}
"#
        )
    };
    let templated = pipeline("\"{{ params.rate }}\"");
    let literal = pipeline("0");
    let dir = project(&[
        ("pipelines/paced.yaml", templated.as_str()),
        ("literal/paced.yaml", literal.as_str()),
        ("schemas/raw_event.schema.json", schema.as_str()),
    ]);
    let home = dir.path().join(".windsock");
    let out = run(windsock(dir.path(), &home).args(["validate"]));
    assert!(out.status.success(), "{:?}", text(&out));
    // What validate says about a literal 0 at the same place.
    let out = run(windsock(dir.path(), &home).args(["validate", "literal/paced.yaml"]));
    let (said, _) = text(&out);
    assert!(!out.status.success());
    let sentence = said
        .lines()
        .find(|l| l.contains("`rate`"))
        .expect("validate names `rate`")
        .split_once(": task")
        .map(|(_, rest)| format!("task{rest}"))
        .unwrap();
    assert!(
        said.contains("literal/paced.yaml:11:13: task `stream`: `rate`"),
        "{said}"
    );

    let out = run(windsock(dir.path(), &home).args(["run", "paced"]));
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    let run_id = run_id_of(&stdout);
    let tis = json(windsock(dir.path(), &home).args(["tasks", &run_id, "--json"]));
    let t = &tis[0];
    assert_eq!(t["state"], "failed", "{t}");
    // A bad config stays bad: no retry is spent on it.
    assert_eq!(t["try_number"], 1, "{t}");
    let error = t["error"].as_str().unwrap();
    assert!(
        error.contains("pipelines/paced.yaml:11:13: task `stream`: `rate`")
            && error.contains(&sentence),
        "{error} should carry `{sentence}`"
    );
    assert!(!error.contains("producer stopped"), "{error}");
    let log = json(windsock(dir.path(), &home).args(["logs", &run_id, "stream", "--json"]));
    assert!(log["log"].as_str().unwrap().contains(&sentence), "{log}");
}
