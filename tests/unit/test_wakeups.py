"""A trigger starts a pull at once: the executor is woken, never left to its next poll."""

import threading

import pytest

from master.wakeups import Wakeups, WakeupListener, send_nudge
from master.paths import state_dir

LONG_POLL = 60  # seconds: a test that waited for the poll would time out long before


@pytest.fixture
def held_rsync(fake_rsync):
    fake_rsync.hold = True
    yield fake_rsync
    fake_rsync.release()


def test_a_trigger_in_the_schedulers_own_process_starts_the_pull_without_waiting_for_a_poll(
        tmp_path, clock, held_rsync):
    from master import create_app
    from master.scheduler import SchedulerService
    app = create_app({"DATA_DIR": str(tmp_path / "data"), "ADMIN_TOKEN": "t", "LOG_LEVEL": "WARNING",
                      "CLOCK": clock, "RSYNC_RUNNER": held_rsync, "POLL_INTERVAL": LONG_POLL})
    service = SchedulerService(app)
    service.start()
    try:
        client = app.test_client()
        admin = {"Authorization": "Bearer t"}
        assert client.post("/api/v1/projects", json={"name": "p", "upstream": "rsync://h/m"},
                           headers=admin).status_code == 201
        assert client.post("/api/v1/projects/p/syncs", headers=admin).status_code == 202
        assert held_rsync.wait_started(timeout=10), "the pull did not start before the poll"
    finally:
        held_rsync.release()
        service.stop()


def test_a_nudge_from_another_process_wakes_the_listener(tmp_path):
    """SQLite across processes: a datagram on DATA_DIR/.mirrorsync/executor.sock."""
    from master import create_app
    app = create_app({"DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "WARNING"})
    woken = threading.Event()
    listener = WakeupListener(app, woken.set)
    listener.start()
    try:
        send_nudge(state_dir(str(tmp_path / "data")))
        assert woken.wait(10)
    finally:
        listener.stop()


def test_a_nudge_reaches_a_socket_whose_path_is_longer_than_unix_sockets_allow(tmp_path):
    from master import create_app
    data_dir = tmp_path / ("d" * 60) / ("e" * 60)
    app = create_app({"DATA_DIR": str(data_dir), "LOG_LEVEL": "WARNING"})
    woken = threading.Event()
    listener = WakeupListener(app, woken.set)
    listener.start()
    try:
        send_nudge(state_dir(str(data_dir)))
        assert woken.wait(10)
    finally:
        listener.stop()


def test_a_nudge_with_no_scheduler_listening_is_silent(tmp_path):
    (tmp_path / ".mirrorsync").mkdir()
    send_nudge(str(tmp_path / ".mirrorsync"))  # must not raise


def test_a_trigger_in_an_api_process_nudges_the_scheduler(app, client, admin, make_project):
    """An API worker (no executor of its own) nudges; the scheduler's listener wakes its executor."""
    make_project()
    woken = threading.Event()
    listener = WakeupListener(app, woken.set)
    listener.start()
    try:
        assert isinstance(app.extensions["mirrorsync"].wakeups, Wakeups)
        assert client.post("/api/v1/projects/debian/syncs", headers=admin).status_code == 202
        assert woken.wait(10)
    finally:
        listener.stop()
