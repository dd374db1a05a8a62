"""Signed requests between master and slaves: what verifies, and every way a request is refused."""

import time

import pytest
import requests

from common.signing import (KEY_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, HmacAuth,
                            SignatureError, SqliteNonceStore, signature_headers, verify_signature)

KEY_ID = "mirror1"
SECRET = "s3cret-signing-key"
PATH = "/api/v1/syncs"
BODY = b'{"run_id": 7, "project": "debian"}'


def secret_for(key_id):
    return SECRET if key_id == KEY_ID else None


class Nonces:
    def __init__(self):
        self.seen = set()

    def remember(self, key_id, nonce, expires_at):
        if (key_id, nonce) in self.seen:
            return False
        self.seen.add((key_id, nonce))
        return True


def verify(headers, method="POST", path=PATH, body=BODY, nonces=None, **kwargs):
    return verify_signature(headers, method, path, body, secret_for, (nonces or Nonces()).remember, **kwargs)


def test_a_signed_request_verifies_and_names_its_key():
    assert verify(signature_headers(KEY_ID, SECRET, "POST", PATH, BODY)) == KEY_ID


@pytest.mark.parametrize("missing", [KEY_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER])
def test_a_request_missing_a_signature_header_is_not_signed(missing):
    headers = signature_headers(KEY_ID, SECRET, "POST", PATH, BODY)
    del headers[missing]
    with pytest.raises(SignatureError, match="not signed"):
        verify(headers)


@pytest.mark.parametrize("change, reason", [
    ({"secret": "another-key"}, "does not match"),
    ({"body": BODY[:-1] + b"]"}, "does not match"),
    ({"path": "/api/v1/syncs/7"}, "does not match"),
    ({"path": PATH + "?x=1"}, "does not match"),
    ({"method": "PUT"}, "does not match"),
    ({"key_id": "mirror2"}, "does not match"),
])
def test_a_request_changed_after_signing_is_refused(change, reason):
    headers = signature_headers(change.get("key_id", KEY_ID), change.get("secret", SECRET), "POST", PATH, BODY)
    with pytest.raises(SignatureError, match=reason):
        verify(headers, method=change.get("method", "POST"), path=change.get("path", PATH),
               body=change.get("body", BODY))


@pytest.mark.parametrize("offset", [-301, 301, -86400, 86400])
def test_a_timestamp_too_old_or_too_far_ahead_is_stale(offset):
    headers = signature_headers(KEY_ID, SECRET, "POST", PATH, BODY, now=time.time() + offset)
    with pytest.raises(SignatureError, match="stale"):
        verify(headers)


def test_a_timestamp_within_max_age_is_accepted():
    headers = signature_headers(KEY_ID, SECRET, "POST", PATH, BODY, now=time.time() - 250)
    assert verify(headers) == KEY_ID


def test_max_age_is_configurable():
    headers = signature_headers(KEY_ID, SECRET, "POST", PATH, BODY, now=time.time() - 60)
    with pytest.raises(SignatureError, match="stale"):
        verify(headers, max_age=30)


@pytest.mark.parametrize("name, value, reason", [
    (TIMESTAMP_HEADER, "yesterday", "timestamp is malformed"),
    (NONCE_HEADER, "n" * 200, "malformed"),
])
def test_malformed_headers_are_refused(name, value, reason):
    headers = signature_headers(KEY_ID, SECRET, "POST", PATH, BODY)
    headers[name] = value
    with pytest.raises(SignatureError, match=reason):
        verify(headers)


def test_a_replayed_nonce_is_refused():
    nonces = Nonces()
    headers = signature_headers(KEY_ID, SECRET, "POST", PATH, BODY)
    verify(headers, nonces=nonces)
    with pytest.raises(SignatureError, match="replayed"):
        verify(headers, nonces=nonces)


def test_a_wrong_signature_does_not_use_up_the_nonce():
    nonces = Nonces()
    good = signature_headers(KEY_ID, SECRET, "POST", PATH, BODY, nonce="abc123")
    forged = dict(good, **{SIGNATURE_HEADER: "0" * 64})
    with pytest.raises(SignatureError, match="does not match"):
        verify(forged, nonces=nonces)
    assert verify(good, nonces=nonces) == KEY_ID


def test_hmac_auth_signs_a_prepared_request_that_verifies():
    prepared = requests.Request("POST", "http://mirror1.example.org:7000/api/v1/syncs?dry=1",
                                json={"run_id": 7}, auth=HmacAuth(KEY_ID, SECRET)).prepare()
    assert verify(prepared.headers, method="POST", path="/api/v1/syncs?dry=1", body=prepared.body) == KEY_ID


def test_hmac_auth_signs_a_get_without_body():
    prepared = requests.Request("GET", "http://mirror1.example.org:7000/api/v1/syncs/7",
                                auth=HmacAuth(KEY_ID, SECRET)).prepare()
    assert verify(prepared.headers, method="GET", path="/api/v1/syncs/7", body=b"") == KEY_ID


def test_the_nonce_store_refuses_a_repeat_seen_by_another_worker(tmp_path):
    path = str(tmp_path / "nonces.db")
    first, second = SqliteNonceStore(path), SqliteNonceStore(path)
    expires = time.time() + 300
    assert first.remember(KEY_ID, "nonce-1", expires)
    assert not second.remember(KEY_ID, "nonce-1", expires)
    assert second.remember(KEY_ID, "nonce-2", expires)
    assert second.remember("mirror2", "nonce-1", expires)


def test_a_replay_through_two_workers_sharing_the_store_is_refused(tmp_path):
    path = str(tmp_path / "nonces.db")
    headers = signature_headers(KEY_ID, SECRET, "POST", PATH, BODY)
    verify_signature(headers, "POST", PATH, BODY, secret_for, SqliteNonceStore(path).remember)
    with pytest.raises(SignatureError, match="replayed"):
        verify_signature(headers, "POST", PATH, BODY, secret_for, SqliteNonceStore(path).remember)


def test_the_nonce_store_is_readable_by_its_owner_only(tmp_path):
    import os
    import stat
    from common.signing import SqliteNonceStore
    old = tmp_path / "old.db"
    old.touch(mode=0o644)
    os.chmod(old, 0o644)
    for path in (tmp_path / "nonces.db", old):
        store = SqliteNonceStore(str(path))
        assert store.remember("k", "n", 10**10)
        for name in os.listdir(tmp_path):
            if name.startswith(path.name):
                assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name


def test_the_nonce_store_keeps_one_connection_for_every_thread_and_does_not_sync_each_commit(tmp_path):
    import threading
    path = tmp_path / "nonces.db"
    store = SqliteNonceStore(str(path))
    wal = tmp_path / "nonces.db-wal"
    results = []
    for number in range(3):   # each request of the slave's API runs in a thread of its own
        thread = threading.Thread(target=lambda n=number: results.append(store.remember(KEY_ID, f"n{n}", 10**10)))
        thread.start()
        thread.join()
        # A connection per thread went with its thread, and SQLite deleted the log with the last one.
        assert wal.exists(), "the write-ahead log went with a request's thread"
    assert results == [True, True, True]
    assert not store.remember(KEY_ID, "n1", 10**10)
    with store._lock:
        assert store._connection().execute("PRAGMA synchronous").fetchone()[0] == 1   # NORMAL


def test_a_forked_process_opens_a_connection_of_its_own(tmp_path, monkeypatch):
    import os
    store = SqliteNonceStore(str(tmp_path / "nonces.db"))
    with store._lock:
        parents = store._connection()
    monkeypatch.setattr(os, "getpid", lambda: -1)   # as in a gunicorn worker forked after the store was made
    assert store.remember(KEY_ID, "after-fork", 10**10)
    with store._lock:
        assert store._connection() is not parents
    assert not SqliteNonceStore(str(tmp_path / "nonces.db")).remember(KEY_ID, "after-fork", 10**10)
