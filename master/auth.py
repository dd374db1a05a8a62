"""Bearer-token checks for API blueprints: readers may GET, only admins may change things."""

from flask import g, request

from common.errors import Forbidden
from common.states import Role
from master.services import tokens

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def bearer_token():
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def authorize_request():
    """before_request hook: raises Unauthorized or Forbidden."""
    token = tokens.authenticate(bearer_token())
    if request.method not in SAFE_METHODS and token.role != Role.ADMIN.value:
        raise Forbidden("This call needs an admin token; this token is read-only.")
    g.api_token = token
