"""A database as an earlier release left it: tables from before migrations, with rows in each.

``build_legacy_database`` makes the schema of release 5039d10 (create_all,
no revision) on any URL, optionally without columns that were added during
that release's history, and fills it; ``LEGACY_ROWS`` says what a reader
must find again after an upgrade.
"""

import datetime

import sqlalchemy as sa

from tests.fixtures import models_5039d10

ADMIN_TOKEN = "mst_legacy-admin-token-value"
# Columns that arrived during the first release's history: a database made by a build
# from its middle lacks them.
MIDDLE_OF_HISTORY_MISSING = {
    "runs": ("retried_by", "progress", "pid", "warning"),
    "projects": ("run_totals", "last_duration", "last_bytes", "tree_dirty", "splay"),
    "slave_runs": ("dispatched_at",),
}


def _at(hour, minute=0):
    return datetime.datetime(2026, 11, 30, hour, minute, tzinfo=datetime.timezone.utc)


LEGACY_ROWS = {
    "projects": [
        dict(id=1, name="debian", upstream="rsync://ftp.example.org/debian/", schedule="0 */6 * * *",
             enabled=True, rsync_options=["--bwlimit=1000"], excludes=["*.iso"], timeout=3600,
             upstream_password="s3cret", publish="atomic", retries=2, splay=30, last_state="partial",
             last_success=_at(6, 10), last_started=_at(6), last_ended=_at(6, 10), size=123456,
             tree_run_id=2, tree_at=_at(6, 5), tree_dirty=False, run_totals={"success": 1, "partial": 1},
             last_duration=600.0, last_bytes=4096, created_at=_at(1), updated_at=_at(1)),
        dict(id=2, name="archlinux", upstream="rsync://mirror.example.net/archlinux/", schedule=None,
             enabled=False, rsync_options=[], excludes=[], timeout=600, upstream_password=None,
             publish="delay", retries=3, splay=0, last_state=None, last_success=None, last_started=None,
             last_ended=None, size=None, tree_run_id=None, tree_at=None, tree_dirty=False, run_totals=None,
             last_duration=None, last_bytes=None, created_at=_at(2), updated_at=_at(2)),
    ],
    "runs": [
        dict(id=1, project_id=1, trigger="manual", state="success", coalesced=0, attempt=1, retry_of=None,
             retried_by=None, not_before=None, created_at=_at(5), started_at=_at(5), finished_at=_at(5, 5),
             exit_code=0, error=None, warning=None,
             stats={"files_total": 10, "files_created": 10, "files_deleted": 0, "files_transferred": 10,
                    "total_size": 123000, "bytes_sent": 100, "bytes_received": 4000},
             progress=None, pid=None),
        dict(id=2, project_id=1, trigger="schedule", state="partial", coalesced=2, attempt=1, retry_of=None,
             retried_by=None, not_before=None, created_at=_at(6), started_at=_at(6), finished_at=_at(6, 10),
             exit_code=0, error="1 of 2 slaves did not get the tree: mirror2 (failed)", warning=None,
             stats={"files_total": 11, "files_created": 1, "files_deleted": 0, "files_transferred": 1,
                    "total_size": 123456, "bytes_sent": 100, "bytes_received": 4096},
             progress=None, pid=None),
    ],
    "slaves": [
        dict(id=1, name="mirror1", url="http://127.0.0.1:7001", enabled=True, signing_key="k1" * 16,
             rsync_user="ms-mirror1", rsync_password="p1" * 12, created_at=_at(3), last_seen=_at(6, 9)),
        dict(id=2, name="mirror2", url="http://127.0.0.1:7002", enabled=False, signing_key="k2" * 16,
             rsync_user="ms-mirror2", rsync_password="p2" * 12, created_at=_at(3), last_seen=None),
    ],
    "slave_runs": [
        dict(id=1, run_id=2, slave_id=1, slave_name="mirror1", state="success", attempts=1,
             dispatched_at=_at(6, 5), deadline=_at(8), started_at=_at(6, 5), finished_at=_at(6, 9),
             exit_code=0, error=None, stats={"files_total": 11}),
        dict(id=2, run_id=2, slave_id=2, slave_name="mirror2", state="failed", attempts=1,
             dispatched_at=_at(6, 5), deadline=_at(8), started_at=_at(6, 5), finished_at=_at(6, 10),
             exit_code=11, error="Error in file I/O (rsync exit 11)", stats=None),
    ],
    "slave_projects": [
        dict(slave_id=1, project_id=1, run_id=2, synced_at=_at(6, 9), last_state="success", last_error=None,
             last_attempt_at=_at(6, 5)),
        dict(slave_id=2, project_id=1, run_id=1, synced_at=_at(5, 5), last_state="failed",
             last_error="Error in file I/O (rsync exit 11)", last_attempt_at=_at(6, 5)),
    ],
    "api_tokens": [
        dict(id=1, name="legacy-admin", role="admin", token_hash=None, created_at=_at(1), expires_at=None,
             revoked_at=None, last_used_at=None),
        dict(id=2, name="grafana", role="readonly", token_hash="0" * 64, created_at=_at(1), expires_at=None,
             revoked_at=_at(4), last_used_at=_at(3)),
    ],
    "nonces": [dict(key_id="mirror1", nonce="n" * 32, expires_at=2000000000)],
    "auth_failures": [dict(address="192.0.2.1", count=3, window_start=_at(6))],
}


def build_legacy_database(url, missing=None):
    """Create release 5039d10's tables at ``url`` (less the ``missing`` {table: columns}) and fill them."""
    from master.services.tokens import hash_token
    missing = missing or {}
    engine = sa.create_engine(url)
    try:
        models_5039d10.metadata.create_all(engine)
        with engine.begin() as connection:
            for table, columns in missing.items():
                for column in columns:
                    connection.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))
            for table in models_5039d10.metadata.sorted_tables:
                rows = [dict(row) for row in LEGACY_ROWS.get(table.name, ())]
                for row in rows:
                    if table.name == "api_tokens" and row["token_hash"] is None:
                        row["token_hash"] = hash_token(ADMIN_TOKEN)
                    for column in missing.get(table.name, ()):
                        row.pop(column, None)
                if rows:
                    present = [c for c in table.columns if c.name in rows[0]]
                    connection.execute(sa.table(table.name, *[sa.column(c.name, c.type) for c in present])
                                       .insert(), rows)
    finally:
        engine.dispose()
