"""Bearer-token checks for API blueprints: readers may GET, only admins may change things."""

import contextlib
import ipaddress

from flask import g, request

from common.errors import Forbidden, Unauthorized
from common.states import Role
from master.services import throttle, tokens

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def bearer_token():
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def private_channel():
    """Whether no one on the network can read this request: HTTPS (as the proxy says, with
    TRUSTED_PROXIES), or a client on this host."""
    if request.is_secure:
        return True
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def counted_failures(*errors):
    """Count the failed authentications raised in here; past the limit they become 429.

    A credential that is valid is never refused here, whatever its network did.
    Raises TooManyRequests, or whichever of ``errors`` the body raised.
    """
    try:
        yield
    except errors:
        throttle.record_failure(request.remote_addr)
        raise


def authorize_request():
    """before_request hook: raises Unauthorized, Forbidden or TooManyRequests."""
    with counted_failures(Unauthorized):
        token = tokens.authenticate(bearer_token())
    if request.method not in SAFE_METHODS and token.role != Role.ADMIN.value:
        raise Forbidden("This call needs an admin token; this token is read-only.")
    g.api_token = token
