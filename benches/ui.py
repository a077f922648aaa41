#!/usr/bin/env python3
"""How fast the web UI answers on real history: a state database holding 10,000 runs.

windsock: the release binary (`cargo build --release`; $WINDSOCK_BIN overrides the path).

The runs are written straight into a fresh state database (after windsock created its schema):
the shipped DAGs' tasks, one try each, as the scheduler would have left them over years of
3-hourly runs (scheduled, manual and backfill; mostly succeeded, some failed, a few running).
Then `windsock ui` serves them and each page is requested many times over HTTP on loopback.
Every page must answer in under 100 ms. Results: benches/results/ui.json.

    python3 benches/ui.py [--runs 10000] [--requests 40]
"""

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
WINDSOCK = Path(os.environ.get("WINDSOCK_BIN", TARGET / "release" / "windsock"))
DAGS = {"ecommerce_stream": 0.5, "ecommerce_batch": 0.3, "hello_partitions": 0.2}
MONTHS = ["2019-10", "2019-11", "2019-12", "2020-01", "2020-02", "2020-03", "2020-04"]


def ts(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def tasks_of(dag, home):
    out = subprocess.run(
        [str(WINDSOCK), "--home", home, "graph", dag],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout
    names = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].rstrip(".").isdigit():
            names.append(parts[1])
    return names


def fill(home, runs):
    subprocess.run([str(WINDSOCK), "--home", home, "runs"], cwd=REPO, check=True,
                   capture_output=True)
    db = sqlite3.connect(os.path.join(home, "state.db"))
    start = datetime(2021, 1, 1, tzinfo=timezone.utc)
    dag_runs, instances, tries = [], [], []
    last = {}
    n = 0
    for dag, share in DAGS.items():
        tasks = tasks_of(dag, home)
        for i in range(int(runs * share)):
            month = MONTHS[i % len(MONTHS)]
            created = start + timedelta(hours=3 * n)
            trigger = ("scheduled", "manual", "backfill")[0 if i % 10 < 8 else (1 if i % 10 == 8 else 2)]
            key = f"{month}#{i // len(MONTHS) + 1}" if trigger != "manual" else month
            state = "failed" if i % 17 == 0 else "success"
            run_id = f"{dag}__{trigger}__{month}__{i:06d}"
            m = datetime.strptime(month, "%Y-%m").replace(tzinfo=timezone.utc)
            dag_runs.append((run_id, dag, key, month, ts(m), ts(m), ts(m + timedelta(days=31)),
                             trigger, state, ts(created), ts(created),
                             ts(created + timedelta(minutes=4)), f"pipelines/{dag}.yaml"))
            for j, task in enumerate(tasks):
                t_state = "failed" if state == "failed" and j == len(tasks) - 1 else "success"
                begin = created + timedelta(seconds=20 * j)
                end = begin + timedelta(seconds=18)
                log = os.path.join(home, "logs", dag, run_id, task, "try-1.log")
                instances.append((run_id, task, t_state, 1, 1, ts(begin), ts(end), 18000,
                                  '{"rows": 1}' if t_state == "success" else None,
                                  "boom" if t_state == "failed" else None, log))
                tries.append((run_id, task, 1, t_state, ts(begin), ts(end),
                              "boom" if t_state == "failed" else None, log))
            last[dag] = run_id
            n += 1
    db.executemany(
        "INSERT INTO dag_runs (run_id, dag, run_key, partition_key, logical_date,"
        " data_interval_start, data_interval_end, trigger, state, created_at, started_at,"
        " ended_at, pipeline_file) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", dag_runs)
    db.executemany(
        "INSERT INTO task_instances (run_id, task, state, try_number, first_try, started_at,"
        " ended_at, duration_ms, output, error, log_path) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        instances)
    db.executemany(
        "INSERT INTO task_tries (run_id, task, try_number, state, started_at, ended_at, error,"
        " log_path) VALUES (?,?,?,?,?,?,?,?)", tries)
    db.commit()
    count = db.execute("SELECT count(*) FROM dag_runs").fetchone()[0]
    db.close()
    return count, last["ecommerce_stream"]


def timed(url, requests):
    for _ in range(3):
        urllib.request.urlopen(url).read()
    samples = []
    for _ in range(requests):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url) as r:
            r.read()
            status = r.status
        samples.append((time.perf_counter() - t0) * 1000)
        assert status == 200, (url, status)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 2),
        "max_ms": round(samples[-1], 2),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--requests", type=int, default=40)
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="windsock-ui-bench-")
    count, last_run = fill(home, args.runs)
    ui = subprocess.Popen([str(WINDSOCK), "--home", home, "ui", "--bind", "127.0.0.1:0"],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        base = ui.stdout.readline().strip().rstrip("/")
        pages = {
            "DAGs": "/",
            "grid (25 runs x 11 tasks)": "/dags/ecommerce_stream",
            "graph": "/dags/ecommerce_stream/graph",
            "partitions": "/dags/ecommerce_stream/partitions",
            "task (tries, log)": f"/runs/{last_run}/tasks/prepare",
            "log tail (JSON)": f"/api/log?run={last_run}&task=prepare&try=1&offset=0",
        }
        results = {}
        for name, path in pages.items():
            results[name] = timed(base + path, args.requests)
        print(f"{count} runs in the state database; {args.requests} requests per page")
        print(f"{'page':28} {'p50':>9} {'p95':>9} {'max':>9}")
        for name, r in results.items():
            print(f"{name:28} {r['p50_ms']:>7.1f}ms {r['p95_ms']:>7.1f}ms {r['max_ms']:>7.1f}ms")
        slowest = max(r["max_ms"] for r in results.values())
        print(f"slowest answer: {slowest:.1f} ms (target: every page under 100 ms)")
        out = REPO / "benches" / "results" / "ui.json"
        out.write_text(json.dumps({"runs": count, "requests": args.requests, "pages": results,
                                   "slowest_ms": slowest}, indent=2) + "\n")
    finally:
        ui.terminate()
        ui.wait()


if __name__ == "__main__":
    main()
