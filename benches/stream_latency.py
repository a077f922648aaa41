#!/usr/bin/env python3
"""End-to-end latency of `windsock stream --follow` (stream_aggregate), produce to aggregate output.

Usage:  python3 benches/stream_latency.py [--rates 500,2000,10000] [--seconds 20] [--json OUT]

On the local profile's embedded broker (`WINDSOCK_BROKER=tansu` for tansu), with a generated, prepared
December: `windsock stream live aggregate --follow` runs stream_aggregate (1-minute windows)
while kafka_produce replays January at a fixed pace (`rate`, events per second). For every
window emission, stream_aggregate measures the time from the produce timestamp of the event that
closed the window (moved the watermark past its end) to the broker's acknowledgement of the
window's output record: the latency without the window wait. At the end (SIGINT) it reports p50,
p99 and max, printed here per rate. Replayed at thousands of events a second, event time runs far
ahead of wall time, so 1-minute windows close many times a second and every sample is a real
emission. Not part of CI.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
WINDSOCK = Path(os.environ.get("WINDSOCK_BIN", TARGET / "release" / "windsock"))


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="500,2000,10000")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="windsock-latency-"))
    home, project = work / "home", work / "project"
    (project / "pipelines").mkdir(parents=True)
    (project / "schemas").mkdir()
    for f in ("raw_event.schema.json", "window_aggregate.avsc", "trending_product.avsc"):
        (project / "schemas" / f).write_text((REPO / "schemas" / f).read_text())
    (project / "pipelines" / "prep.yaml").write_text("""
dag: prep
start_date: 2019-10-01
partitions: { monthly: { from: 2019-10, to: 2020-04 } }
tasks:
  gen:
    operator: generate_events
    with: { month: "{{ partition.key }}", rows_per_day: 10000, output: "{{ data_dir }}/raw", seed: 5 }
  prepare:
    operator: prepare_events
    depends_on: [gen]
    with: { input: "{{ tasks.gen.output.path }}", output: "{{ data_dir }}/prepared/{{ partition.key }}", rows_per_day: 10000 }
""")
    warmup, prepared = home / "data" / "prepared" / "2019-12", home / "data" / "prepared" / "2020-01"
    env = dict(os.environ, WINDSOCK_HOME=str(home))
    for month in ("2019-12", "2020-01"):
        subprocess.run([str(WINDSOCK), "run", "prep", "--partition", month], cwd=project, env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {}
    for i, rate in enumerate(int(r) for r in args.rates.split(",")):
        topic = f"live-{i}"
        per_day = max(1, min(10000, int(rate * args.seconds / 31)))
        replay = """
dag: replay
start_date: 2019-10-01
tasks:
  produce:
    operator: kafka_produce
    with: {{ input: "{prepared}", topic: {topic}, rows_per_day: {per_day}, rate: {rate} }}
"""
        # One December event a day creates the topic, so that the stream is assigned and fetching
        # before the measured replay of January starts (its own start-up is not the steady state,
        # and December's event times are all before January's: nothing becomes late).
        (project / "pipelines" / "replay.yaml").write_text(
            replay.format(prepared=warmup, topic=topic, per_day=1, rate=rate))
        (project / "pipelines" / "live.yaml").write_text(f"""
dag: live
start_date: 2019-10-01
tasks:
  aggregate:
    operator: stream_aggregate
    with: {{ topic: {topic}, output_topic: {topic}.windows, windows: [1m], allowed_lateness: 0s }}
""")
        stream = subprocess.Popen([str(WINDSOCK), "stream", "live", "aggregate", "--follow"], cwd=project,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(1)
        subprocess.run([str(WINDSOCK), "run", "replay", "--date", "2019-12-01"], cwd=project, env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
        (project / "pipelines" / "replay.yaml").write_text(
            replay.format(prepared=prepared, topic=topic, per_day=per_day, rate=rate))
        t0 = time.perf_counter()
        subprocess.run([str(WINDSOCK), "run", "replay", "--date", "2019-12-01"], cwd=project, env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        produced_in = time.perf_counter() - t0
        time.sleep(2)
        stream.send_signal(signal.SIGINT)
        out, _ = stream.communicate(timeout=60)
        line = next(l for l in out.splitlines() if l.startswith("aggregate: "))
        report = json.loads(line[len("aggregate: "):])
        lat = report["latency_ms"]
        results[str(rate)] = {
            "events": per_day * 31,
            "seconds": produced_in,
            "events_per_s": per_day * 31 / produced_in,
            "emissions": lat["samples"],
            "p50_ms": lat["p50"],
            "p99_ms": lat["p99"],
            "max_ms": lat["max"],
            "late_events": report["windows"]["late_events"],
            "consume_p50_ms": report["consume_latency_ms"]["p50"],
            "consume_p99_ms": report["consume_latency_ms"]["p99"],
            "processing_p50_ms": report["processing_latency_ms"]["p50"],
            "processing_p99_ms": report["processing_latency_ms"]["p99"],
        }
        log(f"rate {rate}/s: {json.dumps(results[str(rate)])}")
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
