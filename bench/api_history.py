"""How fast the read paths answer as run history grows.

Fills a fresh SQLite master with PROJECTS projects and RUNS_PER_PROJECT
finished runs each, then times the calls monitoring and admins make most.
The goal (see bench/README.md): every timing stays flat as history grows,
because no request path scans run history.

    .venv/bin/python bench/api_history.py [--projects 200] [--runs 1,100,500]
"""

import argparse
import datetime
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from master import create_app  # noqa: E402
from master.db import db  # noqa: E402
from master.models import Project, Run  # noqa: E402

TOKEN = "bench-admin-token"
UTC = datetime.timezone.utc


def fill(app, projects, runs_per_project):
    now = datetime.datetime.now(UTC)
    with app.app_context():
        for index in range(projects):
            db.session.add(Project(name=f"p{index:04d}", upstream=f"rsync://mirror.example.org/p{index}",
                                   schedule="0 */6 * * *", enabled=True, rsync_options=[], excludes=[],
                                   timeout=3600, created_at=now, updated_at=now, last_state="success",
                                   last_success=now, size=10**9))
        db.session.commit()
        rows = []
        for project_id in range(1, projects + 1):
            for number in range(runs_per_project):
                stamp = now - datetime.timedelta(hours=number)
                rows.append(dict(project_id=project_id, trigger="schedule", state="success", coalesced=0,
                                 created_at=stamp, started_at=stamp, finished_at=stamp, exit_code=0,
                                 stats={"total_size": 10**9}))
        for start in range(0, len(rows), 20000):
            db.session.execute(db.insert(Run), rows[start:start + 20000])
        db.session.commit()


def timed(client, path, repeat):
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.json
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--runs", default="1,100,500", help="runs per project, comma-separated")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    paths = ["/api/v1/status", "/api/v1/projects", "/api/v1/projects/p0100",
             "/api/v1/projects/p0100/runs?limit=50", "/api/v1/runs/1"]
    print(f"{'runs/project':>12} {'total runs':>10}  " + "  ".join(f"{p:>36}" for p in paths))
    for runs_per_project in (int(n) for n in args.runs.split(",")):
        with tempfile.TemporaryDirectory() as data_dir:
            app = create_app({"DATA_DIR": data_dir, "ADMIN_TOKEN": TOKEN, "LOG_LEVEL": "WARNING"})
            fill(app, args.projects, runs_per_project)
            client = app.test_client()
            timings = [timed(client, path, args.repeat) for path in paths]
            print(f"{runs_per_project:>12} {runs_per_project * args.projects:>10}  "
                  + "  ".join(f"{t:>33.2f} ms" for t in timings))


if __name__ == "__main__":
    main()
