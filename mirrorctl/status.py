"""``mirrorctl status``: the master's public feed, with each slave's freshness per project."""

import click

from mirrorctl.context import pass_ctl
from mirrorctl.tables import status_tables


@click.command()
@pass_ctl
def status(ctl):
    """Every project's status and slave freshness.

    This is the public feed: it needs no token.
    """
    feed = ctl.client.status_feed()
    ctl.emit(feed, lambda feed, now: status_tables(feed, now) if feed else "no projects yet")
