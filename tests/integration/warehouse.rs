//! The embedded DuckDB warehouse through the binary: the shipped batch pipeline lands exactly
//! 310,000 December events in RAW.EVENTS, and running it again leaves the same numbers.

use crate::common::*;

fn query(home: &std::path::Path, sql: &str) -> serde_json::Value {
    json(windsock(&repo(), home).args(["query", "--format", "json", sql]))
}

#[test]
fn the_batch_pipeline_lands_a_month_in_raw_events_exactly_once() {
    let home = tempfile::tempdir().unwrap();
    for round in 0..2 {
        let out = run(windsock(&repo(), home.path()).args([
            "run",
            "ecommerce_batch",
            "--partition",
            "2019-12",
        ]));
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "round {round}: {stdout}{stderr}");
        let run_id = stdout.lines().next().unwrap().trim().to_string();
        let tis = json(windsock(&repo(), home.path()).args(["tasks", &run_id, "--json"]));
        let load = tis
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["task"] == "load_raw")
            .unwrap();
        assert_eq!(load["output"]["total"], 310_000, "{load}");
        if round == 0 {
            assert_eq!(load["output"]["inserted"], 310_000);
        } else {
            assert_eq!(
                load["output"]["inserted"], 0,
                "the same month again adds nothing"
            );
            assert_eq!(load["output"]["updated"], 0);
        }
        let n = query(
            home.path(),
            "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM RAW.EVENTS",
        );
        assert_eq!(n[0]["n"], 310_000);
        assert_eq!(n[0]["ids"], 310_000);
        let days = query(
            home.path(),
            "SELECT event_date, count(*) AS n FROM RAW.EVENTS GROUP BY event_date ORDER BY event_date",
        );
        let days = days.as_array().unwrap();
        assert_eq!(days.len(), 31);
        assert!(days.iter().all(|d| d["n"] == 10_000), "{days:?}");
        assert_eq!(days[0]["event_date"], "2019-12-01");
    }
    let csv = run(windsock(&repo(), home.path()).args([
        "query",
        "--format",
        "csv",
        "SELECT event_type, count(*) AS n FROM RAW.EVENTS GROUP BY 1 ORDER BY 1",
    ]));
    let (stdout, stderr) = text(&csv);
    assert!(csv.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "event_type,n");
    assert_eq!(lines.len(), 4, "{stdout}");
    // The time SQL users write works on the embedded warehouse, with no network: event_time is
    // a UTC TIMESTAMP (a TIMESTAMPTZ would need DuckDB's ICU extension, fetched online).
    let time = query(
        home.path(),
        "SELECT
            count(*) FILTER (WHERE cast(event_time AS date) = event_date) AS cast_matches,
            count(DISTINCT date_trunc('day', event_time)) AS days,
            count(DISTINCT date_trunc('hour', event_time)) AS hours,
            min(extract(hour FROM event_time)) AS first_hour,
            max(extract(hour FROM event_time)) AS last_hour,
            count(*) FILTER (WHERE event_time >= TIMESTAMP '2019-12-24 00:00:00'
                             AND event_time < DATE '2019-12-25') AS christmas_eve,
            count(*) FILTER (WHERE event_date BETWEEN DATE '2019-12-24' AND DATE '2019-12-24')
                AS christmas_eve_by_date,
            min(event_time) AS first_event
         FROM RAW.EVENTS",
    );
    let t = &time[0];
    assert_eq!(t["cast_matches"], 310_000, "{t}");
    assert_eq!(t["days"], 31, "{t}");
    // The same hours as the prepared Parquet holds (each day keeps its first 10,000 events).
    let prepared = format!(
        "{}/data/prepared/2019-12/*/*.parquet",
        home.path().display()
    );
    let from_files = query(
        home.path(),
        &format!(
            "SELECT count(DISTINCT date_trunc('hour', event_time)) AS hours, \
             max(extract(hour FROM event_time)) AS last_hour FROM read_parquet('{prepared}')"
        ),
    );
    assert_eq!(t["hours"], from_files[0]["hours"], "{t} vs {from_files}");
    assert_eq!(
        t["last_hour"], from_files[0]["last_hour"],
        "{t} vs {from_files}"
    );
    assert!(t["hours"].as_u64().unwrap() > 31 * 12, "{t}");
    assert_eq!(t["first_hour"], 0, "{t}");
    assert_eq!(t["christmas_eve"], 10_000, "{t}");
    assert_eq!(t["christmas_eve"], t["christmas_eve_by_date"], "{t}");
    assert!(
        t["first_event"]
            .as_str()
            .is_some_and(|s| s.starts_with("2019-12-01 00:")),
        "{t}"
    );
    let bad = run(windsock(&repo(), home.path()).args(["query", "SELECT * FROM NOPE.NOTHING"]));
    let (_, stderr) = text(&bad);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr.starts_with("error: ") && stderr.contains("NOTHING"),
        "{stderr}"
    );
}

#[test]
fn reporting_matches_raw_events_for_the_shipped_pipeline() {
    let home = tempfile::tempdir().unwrap();
    let out = run(windsock(&repo(), home.path()).args([
        "run",
        "ecommerce_batch",
        "--partition",
        "2019-12",
    ]));
    assert!(out.status.success(), "{:?}", text(&out));
    let mismatches = query(
        home.path(),
        "SELECT count(*) AS n FROM REPORTING.DAILY_REVENUE AS r
         JOIN (SELECT event_date, sum(price) AS s, count(*) AS c FROM RAW.EVENTS
               WHERE event_type = 'purchase' GROUP BY 1) AS x USING (event_date)
         WHERE abs(r.revenue - x.s) > 0.001 OR r.purchases <> x.c",
    );
    assert_eq!(mismatches[0]["n"], 0);
    let days = query(
        home.path(),
        "SELECT count(*) AS n, min(event_date) AS first FROM REPORTING.DAILY_REVENUE",
    );
    assert_eq!(days[0]["n"], 31);
    assert_eq!(days[0]["first"], "2019-12-01");
    for table in [
        "DAILY_SUMMARY",
        "MONTHLY_SUMMARY",
        "FUNNEL_DAILY",
        "TOP_CATEGORIES_BY_REVENUE",
        "TOP_BRANDS",
        "DAILY_REVENUE",
        "AVERAGE_ORDER_VALUE_DAILY",
        "DAILY_ACTIVE_USERS_BY_EVENT_TYPE",
        "ABANDONED_CART_USERS",
    ] {
        let n = query(
            home.path(),
            &format!("SELECT count(*) AS n FROM REPORTING.{table}"),
        );
        assert!(
            n[0]["n"].as_u64().unwrap() > 0,
            "REPORTING.{table} is empty"
        );
    }
    let monthly = query(home.path(), "SELECT events FROM REPORTING.MONTHLY_SUMMARY");
    assert_eq!(monthly[0]["events"], 310_000);
}

/// Ten hand-written events: every reporting number below is worked out by hand from them.
const HAND_DATA: &str =
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session
2019-10-01 10:00:00 UTC,view,1,100,electronics.smartphone,Apple,500.00,11,s1
2019-10-01 10:01:00 UTC,cart,1,100,electronics.smartphone,Apple,500.00,11,s1
2019-10-01 10:02:00 UTC,purchase,1,100,electronics.smartphone,Apple,500.00,11,s1
2019-10-01 11:00:00 UTC,view,2,200,appliances.kitchen.kettle,bosch,20.50,12,s2
2019-10-01 11:00:30 UTC,cart,2,200,appliances.kitchen.kettle,bosch,20.50,12,s2
2019-10-01 12:00:00 UTC,view,3,300,,,99.99,13,s3
2019-10-02 09:00:00 UTC,view,2,200,appliances.kitchen.kettle,bosch,20.50,11,s4
2019-10-02 09:01:00 UTC,purchase,2,200,appliances.kitchen.kettle,bosch,20.50,11,s4
2019-10-02 09:05:00 UTC,purchase,4,100,electronics.smartphone,samsung,300.00,11,s4
2019-10-02 10:00:00 UTC,view,3,300,,,99.99,14,s5
";

#[test]
fn reporting_numbers_on_a_hand_checked_dataset() {
    let mut files: Vec<(String, String)> = vec![
        ("events.csv".into(), HAND_DATA.into()),
        (
            "pipelines/hand.yaml".into(),
            "dag: hand\ntasks:\n  prep: {operator: prepare_events, with: {input: events.csv, output: prepared}}\n  load: {operator: load_table, depends_on: [prep], with: {input: prepared, table: RAW.EVENTS, mode: merge, key: [event_id]}}\n  report: {operator: sql, depends_on: [load], with: {files: ['reporting/*.sql']}}\n".into(),
        ),
    ];
    files.extend(reporting_files());
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = project(&refs);
    let home = dir.path().join(".windsock");
    let out = run(windsock(dir.path(), &home).args(["run", "hand"]));
    assert!(out.status.success(), "{:?}", text(&out));
    let q = |sql: &str| json(windsock(dir.path(), &home).args(["query", "--format", "json", sql]));

    let daily = q("SELECT * FROM REPORTING.DAILY_SUMMARY ORDER BY event_date");
    assert_eq!(daily[0]["events"], 6);
    assert_eq!(
        (
            daily[0]["views"].clone(),
            daily[0]["carts"].clone(),
            daily[0]["purchases"].clone()
        ),
        (3.into(), 2.into(), 1.into())
    );
    assert_eq!(daily[0]["revenue"], 500.0);
    assert_eq!(
        (daily[0]["users"].clone(), daily[0]["sessions"].clone()),
        (3.into(), 3.into())
    );
    assert_eq!(daily[1]["revenue"], 320.5);
    assert_eq!(
        (daily[1]["users"].clone(), daily[1]["sessions"].clone()),
        (2.into(), 2.into())
    );

    let revenue =
        q("SELECT event_date, revenue, purchases FROM REPORTING.DAILY_REVENUE ORDER BY 1");
    assert_eq!(
        revenue,
        serde_json::json!([
            {"event_date": "2019-10-01", "revenue": 500.0, "purchases": 1},
            {"event_date": "2019-10-02", "revenue": 320.5, "purchases": 2},
        ])
    );
    let aov = q(
        "SELECT event_date, orders, average_order_value FROM REPORTING.AVERAGE_ORDER_VALUE_DAILY ORDER BY 1",
    );
    assert_eq!(aov[1]["orders"], 1);
    assert_eq!(aov[1]["average_order_value"], 320.5);
    let brands = q("SELECT brand, revenue, units FROM REPORTING.TOP_BRANDS");
    assert_eq!(
        brands,
        serde_json::json!([
            {"brand": "apple", "revenue": 500.0, "units": 1},
            {"brand": "samsung", "revenue": 300.0, "units": 1},
            {"brand": "bosch", "revenue": 20.5, "units": 1},
        ])
    );
    let cats =
        q("SELECT category_code, revenue, purchases FROM REPORTING.TOP_CATEGORIES_BY_REVENUE");
    assert_eq!(
        cats[0],
        serde_json::json!({"category_code": "electronics.smartphone", "revenue": 800.0, "purchases": 2})
    );
    let abandoned =
        q("SELECT user_id, carted_items, cart_value FROM REPORTING.ABANDONED_CART_USERS");
    assert_eq!(
        abandoned,
        serde_json::json!([{"user_id": 12, "carted_items": 1, "cart_value": 20.5}])
    );
    let funnel = q(
        "SELECT views, carts, purchases, view_to_cart, cart_to_purchase FROM REPORTING.FUNNEL_DAILY WHERE event_date = '2019-10-01' AND category_l1 = 'electronics'",
    );
    assert_eq!(
        funnel[0],
        serde_json::json!({"views": 1, "carts": 1, "purchases": 1, "view_to_cart": 1.0, "cart_to_purchase": 1.0})
    );
    let dau = q(
        "SELECT users, sessions FROM REPORTING.DAILY_ACTIVE_USERS_BY_EVENT_TYPE WHERE event_date = '2019-10-01' AND event_type = 'view'",
    );
    assert_eq!(dau[0], serde_json::json!({"users": 3, "sessions": 3}));
}

#[test]
fn sql_tasks_template_fetch_and_name_the_failing_statement() {
    let dir = project(&[
        (
            "pipelines/s.yaml",
            "dag: s\ntasks:\n  make: {operator: sql, with: {sql: \"CREATE SCHEMA IF NOT EXISTS T; CREATE OR REPLACE TABLE T.X AS SELECT 41 + 1 AS n, '{{ warehouse.dialect }}' AS dialect\"}}\n  read: {operator: sql, depends_on: [make], with: {sql: 'SELECT n, dialect FROM T.X', fetch: one}}\n  use: {operator: shell, depends_on: [read], with: {command: 'echo {{ tasks.read.output.rows.n }} {{ tasks.read.output.rows.dialect }} > out.txt'}}\n  bad: {operator: sql, depends_on: [use], with: {files: [broken.sql]}}\n",
        ),
        (
            "sql/broken.sql",
            "-- two good statements, then a bad one\nSELECT 1;\nSELECT 2;\n\nSELECT *\nFROM no_such_table;\n",
        ),
    ]);
    let home = dir.path().join(".windsock");
    let out = run(windsock(dir.path(), &home).args(["run", "s"]));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "42 duckdb\n"
    );
    assert!(
        stderr.contains("broken.sql, statement 3 (line 5 of the rendered SQL)"),
        "{stderr}"
    );
    assert!(stderr.contains("no_such_table"), "{stderr}");

    let bad = project(&[(
        "pipelines/v.yaml",
        "dag: v\ntasks:\n  q: {operator: sql, with: {files: [missing/*.sql]}}\n",
    )]);
    let out = run(windsock(bad.path(), &bad.path().join(".h")).arg("validate"));
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("no file matches `missing/*.sql`"),
        "{stdout}"
    );
}

#[test]
fn the_whole_chain_runs_on_genuine_rows() {
    let data = repo().join("../shared/data");
    if !data.join("2019-Oct-head.csv").exists() {
        eprintln!("skipped: {} is not here", data.display());
        return;
    }
    let mut files: Vec<(String, String)> = vec![(
        "pipelines/real.yaml".into(),
        format!(
            "dag: real\ntasks:\n  prep: {{operator: prepare_events, with: {{input: '{}/*-head.csv', output: prepared}}}}\n  load: {{operator: load_table, depends_on: [prep], with: {{input: prepared, table: RAW.EVENTS, mode: merge, key: [event_id]}}}}\n  report: {{operator: sql, depends_on: [load], with: {{files: ['reporting/*.sql']}}}}\n",
            data.display()
        ),
    )];
    files.extend(reporting_files());
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = project(&refs);
    let home = dir.path().join(".windsock");
    let out = run(windsock(dir.path(), &home).args(["run", "real"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let q = |sql: &str| json(windsock(dir.path(), &home).args(["query", "--format", "json", sql]));
    let raw = q(
        "SELECT count(*) AS n, sum(CASE WHEN event_type = 'purchase' THEN price ELSE 0 END) AS revenue FROM RAW.EVENTS",
    );
    let n = raw[0]["n"].as_u64().unwrap();
    assert!(n > 18_000 && n <= 17_434 + 683, "{raw}");
    let months = q("SELECT month, events FROM REPORTING.MONTHLY_SUMMARY ORDER BY 1");
    assert_eq!(months.as_array().unwrap().len(), 2, "{months}");
    assert_eq!(months[0]["month"], "2019-10-01");
    let total: u64 = months
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["events"].as_u64().unwrap())
        .sum();
    assert_eq!(total, n);
    let revenue = q("SELECT sum(revenue) AS r FROM REPORTING.DAILY_REVENUE");
    let diff = revenue[0]["r"].as_f64().unwrap() - raw[0]["revenue"].as_f64().unwrap();
    assert!(diff.abs() < 0.01, "{revenue} vs {raw}");
}

#[test]
fn render_prints_the_rendered_sql_files_of_a_sql_task() {
    let dir = project(&[
        (
            "pipelines/r.yaml",
            "dag: r\npartitions: {monthly: {from: 2019-10, to: 2019-12}}\ntasks:\n  t: {operator: sql, with: {files: ['a/*.sql']}}\n",
        ),
        (
            "sql/a/1.sql",
            "-- for {{ partition.name }}\nSELECT '{{ warehouse.dialect }}' AS d, DATE '{{ partition.start }}' AS s;\n",
        ),
    ]);
    let out = run(windsock(dir.path(), &dir.path().join(".h")).args([
        "render",
        "r",
        "t",
        "--partition",
        "2019-11",
    ]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("-- for 2019-Nov\nSELECT 'duckdb' AS d, DATE '2019-11-01' AS s;"),
        "{stdout}"
    );
    let cloud = run(windsock(dir.path(), &dir.path().join(".h")).args([
        "--profile",
        "cloud",
        "render",
        "r",
        "t",
        "--partition",
        "2019-11",
    ]));
    assert!(
        text(&cloud).0.contains("SELECT 'snowflake' AS d"),
        "{:?}",
        text(&cloud)
    );
}

#[test]
fn reporting_by_date_is_refreshed_for_the_month_that_changed_only() {
    let home = tempfile::tempdir().unwrap();
    let run_month = |m: &str| {
        let out =
            run(windsock(&repo(), home.path()).args(["run", "ecommerce_batch", "--partition", m]));
        assert!(out.status.success(), "{m}: {:?}", text(&out));
    };
    let snapshot = || {
        (
            query(
                home.path(),
                "SELECT count(*) AS days, round(sum(revenue), 2) AS revenue FROM REPORTING.DAILY_REVENUE",
            ),
            query(
                home.path(),
                "SELECT month, events FROM REPORTING.MONTHLY_SUMMARY ORDER BY 1",
            ),
            query(
                home.path(),
                "SELECT round(sum(revenue), 2) AS r FROM REPORTING.DAILY_REVENUE WHERE event_date < DATE '2020-01-01'",
            ),
        )
    };
    run_month("2019-12");
    let (dec_only, _, dec_revenue) = snapshot();
    assert_eq!(dec_only[0]["days"], 31);
    run_month("2020-01");
    let (both, months, dec_after) = snapshot();
    assert_eq!(both[0]["days"], 62);
    assert_eq!(months.as_array().unwrap().len(), 2);
    assert_eq!(months[0]["events"], 310_000);
    assert_eq!(months[1]["events"], 310_000);
    assert_eq!(
        dec_after, dec_revenue,
        "December's rows were left as they were"
    );
    run_month("2019-12");
    assert_eq!(
        snapshot(),
        (both, months, dec_after),
        "a month run again gives the same numbers"
    );
}

#[test]
fn render_shows_upstream_outputs_as_named_placeholders() {
    let home = tempfile::tempdir().unwrap();
    let out = run(windsock(&repo(), home.path()).args([
        "render",
        "ecommerce_stream",
        "stream_month",
        "--partition",
        "2019-11",
    ]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("input: <tasks.prepare.output.output>"),
        "{stdout}"
    );
    assert!(stdout.contains("topic: ecommerce.events.raw"), "{stdout}");
    assert!(stdout.contains("rows_per_day: 10000"), "{stdout}");
}
