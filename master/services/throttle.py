"""Rate limit on failed authentication: an address that keeps failing is refused for a while."""

import datetime
import logging

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from common.errors import TooManyRequests
from master.db import db
from master.models import AuthFailure
from master.seams import now

log = logging.getLogger(__name__)


def _window():
    return datetime.timedelta(seconds=current_app.config["AUTH_FAILURE_WINDOW"])


def check_address(address):
    """Raises TooManyRequests while ``address`` is over the limit of failed authentications."""
    row = db.session.get(AuthFailure, address)
    if row is None or row.count < current_app.config["AUTH_FAILURE_LIMIT"]:
        return
    left = row.window_start + _window() - now()
    if left.total_seconds() > 0:
        raise TooManyRequests("Too many failed authentications from this address; try again later.",
                              retry_after=max(1, int(left.total_seconds()) + 1))


def record_failure(address):
    """Count one failed authentication of ``address`` in its current window."""
    db.session.rollback()  # whatever the failed request had pending is not ours to keep
    stamp = now()
    for _ in range(3):
        row = db.session.get(AuthFailure, address)
        if row is None:
            db.session.add(AuthFailure(address=address, count=1, window_start=stamp))
        elif stamp - row.window_start >= _window():
            row.count, row.window_start = 1, stamp
        else:
            db.session.execute(sa.update(AuthFailure).where(AuthFailure.address == address)
                               .values(count=AuthFailure.count + 1))
        try:
            db.session.commit()
            break
        except IntegrityError:
            db.session.rollback()  # another worker counted this address's first failure
    row = db.session.get(AuthFailure, address)
    if row is not None and row.count == current_app.config["AUTH_FAILURE_LIMIT"]:
        log.warning("address %s failed authentication %s times; refusing it for %s s", address, row.count,
                    current_app.config["AUTH_FAILURE_WINDOW"])


def purge_expired():
    db.session.execute(sa.delete(AuthFailure).where(AuthFailure.window_start < now() - _window()))
    db.session.commit()
