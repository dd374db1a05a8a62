"""``python -m master.migrations.new MESSAGE``: draft the next revision by autogenerate (for developers)."""

import os
import re
import sys
import tempfile

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from master import schema


def main(argv):
    if len(argv) != 1 or not argv[0].strip():
        print("usage: python -m master.migrations.new 'what the revision does'", file=sys.stderr)
        return 2
    message = argv[0].strip()
    import master.models  # noqa: F401 - registers the tables for autogenerate
    scripts = ScriptDirectory.from_config(schema.alembic_config())
    number = 1 + max((int(s.revision.split("_", 1)[0]) for s in scripts.walk_revisions()
                      if s.revision.split("_", 1)[0].isdigit()), default=0)
    revision = f"{number:04d}_{re.sub(r'[^a-z0-9]+', '_', message.lower()).strip('_')[:40]}"
    with tempfile.TemporaryDirectory() as scratch:
        engine = sa.create_engine(f"sqlite:///{os.path.join(scratch, 'head.db')}")
        with engine.begin() as connection:
            schema.upgrade(connection)
            command.revision(schema.alembic_config(connection), message=message, autogenerate=True,
                             rev_id=revision)
        engine.dispose()
    print(f"wrote master/migrations/versions/{revision}.py: read it and trim it")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
