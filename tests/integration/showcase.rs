//! The showcase end to end, as a user meets it: the shipped `ecommerce_stream` pipeline run by
//! the scheduler daemon on a fast cron across months (killed once mid-stream and started
//! again, wrapping around to a month it already streamed), the same pipeline under the `cloud`
//! profile against a tansu broker process and a fakesnow server, and a seven-month backfill run
//! twice. Every number is checked against the prepared Parquet the months came from.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// The shipped stream pipeline with a fast schedule, fewer months and (optionally) fewer events:
/// every other line as shipped.
fn stream_pipeline(months_to: &str, cycle: bool, rows_per_day: u64) -> String {
    let shipped = std::fs::read_to_string(repo().join("pipelines/ecommerce_stream.yaml")).unwrap();
    let mut out = shipped.clone();
    for (from, to) in [
        (
            "schedule: \"0 */3 * * *\"",
            "schedule: \"*/2 * * * * *\"".to_string(),
        ),
        (
            "monthly: { from: 2019-10, to: 2020-04 }",
            format!("monthly: {{ from: 2019-10, to: {months_to} }}"),
        ),
        ("cycle: true ", format!("cycle: {cycle} ")),
        (
            "rows_per_day: 10000            #",
            format!("rows_per_day: {rows_per_day}            #"),
        ),
        (
            "generated_rows_per_day: 12000  #",
            format!("generated_rows_per_day: {}  #", rows_per_day * 6 / 5),
        ),
    ] {
        assert!(
            out.contains(from),
            "the shipped pipeline changed: `{from}` is gone"
        );
        out = out.replace(from, &to);
    }
    out
}

fn query(home: &Path, sql: &str) -> Vec<serde_json::Value> {
    let v = json(windsock(&repo(), home).args(["query", "--format", "json", sql]));
    v.as_array().unwrap().clone()
}

fn number(row: &serde_json::Value, key: &str) -> f64 {
    let v = row
        .get(key)
        .or_else(|| row.get(key.to_uppercase()))
        .unwrap_or_else(|| panic!("no `{key}` in {row}"));
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("`{key}` is not a number in {row}"))
}

fn runs_of(home: &Path) -> Vec<serde_json::Value> {
    json(windsock(&repo(), home).args(["runs", "ecommerce_stream", "--limit", "100", "--json"]))
        .as_array()
        .unwrap()
        .clone()
}

fn succeeded(home: &Path) -> usize {
    runs_of(home)
        .iter()
        .filter(|r| r["state"] == "success")
        .count()
}

fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The daemon on `pipelines`, for the repo's project (its SQL, templates and schemas).
fn daemon(pipelines: &Path, home: &Path, extra: &mut dyn FnMut(&mut Command)) -> Child {
    let mut c = windsock(&repo(), home);
    c.args(["scheduler", "--grace", "2s", "--pipelines"])
        .arg(pipelines)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    extra(&mut c);
    c.spawn().expect("start the scheduler")
}

fn stop(mut child: Child) {
    // SAFETY: signals our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "the daemon stopped badly: {status}");
}

/// Pauses the DAG and waits until no run of it is executing, so the checks see settled tables.
fn settle(home: &Path) {
    let out = run(windsock(&repo(), home).args(["pause", "ecommerce_stream"]));
    assert!(out.status.success(), "{:?}", text(&out));
    wait_for(300, "the runs in flight to finish", || {
        runs_of(home).iter().all(|r| r["state"] != "running")
    });
}

/// Every number of the months in `home` against the prepared Parquet: RAW.EVENTS, REPORTING's
/// daily revenue, and PROCESSED's hourly windows by event type.
fn check_numbers(home: &Path, months: &[(&str, u32)], rows_per_day: u64) {
    for (month, days) in months {
        let (from, next) = month_bounds(month);
        let r = &query(
            home,
            &format!(
                "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM RAW.EVENTS \
                 WHERE event_date >= DATE '{from}' AND event_date < DATE '{next}'"
            ),
        )[0];
        let want = rows_per_day as f64 * f64::from(*days);
        assert_eq!(number(r, "n"), want, "{month}: {r}");
        assert_eq!(number(r, "ids"), want, "{month}: no event twice: {r}");
    }
    let prepared = format!("{}/data/prepared/*/*/*.parquet", home.display());
    let mismatches = query(
        home,
        &format!(
            "SELECT count(*) AS n FROM
               (SELECT event_date, round(sum(price), 2) AS revenue FROM read_parquet('{prepared}')
                WHERE event_type = 'purchase' GROUP BY 1) e
             FULL JOIN REPORTING.DAILY_REVENUE r USING (event_date)
             WHERE r.revenue IS NULL OR e.revenue IS NULL OR abs(r.revenue - e.revenue) > 0.005"
        ),
    );
    assert_eq!(
        number(&mismatches[0], "n"),
        0.0,
        "daily revenue differs from the Parquet"
    );
    let days: u32 = months.iter().map(|(_, d)| d).sum();
    let n = &query(home, "SELECT count(*) AS n FROM REPORTING.DAILY_REVENUE")[0];
    assert_eq!(
        number(n, "n"),
        f64::from(days),
        "one row a day, never doubled"
    );
    let windows = query(
        home,
        &format!(
            "SELECT count(*) AS n FROM
               (SELECT (epoch_ms(event_time) // 3600000) * 3600000 AS ws, event_type AS val,
                       count(*) AS events, coalesce(sum(price) FILTER (WHERE event_type = 'purchase'), 0) AS revenue
                FROM read_parquet('{prepared}') GROUP BY 1, 2) e
             FULL JOIN (SELECT epoch_ms(window_start) AS ws, dimension_value AS val, events, revenue
                        FROM PROCESSED.WINDOW_AGGREGATES
                        WHERE window_size = '1h' AND dimension = 'event_type') a USING (ws, val)
             WHERE a.ws IS NULL OR e.ws IS NULL OR a.events <> e.events
                OR abs(a.revenue - e.revenue) > 0.005"
        ),
    );
    assert_eq!(
        number(&windows[0], "n"),
        0.0,
        "the hourly windows differ from SQL on the events"
    );
}

fn month_bounds(month: &str) -> (String, String) {
    let (y, m): (i32, u32) = (month[..4].parse().unwrap(), month[5..].parse().unwrap());
    let next = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (
        format!("{month}-01"),
        format!("{:04}-{:02}-01", next.0, next.1),
    )
}

/// The dashboard file the last run wrote shows the tiles, with REPORTING's numbers in them.
fn check_dashboard(home: &Path) {
    let file = home.join("dashboards/ecommerce_stream.html");
    let html = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    for tile in [
        "top-categories",
        "top-brands",
        "daily-revenue",
        "funnel",
        "events-per-minute",
    ] {
        let at = html
            .find(&format!(r#"data-tile="{tile}""#))
            .unwrap_or_else(|| panic!("no {tile} tile"));
        let section = &html[at..at + html[at..].find("</section>").unwrap()];
        assert!(
            !section.contains(r#"class="missing""#),
            "{tile} has no data"
        );
        assert!(section.contains("<svg"), "{tile} has no chart");
    }
    let top = &query(
        home,
        "SELECT category_code, revenue FROM REPORTING.TOP_CATEGORIES_BY_REVENUE ORDER BY revenue DESC LIMIT 1",
    )[0];
    let revenue = number(top, "revenue");
    assert!(
        html.contains(&format!(r#"data-value="{revenue}""#)),
        "the top category's revenue {revenue} is on the page"
    );
}

#[test]
fn the_daemon_streams_the_months_survives_a_kill_and_never_double_counts() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let pipelines = tempfile::tempdir().unwrap();
    std::fs::write(
        pipelines.path().join("ecommerce_stream.yaml"),
        stream_pipeline("2019-11", true, 10_000),
    )
    .unwrap();

    // 1. The daemon, killed while the first month is streaming.
    let first = daemon(pipelines.path(), h, &mut |_| {});
    let mut first = Some(first);
    wait_for(120, "the first month to start streaming", || {
        runs_of(h).first().is_some_and(|r| {
            let id = r["run_id"].as_str().unwrap_or_default();
            let tis = json(windsock(&repo(), h).args(["tasks", id, "--json"]));
            tis.as_array()
                .unwrap()
                .iter()
                .any(|t| t["task"] == "stream_month" && t["state"] == "running")
        })
    });
    std::thread::sleep(Duration::from_millis(400));
    if let Some(mut child) = first.take() {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert_eq!(succeeded(h), 0, "killed before anything finished");

    // 2. Started again: it takes the run over, finishes October, November, then October again
    //    (the months wrap around as the seed's producer did).
    let again = daemon(pipelines.path(), h, &mut |_| {});
    wait_for(600, "three successful runs", || succeeded(h) >= 3);
    settle(h);
    stop(again);

    let runs = runs_of(h);
    let keys: Vec<&str> = runs
        .iter()
        .filter(|r| r["state"] == "success")
        .map(|r| r["run_key"].as_str().unwrap())
        .collect();
    for key in ["2019-10", "2019-11", "2019-10#2"] {
        assert!(keys.contains(&key), "{key} not among {keys:?}");
    }
    // The try that died with the daemon was recorded as interrupted and run again.
    let october = runs.iter().find(|r| r["run_key"] == "2019-10").unwrap();
    let tries = json(windsock(&repo(), h).args([
        "logs",
        october["run_id"].as_str().unwrap(),
        "stream_month",
        "--try",
        "1",
        "--json",
    ]));
    assert_eq!(tries["try"]["interrupted"], true, "{}", tries["try"]);

    // October streamed twice, November once: each month's events once, REPORTING as the
    // Parquet says, the windows as SQL says.
    check_numbers(h, &[("2019-10", 31), ("2019-11", 30)], 10_000);
    check_dashboard(h);
}

#[test]
fn the_same_pipeline_runs_under_the_cloud_profile_on_kafka_and_snowflake_peers() {
    let Ok(fakesnow_bin) = std::env::var("WINDSOCK_FAKESNOW") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must set WINDSOCK_FAKESNOW"
        );
        eprintln!("skipped: set WINDSOCK_FAKESNOW to a fakesnow binary to run this test");
        return;
    };
    // fakesnow (Snowflake's protocol), a tansu broker process, and the months served over HTTP
    // (the cloud profile downloads them).
    let port = free_port();
    let sf_data = tempfile::tempdir().unwrap();
    let _fakesnow = Server(
        Command::new(fakesnow_bin)
            .args(["-s", "-p", &port.to_string(), "-d"])
            .arg(sf_data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fakesnow"),
    );
    let broker_dir = tempfile::tempdir().unwrap();
    let (_broker, bootstrap) = tansu(broker_dir.path());
    let files = tempfile::tempdir().unwrap();
    let out = run(windsock(&repo(), &files.path().join("h"))
        .args([
            "sample-data",
            "--months",
            "2019-10..2019-11",
            "--rows-per-day",
            "300",
            "--seed",
            "2019",
            "--dirt",
            "0.01",
            "--out",
        ])
        .arg(files.path()));
    assert!(out.status.success(), "{:?}", text(&out));
    let http_port = free_port();
    let _http = Server(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &http_port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(files.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server"),
    );
    wait_for(60, "fakesnow and the file server", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", http_port)).is_ok()
    });
    let cloud = move |c: &mut Command| {
        c.args(["--profile", "cloud"])
            .env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
            .env("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
            .env_remove("WINDSOCK_KAFKA_BOOTSTRAP")
            .env("SNOWFLAKE_ACCOUNT", "windsock")
            .env("SNOWFLAKE_USER", "tester")
            .env("SNOWFLAKE_PASSWORD", "secret")
            .env("SNOWFLAKE_HOST", "127.0.0.1")
            .env("SNOWFLAKE_PORT", port.to_string())
            .env("SNOWFLAKE_PROTOCOL", "http")
            .env("SNOWFLAKE_DATABASE", "WINDSOCK")
            .env("SNOWFLAKE_SCHEMA", "PUBLIC")
            .env(
                "WINDSOCK_DATASET_URL",
                format!("http://127.0.0.1:{http_port}/"),
            );
    };
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let mut create = windsock(&repo(), h);
    cloud(&mut create);
    create
        .env_remove("SNOWFLAKE_DATABASE")
        .env_remove("SNOWFLAKE_SCHEMA")
        .args(["query", "CREATE DATABASE IF NOT EXISTS WINDSOCK"]);
    let out = run(&mut create);
    assert!(out.status.success(), "{:?}", text(&out));

    let pipelines = tempfile::tempdir().unwrap();
    std::fs::write(
        pipelines.path().join("ecommerce_stream.yaml"),
        stream_pipeline("2019-11", false, 200),
    )
    .unwrap();
    let mut with_cloud = cloud.clone();
    let d = daemon(pipelines.path(), h, &mut with_cloud);
    wait_for(600, "both months under the cloud profile", || {
        let runs = runs_of(h);
        assert!(
            !runs.iter().any(|r| r["state"] == "failed"),
            "a run failed: {runs:?}"
        );
        succeeded(h) >= 2
    });
    stop(d);
    assert!(
        !h.join("broker").exists(),
        "the cloud profile never starts the embedded broker"
    );
    let q = |sql: &str| {
        let mut c = windsock(&repo(), h);
        cloud(&mut c);
        json(c.args(["query", "--format", "json", sql]))
            .as_array()
            .unwrap()
            .clone()
    };
    for (month, days) in [("2019-10", 31.0), ("2019-11", 30.0)] {
        let (from, next) = month_bounds(month);
        let r = &q(&format!(
            "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM RAW.EVENTS \
             WHERE event_date >= DATE '{from}' AND event_date < DATE '{next}'"
        ))[0];
        assert_eq!(number(r, "n"), 200.0 * days, "{month} in Snowflake: {r}");
        assert_eq!(number(r, "ids"), 200.0 * days, "{month}: {r}");
    }
    // REPORTING in Snowflake, against the prepared Parquet (read by a local DuckDB).
    let snowflake =
        q("SELECT event_date, revenue FROM REPORTING.DAILY_REVENUE ORDER BY event_date");
    let prepared = format!("{}/data/prepared/*/*/*.parquet", h.display());
    let local = tempfile::tempdir().unwrap();
    let expected = query(
        local.path(),
        &format!(
            "SELECT strftime(event_date, '%Y-%m-%d') AS event_date, round(sum(price), 2) AS revenue \
             FROM read_parquet('{prepared}') WHERE event_type = 'purchase' GROUP BY 1 ORDER BY 1"
        ),
    );
    // 200 sampled events a day: a day may hold no purchase, and then has no row on either side.
    assert!(snowflake.len() > 50, "{snowflake:?}");
    assert_eq!(
        snowflake.len(),
        expected.len(),
        "{snowflake:?} vs {expected:?}"
    );
    for (s, e) in snowflake.iter().zip(&expected) {
        assert!(
            (number(s, "revenue") - number(e, "revenue")).abs() < 0.005,
            "{s} vs {e}"
        );
    }
    let windows =
        &q("SELECT count(*) AS n FROM PROCESSED.WINDOW_AGGREGATES WHERE window_size = '1h'")[0];
    assert!(number(windows, "n") > 0.0, "{windows}");
    let html = std::fs::read_to_string(h.join("dashboards/ecommerce_stream.html")).unwrap();
    assert!(html.contains(r#"data-tile="daily-revenue""#) && html.contains("<svg"));
}

#[test]
fn a_seven_month_backfill_completes_and_a_second_one_does_nothing() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let pipelines = tempfile::tempdir().unwrap();
    let file = pipelines.path().join("ecommerce_stream.yaml");
    std::fs::write(&file, stream_pipeline("2020-04", true, 500)).unwrap();
    let backfill = |h: &Path| {
        let out = run(windsock(&repo(), h)
            .args(["backfill"])
            .arg(&file)
            .args(["--from", "2019-10", "--to", "2020-04"]));
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}{stderr}");
        stdout
    };
    let first = backfill(h);
    assert!(first.contains("7 runs succeeded, 0 skipped"), "{first}");
    let second = backfill(h);
    assert!(second.contains("0 runs succeeded, 7 skipped"), "{second}");
    let days = [31, 30, 31, 31, 29, 31, 30];
    let months = [
        "2019-10", "2019-11", "2019-12", "2020-01", "2020-02", "2020-03", "2020-04",
    ];
    let list: Vec<(&str, u32)> = months.iter().copied().zip(days).collect();
    check_numbers(h, &list, 500);
}

/// Soak (ignored; `cargo test --release --test integration showcase::soak -- --ignored
/// --nocapture`, 30 minutes): the shipped `ecommerce_stream` (10,000 events a day) cycling
/// through its seven months on a one-second schedule under the daemon, SIGKILLed at random
/// every 20–60 s and started again, for `WINDSOCK_SOAK_MINUTES` (default 30); at least ten full
/// cycles (70 runs) must have succeeded, every round of every month in a run of its own, and
/// then every month's numbers are checked against the Parquet it came from.
/// `WINDSOCK_SOAK_ROWS` sets the events a day.
#[test]
#[ignore]
fn soak_the_cycling_stream_under_random_kills() {
    let rows: u64 = std::env::var("WINDSOCK_SOAK_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let minutes: u64 = std::env::var("WINDSOCK_SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let pipelines = tempfile::tempdir().unwrap();
    let pipeline = stream_pipeline("2020-04", true, rows)
        .replace("schedule: \"*/2 * * * * *\"", "schedule: \"* * * * * *\"");
    std::fs::write(pipelines.path().join("ecommerce_stream.yaml"), pipeline).unwrap();
    let log = h.join("daemon.log");
    let start = || {
        daemon(pipelines.path(), h, &mut |c| {
            c.stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            );
        })
    };
    let mut rng = Lcg::seeded("soak kill schedule");
    let began = Instant::now();
    let mut child = start();
    let mut kills = 0;
    let all_runs = |h: &Path| {
        json(windsock(&repo(), h).args(["runs", "ecommerce_stream", "--limit", "100000", "--json"]))
            .as_array()
            .unwrap()
            .clone()
    };
    let done = |h: &Path| {
        all_runs(h)
            .iter()
            .filter(|r| r["state"] == "success")
            .count()
    };
    let end = began + Duration::from_secs(minutes * 60);
    while Instant::now() < end {
        let wait = Duration::from_millis(rng.next_ms(20_000, 60_000));
        let until = (Instant::now() + wait).min(end);
        while Instant::now() < until {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the daemon stopped: {}",
                read(&log)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        if Instant::now() >= end {
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        child = start();
    }
    // The soak's own minimum, whatever the machine's speed: ten full cycles.
    let finishing = Instant::now() + Duration::from_secs(30 * 60);
    while done(h) < 70 {
        assert!(
            Instant::now() < finishing,
            "{} of 70 runs ({kills} kills)",
            done(h)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    settle(h);
    stop(child);
    let runs = all_runs(h);
    let ok: Vec<&serde_json::Value> = runs.iter().filter(|r| r["state"] == "success").collect();
    eprintln!(
        "{} runs succeeded in {:?} with {kills} kills; {} runs in all",
        ok.len(),
        began.elapsed(),
        runs.len()
    );
    // Every round of every month: once, in its own run, whose id says the round.
    let months = [
        "2019-10", "2019-11", "2019-12", "2020-01", "2020-02", "2020-03", "2020-04",
    ];
    for m in months {
        let rounds = ok.iter().filter(|r| r["partition"] == m).count();
        assert!(rounds >= 10, "{m}: {rounds} rounds");
        for round in 2..=10 {
            let key = format!("{m}#{round}");
            let id = format!("ecommerce_stream__scheduled__{m}__r{round}");
            assert!(
                ok.iter()
                    .any(|r| r["run_key"] == key.as_str() && r["run_id"] == id.as_str()),
                "no successful {id}"
            );
        }
    }
    let days = [31, 30, 31, 31, 29, 31, 30];
    let list: Vec<(&str, u32)> = months.iter().copied().zip(days).collect();
    check_numbers(h, &list, rows);
}

/// The README's quick start: the shipped `ecommerce_stream` for November on embedded defaults,
/// from the repository folder, twice. Each run ends by saying where the data and the dashboard
/// are and how to start the daemon and the UI; the second leaves the same 300,000 events.
#[test]
fn the_quick_start_succeeds_twice_and_says_where_everything_is() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    for round in 0..2 {
        let out =
            run(windsock(&repo(), h).args(["run", "ecommerce_stream", "--partition", "2019-11"]));
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "round {round}: {stdout}{stderr}");
        let said = format!("{stdout}{stderr}");
        let dashboard = h.join("dashboards/ecommerce_stream.html");
        for line in [
            format!("warehouse: {}", h.join("warehouse.duckdb").display()),
            format!("dashboard: {}", dashboard.display()),
            "windsock scheduler --ui".to_string(),
            "windsock ui".to_string(),
        ] {
            assert!(
                said.contains(&line),
                "round {round} does not say `{line}`: {said}"
            );
        }
        assert!(dashboard.exists());
        let n = &query(
            h,
            "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM RAW.EVENTS",
        )[0];
        assert_eq!(
            (number(n, "n"), number(n, "ids")),
            (300_000.0, 300_000.0),
            "round {round}"
        );
    }
}
