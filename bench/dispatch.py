"""How long the master takes to hand a run's orders to N slaves.

Starts N tiny HTTP servers on loopback that answer an order with 202 after
``--delay`` seconds (a slave's own latency), then times
``SlaveClient.send_orders``, the code the master runs after each good pull,
with the default pool and with a pool of one (what a serial loop would do).

    .venv/bin/python bench/dispatch.py [--slaves 50] [--delay 0.02] [--repeat 5]
"""

import argparse
import http.server
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from master.slave_client import OrderTarget, SlaveClient  # noqa: E402
from settings import DISPATCH_WORKERS  # noqa: E402


def start_slaves(count, delay):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(delay)
            body = b'{"state": "accepted"}'
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    servers = []
    for _ in range(count):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    return servers


def time_dispatch(client, targets, repeat):
    """(first fan-out, median of the next ``repeat``): the pool and its connections outlive a fan-out."""
    samples = []
    for _ in range(repeat + 1):
        started = time.perf_counter()
        outcomes = client.send_orders(targets)
        samples.append(time.perf_counter() - started)
        assert all(outcome.accepted for outcome in outcomes), outcomes
    return samples[0], statistics.median(samples[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slaves", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.02, help="each slave's answer time, seconds")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    servers = start_slaves(args.slaves, args.delay)
    order = {"run_id": 1, "project": "debian", "rsyncd_host": "127.0.0.1", "rsyncd_port": 873, "timeout": 60}
    targets = [(OrderTarget(f"s{i}", f"http://127.0.0.1:{server.server_port}", "key"), order)
               for i, server in enumerate(servers)]
    warmed = SlaveClient(workers=DISPATCH_WORKERS)
    warmed.warm_up()  # what the scheduler does at start
    pooled = time_dispatch(warmed, targets, args.repeat)
    cold = time_dispatch(SlaveClient(workers=DISPATCH_WORKERS), targets, args.repeat)
    serial = time_dispatch(SlaveClient(workers=1), targets, args.repeat)
    print(f"{args.slaves} slaves answering in {args.delay * 1000:.0f} ms each (first fan-out / later ones):")
    print(f"  pool of {DISPATCH_WORKERS}, warmed up at start: {pooled[0] * 1000:8.1f} / {pooled[1] * 1000:8.1f} ms")
    print(f"  pool of {DISPATCH_WORKERS}, cold:               {cold[0] * 1000:8.1f} / {cold[1] * 1000:8.1f} ms")
    print(f"  one at a time:                 {serial[0] * 1000:8.1f} / {serial[1] * 1000:8.1f} ms")
    for server in servers:
        server.shutdown()


if __name__ == "__main__":
    main()
