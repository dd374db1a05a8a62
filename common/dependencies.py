"""Fail in one line, not a traceback, when a program runs on a Python that lacks the project's packages."""

import importlib.util
import sys

# What both roles import; requirements.txt pins them.
THIRD_PARTY = ("flask", "flask_sqlalchemy", "flask_smorest", "sqlalchemy", "alembic", "marshmallow",
               "requests", "apscheduler", "click", "cryptography")


def require_installed(modules=THIRD_PARTY):
    """Raises SystemExit naming the first missing package and the Python that lacks it."""
    for name in modules:
        if importlib.util.find_spec(name) is None:
            raise SystemExit(f"mirror-sync: the package {name!r} is not installed for {sys.executable}; "
                             "run 'make setup' and start it with .venv/bin/python (or activate .venv)")
