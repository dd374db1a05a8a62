"""The side effects the master's services reach through, so tests can swap them."""

import dataclasses

from flask import current_app


@dataclasses.dataclass
class Seams:
    clock: object          # .now() -> aware UTC datetime
    rsync_runner: object   # .run(job, log_path, on_spawn=, cancel=) -> RsyncResult
    slave_client: object   # .send_orders([(OrderTarget, order), ...]) -> [OrderOutcome]
    wakeups: object = None  # .before_commit(session), .after_commit(session): a run was queued
    program_runner: object = None  # .run(argv, log_path, env=, timeout=, ...) -> Outcome: sync scripts, hooks


def current_seams():
    return current_app.extensions["mirrorsync"]


def now():
    return current_seams().clock.now()
