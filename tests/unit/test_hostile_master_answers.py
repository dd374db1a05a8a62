"""A hostile or impersonated master's answers to a slave, from a real HTTP server on loopback."""

import json

import pytest

from slave.credentials import Credentials
from slave.master_client import EnrollmentRefused, MasterClient, MasterUnavailable
from tests.support.hostile_http import endless, json_answer, scripted_server

CREDENTIALS = Credentials(name="one", signing_key="k", rsync_user="ms-one", rsync_password="p",
                          master_url="http://x")


def test_a_redirect_from_the_master_is_never_followed():
    with scripted_server(json_answer(200, "{}")) as elsewhere:
        with scripted_server(json_answer(308, "{}", {"Location": f"{elsewhere.url}/steal"})) as master:
            client = MasterClient(master.url, "join")
            with pytest.raises(MasterUnavailable, match="redirect"):
                client.report(CREDENTIALS, {"run_id": 1})
            with pytest.raises(MasterUnavailable, match="redirect"):
                client.heartbeat(CREDENTIALS, {"url": "http://one:7000"})
        assert elsewhere.requests == [], "a signed report or the join token went to another URL"


def test_an_endless_answer_from_the_master_is_read_only_up_to_the_bound():
    with scripted_server(endless(200)) as master:
        with pytest.raises(MasterUnavailable, match="larger than"):
            MasterClient(master.url).heartbeat(CREDENTIALS, {"url": "http://one:7000"})
    assert master.sent < 16 * 1024 * 1024


@pytest.mark.parametrize("body", ["[1]", '{"name": "a", "name": "b"}', "not json"])
def test_unreadable_credentials_are_not_taken(body):
    with scripted_server(json_answer(201, body)) as master:
        with pytest.raises(MasterUnavailable, match="unreadable credentials"):
            MasterClient(master.url, "join").register("one", "http://one:7000")


def test_a_refusal_message_from_the_master_is_made_printable():
    message = "no\n\x1b[31mforged\x1b[0m"
    with scripted_server(json_answer(403, json.dumps({"message": message}))) as master:
        with pytest.raises(EnrollmentRefused) as refused:
            MasterClient(master.url, "join").register("one", "http://one:7000")
    assert "\x1b" not in str(refused.value) and "\n" not in str(refused.value)
