"""A large site: 1,000 projects x 100 slaves x 100,000 runs, read by many clients, and a burst of timers.

Latency is to the last byte of the answer as sent (gzip where the document has
it: /api/v1/status, /jobs, /mirrorz.json, /metrics); decompressing is the
client's cost and is not counted.

Fills a fresh SQLite master (bulk inserts, no pulls), starts the API under
gunicorn (``--workers``), and times every public document and the first page of
the projects list: once per request from one client, then from ``--clients``
client processes at once. Prints p50, p99 and errors per endpoint, the cold
build of a worker, the workers' RSS, and a burst: every project's timer firing
at the same moment, queued by the real ScheduleKeeper with an executor whose
pulls hold (so the cap can be watched), timed from the moment to the last
queued run, and the scheduler's distribution sweep when nothing is due.

    .venv/bin/python bench/scale.py [--projects 1000] [--slaves 100] [--runs 100000]
                                    [--clients 10] [--requests 30] [--workers 4] [--skip-burst]
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.processes import start_gunicorn_master  # noqa: E402

TOKEN = "bench-admin-token"
SITE = {"MIRRORSYNC_SITE_URL": "https://mirror.example.edu", "MIRRORSYNC_SITE_ABBR": "EXAMPLE",
        "MIRRORSYNC_SITE_NAME": "Example Mirror"}
ENDPOINTS = {
    "/api/v1/projects": {"Authorization": f"Bearer {TOKEN}"},
    "/api/v1/status": {},
    "/jobs": {},
    "/mirrorz.json": {},
    "/metrics": {},
    "/": {},
}
GOALS_MS = {"/api/v1/projects": 50, "/api/v1/status": 50, "/jobs": 50, "/metrics": 250, "/": 250}


def fill(data_dir, project_count, slave_count, run_count):
    """Rows as a year of a large site leaves them, written straight into the database."""
    os.environ.update({"MIRRORSYNC_DATA_DIR": str(data_dir), "MIRRORSYNC_LOG_LEVEL": "WARNING"})
    from master import create_app
    from master.db import db
    from master.models import Project, Run, Slave, SlaveProject, SlaveRun
    app = create_app()
    stamp = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    runs_per_project = max(1, run_count // project_count)
    hour = datetime.timedelta(hours=1)
    with app.app_context():
        projects, runs, slaves, held, parts = [], [], [], [], []
        run_id = 0
        for index in range(project_count):
            newest = None
            for number in range(runs_per_project):
                run_id += 1
                ended = stamp - (runs_per_project - number) * 6 * hour
                runs.append({"id": run_id, "project_id": index + 1, "trigger": "schedule", "state": "success",
                             "coalesced": 0, "attempt": 1, "created_at": ended - hour, "started_at": ended - hour,
                             "finished_at": ended, "exit_code": 0,
                             "stats": {"bytes_received": 1000 * number, "files_transferred": 3,
                                       "total_size": 10 ** 9 + index}})
                newest = (run_id, ended)
            state = "failed" if index % 20 == 7 else "partial" if index % 20 == 11 else "success"
            projects.append({
                "id": index + 1, "name": f"p{index:04d}", "upstream": f"rsync://upstream.example.org/p{index:04d}/",
                "schedule": f"{index % 60} */6 * * *", "enabled": index % 50 != 49, "rsync_options": [],
                "excludes": [], "timeout": 21600, "publish": "delay", "retries": 3, "splay": 0,
                "last_state": state, "last_success": newest[1], "last_full_success": newest[1] - 6 * hour,
                "last_started": newest[1] - hour, "last_ended": newest[1], "size": 10 ** 9 * (index % 900 + 1),
                "tree_run_id": newest[0], "tree_at": newest[1], "tree_dirty": False,
                "run_totals": {"success": runs_per_project}, "last_duration": 3600.0, "last_bytes": 10 ** 6,
                "created_at": stamp - 400 * 24 * hour, "updated_at": stamp, "feed_generation": 1})
        for index in range(slave_count):
            slaves.append({"id": index + 1, "name": f"s{index:03d}", "url": f"http://s{index:03d}.example.org:7000",
                           "enabled": True, "signing_key": secrets.token_urlsafe(32),
                           "rsync_user": f"ms-s{index:03d}", "rsync_password": secrets.token_urlsafe(24),
                           "created_at": stamp - 400 * 24 * hour, "last_seen": stamp})
        for project in projects:
            for slave in slaves:
                behind = (project["id"] + slave["id"]) % 23 == 0
                held.append({"slave_id": slave["id"], "project_id": project["id"],
                             "run_id": project["tree_run_id"] - (1 if behind else 0),
                             "synced_at": project["tree_at"], "last_state": "failed" if behind else "success",
                             "last_error": "rsync exited with code 23" if behind else None,
                             "last_attempt_at": project["tree_at"]})
                parts.append({"run_id": project["tree_run_id"], "slave_id": slave["id"], "slave_name": slave["name"],
                              "state": "failed" if behind else "success", "attempts": 1,
                              "dispatched_at": project["tree_at"], "finished_at": project["tree_at"]})
        for model, rows in ((Project, projects), (Run, runs), (Slave, slaves), (SlaveProject, held),
                            (SlaveRun, parts)):
            for start in range(0, len(rows), 20000):
                db.session.execute(db.insert(model), rows[start:start + 20000])
        db.session.execute(db.text("UPDATE feed_state SET generation = 2, layout = 1 WHERE id = 1"))
        db.session.commit()
    return app


def timed_get(session, url, headers):
    """(seconds to the last byte, status, bytes on the wire); asks for gzip, as browsers and Prometheus do."""
    started = time.perf_counter()
    try:
        response = session.get(url, headers={"Accept-Encoding": "gzip", **headers}, timeout=60, stream=True)
        body = response.raw.read(decode_content=False)
        return time.perf_counter() - started, response.status_code, len(body)
    except requests.RequestException as error:
        return time.perf_counter() - started, f"{type(error).__name__}", 0


def client_loop(args):
    """One client process: ``count`` requests of one endpoint, one after another."""
    url, headers, count = args
    session = requests.Session()
    return [timed_get(session, url, headers) for _ in range(count)]


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def summarize(samples):
    seconds = [sample[0] for sample in samples]
    errors = sum(1 for sample in samples if not (isinstance(sample[1], int) and sample[1] < 500))
    return {"count": len(samples), "p50_ms": 1000 * statistics.median(seconds),
            "p99_ms": 1000 * percentile(seconds, 0.99), "errors": errors,
            "bytes": max(sample[2] for sample in samples)}


def worker_rss(master_pid):
    """RSS in MiB of gunicorn's master and each worker (its children)."""
    found = {}
    children = subprocess.run(["ps", "-o", "pid=,rss=", "--ppid", str(master_pid)], capture_output=True,
                              text=True, check=False).stdout.split()
    for pid, rss in zip(children[::2], children[1::2]):
        found[int(pid)] = int(rss) / 1024
    return found


def measure_reads(base_dir, args):
    server = start_gunicorn_master(base_dir / "data", workers=args.workers, admin_token=TOKEN, timeout=120,
                                   extra_env={**SITE, "MIRRORSYNC_HEARTBEAT_TIMEOUT": "86400"})
    results = {}
    try:
        session = requests.Session()
        first = timed_get(session, server.url + "/jobs", {})
        results["cold"] = 1000 * first[0]
        # Every worker builds on its first request: send enough at once that each gets some.
        with concurrent.futures.ThreadPoolExecutor(args.workers * 2) as pool:
            list(pool.map(lambda _: timed_get(requests.Session(), server.url + "/jobs", {}),
                          range(args.workers * 6)))
        for path, headers in ENDPOINTS.items():
            timed_get(session, server.url + path, headers)
            sequential = [timed_get(session, server.url + path, headers) for _ in range(args.requests)]
            with concurrent.futures.ProcessPoolExecutor(args.clients) as pool:
                loaded = [sample for batch in pool.map(
                    client_loop, [(server.url + path, headers, args.requests)] * args.clients) for sample in batch]
            results[path] = {"sequential": summarize(sequential), "loaded": summarize(loaded)}
            etag = session.get(server.url + path, headers=headers).headers.get("ETag")
            if etag:
                not_modified = [timed_get(session, server.url + path, {**headers, "If-None-Match": etag})
                                for _ in range(args.requests)]
                results[path]["304"] = summarize(not_modified)
        results["rss_mib"] = worker_rss(server.pid)
    finally:
        server.stop()
    return results


def burst_child(data_dir):
    """Every timer due at one moment: time until the last run is queued, peak syncing, RSS."""
    os.environ.update({"MIRRORSYNC_DATA_DIR": str(data_dir), "MIRRORSYNC_LOG_LEVEL": "WARNING"})
    import sqlalchemy as sa
    from master import create_app
    from master.db import db
    from master.executor import Executor
    from master.models import Run
    from master.scheduler import ScheduleKeeper
    from tests.support.fakes import FakeRsyncRunner
    runner = FakeRsyncRunner(hold=True)
    app = create_app({"RSYNC_RUNNER": runner})
    with app.app_context():
        before = db.session.scalar(sa.select(sa.func.max(Run.id))) or 0
    burst = sa.and_(Run.id > before, Run.trigger == "schedule")
    executor = Executor(app)
    keeper = ScheduleKeeper(app, on_queued=executor.wake)
    keeper.start()
    executor.start()
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=3)
    jobs = [job for job in keeper.scheduler.get_jobs() if job.id.startswith("project-")]
    for job in jobs:
        job.modify(next_run_time=moment)
    keeper.scheduler.wakeup()
    with app.app_context():
        deadline = time.monotonic() + 120
        while True:
            queued = db.session.scalar(sa.select(sa.func.count()).select_from(Run).where(burst))
            db.session.rollback()
            if queued >= len(jobs) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        last = db.session.scalar(sa.select(sa.func.max(Run.created_at)).where(burst))
    report = {"timers": len(jobs), "queued": queued, "seconds": (last - moment).total_seconds() if last else None,
              "max_syncing": runner.max_running, "cap": app.config["MAX_CONCURRENT_SYNCS"],
              "peak_rss_mib": peak_rss_mib()}
    runner.release()
    keeper.stop()
    executor.stop()
    print(json.dumps(report))


def sweep_child(data_dir):
    """The scheduler's distribution sweep (every CATCHUP_INTERVAL) when nothing is due: every slave that
    misses a tree was tried lately, as between two retries."""
    os.environ.update({"MIRRORSYNC_DATA_DIR": str(data_dir), "MIRRORSYNC_LOG_LEVEL": "WARNING"})
    from master import create_app
    from master.db import db
    from master.models import SlaveProject
    from master.scheduler import sweep_distribution
    app = create_app()
    with app.app_context():
        db.session.execute(db.update(SlaveProject).values(
            last_attempt_at=datetime.datetime.now(datetime.timezone.utc)))
        db.session.commit()
    seconds = []
    for _ in range(5):
        started = time.monotonic()
        sweep_distribution(app)
        seconds.append(time.monotonic() - started)
    print(json.dumps({"median_ms": statistics.median(seconds) * 1000, "max_ms": max(seconds) * 1000}))


def measure_sweep(base_dir):
    output = subprocess.run([sys.executable, __file__, "--sweep-child", str(base_dir / "data")],
                            capture_output=True, text=True, check=True, timeout=300).stdout
    return json.loads(output.strip().splitlines()[-1])


def peak_rss_mib():
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def measure_burst(base_dir):
    output = subprocess.run([sys.executable, __file__, "--burst-child", str(base_dir / "data")],
                            capture_output=True, text=True, check=True, timeout=300).stdout
    return json.loads(output.strip().splitlines()[-1])


def print_report(args, fill_seconds, reads, burst, sweep):
    print(f"\n{args.projects} projects x {args.slaves} slaves x {args.runs} runs, filled in {fill_seconds:.1f} s; "
          f"gunicorn {args.workers} workers; {args.clients} clients x {args.requests} requests per endpoint")
    print(f"first request of a cold worker (builds every entry): {reads['cold']:.0f} ms\n")
    print("| request | size | one client p50 / p99 | 10 clients p50 / p99 | errors | 304 p50 | goal p99 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path in ENDPOINTS:
        row = reads[path]
        seq, loaded = row["sequential"], row["loaded"]
        not_modified = f"{row['304']['p50_ms']:.1f} ms" if "304" in row else "-"
        goal = f"< {GOALS_MS[path]} ms" if path in GOALS_MS else "-"
        print(f"| `GET {path}` | {seq['bytes'] / 1e6:.2f} MB | {seq['p50_ms']:.1f} / {seq['p99_ms']:.1f} ms | "
              f"{loaded['p50_ms']:.1f} / {loaded['p99_ms']:.1f} ms | {seq['errors'] + loaded['errors']} | "
              f"{not_modified} | {goal} |")
    rss = reads["rss_mib"]
    print(f"\nworker RSS after the run: {', '.join(f'{value:.0f}' for value in rss.values())} MiB")
    print(f"distribution sweep with nothing due: {sweep['median_ms']:.0f} ms median of 5, "
          f"{sweep['max_ms']:.0f} ms at most")
    if burst:
        print(f"burst: {burst['queued']} of {burst['timers']} timers queued {burst['seconds']:.2f} s after their "
              f"moment; at most {burst['max_syncing']} pulls at once (cap {burst['cap']}); "
              f"peak RSS {burst['peak_rss_mib']:.0f} MiB")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--burst-child":
        return burst_child(sys.argv[2])
    if len(sys.argv) == 3 and sys.argv[1] == "--sweep-child":
        return sweep_child(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--slaves", type=int, default=100)
    parser.add_argument("--runs", type=int, default=100000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--skip-burst", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mirrorsync-scale-") as base:
        base_dir = Path(base)
        started = time.monotonic()
        fill(base_dir / "data", args.projects, args.slaves, args.runs)
        fill_seconds = time.monotonic() - started
        reads = measure_reads(base_dir, args)
        sweep = measure_sweep(base_dir)
        burst = None if args.skip_burst else measure_burst(base_dir)
        print_report(args, fill_seconds, reads, burst, sweep)
        return 1 if any(reads[path]["loaded"]["errors"] or reads[path]["sequential"]["errors"]
                        for path in ENDPOINTS) else 0


if __name__ == "__main__":
    sys.exit(main())
