"""Ways to pull one tree (``rsync``, ``two-stage``, ``command``) behind one small interface.

``method_for(spec, runners)`` picks the implementation for ``spec.method``;
each one's ``run(destination, log_path, cancel=, on_spawn=, on_progress=)``
pulls into ``destination`` under supervision and returns a SyncResult with
its stats. Master and slave differ only in the spec they build and the
destination they pass.
"""

import dataclasses
from dataclasses import dataclass, field

from common.rsync import RsyncResult

RSYNC, TWO_STAGE, COMMAND = "rsync", "two-stage", "command"
METHODS = (RSYNC, TWO_STAGE, COMMAND)


@dataclass(frozen=True)
class MethodSpec:
    """What to pull and how; which fields matter depends on ``method``."""

    method: str = RSYNC
    source: str | None = None                 # rsync: the rsync:// URL
    options: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    password: str | None = field(default=None, repr=False)
    timeout: float | None = None
    stage1_profile: str | None = None         # two-stage: the stage-1 filter list
    protect: tuple[str, ...] = ()             # paths in the tree rsync must never delete (our traces)
    program: str | None = None                # command: absolute path of the script
    arguments: tuple[str, ...] = ()
    transient_exit_codes: frozenset[int] = frozenset()
    environment: dict = field(default_factory=dict)   # command: extra variables for the script
    listed: list | None = field(default=None, repr=False, compare=False)   # rsync: see RsyncJob.listed


@dataclass
class SyncResult(RsyncResult):
    """How a pull ended: an RsyncResult, plus what the method knows."""

    transient: bool = False                   # worth another try later
    stages: tuple[tuple[str, float], ...] = ()   # (stage name, seconds) in order

    @classmethod
    def of(cls, result, **extra):
        """A SyncResult from an RsyncResult (or anything with its attributes)."""
        return cls(result.exit_code, result.ok, result.warning, result.error, result.timed_out,
                   result.cancelled, result.stats, **extra)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Runners:
    """The supervised-process seams a method runs through."""

    rsync: object      # .run(job, log_path, on_spawn=, cancel=, on_progress=) -> RsyncResult
    programs: object   # .run(argv, log_path, env=, timeout=, cancel=, on_spawn=, cwd=) -> processes.Outcome


def method_for(spec, runners):
    """The method object for ``spec``; raises ValueError for an unknown method or profile."""
    from common.methods import command, rsync, twostage

    implementations = {RSYNC: rsync.RsyncMethod, TWO_STAGE: twostage.TwoStageMethod,
                       COMMAND: command.CommandMethod}
    if spec.method not in implementations:
        raise ValueError(f"unknown sync method {spec.method!r}")
    return implementations[spec.method](spec, runners)
