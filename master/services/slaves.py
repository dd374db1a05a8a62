"""Slaves: enrollment with the join token, signed heartbeats, and admin changes."""

import datetime
import hmac
import logging
import secrets

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from common import enrollment, signing
from common.errors import Conflict, Forbidden, NotFound, Unauthorized, UnknownSlave, ValidationFailed
from master.db import db
from common.states import SlaveRunState
from master.models import Nonce, Slave, SlaveRun
from master.seams import now
from master.services import readmodel, transactions

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


def register_slave(name, url, exchange=None, join_token=None, channel_private=False):
    """Enroll a slave and return (slave, answer dict) — the only time credentials leave the master.

    With ``exchange`` (public_key, timestamp, nonce, proof) the slave proved it holds the join
    token and the answer carries nothing secret in clear (common/enrollment.py). Without it,
    ``join_token`` is the bearer token of an older slave, taken only when ``channel_private``
    (HTTPS, or from this host) or INSECURE_ENROLLMENT is set.

    Raises Forbidden for a wrong join token or proof, closed enrollment or an open channel;
    Conflict for a taken name; ValidationFailed for a bad public key.
    """
    config = current_app.config
    expected = config["JOIN_TOKEN"]
    if not expected:
        raise Forbidden("Enrollment is closed: the master has no JOIN_TOKEN set.")
    if exchange is not None:
        try:
            enrollment.check_proof(expected, name, url, exchange["public_key"], exchange["timestamp"],
                                   exchange["nonce"], exchange["proof"], now().timestamp(),
                                   config["SIGNATURE_MAX_AGE"])
        except enrollment.EnrollmentError as error:
            raise Forbidden(f"The enrollment is refused: {error}.") from None
        if not _remember_nonce("enroll", exchange["nonce"], exchange["timestamp"] + config["SIGNATURE_MAX_AGE"]):
            raise Forbidden("The enrollment is refused: it was replayed (nonce already used).")
    else:
        if not join_token or not hmac.compare_digest(join_token.encode(), expected.encode()):
            raise Forbidden("The join token is not valid.")
        if not channel_private and not config["INSECURE_ENROLLMENT"]:
            raise Forbidden("This master takes a join token in clear only over HTTPS or from its own host: "
                            "upgrade the slave (it enrolls by key exchange), use HTTPS, or set "
                            "INSECURE_ENROLLMENT on the master.")
    if name in RESERVED_NAMES:
        raise Conflict(f"{name!r} is a reserved name.", {"name": ["This name is reserved."]})
    enrolled = db.session.execute(sa.select(sa.func.count(Slave.id))).scalar()
    if enrolled >= config["MAX_SLAVES"]:
        raise Conflict(f"Enrollment is full: {enrolled} slaves are enrolled and MAX_SLAVES is "
                       f"{config['MAX_SLAVES']}; delete one or raise MAX_SLAVES.")
    rsync_user, rsync_password = f"ms-{name}", secrets.token_urlsafe(24)
    answer = {"name": name, "rsync_user": rsync_user}
    if exchange is not None:
        try:
            answer["public_key"], signing_key, answer["sealed_rsync_password"] = enrollment.master_exchange(
                expected, name, url, exchange["public_key"], rsync_user, rsync_password)
        except enrollment.EnrollmentError as error:
            raise ValidationFailed(f"Invalid request: public_key: {error}.", {"public_key": [str(error)]}) from None
    else:
        signing_key = secrets.token_urlsafe(32)
        answer.update(signing_key=signing_key, rsync_password=rsync_password)
    slave = Slave(name=name, url=url, enabled=True, signing_key=signing_key, rsync_user=rsync_user,
                  rsync_password=rsync_password, created_at=now())
    db.session.add(slave)
    try:
        db.session.flush()
        readmodel.note_changed(layout=True)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict(f"A slave named {name!r} is already enrolled; delete it first to enroll it again.",
                       {"name": ["A slave with this name is already enrolled."]}) from None
    log.info("slave %s enrolled from %s (%s)", name, url, "key exchange" if exchange else "join token in clear")
    return slave, answer


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


@transactions.retried_on_race
def record_heartbeat(slave, url, last_edit=None):
    """Note that ``slave`` is alive at ``url``, and the last edit behind its back it saw (EditSchema's);
    returns whether it had been offline or new."""
    was = slave_state(slave)
    slave.last_seen = now()
    if last_edit is not None:
        edit = {name: value.isoformat() if isinstance(value, datetime.datetime) else value
                for name, value in last_edit.items()}
        known = slave.last_edit or {}
        if edit != known:
            if (edit["project"], edit["seen_at"]) != (known.get("project"), known.get("seen_at")):
                log.warning("slave %s: its published tree of %s was edited outside mirror-sync, first at %r",
                            slave.name, edit["project"], edit["path"])
            if edit["repaired_at"] and edit["repaired_at"] != known.get("repaired_at"):
                log.info("slave %s: its tree of %s is the run's again", slave.name, edit["project"])
            slave.last_edit = edit
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
