"""Load on the production shape: no request fails and no run is lost.

gunicorn with 4 API workers and one scheduler over SQLite; 200 projects on one
small upstream module are all triggered at once, and while they sync 20
clients send 1,000 mixed API requests. The scenario lives in bench/load.py,
which also times it: speed goals are kept there, not asserted here.
"""

import datetime

import pytest

from bench.load import Deployment, report, run_scenario
from tests.integration.conftest import STARTED_PROCESSES
from tests.support.processes import FINAL_STATES

pytestmark = pytest.mark.slow

PROJECTS = 200
REQUESTS = 1000
CLIENTS = 20
MAX_CONCURRENT_SYNCS = 4   # the default


def pull_times(run):
    """(started, finished) of a run that pulled, as datetimes; None for one that never started."""
    if not run["started_at"]:
        return None
    return tuple(datetime.datetime.fromisoformat(run[key]) for key in ("started_at", "finished_at"))


def most_at_once(histories):
    """The largest number of runs that were syncing at the same moment, from their timestamps."""
    edges = []
    for history in histories:
        for times in filter(None, map(pull_times, history)):
            edges += [(times[0], 1), (times[1], -1)]
    running = peak = 0
    for _, step in sorted(edges):   # at a tie an end (-1) sorts before a start
        running += step
        peak = max(peak, running)
    return peak


def overlapping_runs(history):
    """Pairs of runs of one project whose pulls overlapped in time."""
    pulls = sorted((*pull_times(run), run["id"]) for run in history if run["started_at"])
    return [(a[2], b[2]) for a, b in zip(pulls, pulls[1:]) if b[0] < a[1]]


@pytest.fixture
def deployment(request, tmp_path):
    with Deployment(tmp_path, workers=4) as deployment:
        request.node.stash.setdefault(STARTED_PROCESSES, []).extend(deployment.processes)
        yield deployment


def test_200_projects_syncing_while_20_clients_send_1000_requests_lose_no_request_and_no_run(deployment):
    outcome = run_scenario(deployment, PROJECTS, REQUESTS, CLIENTS, settle_timeout=60)
    print(report(outcome))
    triggers, mix = outcome["triggers"], outcome["mix"]
    assert (len(triggers), len(mix)) == (PROJECTS, REQUESTS)

    failed = [f"{s.method} {s.path}: {s.error or s.status}" for s in triggers + mix if not s.ok]
    assert failed == [], f"{len(failed)} of {len(triggers) + len(mix)} requests failed:\n  " + "\n  ".join(
        failed[:20])
    assert all(s.status == 202 for s in triggers + mix if s.kind == "trigger")

    returned = {s.run["id"]: s.run["project"] for s in triggers + mix if s.run}
    assert set(returned.values()) == set(outcome["names"]), "the trigger of every project returned its run"
    # Every run any trigger returned has ended, and shows in its project's history.
    histories = outcome["histories"]
    states = {run["id"]: run["state"] for history in histories.values() for run in history}
    lost = [f"run {run_id} of {name}: {states.get(run_id, 'missing from its history')}"
            for run_id, name in sorted(returned.items()) if states.get(run_id) not in FINAL_STATES]
    assert lost == [], "runs a trigger returned never ended:\n  " + "\n  ".join(lost[:20])
    unfinished = [f"{name} run {run['id']}: {run['state']}" for name, history in histories.items()
                  for run in history if run["state"] not in FINAL_STATES]
    assert unfinished == [], "runs left active:\n  " + "\n  ".join(unfinished[:20])
    unsuccessful = [f"{name}: newest run {history[0] if history else None}"
                    for name, history in histories.items() if not history or history[0]["state"] != "success"]
    assert unsuccessful == [], "projects whose newest run did not succeed:\n  " + "\n  ".join(unsuccessful[:20])

    with deployment.session() as session:
        feed = session.get(deployment.url("/api/v1/status"), timeout=10).json()
    assert {entry["name"]: entry["status"] for entry in feed} == dict.fromkeys(outcome["names"], "success")

    overlapping = [pair for history in histories.values() for pair in overlapping_runs(history)]
    assert overlapping == [], f"a project pulled twice at once: runs {overlapping}"
    peak = most_at_once(histories.values())
    assert peak <= MAX_CONCURRENT_SYNCS, f"{peak} pulls ran at once"
    print(f"{len(states)} runs in all, at most {peak} pulls at once")
