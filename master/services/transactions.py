"""Transactions that lose a race (a deadlock, a serialization failure) or meet a database that
cannot be written (a full disk): how to tell, how to try again, and what the API answers meanwhile."""

import functools
import logging
import random
import time

from sqlalchemy.exc import DBAPIError

from master.db import db

log = logging.getLogger(__name__)

# PostgreSQL: serialization_failure, deadlock_detected.
RACE_SQLSTATES = frozenset({"40001", "40P01"})
# PostgreSQL: disk_full, insufficient_resources, out_of_memory, too_many_connections, read_only_sql_transaction.
UNWRITABLE_SQLSTATES = frozenset({"53100", "53000", "53200", "53300", "25006"})
_UNWRITABLE_TEXTS = ("database or disk is full", "disk i/o error", "no space left on device",
                     "could not extend file", "database is locked", "readonly database")
RACE_ATTEMPTS = 5


def _sqlstate(error):
    return getattr(getattr(error, "orig", None), "sqlstate", None)


def lost_a_race(error):
    """Whether ``error`` is a transaction PostgreSQL rolled back to break a deadlock or keep serializability."""
    return isinstance(error, DBAPIError) and _sqlstate(error) in RACE_SQLSTATES


def cannot_write(error):
    """Whether ``error`` says the database cannot take a write right now (full disk, locked, out of room)."""
    if not isinstance(error, DBAPIError):
        return False
    if _sqlstate(error) in UNWRITABLE_SQLSTATES:
        return True
    text = str(getattr(error, "orig", error)).lower()
    return any(marker in text for marker in _UNWRITABLE_TEXTS)


def retried_on_race(function):
    """Decorate a service function whose transactions may lose a race: it runs again from the start
    (after a rollback and a short jittered pause) up to RACE_ATTEMPTS times; other errors pass through."""

    @functools.wraps(function)
    def run(*args, **kwargs):
        for attempt in range(1, RACE_ATTEMPTS + 1):
            try:
                return function(*args, **kwargs)
            except DBAPIError as error:
                if not lost_a_race(error) or attempt == RACE_ATTEMPTS:
                    raise
                db.session.rollback()
                log.info("%s lost a race in the database (%s); trying again", function.__name__,
                         _sqlstate(error))
                time.sleep(random.uniform(0.01, 0.05) * attempt)
    return run


def until_written(action, what, stopping=None, first_delay=0.2, max_delay=5.0, sleep=time.sleep):
    """Run ``action()`` until its writes land: while the database cannot be written (or a race is
    lost) it is rolled back and tried again with a growing pause; one line is logged per outage.

    Returns what ``action`` returns, or None once ``stopping`` (an Event) is set. Other errors pass through.
    """
    delay = first_delay
    failing = False
    while True:
        try:
            result = action()
        except DBAPIError as error:
            if not (cannot_write(error) or lost_a_race(error)):
                raise
            db.session.rollback()
            if not failing:
                log.error("%s: the database cannot be written (%s); trying again until it can", what,
                          str(getattr(error, "orig", error)).strip())
                failing = True
            if stopping is not None and stopping.wait(delay):
                log.warning("%s: given up on stopping; the next start picks it up", what)
                return None
            if stopping is None:
                sleep(delay)
            delay = min(max_delay, delay * 2)
            continue
        if failing:
            log.info("%s: written once the database could take it again", what)
        return result
