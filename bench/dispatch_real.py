"""P2: dispatch to N real slaves on the production shape, side by side with bare parallel POSTs.

One machine, real processes on loopback: an upstream rsync daemon with a small
tree, the master API under gunicorn, one ``python -m master.scheduler`` (which
pulls and dispatches), a system rsync daemon on the configuration the scheduler
renders, and ``--slaves`` slaves (``python -m slave``, heartbeats every 10 s so
they stay light). One project; every timed run changes one upstream file and is
triggered through the API.

Ours, per run: the end of the master's pull -> the last order acknowledged.
  - The end of the pull is the scheduler's INFO line "run N of P: syncing ->
    distributing": rsync has exited, the snapshot is sealed (manifest, digest,
    change list) and the move to distributing is committed; the orders go out
    right after it. The API has no timestamp for that moment (a run's
    started_at is the start of the pull, and project.tree_at is not served).
    The line has millisecond resolution.
  - The last acknowledgement is the parts' ``dispatched_at``: the master stamps
    it once, for every part of the fan-out, when ``send_orders`` has returned,
    that is when the last slave answered 202.
Baseline, the same span for bare HTTP: ``--slaves`` threads, already started,
each POST one body of a signed order's size (and the same headers) to its own
tiny HTTP server (another process, so the servers do not share the client's
interpreter), a fresh connection each, timed from the go signal to the last
202. The same POSTs over connections already open, a GET of each real
slave's /healthz, and the master's own SlaveClient (in this process, same
pool size) sending the real slaves signed orders that start no pull (one they
refuse after the signature check, and a repeat of the run just done) are
printed too. Ours and the baseline alternate; each figure
is the median of ``--repeat`` runs.

    .venv/bin/python bench/dispatch_real.py [--slaves 50] [--repeat 5] [--workers 4] [--dispatch-workers N]

Goal (issue 13): under 0.5 s for 50 slaves.
"""

import argparse
import concurrent.futures
import datetime
import http.server
import json
import re
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.rsync import daemon_command  # noqa: E402
from common.signing import signature_headers  # noqa: E402
from master.slave_client import OrderTarget, SlaveClient  # noqa: E402
from settings import DISPATCH_WORKERS  # noqa: E402
from tests.support.processes import (DEFAULT_JOIN_TOKEN, ServiceProcess, SlaveProcess, free_port,  # noqa: E402
                                     start_gunicorn_master, start_scheduler, wait_for, wait_run_finished)
from tests.support.rsyncd import RsyncDaemon  # noqa: E402

GOAL = 0.5
PROJECT = "bench"
MODULE = "tree"
MASTER_ENV = {"MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN, "MIRRORSYNC_LOG_LEVEL": "INFO",
              # 50 slaves heartbeat every 10 s: none may look offline while the machine is busy.
              "MIRRORSYNC_HEARTBEAT_TIMEOUT": "120"}
# INFO: each slave logs "accepted run N of P" as it takes an order, which splits the span below.
SLAVE_ENV = {"MIRRORSYNC_LOG_LEVEL": "INFO", "MIRRORSYNC_HEARTBEAT_INTERVAL": "10"}
LOG_TIME = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"


def build_tree(root, files=20):
    """A small tree: what every slave pulls each run."""
    for index in range(files):
        path = Path(root) / f"dir-{index % 2}" / f"file-{index:02d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file {index}\n" * 20)
    return Path(root)


def order_body(run_id=2):
    """A body and headers of the size the master sends here: an order as master/services/distribution.py
    builds it, with the change list of one file inline."""
    digest = "sha256:" + "0" * 64
    order = {"run_id": run_id, "project": PROJECT, "rsyncd_host": "127.0.0.1", "rsyncd_port": 8730,
             "timeout": 21600, "catchup": False, "publish": "delay", "snapshot": str(run_id),
             "digest": digest, "changes": True,
             "change_list": {"base": str(run_id - 1), "base_digest": digest, "changed": ["dir-0/file-00.txt"],
                             "deleted": [], "touch": [["dir-0", 1_800_000_000]]}}
    body = json.dumps(order).encode()
    headers = signature_headers("slave-00", "k" * 64, "POST", "/api/v1/syncs", body)
    return body, dict(headers, **{"Content-Type": "application/json"})


# --- the baseline's servers, in a process of their own -----------------------------------------

def serve_tiny_servers(count):
    """``--serve N``: N threaded HTTP servers on loopback that answer any POST 202; print their ports."""
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the slaves' server offers

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            answer = b'{"state": "accepted"}'
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(count)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ports " + " ".join(str(server.server_port) for server in servers), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()


class ParallelRequests:
    """One started thread per URL; ``fire()`` releases them at once and times the last answer."""

    def __init__(self, urls, method, body=None, headers=None, keep_alive=False):
        self.urls, self.method, self.body, self.headers = urls, method, body, headers or {}
        self.keep_alive = keep_alive
        self.sessions = [requests.Session() for _ in urls]
        self.pool = concurrent.futures.ThreadPoolExecutor(len(urls))
        ready = threading.Barrier(len(urls) + 1)
        for _ in urls:
            self.pool.submit(ready.wait)
        ready.wait()  # every thread exists now
        if keep_alive:
            self.fire()  # open one connection per server, kept for the timed rounds

    def _one(self, index, ready, go):
        session = self.sessions[index] if self.keep_alive else requests.Session()
        ready.wait()
        go.wait()
        response = session.request(self.method, self.urls[index], data=self.body, headers=self.headers,
                                   timeout=10)
        done = time.perf_counter()
        assert response.status_code in (200, 202), (self.urls[index], response.status_code)
        if not self.keep_alive:
            session.close()
        return done

    def fire(self):
        """Seconds from the go signal to the last answer."""
        ready, go = threading.Barrier(len(self.urls) + 1), threading.Event()
        futures = [self.pool.submit(self._one, index, ready, go) for index in range(len(self.urls))]
        ready.wait()  # every thread holds its request, waiting for the signal
        started = time.perf_counter()
        go.set()
        return max(future.result() for future in futures) - started

    def close(self):
        self.pool.shutdown()
        for session in self.sessions:
            session.close()


class DirectOrders:
    """The master's own SlaveClient, in this process, sending orders that start no pull to the real
    slaves: one refused after the signature check, and a repeat of a run the slave has done."""

    def __init__(self, deployment):
        self.targets = []
        for slave in deployment.slaves:
            credentials = json.loads((slave.state_dir / "credentials.json").read_text())
            self.targets.append(OrderTarget(credentials["name"], slave.url, credentials["signing_key"]))
        self.rsyncd_port = deployment.api.rsyncd_port
        self.client = SlaveClient(workers=int(deployment.env.get("MIRRORSYNC_DISPATCH_WORKERS", DISPATCH_WORKERS)))
        self.client.warm_up()

    def fire(self, run, accepted):
        order = {"run_id": run["id"] if accepted else 0, "project": PROJECT, "rsyncd_host": "127.0.0.1",
                 "rsyncd_port": self.rsyncd_port, "timeout": 600, "snapshot": str(run["id"]),
                 "digest": run["digest"], "changes": True}
        started = time.perf_counter()
        outcomes = self.client.send_orders([(target, order) for target in self.targets])
        elapsed = time.perf_counter() - started
        assert all(outcome.accepted == accepted for outcome in outcomes), outcomes[:3]
        return elapsed

    def close(self):
        self.client.close()


# --- the production shape --------------------------------------------------------------------

def parse_log_time(text):
    """A log line's local asctime (``2026-12-01 11:10:00,123``) as an aware datetime."""
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").astimezone()


def parse_api_time(text):
    return datetime.datetime.fromisoformat(text)


class Deployment:
    """Upstream daemon, gunicorn API, scheduler, the master's rsync daemon and N slaves under ``root``."""

    def __init__(self, root, slaves, workers, dispatch_workers=None):
        self.root = Path(root)
        self.count = slaves
        self.workers = workers
        self.env = dict(MASTER_ENV, MIRRORSYNC_RSYNCD_PORT=str(free_port()))
        if dispatch_workers is not None:
            self.env["MIRRORSYNC_DISPATCH_WORKERS"] = str(dispatch_workers)
        self.processes = []
        self.slaves = []
        self.upstream = None

    def start(self):
        logs = self.root / "logs"
        self.tree = build_tree(self.root / "upstream-tree")
        self.upstream = RsyncDaemon(self.root / "upstream-rsyncd", {MODULE: self.tree}).start()
        data_dir = self.root / "master"
        self.api = start_gunicorn_master(data_dir, workers=self.workers, extra_env=self.env, log_dir=logs)
        self.processes.append(self.api)
        self.scheduler = start_scheduler(data_dir, extra_env=self.env, log_dir=logs)
        self.processes.append(self.scheduler)
        config_path = data_dir / ".mirrorsync" / "rsyncd.conf"
        wait_for(config_path.exists, 20, message="the rsyncd.conf the scheduler renders")
        self.processes.append(ServiceProcess(daemon_command(config_path, self.api.rsyncd_port, "127.0.0.1"),
                                             None, logs, name="master-rsyncd"))
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.api.admin_token}"
        # Every slave starts at once, each on a port of its own; each then enrolls with the master.
        for index, port in enumerate(distinct_ports(self.count)):
            self.slaves.append(self.start_slave(f"slave-{index:02d}", port))
        for index in range(self.count):
            self.wait_slave_up(index)
        wait_for(lambda: self.online() == self.count, 180, interval=0.5,
                 message=lambda: f"{self.count} slaves online (now {self.online()})")
        self.call("POST", "/api/v1/projects", json={"name": PROJECT, "upstream": self.upstream.url(MODULE)})
        return self

    def start_slave(self, name, port):
        return SlaveProcess(self.root / name, name, self.api.url, port, DEFAULT_JOIN_TOKEN, SLAVE_ENV,
                            self.root / "logs")

    def wait_slave_up(self, index, attempts=3):
        """Wait until slave ``index`` answers its own /healthz; one that died (its port taken meanwhile
        by another process on this shared machine) starts again on another port."""
        def answers():
            slave = self.slaves[index]
            if not slave.is_running():
                return "died"
            try:
                response = requests.get(f"{slave.url}/healthz", timeout=2)
            except requests.RequestException:
                return None
            # Another process that took the port would answer with another name, or not at all.
            return response.status_code == 200 and response.json().get("name") == slave.slave_name

        for _ in range(attempts):
            slave = self.slaves[index]
            if wait_for(answers, 120, message=f"{slave.slave_name} on {slave.url}") is True:
                return
            slave.stop()
            print(f"{slave.slave_name} died at start (log {slave.log_path}); starting it again", file=sys.stderr)
            self.slaves[index] = self.start_slave(slave.slave_name, distinct_ports(1)[0])
        raise RuntimeError(f"{slave.slave_name} did not start in {attempts} attempts; see {slave.log_path}")

    def call(self, method, path, **kwargs):
        response = self.session.request(method, self.api.url + path, timeout=30, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def online(self):
        return sum(slave["state"] == "online" for slave in self.call("GET", "/api/v1/slaves"))

    def sync(self, generation):
        """Change one upstream file, trigger, wait for the run; returns the finished run."""
        (self.tree / "dir-0" / "file-00.txt").write_text(f"generation {generation}\n")
        run = self.call("POST", f"/api/v1/projects/{PROJECT}/syncs")
        run = wait_run_finished(self.api.url, self.api.admin_token, run["id"], timeout=180)
        assert run["state"] == "success", run
        assert len(run["slaves"]) == self.count, f"{len(run['slaves'])} parts for {self.count} slaves"
        return run

    def dispatch_of(self, run):
        """What the run's timestamps and the scheduler's log say about its fan-out."""
        log = self.scheduler.log_text()
        prefix = f"run {run['id']} of {PROJECT}: "
        moved = re.search(LOG_TIME + r" INFO \S+: " + re.escape(prefix + "syncing -> distributing"), log)
        ordered = re.search(re.escape(prefix) + r"ordered (\d+) slaves in ([\d.]+) s", log)
        if moved is None or ordered is None:
            raise RuntimeError(f"the scheduler's log ({self.scheduler.log_path}) has no fan-out lines "
                               f"for run {run['id']}")
        pull_end = parse_log_time(moved.group(1))
        parts = run["slaves"]
        acknowledged = max(parse_api_time(part["dispatched_at"]) for part in parts)
        started = [parse_api_time(part["started_at"]) for part in parts if part["started_at"]]
        accepted = self.accepted_at(run["id"])
        return {
            "to first accept": (min(accepted) - pull_end).total_seconds(),
            "first to last accept": (max(accepted) - min(accepted)).total_seconds(),
            "last accept to stamp": (acknowledged - max(accepted)).total_seconds(),
            "ours": (acknowledged - pull_end).total_seconds(),
            "ordered in": float(ordered.group(2)),
            "pull": (pull_end - parse_api_time(run["started_at"])).total_seconds(),
            "first slave pulling": (min(started) - pull_end).total_seconds() if started else None,
            "run end": (parse_api_time(run["finished_at"]) - pull_end).total_seconds(),
        }

    def accepted_at(self, run_id):
        """When each slave logged that it took the order of ``run_id``."""
        line = re.compile(LOG_TIME + r" INFO \S+: " + re.escape(f"accepted run {run_id} of {PROJECT}") + "$",
                          re.MULTILINE)
        found = [line.search(slave.log_text()) for slave in self.slaves]
        missing = [slave.slave_name for slave, match in zip(self.slaves, found) if match is None]
        if missing:
            raise RuntimeError(f"no 'accepted run {run_id}' line in the logs of {', '.join(missing)}")
        return [parse_log_time(match.group(1)) for match in found]

    def stop(self):
        # Slaves first (in parallel: 50 one by one take long), then the master's processes, then upstream.
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda process: process.stop(), self.slaves))
        for process in reversed(self.processes):
            process.stop()
        if self.upstream is not None:
            self.upstream.stop()


def distinct_ports(count):
    """``count`` different ports that nothing listens on right now (each held until all are chosen)."""
    sockets = []
    try:
        for _ in range(count):
            sockets.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sockets[-1].bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start_baseline_servers(count, logs):
    server = ServiceProcess([sys.executable, __file__, "--serve", str(count)], None, logs, name="tiny-servers")
    server.wait_for_log("ports ", timeout=30)
    line = next(line for line in server.log_text().splitlines() if line.startswith("ports "))
    return server, [f"http://127.0.0.1:{port}/api/v1/syncs" for port in line.split()[1:]]


def milliseconds(value):
    return "-" if value is None else f"{value * 1000:,.0f} ms"


def measure(slaves, repeat, workers, dispatch_workers=None, scratch=None, out=print):
    """Run the benchmark; returns the medians (seconds) it printed."""
    root = Path(tempfile.mkdtemp(prefix="dispatch-real-", dir=scratch))
    deployment = Deployment(root, slaves, workers, dispatch_workers)
    tiny, baselines = None, []
    try:
        started = time.perf_counter()
        deployment.start()
        pool = f"DISPATCH_WORKERS {dispatch_workers}" if dispatch_workers else "default DISPATCH_WORKERS"
        out(f"{slaves} slaves online, gunicorn with {workers} workers + scheduler ({pool}), "
            f"in {time.perf_counter() - started:.1f} s")
        deployment.sync(0)  # untimed: every slave holds the tree, the dispatch pool has worked once
        tiny, urls = start_baseline_servers(slaves, root / "logs")
        body, headers = order_body()
        fresh = ParallelRequests(urls, "POST", body, headers)
        kept = ParallelRequests(urls, "POST", body, headers, keep_alive=True)
        healthz = ParallelRequests([f"{slave.url}/healthz" for slave in deployment.slaves], "GET")
        direct = DirectOrders(deployment)
        baselines = [fresh, kept, healthz, direct]
        samples = {key: [] for key in ("ours", "ordered in", "pull", "first slave pulling", "run end",
                                       "to first accept", "first to last accept", "last accept to stamp",
                                       "baseline", "kept alive", "healthz", "refused", "repeat")}
        for generation in range(1, repeat + 1):
            run = deployment.sync(generation)
            for key, value in deployment.dispatch_of(run).items():
                if value is not None:
                    samples[key].append(value)
            samples["refused"].append(direct.fire(run, accepted=False))
            samples["repeat"].append(direct.fire(run, accepted=True))
            samples["baseline"].append(fresh.fire())
            samples["kept alive"].append(kept.fire())
            samples["healthz"].append(healthz.fire())
        median = {key: statistics.median(values) if values else None for key, values in samples.items()}
        rows = [
            (f"ours: end of pull -> last order acknowledged (goal < {GOAL * 1000:.0f} ms)", median["ours"]),
            ("  end of pull -> first slave took its order", median["to first accept"]),
            ("  first -> last slave took its order", median["first to last accept"]),
            ("  last slave took its order -> dispatched_at", median["last accept to stamp"]),
            (f"baseline: {slaves} parallel POSTs, new connections", median["baseline"]),
            ("for reference: the same POSTs, connections kept alive", median["kept alive"]),
            (f"for reference: GET /healthz of the {slaves} slaves", median["healthz"]),
            ("for reference: the master's SlaveClient, orders the slaves refuse (422)", median["refused"]),
            ("for reference: the master's SlaveClient, repeat orders (202, no pull)", median["repeat"]),
            (f"scheduler's log 'ordered {slaves} slaves in' (to its commit after the acks)", median["ordered in"]),
            ("the pull: run started_at -> end of pull", median["pull"]),
            ("end of pull -> first slave reported syncing (its started_at)", median["first slave pulling"]),
            ("end of pull -> run finished (every slave reported)", median["run end"]),
        ]
        out(f"median of {repeat} runs (each: one file changed upstream, {slaves} slaves ordered)")
        for label, value in rows:
            out(f"  {label:<76} {milliseconds(value):>9}")
        out(f"  {'ratio ours / baseline':<76} {median['ours'] / median['baseline']:>8.1f}x")
        return median
    finally:
        for baseline in baselines:
            baseline.close()
        if tiny is not None:
            tiny.stop()
        deployment.stop()
        shutil.rmtree(root, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slaves", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers of the API")
    parser.add_argument("--dispatch-workers", type=int, default=None,
                        help="the master's DISPATCH_WORKERS (default: its own default)")
    parser.add_argument("--scratch", default=None, help="where the processes' files go (default: the temp dir)")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        return serve_tiny_servers(args.serve)
    # A SIGTERM to the benchmark still stops every process it started (the finally blocks run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    measure(args.slaves, args.repeat, args.workers, args.dispatch_workers, args.scratch)


if __name__ == "__main__":
    main()
