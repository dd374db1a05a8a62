"""A hostile slave's answers to an order, from a real HTTP server on loopback.

Whatever it answers ends that slave's part as failed with a short, printable
error; the order is never replayed elsewhere, the answer is never read past a
bound, and the run and a restart go on.
"""

import json
import time

import pytest

from master.slave_client import OrderTarget, SlaveClient
from tests.support.hostile_http import dripping, endless, json_answer, scripted_server
from tests.unit.test_distribution import enroll, get_run, pull

ORDER = {"run_id": 1, "project": "debian"}


def send(url, timeout=2.0):
    return SlaveClient(timeout=timeout).send_order(OrderTarget("evil", url, "key"), ORDER)


@pytest.mark.parametrize("status, body", [(400, "[1]"), (409, '"text"'), (500, "null"), (400, "1e999999"),
                                          (400, '{"message": 5}'), (400, '{"message": ["a"]}'),
                                          (400, b"\xff\xfe not utf-8"), (400, '{"message": "a", "message": "b"}'),
                                          (400, '{"message": NaN}')])
def test_an_answer_that_is_not_a_message_object_fails_the_part_and_never_raises(status, body):
    with scripted_server(json_answer(status, body)) as slave:
        outcome = send(slave.url)
    assert (outcome.state, outcome.accepted) == ("failed", False)
    assert outcome.error == f"slave refused the order (HTTP {status}): no explanation"


def test_a_redirect_is_never_followed_so_the_signed_order_goes_nowhere_else():
    with scripted_server(json_answer(202, "{}")) as elsewhere:
        with scripted_server(json_answer(307, "{}", {"Location": f"{elsewhere.url}/internal"})) as slave:
            outcome = send(slave.url)
        assert elsewhere.requests == [], "the signed POST was replayed to another URL"
    assert outcome.state == "failed" and "redirect (HTTP 307)" in outcome.error


def test_an_endless_answer_is_read_only_up_to_the_bound():
    with scripted_server(endless(400)) as slave:
        started = time.monotonic()
        outcome = send(slave.url)
        elapsed = time.monotonic() - started
    assert outcome.state == "failed" and "larger than" in outcome.error
    assert slave.sent < 16 * 1024 * 1024, f"read {slave.sent} bytes of a 256 MiB answer"
    assert elapsed < 10


def test_a_declared_huge_answer_is_not_read_at_all():
    with scripted_server(lambda h: (400, {"Content-Length": str(2**31)}, [b"x" * 1024])) as slave:
        outcome = send(slave.url)
    assert outcome.state == "failed" and "larger than" in outcome.error


def test_an_answer_dripping_byte_by_byte_ends_within_the_timeout():
    with scripted_server(dripping(400, pause=0.1, count=200)) as slave:
        started = time.monotonic()
        outcome = send(slave.url, timeout=0.5)
        elapsed = time.monotonic() - started
    assert outcome.state == "failed" and "too long" in outcome.error
    assert elapsed < 5


def test_a_refusal_message_is_clipped_and_cannot_forge_lines_or_drive_a_terminal():
    message = "ok\n2026-01-01 INFO master: forged line \x1b[2J\x1b]0;title\x07" + "x" * 5000
    with scripted_server(json_answer(400, json.dumps({"message": message}))) as slave:
        outcome = send(slave.url)
    assert len(outcome.error) < 300
    assert "\n" not in outcome.error and "\x1b" not in outcome.error and "\x07" not in outcome.error
    assert "ok\\n2026-01-01 INFO master: forged line \\x1b[2J" in outcome.error


def test_a_plain_text_or_html_body_is_never_echoed():
    with scripted_server(lambda h: (500, {"Content-Type": "text/html", "Content-Length": "44"},
                                    [b"<html>internal admin console secret</html>\r\n"])) as slave:
        outcome = send(slave.url)
    assert "secret" not in outcome.error and outcome.error.endswith("no explanation")


def test_an_answer_cut_off_midway_is_a_clear_failure():
    with scripted_server(lambda h: (400, {"Content-Length": "1000"}, [b'{"message": "abc'])) as slave:
        outcome = send(slave.url)
    assert outcome.state in ("failed", "unreachable") and not outcome.accepted


def test_a_hostile_slave_fails_its_part_and_the_run_and_a_restart_go_on(app, client, admin, make_project):
    from master.db import db
    from master.executor import Executor
    from master.models import SlaveRun
    with scripted_server(json_answer(400, "[1]")) as slave:
        app.extensions["mirrorsync"].slave_client = SlaveClient(timeout=2.0)
        make_project()
        enroll(client, "evil", slave.url)
        run_id = pull(app, client, admin)
        run = get_run(client, admin, run_id)
        assert run["state"] == "failed", "one hostile slave must not leave the run distributing"
        assert run["slaves"][0]["error"] == "slave refused the order (HTTP 400): no explanation"
        with app.app_context():  # as if the master died before this order left
            db.session.execute(db.update(SlaveRun).values(state="pending"))
            db.session.execute(db.text("UPDATE runs SET state = 'distributing', finished_at = NULL"))
            db.session.commit()
        Executor(app).recover()  # resend_unsent_orders at start: it must not raise
        assert get_run(client, admin, run_id)["state"] == "failed"


@pytest.mark.parametrize("script", [json_answer(500, "[1]"), json_answer(307, "{}", {"Location": "http://127.0.0.1:9/"}),
                                    endless(400)])
def test_a_hostile_answer_to_a_cancel_fails_that_part_and_never_raises(script):
    with scripted_server(script) as slave:
        outcome = SlaveClient(timeout=2.0).send_cancel(OrderTarget("evil", slave.url, "key"), 7, "debian")
    assert (outcome.state, outcome.accepted) == ("failed", False) and len(outcome.error) < 300
