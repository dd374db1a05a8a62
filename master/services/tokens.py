"""API tokens: issued once in plain text, stored only as a SHA-256 hash."""

import datetime
import hashlib
import hmac
import logging
import secrets

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import IntegrityError

from common.errors import NotFound, Unauthorized
from common.states import Role
from master.db import db
from master.models import ApiToken
from master.seams import now

log = logging.getLogger(__name__)

TOKEN_PREFIX = "mst_"
LAST_USED_RESOLUTION = datetime.timedelta(minutes=1)


def hash_token(token):
    # Tokens are 256-bit random strings, so a plain fast hash is enough; a
    # slow KDF would only add latency to every request.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(name, role, expires_in=None):
    """Return (plain_token, ApiToken); the plain token is never stored or shown again."""
    role = Role(role)
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    stamp = now()
    token = ApiToken(name=name, role=role.value, token_hash=hash_token(plain), created_at=stamp,
                     expires_at=stamp + datetime.timedelta(seconds=expires_in) if expires_in else None)
    db.session.add(token)
    db.session.commit()
    log.info("API token %s (%s, %s) created", token.id, name, role.value)
    return plain, token


def seed_admin_token(plain):
    """Create the admin token with the configured value the first time it is configured.

    Once it exists it is left exactly as it is: a revoked or expired ADMIN_TOKEN stays dead
    across every worker start and restart (set a new value to get a new admin token).
    """
    digest = hash_token(plain)
    existing = db.session.execute(sa.select(ApiToken).where(ApiToken.token_hash == digest)).scalar_one_or_none()
    if existing is not None:
        if existing.revoked_at is not None:
            log.warning("ADMIN_TOKEN is set to a token that was revoked; it stays revoked "
                        "(set a new value, or unset it)")
        return existing
    db.session.add(ApiToken(name="ADMIN_TOKEN", role=Role.ADMIN.value, token_hash=digest, created_at=now()))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()  # another worker seeded it at the same moment


def list_tokens():
    return db.session.execute(sa.select(ApiToken).order_by(ApiToken.id)).scalars().all()


def get_token(token_id):
    """Raises NotFound."""
    token = db.session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"There is no token {token_id}.")
    return token


def revoke_token(token_id):
    """Raises NotFound."""
    token = get_token(token_id)
    if token.revoked_at is None:
        token.revoked_at = now()
        db.session.commit()
        log.info("API token %s (%s) revoked", token.id, token.name)
    return token


def authenticate(plain):
    """Return the live ApiToken for a presented token; raises Unauthorized."""
    if not plain:
        raise Unauthorized("Send 'Authorization: Bearer <token>'.")
    digest = hash_token(plain)
    token = db.session.execute(sa.select(ApiToken).where(ApiToken.token_hash == digest)).scalar_one_or_none()
    if token is None or not hmac.compare_digest(token.token_hash, digest):
        raise Unauthorized("The token is not valid.")
    stamp = now()
    if token.revoked_at is not None:
        raise Unauthorized("The token has been revoked.")
    if token.expires_at is not None and token.expires_at <= stamp:
        raise Unauthorized("The token has expired.")
    if token.last_used_at is None or stamp - token.last_used_at > LAST_USED_RESOLUTION:
        token.last_used_at = stamp
        try:
            db.session.commit()
        except DBAPIError:
            # A read must still work while the database cannot be written (a full disk).
            db.session.rollback()
            token = db.session.get(ApiToken, token.id)
    return token
