#!/usr/bin/env python3
"""A seven-month backfill of the shipped stream pipeline (Oct 2019 -> Apr 2020) on embedded
defaults, from a fresh state directory, twice: the first does all the work, the second must
find everything done.

windsock: the release binary (`cargo build --release`; $WINDSOCK_BIN overrides the path).

Each month is generated in the dataset's exact format (12,000 lines a day, 1 % dirt),
prepared to 10,000 clean events a day, streamed through the embedded Kafka broker, landed in
RAW.EVENTS, aggregated into PROCESSED and reported into REPORTING, and the dashboard is written:
2.1 million events in all. Wall time and peak memory (the largest RSS of the windsock process,
which runs the broker and DuckDB in process) per backfill. Results: benches/results/backfill.json.

    python3 benches/backfill.py
"""

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
WINDSOCK = Path(os.environ.get("WINDSOCK_BIN", TARGET / "release" / "windsock"))


def backfill(home):
    out = tempfile.TemporaryFile(mode="w+")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(WINDSOCK), "--home", home, "backfill", "ecommerce_stream",
         "--from", "2019-10", "--to", "2020-04"],
        cwd=REPO, stdout=out, stderr=subprocess.DEVNULL, text=True,
    )
    # wait4: this process's own resource use (its peak RSS in KiB), not the sum of all children.
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out.seek(0)
    stdout = out.read()
    if status != 0:
        raise SystemExit(f"backfill failed ({status}):\n{stdout}")
    return {
        "seconds": round(wall, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "summary": stdout.strip().splitlines()[-1],
    }


def count(home):
    out = subprocess.run(
        [str(WINDSOCK), "--home", home, "query", "--format", "csv",
         "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM RAW.EVENTS"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]
    n, ids = (int(x) for x in out.split(","))
    return n, ids


def main():
    home = tempfile.mkdtemp(prefix="windsock-backfill-")
    first = backfill(home)
    second = backfill(home)
    n, ids = count(home)
    result = {
        "months": 7,
        "events": n,
        "distinct_event_ids": ids,
        "first": first,
        "second": second,
    }
    print(f"first backfill:  {first['seconds']:7.1f} s, peak RSS {first['peak_rss_mib']:.0f} MiB, "
          f"{first['cpu_seconds']:.0f} CPU-s — {first['summary']}")
    print(f"second backfill: {second['seconds']:7.1f} s, peak RSS {second['peak_rss_mib']:.0f} MiB — {second['summary']}")
    print(f"RAW.EVENTS: {n} events, {ids} distinct (expected 2,130,000 = 213 days x 10,000)")
    (REPO / "benches" / "results" / "backfill.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
