"""Where the master keeps things on disk.

Trees live in DATA_DIR/<project>; the master's own files live in
DATA_DIR/.mirrorsync, which no project name can collide with (names start
with a letter or digit).
"""

import os

from flask import current_app


def state_dir(data_dir):
    return os.path.join(data_dir, ".mirrorsync")


def default_database_url(data_dir):
    return "sqlite:///" + os.path.join(state_dir(data_dir), "mirrorsync.db")


def logs_root():
    return os.path.join(state_dir(current_app.config["DATA_DIR"]), "logs")


def project_tree(name):
    return os.path.join(current_app.config["DATA_DIR"], name)
