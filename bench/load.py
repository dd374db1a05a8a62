"""Load on the production shape: every project syncing at once while many clients use the API.

Starts an upstream rsync daemon with one small module, the API under gunicorn
(``--workers``) and one ``python -m master.scheduler``, creates ``--projects``
projects on that module through the API, triggers a sync of each, and while
those pulls run sends ``--requests`` API requests from ``--clients`` threads:
list and get projects, trigger syncs, list and get runs, the status feed and a
few PATCHes. Prints the latency of each kind of request and how long the
syncs took to settle.

    .venv/bin/python bench/load.py [--projects 200] [--requests 1000] [--clients 20] [--workers 4]

tests/integration/test_load.py runs the same scenario and asserts that no
request fails and no run is lost; the speed goals live here.
"""

import argparse
import dataclasses
import queue
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.processes import (FINAL_STATES, free_port, start_gunicorn_master,  # noqa: E402
                                     start_scheduler, wait_for)
from tests.support.rsyncd import RsyncDaemon  # noqa: E402

MODULE = "small"
ACTIVE_STATES = frozenset({"queued", "syncing", "distributing"})
# Kind of request -> its share of the mix, in percent.
MIX = {"list_projects": 15, "get_project": 20, "trigger": 15, "list_runs": 15, "get_run": 15,
       "status": 17, "patch": 3}
REQUEST_TIMEOUT = 30


@dataclasses.dataclass
class Sample:
    """One API request as a client saw it; ``error`` is set when no HTTP answer came."""

    kind: str
    method: str
    path: str
    status: int | None
    seconds: float
    error: str | None = None
    run: dict | None = None

    @property
    def ok(self):
        return self.error is None and self.status is not None and 200 <= self.status < 300


def build_small_tree(root, files=20):
    """A handful of small files in two directories: what every project pulls."""
    rng = random.Random(200)
    for index in range(files):
        path = Path(root) / f"dir-{index % 2}" / f"file-{index:02d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(512 + index))
    return Path(root)


class Deployment:
    """Upstream daemon + gunicorn API + one scheduler over one DATA_DIR under ``base_dir``."""

    def __init__(self, base_dir, workers=4, extra_env=None):
        self.base_dir = Path(base_dir)
        self.workers = workers
        # Every master-side process must agree on where the rsync daemon listens.
        self.env = {"MIRRORSYNC_RSYNCD_PORT": str(free_port()), **(extra_env or {})}
        self.upstream = None
        self.api_server = None
        self.scheduler = None

    @property
    def processes(self):
        return [p for p in (self.api_server, self.scheduler) if p is not None]

    def start(self):
        logs = self.base_dir / "logs"
        tree = build_small_tree(self.base_dir / "upstream-tree")
        self.upstream = RsyncDaemon(self.base_dir / "upstream-rsyncd", {MODULE: tree}).start()
        data_dir = self.base_dir / "data"
        self.api_server = start_gunicorn_master(data_dir, workers=self.workers, extra_env=self.env,
                                                log_dir=logs)
        self.scheduler = start_scheduler(data_dir, extra_env=self.env, log_dir=logs)
        return self

    def stop(self):
        for process in (self.scheduler, self.api_server):
            if process is not None:
                process.stop()
        if self.upstream is not None:
            self.upstream.stop()

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info):
        self.stop()

    def session(self):
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.api_server.admin_token}"
        return session

    def url(self, path):
        return self.api_server.url + path


def project_names(count):
    return [f"load-{index:03d}" for index in range(count)]


def create_projects(deployment, names):
    """Create every project on the upstream module; raises AssertionError on any refusal."""
    upstream = deployment.upstream.url(MODULE)
    with deployment.session() as session:
        for name in names:
            response = session.post(deployment.url("/api/v1/projects"), timeout=REQUEST_TIMEOUT,
                                    json={"name": name, "upstream": upstream})
            assert response.status_code == 201, f"creating {name}: {response.status_code} {response.text}"


def request_for(kind, rng, names, run_ids, number):
    """(method, path, json body) of one request of ``kind``."""
    name = rng.choice(names)
    if kind == "list_projects":
        return "GET", "/api/v1/projects", None
    if kind == "get_project":
        return "GET", f"/api/v1/projects/{name}", None
    if kind == "trigger":
        return "POST", f"/api/v1/projects/{name}/syncs", None
    if kind == "list_runs":
        return "GET", f"/api/v1/projects/{name}/runs?limit=20", None
    if kind == "get_run":
        return "GET", f"/api/v1/runs/{rng.choice(run_ids)}", None
    if kind == "status":
        return "GET", "/api/v1/status", None
    if kind == "patch":
        return "PATCH", f"/api/v1/projects/{name}", {"timeout": 3600 + number}
    raise ValueError(f"unknown kind of request {kind!r}")


def plan_mix(count, names, run_ids, seed=1000):
    """``count`` requests in the proportions of MIX, shuffled: a list of (kind, method, path, body)."""
    rng = random.Random(seed)
    kinds = [kind for kind, share in MIX.items() for _ in range(round(count * share / 100))]
    kinds = (kinds + ["get_project"] * count)[:count]
    rng.shuffle(kinds)
    return [(kind, *request_for(kind, rng, names, run_ids, number)) for number, kind in enumerate(kinds)]


def send_all(deployment, plan, clients):
    """Send ``plan`` from ``clients`` threads, each with its own session; returns (samples, wall seconds)."""
    pending = queue.SimpleQueue()
    for item in plan:
        pending.put(item)
    samples = []
    lock = threading.Lock()

    def client():
        with deployment.session() as session:
            while True:
                try:
                    kind, method, path, body = pending.get_nowait()
                except queue.Empty:
                    return
                sample = _send(session, deployment.url(path), kind, method, path, body)
                with lock:
                    samples.append(sample)

    threads = [threading.Thread(target=client, name=f"client-{n}") for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return samples, time.perf_counter() - started


def _send(session, url, kind, method, path, body):
    started = time.perf_counter()
    try:
        response = session.request(method, url, json=body, timeout=REQUEST_TIMEOUT)
    except requests.RequestException as error:
        return Sample(kind, method, path, None, time.perf_counter() - started, error=repr(error))
    seconds = time.perf_counter() - started
    run = None
    if kind == "trigger" and response.status_code == 202:
        run = response.json()
    return Sample(kind, method, path, response.status_code, seconds, run=run)


def runs_of(session, deployment, name):
    response = session.get(deployment.url(f"/api/v1/projects/{name}/runs?limit=500"), timeout=REQUEST_TIMEOUT)
    response.raise_for_status()
    return response.json()


def wait_until_settled(deployment, names, timeout):
    """Wait until no project has a queued, syncing or distributing run.

    Returns (seconds it took, {project: its runs, newest first}). The status feed
    says cheaply when everything looks done; each project's run list then
    confirms it (a queued follow-up does not always show in ``status``).
    Raises TimeoutError.
    """
    started = time.perf_counter()
    with deployment.session() as session:
        def settled():
            feed = session.get(deployment.url("/api/v1/status"), timeout=REQUEST_TIMEOUT).json()
            if any(entry["status"] in ACTIVE_STATES for entry in feed):
                return None
            histories = {name: runs_of(session, deployment, name) for name in names}
            if any(run["state"] not in FINAL_STATES for runs in histories.values() for run in runs):
                return None
            return histories
        histories = wait_for(settled, timeout, interval=0.25, message="every run of every project to end")
    return time.perf_counter() - started, histories


def latency_table(samples):
    """kind -> (count, p50, p95, max) in milliseconds, with "all" for every request together."""
    by_kind = {}
    for sample in samples:
        by_kind.setdefault(sample.kind, []).append(sample.seconds * 1000)
        by_kind.setdefault("all", []).append(sample.seconds * 1000)
    table = {}
    for kind, values in by_kind.items():
        values.sort()
        p95 = statistics.quantiles(values, n=100, method="inclusive")[94] if len(values) > 1 else values[0]
        table[kind] = (len(values), statistics.median(values), p95, values[-1])
    return table


def format_table(table):
    lines = ["| requests | count | p50 | p95 | max |", "|---|---:|---:|---:|---:|"]
    order = [kind for kind in (*MIX, "all") if kind in table]
    for kind in order:
        count, p50, p95, top = table[kind]
        lines.append(f"| {kind} | {count} | {p50:.1f} ms | {p95:.1f} ms | {top:.1f} ms |")
    return "\n".join(lines)


def run_scenario(deployment, projects=200, requests_count=1000, clients=20, settle_timeout=60):
    """Create the projects, trigger each, send the mix while they sync, wait for every run to end.

    Returns a dict with the samples of both phases, every project's runs and the
    timings; asserts nothing. Raises TimeoutError when runs are still active
    ``settle_timeout`` seconds after the last request.
    """
    names = project_names(projects)
    started = time.perf_counter()
    create_projects(deployment, names)
    created = time.perf_counter()
    burst = [("trigger", "POST", f"/api/v1/projects/{name}/syncs", None) for name in names]
    triggers, burst_seconds = send_all(deployment, burst, clients)
    run_ids = sorted({sample.run["id"] for sample in triggers if sample.run}) or [1]
    mix, mix_seconds = send_all(deployment, plan_mix(requests_count, names, run_ids), clients)
    settle_seconds, histories = wait_until_settled(deployment, names, settle_timeout)
    return {"names": names, "triggers": triggers, "mix": mix, "histories": histories,
            "create_seconds": created - started,
            "burst_seconds": burst_seconds, "mix_seconds": mix_seconds, "settle_seconds": settle_seconds,
            "total_seconds": time.perf_counter() - started}


def report(outcome):
    mix = outcome["mix"]
    failures = [s for s in outcome["triggers"] + mix if not s.ok]
    runs = {s.run["id"] for s in outcome["triggers"] + mix if s.run}
    lines = [
        f"{len(outcome['names'])} projects created in {outcome['create_seconds']:.1f} s; "
        f"{len(outcome['triggers'])} triggers in {outcome['burst_seconds']:.1f} s; "
        f"{len(mix)} mixed requests in {outcome['mix_seconds']:.1f} s "
        f"({len(mix) / outcome['mix_seconds']:.0f} requests/s) while {len(runs)} runs pulled; "
        f"every run ended {outcome['settle_seconds']:.1f} s after the mix; "
        f"total {outcome['total_seconds']:.1f} s; {len(failures)} failed requests",
        "",
        format_table(latency_table(mix)),
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mirrorsync-load-") as base, Deployment(base, args.workers) as deployment:
        outcome = run_scenario(deployment, args.projects, args.requests, args.clients)
        print(report(outcome))


if __name__ == "__main__":
    main()
