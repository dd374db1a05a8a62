"""The public status feed: every project's state and each slave's freshness, without history scans."""

import dataclasses

from master.services import distribution, projects, slaves


@dataclasses.dataclass
class ProjectStatus:
    project: object
    slaves: dict

    def __getattr__(self, name):
        return getattr(self.project, name)


def status_feed():
    """One entry per project; ``slaves`` maps each enabled slave to its freshness."""
    names = [slave.name for slave in slaves.enabled_slaves()]
    freshness = distribution.freshness_by_project()
    feed = []
    for project in projects.list_projects():
        held = freshness.get(project.id, {})
        per_slave = {}
        for name in names:
            if name in held:
                per_slave[name] = distribution.slave_freshness(project, held[name])
            else:
                per_slave[name] = {"state": "stale", "run_id": None, "since": None, "last_error": None}
        feed.append(ProjectStatus(project, per_slave))
    return feed
