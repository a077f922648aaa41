#!/usr/bin/env python3
"""Scheduling overhead of windsock beside Apache Airflow 3 and Prefect 3, in one run.

Usage:  python3 benches/scheduler.py [--skip-peers] [--json OUT]

windsock: the release binary (`cargo build --release`; $WINDSOCK_BIN overrides the path).
Peers: each is pip-installed into its own venv under ~/.cache/windsock-bench on first use.
Not part of CI: it takes several minutes, most of it spent in the peers.

Measured, with every state transition persisted as in normal operation:
- a chain of 1,000 no-op tasks and 1,000 parallel no-op tasks: total wall time and the median
  gap between one task's end and the next one's start (windsock, in the foreground);
- a chain of 10 shell `true` tasks: wall time of the run, median gap, and the time from the
  trigger command to the run's success through a running scheduler (windsock, Airflow, Prefect);
- memory (PSS across all processes) and idle CPU of the scheduler with 100 DAGs loaded.
"""

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "windsock-bench"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
WINDSOCK = Path(os.environ.get("WINDSOCK_BIN", TARGET / "release" / "windsock"))


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def median_gap(intervals):
    """Median of start(i) - end(i-1) over tasks sorted by start."""
    intervals = sorted(intervals)
    gaps = [b[0] - a[1] for a, b in zip(intervals, intervals[1:])]
    return statistics.median(gaps) if gaps else float("nan")


def pss_of_tree(root_pids):
    """Proportional set size (bytes) of the given processes and all their descendants."""
    children = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d.name))
            except (OSError, ValueError):
                pass
    seen, stack, total = set(), list(root_pids), 0
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total, len(seen)


def cpu_seconds(pids):
    hz = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / hz
        except OSError:
            pass
    return total


def ensure_venv(name, requirement):
    venv = CACHE / f"venv-{name}"
    if not (venv / "bin" / "python").exists():
        log(f"installing {requirement} into {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", requirement], check=True)
    return venv


# ---------------------------------------------------------------- windsock


def ws(home, *args, project=None, check=True, **kw):
    cmd = [str(WINDSOCK), "--home", str(home), *args]
    return subprocess.run(cmd, cwd=project, check=check, capture_output=True, text=True, **kw)


def windsock_pipelines(project):
    p = project / "pipelines"
    p.mkdir(parents=True)
    lines = ["dag: chain1000", "tasks:"]
    for i in range(1000):
        dep = f", depends_on: [t{i-1}]" if i else ""
        lines.append(f"  t{i}: {{operator: noop{dep}}}")
    (p / "chain1000.yaml").write_text("\n".join(lines) + "\n")
    lines = ["dag: par1000", "tasks:"] + [f"  t{i}: {{operator: noop}}" for i in range(1000)]
    (p / "par1000.yaml").write_text("\n".join(lines) + "\n")
    lines = ["dag: chain10", "tasks:"]
    for i in range(10):
        dep = f", depends_on: [t{i-1}]" if i else ""
        lines.append(f"  t{i}: {{operator: shell, with: {{command: 'true'}}{dep}}}")
    (p / "chain10.yaml").write_text("\n".join(lines) + "\n")


def windsock_run(project, home, dag, *extra):
    t0 = time.perf_counter()
    out = ws(home, "run", dag, *extra, project=project)
    wall = time.perf_counter() - t0
    run_id = out.stdout.split()[0]
    tasks = json.loads(ws(home, "tasks", run_id, "--json", project=project).stdout)
    intervals = [(ts(t["started_at"]), ts(t["ended_at"])) for t in tasks]
    return wall, median_gap(intervals), run_id


def bench_windsock():
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        project, home = Path(tmp), Path(tmp) / "home"
        windsock_pipelines(project)
        wall, gap, _ = windsock_run(project, home, "chain1000")
        res["chain1000_wall_s"], res["chain1000_gap_ms"] = wall, gap * 1000
        log(f"windsock chain of 1000: {wall:.3f} s, median gap {gap*1000:.3f} ms")
        wall, _, _ = windsock_run(project, home, "par1000", "--concurrency", "64")
        res["par1000_wall_s"] = wall
        log(f"windsock 1000 parallel: {wall:.3f} s")
        runs = [windsock_run(project, home, "chain10") for _ in range(5)]
        res["chain10_run_s"] = statistics.median(r[0] for r in runs)
        res["chain10_gap_ms"] = statistics.median(r[1] for r in runs) * 1000
        log(f"windsock chain of 10 true (windsock run): {res['chain10_run_s']:.3f} s, gap {res['chain10_gap_ms']:.2f} ms")

        daemon = subprocess.Popen(
            [str(WINDSOCK), "--home", str(home), "scheduler"],
            cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.5)
            lat = []
            for _ in range(20):
                t0 = time.perf_counter()
                ws(home, "trigger", "chain10", "--wait", project=project)
                lat.append(time.perf_counter() - t0)
            res["chain10_trigger_to_success_ms"] = statistics.median(lat) * 1000
            log(f"windsock trigger → success (10 × true, through the daemon): median {res['chain10_trigger_to_success_ms']:.1f} ms")
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)

    with tempfile.TemporaryDirectory() as tmp:
        project, home = Path(tmp), Path(tmp) / "home"
        (project / "pipelines").mkdir()
        for i in range(100):
            (project / "pipelines" / f"dag{i:03}.yaml").write_text(
                f"dag: dag{i:03}\nschedule: \"0 * * * *\"\ntasks:\n"
                "  a: {operator: shell, with: {command: 'true'}}\n"
                "  b: {operator: shell, depends_on: [a], with: {command: 'true'}}\n"
                "  c: {operator: shell, depends_on: [b], with: {command: 'true'}}\n"
            )
        daemon = subprocess.Popen(
            [str(WINDSOCK), "--home", str(home), "scheduler"],
            cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(3)
            pss, _ = pss_of_tree([daemon.pid])
            c0, t0 = cpu_seconds([daemon.pid]), time.perf_counter()
            time.sleep(30)
            cpu = (cpu_seconds([daemon.pid]) - c0) / (time.perf_counter() - t0)
            res["daemon_100_dags_pss_mib"] = pss / 2**20
            res["daemon_idle_cpu_pct"] = cpu * 100
            log(f"windsock daemon, 100 DAGs: {pss/2**20:.1f} MiB PSS, idle CPU {cpu*100:.3f} % of a core")
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
    return res


# ---------------------------------------------------------------- Prefect 3

PREFECT_FLOW = '''
import subprocess, time
from prefect import flow, task

TIMES = []

@task
def step(i):
    t0 = time.time()
    subprocess.run(["true"], check=True)
    TIMES.append((t0, time.time()))

@flow
def chain10():
    for i in range(10):
        step(i)

if __name__ == "__main__":
    import json, statistics, sys
    walls, gaps = [], []
    for _ in range(6):
        TIMES.clear()
        t0 = time.perf_counter()
        chain10()
        walls.append(time.perf_counter() - t0)
        ts = sorted(TIMES)
        gaps.append(statistics.median(b[0] - a[1] for a, b in zip(ts, ts[1:])))
    print(json.dumps({"walls": walls, "gaps": gaps}))
'''


def bench_prefect():
    venv = ensure_venv("prefect", "prefect>=3,<4")
    py = venv / "bin" / "python"
    prefect = venv / "bin" / "prefect"
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "flows.py").write_text(PREFECT_FLOW)
        env = dict(os.environ, PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_LOGGING_LEVEL="WARNING")
        out = subprocess.run([str(py), "flows.py"], cwd=tmp, env=env, check=True, capture_output=True, text=True)
        data = json.loads(out.stdout.strip().splitlines()[-1])
        warm = data["walls"][1:]
        res["chain10_inprocess_s"] = statistics.median(warm)
        res["chain10_inprocess_gap_ms"] = statistics.median(data["gaps"][1:]) * 1000
        log(f"prefect in-process flow of 10 × true: {res['chain10_inprocess_s']:.3f} s, gap {res['chain10_inprocess_gap_ms']:.2f} ms")

        port = "14200"
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
        env["PREFECT_SERVER_API_HOST"] = "127.0.0.1"
        env["PREFECT_SERVER_API_PORT"] = port
        server = subprocess.Popen([str(prefect), "server", "start", "--host", "127.0.0.1", "--port", port],
                                  cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        worker = None
        try:
            for _ in range(120):
                try:
                    import urllib.request
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1)
                    break
                except Exception:
                    time.sleep(0.5)
            subprocess.run([str(prefect), "work-pool", "create", "bench", "--type", "process"],
                           cwd=tmp, env=env, check=True, capture_output=True)
            deploy = (
                "from prefect import flow\n"
                f"flow.from_source(source={str(tmp)!r}, entrypoint='flows.py:chain10')"
                ".deploy(name='bench', work_pool_name='bench', print_next_steps=False)\n"
            )
            subprocess.run([str(py), "-c", deploy], cwd=tmp, env=env, check=True, capture_output=True)
            worker = subprocess.Popen([str(prefect), "worker", "start", "--pool", "bench"],
                                      cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(5)
            lat = []
            for _ in range(3):
                t0 = time.perf_counter()
                subprocess.run([str(prefect), "deployment", "run", "chain10/bench", "--watch"],
                               cwd=tmp, env=env, check=True, capture_output=True)
                lat.append(time.perf_counter() - t0)
            res["chain10_trigger_to_success_ms"] = statistics.median(lat) * 1000
            pss, n = pss_of_tree([server.pid, worker.pid])
            res["server_worker_pss_mib"] = pss / 2**20
            log(f"prefect deployment run → completion: median {res['chain10_trigger_to_success_ms']:.0f} ms; server + worker {pss/2**20:.0f} MiB PSS ({n} processes)")
            c0, t0 = cpu_seconds([server.pid, worker.pid]), time.perf_counter()
            time.sleep(30)
            res["idle_cpu_pct"] = (cpu_seconds([server.pid, worker.pid]) - c0) / (time.perf_counter() - t0) * 100
        finally:
            for p in (worker, server):
                if p:
                    p.send_signal(signal.SIGTERM)
                    try:
                        p.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        p.kill()
    return res


# ---------------------------------------------------------------- Airflow 3

AIRFLOW_DAG = '''
from datetime import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.bash import BashOperator

with DAG("chain10", schedule=None, start_date=datetime(2019, 10, 1), catchup=False,
         is_paused_upon_creation=False) as dag:
    prev = None
    for i in range(10):
        t = BashOperator(task_id=f"t{i}", bash_command="true")
        if prev is not None:
            prev >> t
        prev = t
'''


def bench_airflow():
    venv = ensure_venv("airflow", "apache-airflow>=3,<4")
    airflow = venv / "bin" / "airflow"
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "dags").mkdir()
        (home / "dags" / "chain10.py").write_text(AIRFLOW_DAG)
        db = home / "airflow.db"
        env = dict(
            os.environ,
            AIRFLOW_HOME=str(home),
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{db}",
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT="18793",
            # Workers reach the api-server's Task Execution API; all components share one secret.
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:18793/execution/",
            AIRFLOW__API_AUTH__JWT_SECRET="windsock-bench-secret",
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        )
        subprocess.run([str(airflow), "db", "migrate"], env=env, check=True, capture_output=True)
        procs = [
            subprocess.Popen([str(airflow), name, *extra], env=env, cwd=home,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, extra in [("api-server", ["--port", "18793"]), ("scheduler", []), ("dag-processor", [])]
        ]
        try:
            for _ in range(240):
                try:
                    with sqlite3.connect(db) as c:
                        row = c.execute("select is_paused from dag where dag_id='chain10'").fetchone()
                    if row is not None:
                        break
                except sqlite3.Error:
                    pass
                time.sleep(0.5)
            else:
                raise RuntimeError("Airflow never parsed the DAG")
            subprocess.run([str(airflow), "dags", "unpause", "chain10"], env=env, check=True, capture_output=True)
            time.sleep(3)
            lat, walls, gaps = [], [], []
            for i in range(3):
                t0 = time.perf_counter()
                subprocess.run([str(airflow), "dags", "trigger", "chain10", "--run-id", f"bench{i}"],
                               env=env, check=True, capture_output=True)
                while True:
                    with sqlite3.connect(db) as c:
                        state = c.execute("select state from dag_run where run_id=?", (f"bench{i}",)).fetchone()
                    if state and state[0] in ("success", "failed"):
                        break
                    time.sleep(0.05)
                lat.append(time.perf_counter() - t0)
                with sqlite3.connect(db) as c:
                    start, end = c.execute("select start_date, end_date from dag_run where run_id=?", (f"bench{i}",)).fetchone()
                    tis = c.execute("select start_date, end_date from task_instance where run_id=?", (f"bench{i}",)).fetchall()
                    states = c.execute("select task_id, state from task_instance where run_id=?", (f"bench{i}",)).fetchall()
                if state[0] != "success":
                    raise RuntimeError(f"Airflow run bench{i} {state[0]}: {states}; logs in {home}/logs")
                walls.append(ts(end) - ts(start))
                gaps.append(median_gap([(ts(a), ts(b)) for a, b in tis]))
            res["chain10_run_s"] = statistics.median(walls)
            res["chain10_gap_ms"] = statistics.median(gaps) * 1000
            res["chain10_trigger_to_success_ms"] = statistics.median(lat) * 1000
            pss, n = pss_of_tree([p.pid for p in procs])
            res["pss_mib"] = pss / 2**20
            log(f"airflow chain of 10 true: run {res['chain10_run_s']:.2f} s, gap {res['chain10_gap_ms']:.0f} ms, trigger → success {res['chain10_trigger_to_success_ms']:.0f} ms, {pss/2**20:.0f} MiB PSS ({n} processes)")
            pids = [p.pid for p in procs]
            c0, t0 = cpu_seconds(pids), time.perf_counter()
            time.sleep(30)
            res["idle_cpu_pct"] = (cpu_seconds(pids) - c0) / (time.perf_counter() - t0) * 100
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-peers", action="store_true", help="measure windsock only")
    ap.add_argument("--only", action="append", choices=["windsock", "prefect", "airflow"],
                    help="measure only these (repeatable)")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()
    if not WINDSOCK.exists():
        sys.exit(f"no windsock binary at {WINDSOCK}: run `cargo build --release` first")
    wanted = set(args.only or (["windsock"] if args.skip_peers else ["windsock", "prefect", "airflow"]))
    results = {}
    if "windsock" in wanted:
        results["windsock"] = bench_windsock()
    for name, fn in [("prefect", bench_prefect), ("airflow", bench_airflow)]:
        if name in wanted:
            try:
                results[name] = fn()
            except Exception as e:  # a peer that fails to start must not hide the others
                import traceback
                log(f"{name} failed: {e!r}\n{traceback.format_exc()}")
                results[name] = {"error": str(e)}
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
