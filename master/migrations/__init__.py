"""Alembic revisions of the master's schema; see README.md here for how to add one."""
