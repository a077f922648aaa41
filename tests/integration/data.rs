//! The data operators end to end through the binary: generated months, their preparation with
//! exact reject counts, and refusal of broken files.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::common::*;
use polars::prelude::*;

fn gz_text(path: &Path) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut s)
        .unwrap();
    s
}

fn output_of(dir: &Path, home: &Path, run_id: &str, task: &str) -> serde_json::Value {
    let tis = json(windsock(dir, home).args(["tasks", run_id, "--json"]));
    tis.as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == task)
        .unwrap_or_else(|| panic!("no task {task}: {tis}"))["output"]
        .clone()
}

/// Rows per `event_date` of a prepared month.
fn rows_per_day(df: &DataFrame) -> BTreeMap<String, usize> {
    let days = df.column("event_date").unwrap().as_materialized_series();
    let mut n = BTreeMap::new();
    for day in days.iter() {
        *n.entry(day.to_string()).or_insert(0) += 1;
    }
    n
}

fn read_parquet_dir(dir: &Path) -> DataFrame {
    let mut files: Vec<PathBuf> = glob::glob(&format!("{}/**/*.parquet", dir.display()))
        .unwrap()
        .flatten()
        .collect();
    files.sort();
    let mut all: Option<DataFrame> = None;
    for f in files {
        let df = ParquetReader::new(std::fs::File::open(&f).unwrap())
            .finish()
            .unwrap();
        all = Some(match all {
            None => df,
            Some(mut a) => {
                a.vstack_mut(&df).unwrap();
                a
            }
        });
    }
    all.expect("parquet files")
}

#[test]
fn sample_data_is_deterministic_and_named_like_the_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let run_gen = |out: &str| {
        let o = run(windsock(dir.path(), &dir.path().join("h")).args([
            "sample-data",
            "--months",
            "2019-12..2020-01",
            "--rows-per-day",
            "200",
            "--out",
            out,
            "--seed",
            "9",
        ]));
        assert!(o.status.success(), "{:?}", text(&o));
    };
    run_gen("a");
    run_gen("b");
    for name in ["2019-Dec.csv.gz", "2020-Jan.csv.gz"] {
        let a = std::fs::read(dir.path().join("a").join(name)).unwrap();
        let b = std::fs::read(dir.path().join("b").join(name)).unwrap();
        assert_eq!(a, b, "{name} differs between two runs with one seed");
        assert_eq!(
            gz_text(&dir.path().join("a").join(name)).lines().count(),
            31 * 200 + 1
        );
    }
}

const PIPELINE: &str = r#"
dag: prep
partitions:
  monthly: { from: 2019-10, to: 2020-04 }
params: { rows_per_day: ROWS, keep: KEEP }
tasks:
  get_month:
    operator: generate_events
    with:
      month: "{{ partition.key }}"
      rows_per_day: "{{ params.rows_per_day }}"
      output: "{{ data_dir }}/raw"
      seed: 11
      dirt: 0.01
  prepare:
    operator: prepare_events
    depends_on: [get_month]
    with:
      input: "{{ tasks.get_month.output.path }}"
      output: "{{ data_dir }}/prepared/{{ partition.key }}"
      LIMIT
"#;

#[test]
fn prepare_rejects_exactly_the_injected_dirt_and_removes_every_duplicate() {
    let pipeline = PIPELINE
        .replace("ROWS", "1500")
        .replace("KEEP", "0")
        .replace("LIMIT", "");
    let dir = project(&[("pipelines/prep.yaml", &pipeline)]);
    let home = dir.path().join(".windsock");
    let out = run(windsock(dir.path(), &home).args(["run", "prep", "--partition", "2019-11"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let run_id = stdout.lines().next().unwrap().trim().to_string();
    let generated = output_of(dir.path(), &home, &run_id, "get_month");
    let prepared = output_of(dir.path(), &home, &run_id, "prepare");
    assert_eq!(generated["rows"], 30 * 1500);
    assert_eq!(prepared["rows_read"], 30 * 1500);
    let malformed: BTreeMap<String, u64> =
        serde_json::from_value(generated["malformed"].clone()).unwrap();
    let rejected: BTreeMap<String, u64> =
        serde_json::from_value(prepared["rejected"].clone()).unwrap();
    assert_eq!(
        rejected, malformed,
        "every malformed line rejected for its reason, nothing else"
    );
    assert_eq!(prepared["duplicates_removed"], generated["duplicates"]);
    let dirt = generated["duplicates"].as_u64().unwrap() + malformed.values().sum::<u64>();
    assert_eq!(prepared["rows_written"].as_u64().unwrap(), 30 * 1500 - dirt);
    assert_eq!(prepared["days"], 30);

    // The quarantine file holds each rejected line with its reason.
    let q = std::fs::read_to_string(prepared["quarantine"].as_str().unwrap()).unwrap();
    assert_eq!(
        q.lines().count() as u64,
        1 + malformed.values().sum::<u64>()
    );
    for reason in malformed.keys() {
        assert!(
            q.contains(&format!(",{reason},")),
            "{reason} missing from the quarantine"
        );
    }

    // The Parquet: typed columns, cleaned values, one folder per day, unique event ids.
    let df = read_parquet_dir(Path::new(prepared["output"].as_str().unwrap()));
    assert_eq!(
        df.height() as u64,
        prepared["rows_written"].as_u64().unwrap()
    );
    let schema = df.schema();
    // UTC instants without a zone: warehouses read them as TIMESTAMP, which the usual time
    // SQL handles everywhere (a zoned type needs DuckDB's ICU extension, fetched online).
    assert!(matches!(
        schema.get("event_time"),
        Some(DataType::Datetime(TimeUnit::Microseconds, None))
    ));
    assert_eq!(schema.get("event_date"), Some(&DataType::Date));
    assert_eq!(schema.get("price"), Some(&DataType::Float64));
    assert_eq!(schema.get("product_id"), Some(&DataType::Int64));
    for c in [
        "event_type",
        "category_code",
        "brand",
        "user_session",
        "category_l1",
        "category_l2",
        "event_id",
    ] {
        assert_eq!(schema.get(c), Some(&DataType::String), "{c}");
    }
    let ids = df.column("event_id").unwrap().n_unique().unwrap();
    assert_eq!(ids, df.height(), "event ids are unique");
    let codes = df.column("category_code").unwrap().null_count();
    assert!(
        codes > df.height() / 5,
        "empty category codes are nulls ({codes})"
    );
    let l1 = df.column("category_l1").unwrap().str().unwrap().clone();
    let code = df.column("category_code").unwrap().str().unwrap().clone();
    for (a, b) in code.iter().zip(l1.iter()).take(2000) {
        assert_eq!(
            a.map(|c| c.split('.').next().unwrap().to_string()),
            b.map(str::to_string)
        );
    }
    let days = std::fs::read_dir(prepared["output"].as_str().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("event_date=2019-11-")
        })
        .count();
    assert_eq!(days, 30);
}

#[test]
fn with_rows_per_day_every_day_keeps_exactly_the_first_clean_events() {
    let pipeline = PIPELINE
        .replace("ROWS", "1200")
        .replace("KEEP", "1000")
        .replace("LIMIT", "rows_per_day: \"{{ params.keep }}\"");
    let dir = project(&[("pipelines/prep.yaml", &pipeline)]);
    let home = dir.path().join(".windsock");
    let out = run(windsock(dir.path(), &home).args(["run", "prep", "--partition", "2020-02"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let run_id = stdout.lines().next().unwrap().trim().to_string();
    let prepared = output_of(dir.path(), &home, &run_id, "prepare");
    assert_eq!(prepared["rows_written"], 29 * 1000);
    let df = read_parquet_dir(Path::new(prepared["output"].as_str().unwrap()));
    let per_day = rows_per_day(&df);
    assert_eq!(per_day.len(), 29);
    assert!(per_day.values().all(|n| *n == 1000), "{per_day:?}");
}

#[test]
fn unordered_input_gives_the_same_rows_as_ordered_input() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    let o = run(windsock(dir.path(), &home).args([
        "sample-data",
        "--months",
        "2019-10",
        "--rows-per-day",
        "800",
        "--out",
        "raw",
        "--seed",
        "5",
        "--dirt",
        "0.01",
    ]));
    assert!(o.status.success());
    let text_in = gz_text(&dir.path().join("raw/2019-Oct.csv.gz"));
    let mut lines: Vec<&str> = text_in.lines().collect();
    let header = lines.remove(0);
    // A deterministic shuffle.
    let mut state = 12345u64;
    for i in (1..lines.len()).rev() {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        lines.swap(i, (state >> 33) as usize % (i + 1));
    }
    let mut shuffled = format!("{header}\n");
    for l in &lines {
        shuffled.push_str(l);
        shuffled.push('\n');
    }
    std::fs::write(dir.path().join("shuffled.csv"), shuffled).unwrap();
    let pipeline = |input: &str, output: &str| {
        format!(
            "dag: p_{output}\ntasks:\n  prep:\n    operator: prepare_events\n    with: {{ input: {input}, output: out/{output}, rows_per_day: 700 }}\n"
        )
    };
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    std::fs::write(
        dir.path().join("pipelines/a.yaml"),
        pipeline("raw/2019-Oct.csv.gz", "ordered"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pipelines/b.yaml"),
        pipeline("shuffled.csv", "shuffled"),
    )
    .unwrap();
    for dag in ["p_ordered", "p_shuffled"] {
        let o = run(windsock(dir.path(), &home).args(["run", dag]));
        assert!(o.status.success(), "{:?}", text(&o));
    }
    let sorted_ids = |d: &str| {
        let df = read_parquet_dir(&dir.path().join("out").join(d));
        let mut ids: Vec<String> = df
            .column("event_id")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .map(|s| s.unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let (a, b) = (sorted_ids("ordered"), sorted_ids("shuffled"));
    assert_eq!(a.len(), 31 * 700);
    assert_eq!(a, b);
}

#[test]
fn genuine_rows_prepare_cleanly() {
    let data = repo().join("../shared/data/2019-Oct-head.csv");
    if !data.exists() {
        eprintln!("skipped: {} is not here", data.display());
        return;
    }
    let dir = project(&[(
        "pipelines/real.yaml",
        &format!(
            "dag: real\ntasks:\n  prep:\n    operator: prepare_events\n    with: {{ input: {}, output: out }}\n",
            data.display()
        ),
    )]);
    let home = dir.path().join(".windsock");
    let o = run(windsock(dir.path(), &home).args(["run", "real"]));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    let run_id = stdout.lines().next().unwrap().trim().to_string();
    let prepared = output_of(dir.path(), &home, &run_id, "prep");
    assert_eq!(prepared["rows_read"], 17_434);
    assert_eq!(prepared["rejected"], serde_json::json!({}));
    let written = prepared["rows_written"].as_u64().unwrap();
    assert_eq!(
        written + prepared["duplicates_removed"].as_u64().unwrap(),
        17_434
    );
    let df = read_parquet_dir(&dir.path().join("out"));
    let brands = df.column("brand").unwrap().str().unwrap().clone();
    assert!(
        brands
            .iter()
            .flatten()
            .all(|b| b == b.to_lowercase().trim())
    );
}

fn failing_prepare(input_name: &str, bytes: &[u8]) -> String {
    let dir = project(&[(
        "pipelines/bad.yaml",
        &format!(
            "dag: bad\ntasks:\n  prep:\n    operator: prepare_events\n    with: {{ input: {input_name}, output: out }}\n"
        ),
    )]);
    std::fs::write(dir.path().join(input_name), bytes).unwrap();
    let home = dir.path().join(".windsock");
    let o = run(windsock(dir.path(), &home).args(["run", "bad"]));
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        !dir.path().join("out").exists(),
        "a failed preparation leaves no output"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn broken_files_fail_with_a_clear_message() {
    let err = failing_prepare(
        "2019-Oct.csv.gz",
        b"event_time,event_type\nnot gzip at all\n",
    );
    assert!(
        err.contains("2019-Oct.csv.gz is not gzip-compressed"),
        "{err}"
    );

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"time,type,product\n1,2,3\n").unwrap();
    let err = failing_prepare("header.csv.gz", &gz.finish().unwrap());
    assert!(
        err.contains("header.csv.gz:1: unexpected header `time,type,product`"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let o = run(windsock(dir.path(), &dir.path().join("h")).args([
        "sample-data",
        "--months",
        "2019-10",
        "--rows-per-day",
        "300",
        "--out",
        ".",
        "--seed",
        "2",
    ]));
    assert!(o.status.success());
    let whole = std::fs::read(dir.path().join("2019-Oct.csv.gz")).unwrap();
    let err = failing_prepare("cut.csv.gz", &whole[..whole.len() / 2]);
    assert!(
        err.contains(
            "cut.csv.gz is truncated or corrupt: the gzip stream ends unexpectedly after line"
        ),
        "{err}"
    );
}

#[test]
fn the_shipped_batch_pipeline_prepares_exactly_ten_thousand_events_a_day_offline() {
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
        let got = output_of(&repo(), home.path(), &run_id, "get_month");
        assert!(
            got["path"].as_str().unwrap().ends_with("2019-Dec.csv.gz"),
            "{got}"
        );
        let prepared = output_of(&repo(), home.path(), &run_id, "prepare");
        assert_eq!(prepared["rows_written"], 310_000, "{prepared}");
        assert_eq!(prepared["days"], 31);
        let df = read_parquet_dir(Path::new(prepared["output"].as_str().unwrap()));
        let per_day = rows_per_day(&df);
        assert_eq!(per_day.len(), 31);
        assert!(per_day.values().all(|n| *n == 10_000), "{per_day:?}");
    }
}
