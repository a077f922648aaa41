#!/usr/bin/env python3
"""kafka_produce beside the seed's producer (Python confluent-kafka), against the same broker.

Usage:  python3 benches/produce.py [--broker native|tansu] [--rounds N] [--json OUT]

One broker is started for the whole bench: `native` (default) is the local profile's embedded
broker, run alone by `windsock broker`; `tansu` is tansu 0.6 with SQLite storage (on PATH).
A generated December (31 days) is prepared once by windsock; then each round, alternating:
- windsock:     `windsock run` of a DAG with one kafka_produce task, shipped settings for the
  local profile (idempotence, acks=all, linger.ms=50, large batches, one request in flight, no
  compression on loopback), 10,000 events a day = 310,000 JSON messages keyed by user_session,
  each checked against schemas/raw_event.schema.json;
- windsock-lz4: the same with lz4, i.e. exactly the Python producer's settings;
- python:       the seed's approach: read the same prepared Parquet with pyarrow, first 10,000
  events a day in event-time order, json.dumps each, confluent-kafka with idempotence, acks=all,
  lz4 and the same batching (no schema check: the seed had none, so windsock does more work per
  message here).
Each round writes to a fresh 3-partition topic. Reported per contender (median of the rounds):
messages per second over the whole process (start to exit), producer CPU per message (user +
system of the process), broker CPU per message (tansu's /proc counters over the same span), and
peak RSS of the producer process. The Python venv is created under ~/.cache/windsock-bench on
first use (pip: confluent-kafka, pyarrow). Not part of CI.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "windsock-bench"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
WINDSOCK = Path(os.environ.get("WINDSOCK_BIN", TARGET / "release" / "windsock"))
VENV = CACHE / "venv-kafka"
TICK = os.sysconf("SC_CLK_TCK")

PRODUCER = {
    "enable.idempotence": True,
    "acks": "all",
    "compression.type": "lz4",
    "max.in.flight.requests.per.connection": 1,
    "linger.ms": 50,
    "batch.size": 4000000,
    "batch.num.messages": 100000,
    "queue.buffering.max.kbytes": 262144,
    "partitioner": "murmur2_random",
}

PYTHON_PRODUCER = r'''
import glob, json, sys, pyarrow as pa, pyarrow.parquet as pq
from confluent_kafka import Producer
prepared, topic, bootstrap, config = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
config["bootstrap.servers"] = bootstrap
p = Producer(config)
failed = [0]
def report(err, msg):
    if err is not None:
        failed[0] += 1
sent = 0
for day in sorted(glob.glob(prepared + "/event_date=*")):
    t = pq.read_table(sorted(glob.glob(day + "/*.parquet")), partitioning=None)
    # polars writes string_view, which pyarrow cannot sort yet.
    t = t.cast(pa.schema([pa.field(f.name, pa.string() if pa.types.is_string_view(f.type) else f.type)
                          for f in t.schema]))
    t = t.sort_by([("event_time", "ascending")]).slice(0, 10000)
    for row in t.to_pylist():
        row["event_time"] = row["event_time"].strftime("%Y-%m-%dT%H:%M:%SZ")
        row["event_date"] = row["event_date"].isoformat()
        key = row["user_session"] or str(row["user_id"])
        while True:
            try:
                p.produce(topic, json.dumps(row, separators=(",", ":")).encode(), key.encode(), on_delivery=report)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
        sent += 1
p.flush(300)
assert failed[0] == 0, f"{failed[0]} failed deliveries"
print(sent)
'''


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid):
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(stat[11]) + int(stat[12])


def timed(cmd, broker_pid, env=None, cwd=None):
    """Runs cmd; returns (wall s, cpu s, peak rss MiB, broker cpu s, stdout)."""
    b0 = cpu_ticks(broker_pid)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    b1 = cpu_ticks(broker_pid)
    if status != 0:
        sys.exit(f"{cmd[0]} failed:\n{out.decode()}\n{err.decode()}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, (b1 - b0) / TICK, out.decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--broker", choices=["native", "tansu"], default="native")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    tansu = shutil.which("tansu") or os.environ.get("WINDSOCK_BROKER_BIN")
    if args.broker == "tansu" and not tansu:
        sys.exit("tansu is not on PATH (cargo install tansu --locked --features libsql)")
    if not (VENV / "bin" / "python").exists():
        log("creating the Python venv (confluent-kafka, pyarrow)")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "confluent-kafka", "pyarrow"], check=True)
    work = Path(tempfile.mkdtemp(prefix="windsock-produce-"))
    home, project = work / "home", work / "project"
    (project / "pipelines").mkdir(parents=True)
    (project / "schemas").mkdir()
    shutil.copy(REPO / "schemas" / "raw_event.schema.json", project / "schemas")
    (project / "pipelines" / "prep.yaml").write_text("""
dag: prep
start_date: 2019-10-01
partitions: { monthly: { from: 2019-10, to: 2020-04 } }
tasks:
  gen:
    operator: generate_events
    with: { month: "{{ partition.key }}", rows_per_day: 10000, output: "{{ data_dir }}/raw", seed: 3 }
  prepare:
    operator: prepare_events
    depends_on: [gen]
    with: { input: "{{ tasks.gen.output.path }}", output: "{{ data_dir }}/prepared/{{ partition.key }}", rows_per_day: 10000 }
""")
    prepared = home / "data" / "prepared" / "2019-12"
    (project / "pipelines" / "produce.yaml").write_text(f"""
dag: produce
start_date: 2019-10-01
tasks:
  stream_month:
    operator: kafka_produce
    with:
      input: {prepared}
      topic: "{{{{ env('BENCH_TOPIC') }}}}"
      rows_per_day: 10000
      properties:
        compression.type: "{{{{ env('BENCH_COMPRESSION', 'none') }}}}"
""")
    env = dict(os.environ, WINDSOCK_HOME=str(home))
    log("preparing December (310,000 events)")
    subprocess.run([str(WINDSOCK), "run", "prep", "--partition", "2019-12"], cwd=project, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    broker_dir = work / "broker"
    broker_dir.mkdir()
    if args.broker == "tansu":
        url = f"tcp://127.0.0.1:{port}"
        broker = subprocess.Popen([tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
                                   "--storage-engine", "sqlite://tansu.db"], cwd=broker_dir,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bootstrap = f"127.0.0.1:{port}"
    else:
        broker = subprocess.Popen([str(WINDSOCK), "--home", str(broker_dir), "broker"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        bootstrap = broker.stdout.readline().strip()
        port = int(bootstrap.rsplit(":", 1)[1])
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    env["WINDSOCK_KAFKA_BOOTSTRAP"] = bootstrap
    results = {"windsock": [], "windsock-lz4": [], "python": []}
    try:
        for r in range(args.rounds):
            for name in results:
                topic = f"bench-{name}-{r}"
                # Same topic layout for both: 3 partitions, created up front.
                subprocess.run([str(VENV / "bin" / "python"), "-c",
                                "import sys\nfrom confluent_kafka.admin import AdminClient, NewTopic\n"
                                "a = AdminClient({'bootstrap.servers': sys.argv[1]})\n"
                                "[f.result() for f in a.create_topics([NewTopic(sys.argv[2], 3, 1)]).values()]",
                                bootstrap, topic], check=True)
                if name.startswith("windsock"):
                    e = dict(env, BENCH_TOPIC=topic,
                             BENCH_COMPRESSION="lz4" if name == "windsock-lz4" else "none")
                    cmd = [str(WINDSOCK), "run", "produce", "--date", f"2019-12-{r + 1:02d}"]
                    wall, cpu, rss, bcpu, _ = timed(cmd, broker.pid, env=e, cwd=project)
                else:
                    cmd = [str(VENV / "bin" / "python"), "-c", PYTHON_PRODUCER, str(prepared), topic,
                           bootstrap, json.dumps(PRODUCER)]
                    wall, cpu, rss, bcpu, out = timed(cmd, broker.pid)
                    assert out.strip() == "310000", out
                n = 310_000
                row = {"seconds": wall, "msgs_per_s": n / wall, "producer_cpu_us_per_msg": cpu / n * 1e6,
                       "broker_cpu_us_per_msg": bcpu / n * 1e6, "peak_rss_mib": rss}
                results[name].append(row)
                log(f"round {r} {name}: {json.dumps({k: round(v, 2) for k, v in row.items()})}")
    finally:
        broker.terminate()
        broker.wait()
    summary = {}
    for name, rows in results.items():
        summary[name] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    p = summary["python"]
    summary["ratios"] = {}
    for name in ("windsock", "windsock-lz4"):
        w = summary[name]
        summary["ratios"][name] = {
            "msgs_per_s_over_python": w["msgs_per_s"] / p["msgs_per_s"],
            "producer_cpu_python_over_windsock": p["producer_cpu_us_per_msg"] / w["producer_cpu_us_per_msg"],
            "broker_cpu_python_over_windsock": p["broker_cpu_us_per_msg"] / w["broker_cpu_us_per_msg"],
            "peak_rss_python_over_windsock": p["peak_rss_mib"] / w["peak_rss_mib"],
        }
    summary["messages"] = 310_000
    summary["broker"] = "windsock native (embedded)" if args.broker == "native" else "tansu 0.6, SQLite"
    summary["rounds"] = args.rounds
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
