"""The report outbox: every report reaches the master in the end, across failures and restarts."""

import os
import random
import threading
import time

import pytest

from slave import outbox as outbox_module
from slave.credentials import Credentials
from slave.master_client import ACKNOWLEDGED, DROPPED, MasterUnavailable
from slave.outbox import Outbox, backoff_delay

IDENTITY = Credentials(name="mirror1", signing_key="k", rsync_user="ms-mirror1", rsync_password="p",
                       master_url="http://master.example.org:5000")


def a_report(run_id=7, state="success", project="debian"):
    return {"run_id": run_id, "project": project, "state": state, "started_at": "2026-01-01T00:00:00+00:00",
            "finished_at": None if state == "syncing" else "2026-01-01T00:01:00+00:00",
            "exit_code": None if state == "syncing" else 0, "error": None, "warning": None, "stats": None}


class FakeMasterClient:
    """Fails the first ``failures`` calls, then answers ``outcome``; ``gate`` can hold a call open."""

    def __init__(self, failures=0, outcome=ACKNOWLEDGED, gate=None):
        self.failures = failures
        self.outcome = outcome
        self.gate = gate
        self.calls = []
        self.accepted = []
        self.in_call = threading.Event()
        self._lock = threading.Lock()

    def report(self, credentials, body):
        with self._lock:
            self.calls.append((time.monotonic(), body))
            failing = len(self.calls) <= self.failures
        self.in_call.set()
        if self.gate is not None:
            self.gate.wait(5)
        if failing:
            raise MasterUnavailable("cannot reach the master at http://master.example.org:5000: ConnectionError")
        if self.outcome == ACKNOWLEDGED:
            self.accepted.append(body)
        return self.outcome


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def directory(tmp_path):
    return str(tmp_path / "outbox")


@pytest.fixture
def make_outbox(directory):
    made = []

    def make(client, credentials=lambda: IDENTITY, retry_max=0.05, **kwargs):
        box = Outbox(directory, client, credentials, retry_max, **kwargs)
        made.append(box)
        return box
    yield make
    for box in made:
        box.stop()


def test_queued_reports_are_delivered_in_order(make_outbox, directory):
    client = FakeMasterClient()
    box = make_outbox(client)
    for run_id in (3, 1, 2):
        box.put(a_report(run_id))
    box.start()
    assert wait_for(lambda: len(client.accepted) == 3)
    assert [r["run_id"] for r in client.accepted] == [3, 1, 2]
    assert wait_for(lambda: box.pending() == [])
    assert [n for n in os.listdir(directory) if n.endswith(".json")] == []


def test_a_report_queued_while_idle_is_sent_at_once(make_outbox):
    client = FakeMasterClient()
    box = make_outbox(client)
    box.start()
    time.sleep(0.05)
    box.put(a_report())
    assert wait_for(lambda: client.accepted, timeout=1.0)


def test_a_failing_master_is_retried_with_backoff_until_it_accepts(make_outbox):
    client = FakeMasterClient(failures=4)
    box = make_outbox(client, retry_max=0.05)
    box.put(a_report())
    box.start()
    assert wait_for(lambda: client.accepted)
    assert len(client.calls) == 5
    assert box.pending() == []


def test_retries_wait_between_tries(make_outbox):
    client = FakeMasterClient(failures=3)
    # rng 1.0: the longest wait, 0.2 s then 0.4 s then 0.8 s capped to 0.3 s.
    box = make_outbox(client, retry_max=0.3, rng=lambda: 1.0)
    box.put(a_report())
    box.start()
    assert wait_for(lambda: client.accepted)
    gaps = [later - earlier for (earlier, _), (later, _) in zip(client.calls, client.calls[1:])]
    assert len(gaps) == 3
    # A wait can run late on a busy machine, never early.
    assert gaps[0] >= 0.19 and gaps[1] >= 0.29 and gaps[2] >= 0.29
    assert max(gaps) < 0.3 + 0.5


def test_backoff_doubles_from_0_2_seconds_and_never_exceeds_the_cap():
    longest = [backoff_delay(attempt, cap=60, rng=lambda: 1.0) for attempt in range(12)]
    assert longest[:4] == pytest.approx([0.2, 0.4, 0.8, 1.6])
    assert max(longest) == 60
    generator = random.Random(1)
    for attempt in range(200):
        assert 0 <= backoff_delay(attempt, cap=5, rng=generator.random) <= 5


def test_a_new_report_cuts_a_backoff_short(make_outbox, monkeypatch):
    monkeypatch.setattr(outbox_module, "BACKOFF_START", 30.0)
    client = FakeMasterClient(failures=1)
    box = make_outbox(client, retry_max=60, rng=lambda: 1.0)
    box.put(a_report(7))
    box.start()
    assert wait_for(lambda: len(client.calls) == 1)
    box.put(a_report(8))
    assert wait_for(lambda: len(client.accepted) == 2, timeout=2.0)


def test_a_report_survives_a_restart(make_outbox):
    first = make_outbox(FakeMasterClient(failures=1000))
    first.put(a_report(7, "syncing"))
    first.put(a_report(8))
    client = FakeMasterClient()
    restarted = make_outbox(client)
    restarted.start()
    assert wait_for(lambda: len(client.accepted) == 2)
    assert [(r["run_id"], r["state"]) for r in client.accepted] == [(7, "syncing"), (8, "success")]


def test_a_dropped_report_is_deleted_and_not_sent_again(make_outbox):
    client = FakeMasterClient(outcome=DROPPED)
    box = make_outbox(client)
    box.put(a_report())
    box.start()
    assert wait_for(lambda: box.pending() == [])
    time.sleep(0.1)
    assert len(client.calls) == 1


def test_the_final_report_replaces_the_syncing_one(make_outbox):
    client = FakeMasterClient()
    box = make_outbox(client)
    box.put(a_report(7, "syncing"))
    box.put(a_report(8, "syncing"))
    box.put(a_report(7, "success"))
    assert [(r["run_id"], r["state"]) for r in box.pending()] == [(7, "success"), (8, "syncing")]
    box.start()
    assert wait_for(lambda: len(client.accepted) == 2)
    assert [(r["run_id"], r["state"]) for r in client.accepted] == [(7, "success"), (8, "syncing")]


def test_a_final_report_queued_while_the_syncing_one_is_in_flight_is_not_lost(make_outbox):
    gate = threading.Event()
    client = FakeMasterClient(gate=gate)
    box = make_outbox(client)
    box.put(a_report(7, "syncing"))
    box.start()
    assert client.in_call.wait(2)
    box.put(a_report(7, "success"))
    gate.set()
    assert wait_for(lambda: len(client.accepted) == 2)
    assert [r["state"] for r in client.accepted] == ["syncing", "success"]
    assert wait_for(lambda: box.pending() == [])


def test_reports_wait_for_enrollment(make_outbox, monkeypatch):
    monkeypatch.setattr(outbox_module, "NOT_ENROLLED_WAIT", 0.02)
    identity = []
    client = FakeMasterClient()
    box = make_outbox(client, credentials=lambda: identity[0] if identity else None)
    box.put(a_report())
    box.start()
    time.sleep(0.1)
    assert client.calls == []
    identity.append(IDENTITY)
    assert wait_for(lambda: client.accepted)


def test_an_unreadable_report_file_is_set_aside(make_outbox, directory):
    client = FakeMasterClient()
    box = make_outbox(client)
    with open(os.path.join(directory, "9-debian.json"), "w") as broken:
        broken.write("{half a rep")
    box.put(a_report(7))
    box.start()
    assert wait_for(lambda: len(client.accepted) == 1)
    assert os.path.exists(os.path.join(directory, "9-debian.json.bad"))


def test_outage_is_logged_once_not_on_every_retry(make_outbox, caplog):
    client = FakeMasterClient(failures=5)
    box = make_outbox(client, retry_max=0.05)
    box.put(a_report())
    with caplog.at_level("INFO", logger="slave.outbox"):
        box.start()
        assert wait_for(lambda: client.accepted)
        assert wait_for(lambda: "again" in caplog.text)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1


def test_a_deferred_report_waits_its_time_and_one_that_replaces_it_goes_instead(make_outbox, monkeypatch):
    """A pull's start is reported after a moment: a pull done by then is reported once, as done."""
    now = [1_000_000.0]
    monkeypatch.setattr(outbox_module.time, "time", lambda: now[0])
    client = FakeMasterClient()
    box = make_outbox(client)
    box.put(a_report(run_id=7, state="syncing"), delay=0.5)
    box.put(a_report(run_id=8, state="success"))
    assert box.deliver_pending() == 1
    assert [body["run_id"] for _, body in client.calls] == [8], "run 7's start is not due yet"
    box.put(a_report(run_id=7, state="success"))          # the pull ended first
    assert box.deliver_pending() == 1
    assert [(body["run_id"], body["state"]) for _, body in client.calls][1:] == [(7, "success")]
    assert box.pending() == []

    box.put(a_report(run_id=9, state="syncing"), delay=0.5)
    assert box.deliver_pending() == 0
    now[0] += 0.5
    assert box.deliver_pending() == 1
    assert [(body["run_id"], body["state"]) for _, body in client.calls][-1] == (9, "syncing")


def test_a_report_put_off_is_written_only_when_due_and_one_that_replaces_it_first_is_the_only_write(
        make_outbox, directory, monkeypatch):
    """A pull done within the delay costs one report file, not two: its start never reaches the disk."""
    now = [1_000_000.0]
    monkeypatch.setattr(outbox_module.time, "time", lambda: now[0])
    writes = []
    real_write = outbox_module.write_json_atomically
    monkeypatch.setattr(outbox_module, "write_json_atomically",
                        lambda path, body: (writes.append(body["report"]["state"]), real_write(path, body)))
    client = FakeMasterClient()
    box = make_outbox(client)
    box.put(a_report(run_id=7, state="syncing"), delay=0.5)
    assert writes == [] and os.listdir(directory) == []
    assert [report["state"] for report in box.pending()] == ["syncing"]
    box.put(a_report(run_id=7, state="success"))
    assert writes == ["success"]
    assert box.deliver_pending() == 1 and box.pending() == []

    box.put(a_report(run_id=9, state="syncing"), delay=0.5)
    assert box.deliver_pending() == 0 and writes == ["success"]
    now[0] += 0.5
    assert box.deliver_pending() == 1
    assert writes == ["success", "syncing"], "a report due is on disk before it is sent"
    assert [(body["run_id"], body["state"]) for _, body in client.calls] == [(7, "success"), (9, "syncing")]


def test_a_report_put_off_keeps_its_place_in_the_queue(make_outbox, monkeypatch):
    now = [1_000_000.0]
    monkeypatch.setattr(outbox_module.time, "time", lambda: now[0])
    client = FakeMasterClient(failures=1)
    box = make_outbox(client)
    box.put(a_report(run_id=7, state="syncing"), delay=0.5)
    box.put(a_report(run_id=8, state="success"))
    box.put(a_report(run_id=7, state="success"))     # replaces run 7's start, before run 8
    with pytest.raises(MasterUnavailable):
        box.deliver_pending()
    assert box.deliver_pending() == 2
    assert [body["run_id"] for _, body in client.calls[1:]] == [7, 8]


def test_a_report_put_off_is_written_when_the_outbox_stops_and_sent_after_a_restart(make_outbox, directory):
    client = FakeMasterClient()
    box = make_outbox(client)
    box.put(a_report(run_id=7, state="syncing"), delay=0.3)
    box.stop()
    assert os.listdir(directory) == ["7-debian.json"]
    again = make_outbox(client)
    again.start()
    assert wait_for(lambda: client.calls, 5)
    assert [(body["run_id"], body["state"]) for _, body in client.calls] == [(7, "syncing")]


def test_the_delivery_thread_sends_a_deferred_report_when_it_is_due(make_outbox):
    client = FakeMasterClient()
    box = make_outbox(client)
    box.start()
    started = time.monotonic()
    box.put(a_report(run_id=7, state="syncing"), delay=0.2)
    assert wait_for(lambda: client.calls, 5)
    assert client.calls[0][0] - started >= 0.2


def flushing(box, timeout):
    """``box.flush(timeout)`` in a thread of its own; returns an Event set when it returns."""
    flushed = threading.Event()
    threading.Thread(target=lambda: (box.flush(timeout), flushed.set()), daemon=True).start()
    return flushed


def test_flush_returns_once_a_report_queued_before_it_was_delivered(make_outbox):
    gate = threading.Event()
    client = FakeMasterClient(gate=gate)
    box = make_outbox(client)
    box.start()
    box.put(a_report())
    flushed = flushing(box, 5.0)
    assert client.in_call.wait(5)
    assert not flushed.wait(0.05), "flush returned while the report was still being sent"
    gate.set()
    assert flushed.wait(5)
    assert client.accepted and box.pending() == []


def test_flush_waits_for_a_pass_that_began_after_it(make_outbox):
    # A pass already under way when the report is queued may not have seen it: flush waits for the next.
    gate = threading.Event()
    client = FakeMasterClient(gate=gate)
    box = make_outbox(client)
    box.put(a_report(run_id=1))
    box.start()
    assert client.in_call.wait(5)   # the pass that sends run 1 is under way
    box.put(a_report(run_id=2))
    flushed = flushing(box, 5.0)
    gate.set()
    assert flushed.wait(5)
    assert [r["run_id"] for r in client.accepted] == [1, 2]


def test_flush_gives_up_after_its_timeout_when_the_master_does_not_answer(make_outbox):
    gate = threading.Event()
    box = make_outbox(FakeMasterClient(gate=gate))
    box.start()
    box.put(a_report())
    started = time.monotonic()
    box.flush(0.1)
    assert 0.1 <= time.monotonic() - started < 2.0
    assert box.pending(), "the report stays queued"
    gate.set()


def test_flush_returns_at_once_when_the_outbox_is_not_running(make_outbox):
    box = make_outbox(FakeMasterClient())
    box.put(a_report())
    started = time.monotonic()
    box.flush(5.0)
    assert time.monotonic() - started < 1.0
    assert box.pending()


def test_flush_ends_when_the_outbox_stops(make_outbox):
    gate = threading.Event()
    box = make_outbox(FakeMasterClient(gate=gate))
    box.start()
    box.put(a_report())
    flushed = flushing(box, 30.0)
    threading.Timer(0.05, gate.set).start()
    box.stop()
    assert flushed.wait(5)
