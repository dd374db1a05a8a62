"""The closed sets of states sent over the wire as strings."""

import enum


class RunState(str, enum.Enum):
    QUEUED = "queued"
    SYNCING = "syncing"
    DISTRIBUTING = "distributing"
    SUCCESS = "success"
    PARTIAL = "partial"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"

    @property
    def is_active(self):
        return self in ACTIVE_RUN_STATES

    @property
    def is_final(self):
        return self in FINAL_RUN_STATES


ACTIVE_RUN_STATES = frozenset({RunState.SYNCING, RunState.DISTRIBUTING})
FINAL_RUN_STATES = frozenset(
    {RunState.SUCCESS, RunState.PARTIAL, RunState.FAILED, RunState.INTERRUPTED, RunState.CANCELLED}
)

# Which moves a run may make; anything else is a bug and raises.
RUN_TRANSITIONS = {
    RunState.QUEUED: {RunState.SYNCING, RunState.CANCELLED, RunState.INTERRUPTED},
    RunState.SYNCING: {RunState.DISTRIBUTING, RunState.SUCCESS, RunState.FAILED, RunState.INTERRUPTED,
                       RunState.CANCELLED},
    RunState.DISTRIBUTING: {RunState.SUCCESS, RunState.PARTIAL, RunState.FAILED, RunState.INTERRUPTED,
                            RunState.CANCELLED},
}
# What POST /api/v1/runs/<id>/cancel can end.
CANCELLABLE_RUN_STATES = frozenset({RunState.QUEUED, RunState.SYNCING, RunState.DISTRIBUTING})


class SlaveRunState(str, enum.Enum):
    PENDING = "pending"
    DISPATCHED = "dispatched"
    SYNCING = "syncing"
    SUCCESS = "success"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class Trigger(str, enum.Enum):
    MANUAL = "manual"
    SCHEDULE = "schedule"
    RETRY = "retry"
    UPSTREAM = "upstream"   # kept for runs recorded before PUSH; nothing creates it any more
    RECOVERY = "recovery"
    PUSH = "push"           # upstream called POST /api/v1/projects/<name>/push


class Role(str, enum.Enum):
    ADMIN = "admin"
    READONLY = "readonly"
