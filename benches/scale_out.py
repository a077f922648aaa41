#!/usr/bin/env python3
"""Several schedulers on one PostgreSQL state store, beside one scheduler on SQLite.

Usage:  python3 benches/scale_out.py [--json OUT] [--runs N]

windsock: the release binary (`cargo build --release`; $WINDSOCK_BIN overrides the path).
PostgreSQL: Debian's `postgresql` package (the server is started here on a temporary data
directory with its default, durable settings; as root it runs as the `postgres` user).

For each setting (SQLite and 1 daemon; PostgreSQL and 1, 2, 3 daemons) the same work is queued
before the daemons start, then timed from the state store's own timestamps:
- tasks/s: N runs of a DAG of 20 parallel no-op tasks: tasks divided by the time from the
  first try's start to the last try's end;
- claim latency: then, alone, 10 runs of a chain of 10 no-op tasks: the median time from one
  task's end to the start of the next (the try recorded as finished, the next one claimed and
  started).
"""

import argparse
import json
import os
import pwd
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
WINDSOCK = Path(os.environ.get("WINDSOCK_BIN", TARGET / "release" / "windsock"))


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def pg_bin():
    if os.environ.get("WINDSOCK_PG_BIN"):
        return Path(os.environ["WINDSOCK_PG_BIN"])
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if not versions:
        sys.exit("PostgreSQL is not installed: apt-get install postgresql")
    return versions[-1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    def __init__(self, tmp):
        self.bin = pg_bin()
        user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

        def demote():
            if user:
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)

        os.chmod(tmp, 0o755)
        data = Path(tmp) / "pgdata"
        data.mkdir()
        if user:
            os.chown(data, user.pw_uid, user.pw_gid)
        subprocess.run([str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
                       check=True, capture_output=True, preexec_fn=demote)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=demote)
        for _ in range(300):
            if self.psql("postgres", "SELECT 1").returncode == 0:
                break
            time.sleep(0.1)
        self.n = 0

    def psql(self, db, sql):
        return subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                               "-U", "postgres", "-d", db, "-tAc", sql], capture_output=True)

    def database(self):
        self.n += 1
        name = f"bench{self.n}"
        self.psql("postgres", f"CREATE DATABASE {name}")
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)


def ws(project, home, state, *args):
    env = dict(os.environ, WINDSOCK_HOME=str(home))
    env.pop("WINDSOCK_STATE_URL", None)
    if state:
        env["WINDSOCK_STATE_URL"] = state
    return subprocess.run([str(WINDSOCK), *args], cwd=project, env=env, check=True,
                          capture_output=True, text=True)


def pipelines(project):
    p = project / "pipelines"
    p.mkdir(parents=True)
    lines = ["dag: wide", "max_active_runs: 1000", "tasks:"]
    lines += [f"  t{i}: {{operator: noop}}" for i in range(20)]
    (p / "wide.yaml").write_text("\n".join(lines) + "\n")
    lines = ["dag: chain", "max_active_runs: 1000", "tasks:"]
    for i in range(10):
        dep = f", depends_on: [t{i-1}]" if i else ""
        lines.append(f"  t{i}: {{operator: noop{dep}}}")
    (p / "chain.yaml").write_text("\n".join(lines) + "\n")


def measure(label, state, daemons, runs):
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        pipelines(project)
        inspect = project / "inspect-home"
        homes = [project / f"daemon{i}" for i in range(daemons)]
        if state is None:
            # The embedded store lives in the home: the one daemon uses the triggering home.
            homes = [inspect]
        env = dict(os.environ)
        env.pop("WINDSOCK_STATE_URL", None)
        if state:
            env["WINDSOCK_STATE_URL"] = state

        def trigger(dag, n):
            return [ws(project, inspect, state, "trigger", dag).stdout.split()[0] for _ in range(n)]

        def wait_all():
            deadline = time.time() + 600
            while True:
                listed = json.loads(ws(project, inspect, state, "runs", "--limit", "100000",
                                       "--json").stdout)
                if all(r["state"] in ("success", "failed") for r in listed):
                    return listed
                if time.time() > deadline:
                    sys.exit(f"{label}: runs did not finish")
                time.sleep(0.2)

        # The wide runs wait, queued, for the daemons to start; the chains run on their own after.
        ids = {"wide": trigger("wide", runs)}
        procs = [subprocess.Popen([str(WINDSOCK), "--home", str(h), "scheduler", "--poll", "200ms"],
                                  cwd=project, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for h in homes]
        try:
            wait_all()
            ids["chain"] = trigger("chain", 10)
            listed = wait_all()
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=60)
        failed = [r for r in listed if r["state"] != "success"]
        if failed:
            sys.exit(f"{label}: {len(failed)} runs failed")
        spans = []
        for run_id in ids["wide"]:
            for t in json.loads(ws(project, inspect, state, "tasks", run_id, "--json").stdout):
                spans.append((ts(t["started_at"]), ts(t["ended_at"])))
        wall = max(e for _, e in spans) - min(s for s, _ in spans)
        gaps = []
        for run_id in ids["chain"]:
            tasks = json.loads(ws(project, inspect, state, "tasks", run_id, "--json").stdout)
            iv = sorted((ts(t["started_at"]), ts(t["ended_at"])) for t in tasks)
            gaps += [b[0] - a[1] for a, b in zip(iv, iv[1:])]
        res = {
            "tasks": len(spans),
            "tasks_per_s": len(spans) / wall,
            "claim_latency_ms_p50": statistics.median(gaps) * 1000,
            "claim_latency_ms_p95": sorted(gaps)[int(len(gaps) * 0.95)] * 1000,
        }
        log(f"{label}: {res['tasks_per_s']:.0f} tasks/s ({res['tasks']} tasks in {wall:.2f} s); "
            f"claim latency p50 {res['claim_latency_ms_p50']:.2f} ms, p95 {res['claim_latency_ms_p95']:.2f} ms")
        return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    if not WINDSOCK.exists():
        sys.exit(f"{WINDSOCK} not found: cargo build --release")
    results = {"sqlite_1_daemon": measure("SQLite, 1 daemon", None, 1, args.runs)}
    with tempfile.TemporaryDirectory() as tmp:
        pg = Postgres(tmp)
        try:
            for n in (1, 2, 3):
                results[f"postgres_{n}_daemons"] = measure(
                    f"PostgreSQL, {n} daemon{'s' if n > 1 else ''}", pg.database(), n, args.runs)
        finally:
            pg.stop()
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
