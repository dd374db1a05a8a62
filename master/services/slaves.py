"""Slaves: enrollment with the join token, signed heartbeats, and admin changes."""

import datetime
import hmac
import logging
import secrets

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from common import signing
from common.errors import Conflict, Forbidden, NotFound, Unauthorized, UnknownSlave
from master.db import db
from common.states import SlaveRunState
from master.models import Nonce, Slave, SlaveRun
from master.seams import now
from master.services import readmodel

log = logging.getLogger(__name__)

RESERVED_NAMES = frozenset({"register"})


def slave_state(slave, at=None):
    """disabled, online (heartbeat within HEARTBEAT_TIMEOUT), offline, or new (never seen)."""
    if not slave.enabled:
        return "disabled"
    if slave.last_seen is None:
        return "new"
    timeout = datetime.timedelta(seconds=current_app.config["HEARTBEAT_TIMEOUT"])
    return "online" if (at or now()) - slave.last_seen <= timeout else "offline"


def register_slave(join_token, name, url):
    """Enroll a slave and return (slave, credentials dict) — the only time secrets leave the master.

    Raises Forbidden for a wrong join token or closed enrollment, Conflict for a taken name.
    """
    expected = current_app.config["JOIN_TOKEN"]
    if not expected:
        raise Forbidden("Enrollment is closed: the master has no JOIN_TOKEN set.")
    if not join_token or not hmac.compare_digest(join_token.encode(), expected.encode()):
        raise Forbidden("The join token is not valid.")
    if name in RESERVED_NAMES:
        raise Conflict(f"{name!r} is a reserved name.", {"name": ["This name is reserved."]})
    slave = Slave(name=name, url=url, enabled=True, signing_key=secrets.token_urlsafe(32),
                  rsync_user=f"ms-{name}", rsync_password=secrets.token_urlsafe(24), created_at=now())
    db.session.add(slave)
    try:
        db.session.flush()
        readmodel.note_changed(layout=True)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict(f"A slave named {name!r} is already enrolled; delete it first to enroll it again.",
                       {"name": ["A slave with this name is already enrolled."]}) from None
    log.info("slave %s enrolled from %s", name, url)
    return slave, {"name": slave.name, "signing_key": slave.signing_key,
                   "rsync_user": slave.rsync_user, "rsync_password": slave.rsync_password}


def list_slaves():
    return db.session.execute(sa.select(Slave).order_by(Slave.name)).scalars().all()


def enabled_slaves():
    return db.session.execute(
        sa.select(Slave).where(Slave.enabled.is_(True)).order_by(Slave.name)).scalars().all()


def get_slave(name):
    """Raises NotFound."""
    slave = db.session.execute(sa.select(Slave).where(Slave.name == name)).scalar_one_or_none()
    if slave is None:
        raise NotFound(f"There is no slave {name!r}.")
    return slave


def update_slave(name, changes):
    """Change a slave; disabling it also ends its parts still in flight. Raises NotFound."""
    slave = get_slave(name)
    disabling = slave.enabled and changes.get("enabled") is False
    for field, value in changes.items():
        setattr(slave, field, value)
    readmodel.note_changed(layout=True)
    db.session.commit()
    log.info("slave %s changed: %s", name, ", ".join(sorted(changes)) or "nothing")
    if disabling:
        from master.services import distribution  # it builds on this module
        ended = distribution.end_parts_of_disabled_slave(slave)
        if ended:
            log.info("slave %s disabled: %d part(s) in flight ended as failed", name, ended)
    return slave


def delete_slave(name):
    """Forget a slave: it can no longer sign anything nor pull from the rsync daemon."""
    slave = get_slave(name)
    db.session.delete(slave)
    readmodel.note_changed(layout=True)
    db.session.commit()
    log.info("slave %s deleted", name)


def _remember_nonce(key_id, nonce, expires_at):
    db.session.add(Nonce(key_id=key_id, nonce=nonce, expires_at=int(expires_at)))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return False
    return True


def purge_nonces():
    db.session.execute(sa.delete(Nonce).where(Nonce.expires_at < int(now().timestamp())))
    db.session.commit()


def authenticate_slave(name, headers, method, path, body):
    """Return the slave that signed this request as ``name``.

    Raises UnknownSlave when no slave has that name (so the slave can tell it must enroll again),
    Unauthorized for any other refused signature.
    """
    slave = db.session.execute(sa.select(Slave).where(Slave.name == name)).scalar_one_or_none()
    if slave is None:
        log.warning("refused a request signed as slave %r: no slave has that name", name)
        raise UnknownSlave(f"Signature refused: the master knows no slave {name!r} (it was deleted or never "
                           "enrolled); enroll it again with the join token.")

    def secret_for(key_id):
        return slave.signing_key if slave is not None and key_id == name else None
    try:
        signing.verify_signature(headers, method, path, body, secret_for, _remember_nonce,
                                 now=now().timestamp(), max_age=current_app.config["SIGNATURE_MAX_AGE"])
    except signing.SignatureError as error:
        log.warning("refused a request signed as slave %r: %s", name, error)
        raise Unauthorized(f"Signature refused: {error}.") from None
    return slave


def record_heartbeat(slave, url):
    """Note that ``slave`` is alive at ``url``; returns whether it had been offline or new."""
    was = slave_state(slave)
    slave.last_seen = now()
    keep_parts_alive(slave, slave.last_seen)
    # A disabled slave is told so in the answer, but cannot move where orders would go.
    if url != slave.url and slave.enabled:
        log.info("slave %s moved from %s to %s", slave.name, slave.url, url)
        slave.url = url
    db.session.commit()
    if was in ("offline", "new"):
        log.info("slave %s is online", slave.name)
    return was in ("offline", "new")


def start_deadline(stamp):
    """Until when a part may go without a word from its slave (a report or a heartbeat)."""
    return stamp + datetime.timedelta(seconds=current_app.config["SLAVE_START_TIMEOUT"])


def keep_parts_alive(slave, stamp):
    """A heartbeat or a report from ``slave``: its open parts wait SLAVE_START_TIMEOUT more."""
    db.session.execute(sa.update(SlaveRun).where(
        SlaveRun.slave_id == slave.id,
        SlaveRun.state.in_((SlaveRunState.DISPATCHED.value, SlaveRunState.SYNCING.value)))
        .values(start_deadline=start_deadline(stamp)))
