"""``method: two-stage``, as Debian's ftpsync: stage 1 pulls all but the index files without
deleting anything, stage 2 pulls the rest with deletions.

Whoever reads the tree between the stages sees the old indices over a pool that
already holds every new file (and still every old one), so an index never names
a file that is not there. A failed stage 1 ends the pull before stage 2: the
indices are untouched.
"""

import dataclasses

from common.methods import rsync as rsync_method
from common.rsync import RsyncStats

# Stage-1 filter rules per ``stage1_profile``, in rsync's order (the first match wins).
# "debian" is ftpsync's RSYNC_OPTIONS1: by-hash directories hold files named by their
# checksum, which no index names before it is published, so they come in stage 1.
PROFILES = {
    "debian": (
        "--include=*.diff/", "--include=by-hash/", "--exclude=*.diff/Index", "--exclude=Contents*",
        "--exclude=Packages*", "--exclude=Sources*", "--exclude=Release*", "--exclude=InRelease",
        "--exclude=i18n/*", "--exclude=dep11/*", "--exclude=installer-*/current", "--exclude=ls-lR*",
    ),
}
STAGE1, STAGE2 = "stage1", "stage2"


def combined_stats(first, second):
    """Stats of the whole pull: what both stages moved, what the tree holds after stage 2."""
    def total(name):
        values = [getattr(stats, name) for stats in (first, second)]
        return None if None in values else sum(values)
    return RsyncStats(files_total=second.files_total, files_created=total("files_created"),
                      files_deleted=second.files_deleted, files_transferred=total("files_transferred"),
                      total_size=second.total_size, bytes_sent=total("bytes_sent"),
                      bytes_received=total("bytes_received"))


def _staged(on_progress, stage):
    if on_progress is None:
        return None

    def report(progress):
        on_progress(dict(progress, stage=stage, stages=2))
    return report


class TwoStageMethod:
    def __init__(self, spec, runners):
        if spec.stage1_profile not in PROFILES:
            raise ValueError(f"unknown stage1_profile {spec.stage1_profile!r}")
        # Two stages filter what they list (stage 1 its profile): neither names every upstream entry,
        # so rsync's own deletions stay (MethodSpec.listed is for the rsync method only).
        self.spec = dataclasses.replace(spec, listed=None)
        self.runners = runners

    def run(self, destination, log_path, cancel=None, on_spawn=None, on_progress=None):
        spec, runners = self.spec, self.runners
        stage1_job = rsync_method.job(spec, destination, extra_options=PROFILES[spec.stage1_profile],
                                      delete=False)
        first, seconds1 = rsync_method.run_stage(runners, stage1_job, log_path, STAGE1, cancel, on_spawn,
                                                 _staged(on_progress, 1))
        if not first.ok:
            return first.replace(error=f"stage 1: {first.error}")
        second, seconds2 = rsync_method.run_stage(runners, rsync_method.job(spec, destination), log_path,
                                                  STAGE2, cancel, on_spawn, _staged(on_progress, 2))
        warnings = [w for w in (first.warning, second.warning) if w]
        return second.replace(
            stats=combined_stats(first.stats, second.stats), stages=((STAGE1, seconds1), (STAGE2, seconds2)),
            warning="; ".join(dict.fromkeys(warnings)) or None,
            error=None if second.ok else f"stage 2: {second.error}")
