"""``mirrorctl runs``: a project's run history, one run with its slaves, cancelling one, and a run's log."""

import click

from common.texts import printable_lines
from mirrorctl.context import pass_ctl
from mirrorctl.errors import StoppedFollowing
from mirrorctl.follow import LogTail, follow_log
from mirrorctl.tables import run_details, run_table

RUN_ID = click.IntRange(min=1)


@click.group()
def runs():
    """A project's runs, one run, a run's log."""


@runs.command("list")
@click.argument("project")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True, help="How many runs.")
@click.option("--before", type=RUN_ID, metavar="ID", help="Only runs older than run ID (to page back).")
@pass_ctl
def list_runs(ctl, project, limit, before):
    """List the newest runs of PROJECT, newest first."""
    found = ctl.client.list_runs(project, limit=limit, before=before)
    ctl.emit(found, lambda found, now: run_table(found, now) if found else f"project {project} has no runs yet")


@runs.command()
@click.argument("run_id", metavar="ID", type=RUN_ID)
@pass_ctl
def show(ctl, run_id):
    """Show run ID: state, times, transfer stats and a table of its slaves."""
    ctl.emit(ctl.client.get_run(run_id), run_details)


@runs.command()
@click.argument("run_id", metavar="ID", type=RUN_ID)
@pass_ctl
def cancel(ctl, run_id):
    """Cancel run ID while it is queued, syncing or distributing: its rsync and the slaves' pulls stop."""
    ctl.emit(ctl.client.cancel_run(run_id), lambda run, now: f"cancelled run {run_id}\n\n{run_details(run, now)}")


@runs.command()
@click.argument("run_id", metavar="ID", type=RUN_ID)
@click.option("--follow", is_flag=True, help="Keep printing new lines until the run ends.")
@pass_ctl
def log(ctl, run_id, follow):
    """Print the rsync log of run ID as plain text (--json does not change it)."""

    def write(text):
        # A log holds upstream's file names, which may carry terminal escapes.
        click.echo(printable_lines(text), nl=False)

    if not follow:
        write(LogTail(ctl.client, run_id).read(run_final=True))
        return
    try:
        follow_log(ctl.client, run_id, write, sleep=ctl.sleep)
    except KeyboardInterrupt:
        raise StoppedFollowing(f"stopped following run {run_id}; it goes on") from None
