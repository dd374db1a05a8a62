"""A master whose database went back (restored from a backup) behind what DATA_DIR holds."""

import os

import sqlalchemy as sa

from master.db import db
from master.executor import Executor
from master.models import Run
from master.services import projects, runs


def restored_master_numbers_runs_after_disk(app, data_dir, runs_in_database):
    """Returns (the id of the first run the restarted scheduler's master makes, the ids before)."""
    with app.app_context():
        project = projects.create_project({"name": "debian", "upstream": "rsync://mirror.example.org/debian"})
        before = []
        for _ in range(runs_in_database):
            run, _ = runs.request_sync(project, "manual")
            before.append(run.id)
            db.session.execute(sa.update(Run).where(Run.id == run.id).values(state="success"))
            db.session.commit()
    # What the runs since the backup left: a snapshot, its manifest, a log of a later failed run.
    os.makedirs(os.path.join(data_dir, ".snapshots", "debian", "41"))
    os.makedirs(os.path.join(data_dir, ".snapshots", "debian", ".manifest-41"))
    os.makedirs(os.path.join(data_dir, ".mirrorsync", "logs", "debian"), exist_ok=True)
    open(os.path.join(data_dir, ".mirrorsync", "logs", "debian", "57.log"), "w").close()
    Executor(app).recover()
    Executor(app).recover()   # twice: the second finds the database ahead
    with app.app_context():
        run, created = runs.request_sync(projects.get_project("debian"), "manual")
        assert created
        return run.id, before
