"""HMAC-SHA256 request signing between master and slaves: the one place it is done.

A signature covers the method, the path with its query, a timestamp, a nonce
and the SHA-256 of the body, so a captured request cannot be changed, sent
late (more than MAX_AGE seconds) or sent twice (the nonce is remembered).
"""

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
import urllib.parse

import requests

KEY_HEADER = "X-MirrorSync-Key"
TIMESTAMP_HEADER = "X-MirrorSync-Timestamp"
NONCE_HEADER = "X-MirrorSync-Nonce"
SIGNATURE_HEADER = "X-MirrorSync-Signature"
MAX_AGE = 300


class SignatureError(Exception):
    """The request is not signed, wrongly signed, stale or replayed; the message says which."""


def canonical_request(method, path, timestamp, nonce, body):
    body_hash = hashlib.sha256(body or b"").hexdigest()
    return "\n".join([method.upper(), path, str(timestamp), nonce, body_hash]).encode("utf-8")


def compute_signature(secret, method, path, timestamp, nonce, body):
    return hmac.new(secret.encode("utf-8"), canonical_request(method, path, timestamp, nonce, body),
                    hashlib.sha256).hexdigest()


def signature_headers(key_id, secret, method, path, body, now=None, nonce=None):
    """The headers that sign one request from ``key_id``."""
    timestamp = int(now if now is not None else time.time())
    nonce = nonce or secrets.token_hex(16)
    return {
        KEY_HEADER: key_id,
        TIMESTAMP_HEADER: str(timestamp),
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: compute_signature(secret, method, path, timestamp, nonce, body),
    }


def path_of(url):
    parts = urllib.parse.urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


class HmacAuth(requests.auth.AuthBase):
    """requests auth that signs every prepared request."""

    def __init__(self, key_id, secret):
        self.key_id = key_id
        self.secret = secret

    def __call__(self, request):
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        request.headers.update(signature_headers(self.key_id, self.secret, request.method,
                                                 path_of(request.url), body))
        return request


def verify_signature(headers, method, path, body, secret_for, remember_nonce, now=None, max_age=MAX_AGE):
    """Check a signed request and return its key id.

    ``secret_for(key_id)`` returns the shared secret or None for an unknown
    key; ``remember_nonce(key_id, nonce, expires_at)`` returns False when the
    nonce was seen before. Raises SignatureError.
    """
    key_id = headers.get(KEY_HEADER)
    timestamp = headers.get(TIMESTAMP_HEADER)
    nonce = headers.get(NONCE_HEADER)
    signature = headers.get(SIGNATURE_HEADER)
    if not (key_id and timestamp and nonce and signature):
        raise SignatureError("the request is not signed")
    if len(nonce) > 128 or len(signature) > 128 or len(key_id) > 128:
        raise SignatureError("the signature headers are malformed")
    try:
        stamp = int(timestamp)
    except ValueError:
        raise SignatureError("the signature timestamp is malformed") from None
    now = now if now is not None else time.time()
    if abs(now - stamp) > max_age:
        raise SignatureError("the signature is stale (clocks more than "
                             f"{max_age} seconds apart, or a replay)")
    secret = secret_for(key_id)
    # Compute even for unknown keys so timing does not tell which keys exist.
    expected = compute_signature(secret or "unknown-key", method, path, stamp, nonce, body)
    if secret is None or not hmac.compare_digest(expected, signature):
        raise SignatureError("the signature does not match")
    if not remember_nonce(key_id, nonce, stamp + max_age):
        raise SignatureError("the request was replayed (nonce already used)")
    return key_id


class SqliteNonceStore:
    """Seen nonces in a small SQLite file, shared by every worker process on the host.

    One connection per process, shared by its threads: one per request thread made SQLite create
    the write-ahead log anew for each request (and sync the directory for it), and delete it again
    when the thread's connection went. Commits are not synced to the disk (synchronous=NORMAL, as
    the master's database): a request's nonce survives the process dying, and a power cut can
    lose only the nonces of its last moments. Such a request could be replayed once, within
    MAX_AGE of its signing, after the host came back, and would do nothing new: the master sends
    an order or a cancel again itself when it is not sure it arrived, and each is taken once. Each request that had to wait
    for the disk had waited for every write the host had not yet made durable: at 4 slaves
    pulling at once, a few milliseconds an order on a quiet disk, tenths of a second on a busy one.
    """

    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()
        self._db, self._pid = None, None
        # Owner-only from the first byte, and mended if an older build left it 0644; SQLite
        # gives its -wal and -shm files the same mode.
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        os.chmod(path, 0o600)
        with self._lock:
            self._connection().execute("CREATE TABLE IF NOT EXISTS nonces "
                                       "(key_id TEXT, nonce TEXT, expires_at INTEGER, PRIMARY KEY (key_id, nonce))")

    def _connection(self):
        """This process's connection (under ``_lock``); a process forked from the one that opened it
        opens its own, as SQLite requires."""
        if self._db is None or self._pid != os.getpid():
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._db, self._pid = connection, os.getpid()
        return self._db

    def remember(self, key_id, nonce, expires_at):
        with self._lock:
            connection = self._connection()
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.execute("DELETE FROM nonces WHERE expires_at < ?", (int(time.time()),))
                connection.execute("INSERT INTO nonces VALUES (?, ?, ?)", (key_id, nonce, int(expires_at)))
            except sqlite3.IntegrityError:
                connection.execute("ROLLBACK")
                return False
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return True
