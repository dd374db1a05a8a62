"""Rate limit on failed authentication: a network that keeps failing gets 429 instead of 401.

Only failed attempts are limited. A valid token or join token passes even while
its network is over the limit, so one bad client behind a shared proxy or NAT
cannot lock its neighbours out, and signed slave traffic is never counted (a
slave whose clock is off must not lock out the address it shares). Failures
count per network (/24 for IPv4, /64 for IPv6), so rotating addresses within
one does not reset the count, and each failure is counted by one atomic
statement, so a parallel burst gets exactly AUTH_FAILURE_LIMIT 401s.

Windows run on the monotonic clock, which on Linux is one clock per host, so
every gunicorn worker of a host shares a row; API hosts that share one
PostgreSQL database each count on their own (rows carry the clock's id).
"""

import datetime
import ipaddress
import logging

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite

from common.errors import TooManyRequests
from common.texts import printable
from master.db import db
from master.models import AuthFailure
from master.seams import current_seams, now

log = logging.getLogger(__name__)

IPV4_PREFIX = 24
IPV6_PREFIX = 64
# Rows of hosts or boots whose clock is not ours are purged once this old on the wall clock.
FOREIGN_ROW_AGE = datetime.timedelta(days=1)


def network_of(address):
    """The network an address is counted in: its /24 (IPv4) or /64 (IPv6), or "unknown"."""
    try:
        ip = ipaddress.ip_address((address or "").split("%", 1)[0])
    except ValueError:
        return "unknown"
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = IPV4_PREFIX if ip.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def _insert():
    dialect = db.engine.dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(AuthFailure)


def record_failure(address):
    """Count one failed authentication from ``address``'s network.

    Raises TooManyRequests when the network is over AUTH_FAILURE_LIMIT in its window;
    otherwise returns and the caller answers the failure as usual.
    """
    config = current_app.config
    window, limit = config["AUTH_FAILURE_WINDOW"], config["AUTH_FAILURE_LIMIT"]
    clock = current_seams().clock
    network, stamp = network_of(address), clock.monotonic()
    db.session.rollback()  # whatever the failed request had pending is not ours to keep
    insert = _insert().values(network=network, clock_id=clock.monotonic_id(), count=1, window_started=stamp,
                              seen_at=now())
    # Only rows of this clock are compared with it: another host's, or one from before a
    # reboot, has another clock_id. A start a little ahead of ``stamp`` is a parallel request.
    expired = AuthFailure.window_started <= stamp - window
    upsert = insert.on_conflict_do_update(
        index_elements=[AuthFailure.network, AuthFailure.clock_id],
        set_={"count": sa.case((expired, 1), else_=AuthFailure.count + 1),
              "window_started": sa.case((expired, insert.excluded.window_started),
                                        else_=AuthFailure.window_started),
              "seen_at": insert.excluded.seen_at},
    ).returning(AuthFailure.count, AuthFailure.window_started)
    count, started = db.session.execute(upsert).one()
    db.session.commit()
    if count <= limit:
        return
    if count == limit + 1:
        log.warning("network %s failed authentication %s times within %s s; its failures get 429 "
                    "until the window ends", printable(network), limit, window)
    left = started + window - stamp
    raise TooManyRequests("Too many failed authentications from this network; try again later.",
                          retry_after=max(1, int(left) + 1))


def purge_expired():
    """Forget ended windows of this host's clock, and rows of other hosts or boots a day old."""
    clock = current_seams().clock
    window = current_app.config["AUTH_FAILURE_WINDOW"]
    ours = AuthFailure.clock_id == clock.monotonic_id()
    db.session.execute(sa.delete(AuthFailure).where(sa.or_(
        sa.and_(ours, AuthFailure.window_started <= clock.monotonic() - window),
        sa.and_(sa.not_(ours), AuthFailure.seen_at < now() - FOREIGN_ROW_AGE))))
    db.session.commit()
