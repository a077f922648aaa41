//! The embedded DuckDB warehouse through the binary: the shipped batch pipeline lands exactly
//! 310,000 December events in RAW.EVENTS, and running it again leaves the same numbers.

mod common;

use common::*;

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
    let bad = run(windsock(&repo(), home.path()).args(["query", "SELECT * FROM NOPE.NOTHING"]));
    let (_, stderr) = text(&bad);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr.starts_with("error: ") && stderr.contains("NOTHING"),
        "{stderr}"
    );
}
