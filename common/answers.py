"""Talking to the other side over HTTP without trusting its answer.

Master and slave call each other through ``call``: redirects are never
followed (a 3xx is an answer like any other, so a signed request cannot be
replayed elsewhere), at most ``limit`` bytes of the answer are read, within a
total time, and JSON is parsed strictly by ``loads_strict``: one document,
no duplicate keys, no NaN. Requests that arrive are parsed by the same
function, so both sides read JSON the same way.
"""

import dataclasses
import json
import time

import urllib3

from common.texts import printable

# Largest answer either side reads from the other: orders, reports, heartbeats and
# enrollment are answered in a few hundred bytes.
MAX_ANSWER_BYTES = 64 * 1024
# Longest explanation kept from the other side's answer.
MESSAGE_LIMIT = 200
_CHUNK = 8192


class MalformedAnswer(Exception):
    """The answer was too large, too slow, not JSON, or not the expected shape; says which."""


class DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs):
    document = {}
    for key, value in pairs:
        if key in document:
            raise DuplicateKey(f"duplicate key {printable(key, 40)!r}")
        document[key] = value
    return document


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def loads_strict(data):
    """Parse one JSON document: duplicate keys, NaN and Infinity are refused.

    Raises ValueError (json.JSONDecodeError, DuplicateKey), RecursionError, UnicodeDecodeError.
    """
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8")
    return json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)


@dataclasses.dataclass(frozen=True)
class Answer:
    """What the other side answered: its status and at most MAX_ANSWER_BYTES of its body."""
    status: int
    body: bytes = dataclasses.field(repr=False)

    @property
    def is_redirect(self):
        return 300 <= self.status < 400

    def json_object(self):
        """The body as a JSON object (a dict); raises MalformedAnswer."""
        try:
            document = loads_strict(self.body)
        except (ValueError, RecursionError) as error:
            raise MalformedAnswer(f"the answer is not valid JSON ({printable(error, 80)})") from None
        if not isinstance(document, dict):
            raise MalformedAnswer(f"the answer is a JSON {type(document).__name__}, not an object")
        return document

    def message(self, limit=MESSAGE_LIMIT):
        """The other side's one-sentence ``message``, made printable and clipped, or None.

        Only that field is ever kept: an arbitrary body is never echoed back.
        """
        try:
            message = self.json_object().get("message")
        except MalformedAnswer:
            return None
        return printable(message, limit) if isinstance(message, str) and message.strip() else None


def read_limited(response, limit=MAX_ANSWER_BYTES, deadline=None):
    """At most ``limit`` bytes of a streamed response's body, before the monotonic ``deadline``.

    Raises MalformedAnswer when the body is larger or slower; requests.RequestException on the network.
    """
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise MalformedAnswer(f"the answer is larger than {limit} bytes")
    chunks, size = [], 0
    while True:
        # read1 returns what has arrived (at most _CHUNK bytes) instead of waiting for a full
        # chunk, so a slow drip is seen against the deadline after every byte.
        try:
            chunk = response.raw.read1(_CHUNK, decode_content=True)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise MalformedAnswer(f"the answer broke off ({type(error).__name__})") from None
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise MalformedAnswer(f"the answer is larger than {limit} bytes")
        if deadline is not None and time.monotonic() > deadline:
            raise MalformedAnswer("the answer took too long to arrive")
        chunks.append(chunk)
    return b"".join(chunks)


def call(session, method, url, timeout, limit=MAX_ANSWER_BYTES, **kwargs):
    """Send one request and read its answer; ``timeout`` is (connect, read) seconds.

    The whole answer must arrive within connect + read seconds. Raises
    requests.RequestException (unreachable), MalformedAnswer (the answer broke the limits).
    """
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    deadline = time.monotonic() + connect + read
    response = session.request(method, url, timeout=(connect, read), allow_redirects=False, stream=True,
                               **kwargs)
    try:
        return Answer(response.status_code, read_limited(response, limit, deadline))
    finally:
        response.close()
