"""The one place mirrorctl does HTTP; tests hand the client a fake with the same ``send``."""

from dataclasses import dataclass, field

import requests

REQUEST_TIMEOUT = 30


class ConnectionFailed(Exception):
    """No HTTP answer at all; the message is the reason in a few words ("connection refused")."""


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict = field(default_factory=dict)  # lower-case names

    def header(self, name):
        return self.headers.get(name.lower())


class RequestsTransport:
    """Sends requests with a ``requests`` session; raises ConnectionFailed."""

    def __init__(self, timeout=REQUEST_TIMEOUT):
        self.timeout = timeout
        self.session = requests.Session()

    def send(self, method, url, headers, params=None, json=None):
        try:
            response = self.session.request(method, url, headers=headers, params=params, json=json,
                                            timeout=self.timeout, allow_redirects=False)
        except requests.Timeout:
            raise ConnectionFailed(f"no answer within {self.timeout}s") from None
        except requests.RequestException as error:
            raise ConnectionFailed(_reason(error)) from None
        return Reply(response.status_code, response.content,
                     {name.lower(): value for name, value in response.headers.items()})


def _reason(error):
    """The innermost cause of a requests error, in a few words: 'connection refused'."""
    seen = []
    cause = error
    while isinstance(cause, BaseException) and cause not in seen:
        seen.append(cause)
        nested = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None
        cause = nested or getattr(cause, "reason", None) or cause.__cause__ or cause.__context__
    innermost = seen[-1]
    if isinstance(innermost, OSError) and innermost.strerror:
        return innermost.strerror[:1].lower() + innermost.strerror[1:]
    return str(innermost) or type(innermost).__name__
