"""Run ids never go back, even when the database does.

Slaves know an order by its run id (and remember the newest run they
published), and the master names its snapshots and run logs by it. A database
restored from a backup would hand out again the ids of the runs made since the
backup: slaves would take the new runs for ones they pulled, and a new run's
snapshot would meet an old one of the same name. When a master process starts
(an API worker may take a trigger before the scheduler runs), new ids are made
to follow the highest one DATA_DIR still names.
"""

import logging
import os
import re

import sqlalchemy as sa

from master import snapshots
from master.db import db
from master.models import Run
from master.paths import state_dir

log = logging.getLogger(__name__)

# A snapshot (maybe unfinished), its manifest or its change list; a run log.
_SNAPSHOT_NAME = re.compile(r"^(?:\.manifest-|\.changes-)?([0-9]{1,18})(?:\.partial)?$")
_LOG_NAME = re.compile(r"^([0-9]{1,18})\.log$")


def highest_on_disk(data_dir):
    """The highest run id a snapshot or a run log in ``data_dir`` is named by; 0 for none."""
    highest = 0
    for root, pattern in ((snapshots.snapshots_root(data_dir), _SNAPSHOT_NAME),
                          (os.path.join(state_dir(data_dir), "logs"), _LOG_NAME)):
        for project in _names(root):
            for name in _names(os.path.join(root, project)):
                match = pattern.match(name)
                if match:
                    highest = max(highest, int(match.group(1)))
    return highest


def _names(directory):
    try:
        return os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as error:   # unreadable: the ids it holds stay unknown, and the database's count
        log.warning("cannot list %s to find the highest run id it names: %s", directory, error)
        return []


def next_after_disk(data_dir):
    """Make the next run id follow every run ``data_dir`` names; returns the id it now follows, or
    None when the database was ahead already (the usual case)."""
    highest = highest_on_disk(data_dir)
    if highest == 0:
        return None
    bind = db.session.get_bind()
    counted = max(db.session.execute(sa.select(sa.func.max(Run.id))).scalar() or 0, _sequence(bind))
    if counted >= highest:
        db.session.commit()
        return None
    # Never lower: another process starting at the same moment may have moved it, and made runs since.
    if bind.dialect.name == "postgresql":
        db.session.execute(sa.text(
            "SELECT setval(pg_get_serial_sequence('runs', 'id'), GREATEST(:id, COALESCE("
            "pg_sequence_last_value(pg_get_serial_sequence('runs', 'id')::regclass), 0)))"), {"id": highest})
    else:
        moved = db.session.execute(sa.text("UPDATE sqlite_sequence SET seq = MAX(seq, :id) WHERE name = 'runs'"),
                                   {"id": highest}).rowcount
        if not moved:
            db.session.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('runs', :id)"),
                               {"id": highest})
    db.session.commit()
    log.warning("the database's run ids end at %d, but DATA_DIR holds runs up to %d (was the database "
                "restored from a backup?): new runs are numbered from %d on, so that no slave takes one "
                "for a run it pulled", counted, highest, highest + 1)
    return highest


def _sequence(bind):
    """The last id the database handed out for a run, whether or not its row is still there."""
    if bind.dialect.name == "postgresql":
        return db.session.execute(sa.text(
            "SELECT pg_sequence_last_value(pg_get_serial_sequence('runs', 'id')::regclass)")).scalar() or 0
    return db.session.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'runs'")).scalar() or 0
