#!/usr/bin/env python3
"""prepare_events on a full-size month beside the usual ways to do the same job, in one run.

Usage:  python3 benches/prepare.py [--rows-per-day N] [--only NAME ...] [--json OUT]

The month is generated once by `windsock sample-data` (seed 1; default 1,369,315 rows a day, i.e.
42.4 million rows, the size of October 2019) and reused. Every contender reads the same gzipped
CSV and writes Parquet partitioned by day with exact duplicates dropped:
- gzip:      `gzip -dc` to /dev/null: the floor (one gzip stream inflates on one core);
- windsock:  the prepare_events operator, through `windsock run`;
- pyspark:   the seed's approach, local[2];
- pandas:    read_csv in 1M-row chunks, duplicates dropped per chunk, pyarrow Parquet;
- duckdb:    `COPY (SELECT DISTINCT ...) TO ... (FORMAT parquet, PARTITION_BY event_date)`;
- polars:    Python polars, lazy with the streaming engine, one month-wide `unique`.
Peak memory is the largest sum of RSS over the contender's whole process tree (the JVM of
PySpark included), sampled every 100 ms. The Python peers are pip-installed into a venv under
~/.cache/windsock-bench on first use. Not part of CI: it takes about a quarter of an hour.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "windsock-bench"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
WINDSOCK = Path(os.environ.get("WINDSOCK_BIN", TARGET / "release" / "windsock"))


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def tree_rss(root):
    children = {}
    rss = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(stat[1]), []).append(int(d.name))
            rss[int(d.name)] = int(stat[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measure(cmd, **kw):
    """Runs cmd; returns (wall seconds, peak RSS bytes of its process tree)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    peak = [0]

    def sample():
        while p.poll() is None:
            peak[0] = max(peak[0], tree_rss(p.pid))
            time.sleep(0.1)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, err = p.communicate()
    wall = time.perf_counter() - t0
    t.join()
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({p.returncode}): {err.decode()[-2000:]}")
    return wall, peak[0]


def ensure_venv():
    venv = CACHE / "venv-prepare"
    if not (venv / "bin" / "python").exists():
        log(f"installing pyspark, pandas, pyarrow, duckdb, polars into {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "pyspark", "pandas", "pyarrow", "duckdb", "polars"], check=True)
    return venv / "bin" / "python"


PYSPARK = r'''
import sys
from pyspark.sql import SparkSession, functions as F
src, out = sys.argv[1], sys.argv[2]
spark = (SparkSession.builder.master("local[2]").appName("prepare")
         .config("spark.driver.memory", "4g").config("spark.ui.enabled", "false").getOrCreate())
df = spark.read.csv(src, header=True)
df = (df.withColumn("event_time", F.to_timestamp(F.regexp_replace("event_time", " UTC$", ""), "yyyy-MM-dd HH:mm:ss"))
        .withColumn("product_id", F.col("product_id").cast("long"))
        .withColumn("category_id", F.col("category_id").cast("long"))
        .withColumn("user_id", F.col("user_id").cast("long"))
        .withColumn("price", F.col("price").cast("double"))
        .withColumn("brand", F.nullif(F.lower(F.trim("brand")), F.lit("")))
        .withColumn("category_code", F.nullif(F.trim("category_code"), F.lit("")))
        .dropna(subset=["event_time", "product_id", "category_id", "user_id", "price"])
        .dropDuplicates()
        .withColumn("event_date", F.to_date("event_time"))
        .withColumn("category_l1", F.split("category_code", r"\.").getItem(0))
        .withColumn("category_l2", F.split("category_code", r"\.").getItem(1)))
df.write.mode("overwrite").partitionBy("event_date").parquet(out)
'''

PANDAS = r'''
import sys, os
import pandas as pd, pyarrow as pa, pyarrow.parquet as pq
src, out = sys.argv[1], sys.argv[2]
n = 0
for i, chunk in enumerate(pd.read_csv(src, chunksize=1_000_000, dtype=str, keep_default_na=False)):
    chunk = chunk.drop_duplicates()
    t = pd.to_datetime(chunk["event_time"].str.removesuffix(" UTC"), format="%Y-%m-%d %H:%M:%S", errors="coerce", utc=True)
    df = pd.DataFrame({
        "event_time": t,
        "event_type": chunk["event_type"],
        "product_id": pd.to_numeric(chunk["product_id"], errors="coerce"),
        "category_id": pd.to_numeric(chunk["category_id"], errors="coerce"),
        "category_code": chunk["category_code"].replace("", None),
        "brand": chunk["brand"].str.strip().str.lower().replace("", None),
        "price": pd.to_numeric(chunk["price"], errors="coerce"),
        "user_id": pd.to_numeric(chunk["user_id"], errors="coerce"),
        "user_session": chunk["user_session"].replace("", None),
    }).dropna(subset=["event_time", "product_id", "price"])
    df["event_date"] = df["event_time"].dt.date.astype(str)
    parts = df["category_code"].str.split(".", n=2, expand=True)
    df["category_l1"] = parts[0] if 0 in parts else None
    df["category_l2"] = parts[1] if 1 in parts else None
    for day, g in df.groupby("event_date"):
        d = os.path.join(out, f"event_date={day}")
        os.makedirs(d, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(g.drop(columns=["event_date"]), preserve_index=False), os.path.join(d, f"part-{i:05}.parquet"))
'''

DUCKDB = r'''
import sys, duckdb
src, out = sys.argv[1], sys.argv[2]
duckdb.sql(f"""
COPY (
  SELECT DISTINCT
    strptime(event_time, '%Y-%m-%d %H:%M:%S UTC') AS event_time, event_type,
    CAST(product_id AS BIGINT) AS product_id, CAST(category_id AS BIGINT) AS category_id,
    NULLIF(trim(category_code), '') AS category_code, NULLIF(lower(trim(brand)), '') AS brand,
    CAST(price AS DOUBLE) AS price, CAST(user_id AS BIGINT) AS user_id,
    NULLIF(user_session, '') AS user_session,
    CAST(strptime(event_time, '%Y-%m-%d %H:%M:%S UTC') AS DATE) AS event_date,
    NULLIF(split_part(category_code, '.', 1), '') AS category_l1,
    NULLIF(split_part(category_code, '.', 2), '') AS category_l2
  FROM read_csv('{src}', header = true, all_varchar = true)
) TO '{out}' (FORMAT parquet, PARTITION_BY (event_date))
""")
'''

POLARS = r'''
import sys
import polars as pl
src, out = sys.argv[1], sys.argv[2]
# Python polars as most users would write it: the lazy API, the streaming engine, one month-wide
# `unique`, then one Parquet folder per day. (pl.read_csv of the whole month was killed by the
# kernel for lack of memory on this 24 GiB machine.)
df = (pl.scan_csv(src, infer_schema=False)
      .with_columns(
        pl.col("event_time").str.strptime(pl.Datetime("us", "UTC"), "%Y-%m-%d %H:%M:%S UTC", strict=False),
        pl.col("product_id", "category_id", "user_id").cast(pl.Int64, strict=False),
        pl.col("price").cast(pl.Float64, strict=False),
        pl.col("brand").str.strip_chars().str.to_lowercase().replace("", None),
        pl.col("category_code").replace("", None),
        pl.col("user_session").replace("", None))
      .drop_nulls(["event_time", "product_id", "price"])
      .unique()
      .with_columns(
        pl.col("event_time").dt.date().alias("event_date"),
        pl.col("category_code").str.split(".").list.get(0, null_on_oob=True).alias("category_l1"),
        pl.col("category_code").str.split(".").list.get(1, null_on_oob=True).alias("category_l2"))
      .collect(engine="streaming"))
df.write_parquet(out, partition_by="event_date")
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows-per-day", type=int, default=1_369_315)
    ap.add_argument("--only", action="append", choices=["gzip", "windsock", "pyspark", "pandas", "duckdb", "polars"])
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()
    if not WINDSOCK.exists():
        sys.exit(f"no windsock binary at {WINDSOCK}: run `cargo build --release` first")
    wanted = args.only or ["gzip", "windsock", "pyspark", "pandas", "duckdb", "polars"]
    data = CACHE / f"prepare-data-{args.rows_per_day}"
    src = data / "2019-Oct.csv.gz"
    results = {"rows_per_day": args.rows_per_day, "rows": args.rows_per_day * 31}
    if not src.exists():
        log(f"generating a month of {args.rows_per_day * 31:,} rows into {data}")
        t0, cpu0 = time.perf_counter(), os.times()
        subprocess.run([str(WINDSOCK), "sample-data", "--months", "2019-10", "--rows-per-day",
                        str(args.rows_per_day), "--out", str(data), "--seed", "1"], check=True)
        cpu1 = os.times()
        wall = time.perf_counter() - t0
        cpu = (cpu1.children_user - cpu0.children_user) + (cpu1.children_system - cpu0.children_system)
        results["generate"] = {"seconds": wall, "cpu_seconds": cpu,
                               "rows_per_s": results["rows"] / wall, "rows_per_cpu_s": results["rows"] / cpu}
        log(f"generated in {wall:.1f} s ({results['rows'] / cpu / 1e6:.2f} M rows per CPU-second)")
    results["input_bytes"] = src.stat().st_size
    py = ensure_venv() if set(wanted) - {"gzip", "windsock"} else None
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        tmp = Path(tmp)
        scripts = {"pyspark": PYSPARK, "pandas": PANDAS, "duckdb": DUCKDB, "polars": POLARS}
        for name in wanted:
            out = tmp / f"out-{name}"
            if name == "gzip":
                cmd = ["sh", "-c", f"gzip -dc '{src}' > /dev/null"]
                kw = {}
            elif name == "windsock":
                proj = tmp / "proj"
                (proj / "pipelines").mkdir(parents=True, exist_ok=True)
                (proj / "pipelines" / "prep.yaml").write_text(
                    f"dag: prep\ntasks:\n  prep:\n    operator: prepare_events\n    with: {{ input: '{src}', output: '{out}' }}\n")
                cmd = [str(WINDSOCK), "--home", str(proj / "home"), "run", "prep"]
                kw = {"cwd": proj}
            else:
                script = tmp / f"bench_{name}.py"  # not `polars.py`: that would shadow the module
                script.write_text(scripts[name])
                cmd = [str(py), str(script), str(src), str(out)]
                kw = {}
            log(f"running {name}")
            try:
                wall, peak = measure(cmd, **kw)
            except Exception as e:
                log(f"{name} failed: {e}")
                results[name] = {"error": str(e)}
                continue
            results[name] = {"seconds": wall, "rows_per_s": results["rows"] / wall, "peak_rss_mib": peak / 2**20}
            log(f"{name}: {wall:.1f} s, {results['rows'] / wall / 1e6:.2f} M rows/s, peak {peak / 2**20:.0f} MiB")
            shutil.rmtree(out, ignore_errors=True)
    w = results.get("windsock", {})
    if "seconds" in w:
        for name in wanted:
            r = results.get(name, {})
            if "seconds" in r and name != "windsock":
                r["windsock_speedup"] = r["seconds"] / w["seconds"]
                r["memory_vs_windsock"] = r["peak_rss_mib"] / max(w["peak_rss_mib"], 1)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
