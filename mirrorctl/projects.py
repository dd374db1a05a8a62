"""``mirrorctl projects``: list, show, add, edit, rm, enable, disable and sync mirrored projects."""

import sys

import click

from mirrorctl.context import pass_ctl
from mirrorctl.errors import CliError, StoppedFollowing
from mirrorctl.follow import RunFollower, outcome
from mirrorctl.tables import project_details, project_table

PUBLISH_MODES = ("delay", "atomic")
# A project's status: its newest run's state, "none" before its first run, "disabled".
STATUSES = ("none", "disabled", "queued", "syncing", "distributing", "success", "partial", "failed",
            "interrupted", "cancelled")


@click.group()
def projects():
    """Add, change, sync and remove projects.

    Commands: list, show, add, edit, rm, enable, disable, sync.
    """


def project_options(editing):
    """The options add and edit share, each setting one project field; edit also gets the ones that clear."""
    options = [
        click.option("--schedule", metavar="CRON",
                     help="5-field crontab in UTC, e.g. '0 */6 * * *'."
                          + ("" if editing else " Without it the project syncs only when told to.")),
        editing and click.option("--manual", is_flag=True, help="Drop the schedule: sync only when told to."),
        click.option("--option", "rsync_options", metavar="OPT", multiple=True,
                     help="An rsync option, repeatable: --option --bwlimit=1000 (or --option=-4)."
                          + (" Replaces the list." if editing else "")),
        editing and click.option("--no-options", is_flag=True, help="Remove every rsync option."),
        click.option("--exclude", "excludes", metavar="PATTERN", multiple=True,
                     help="An rsync exclude pattern, repeatable." + (" Replaces the list." if editing else "")),
        editing and click.option("--no-excludes", is_flag=True, help="Remove every exclude pattern."),
        click.option("--timeout", type=int, metavar="SECONDS", help="Wall-clock limit of one pull."),
        click.option("--retries", type=int, metavar="N", help="Further tries after a transient upstream failure."),
        click.option("--splay", type=int, metavar="SECONDS",
                     help="Up to this much random delay on each scheduled start."),
        click.option("--publish", type=click.Choice(PUBLISH_MODES),
                     help="How slaves publish a new tree: in place with delayed updates, or an atomic swap."),
        click.option("--password-stdin", is_flag=True,
                     help="Read the upstream password from stdin (it is never taken as an argument)."),
        editing and click.option("--no-password", is_flag=True, help="Remove the upstream password."),
        click.option("--enabled/--disabled", default=None, help="Whether the project syncs at all."),
        click.option("--description", metavar="TEXT", help="One line for visitors of the status page."),
        click.option("--help-url", metavar="URL", help="An http(s) page that tells visitors how to use the mirror."),
        click.option("--public-path", metavar="PATH",
                     help="Where the files are on the site, joined to the master's SITE_URL (default /NAME)."),
    ]

    def decorate(command):
        for option in reversed([option for option in options if option]):
            command = option(command)
        return command

    return decorate


def read_password():
    """The upstream password from stdin, without its line ending; raises UsageError when empty."""
    stdin = sys.stdin
    if stdin.isatty():
        return click.prompt("Upstream password", hide_input=True, err=True)
    password = stdin.read().removesuffix("\n").removesuffix("\r")
    if not password:
        raise click.UsageError("--password-stdin: stdin is empty; pipe the password in")
    return password


def project_fields(schedule, rsync_options, excludes, timeout, retries, splay, publish, password_stdin,
                   enabled, description, help_url, public_path, upstream=None):
    """The API fields the given options set; options not given are left out."""
    fields = {"upstream": upstream, "schedule": schedule, "timeout": timeout, "retries": retries,
              "splay": splay, "publish": publish, "enabled": enabled, "description": description,
              "help_url": help_url, "public_path": public_path,
              "rsync_options": list(rsync_options) or None, "excludes": list(excludes) or None}
    fields = {name: value for name, value in fields.items() if value is not None}
    if password_stdin:
        fields["upstream_password"] = read_password()
    return fields


@projects.command("list")
@click.option("--status", "statuses", type=click.Choice(STATUSES), multiple=True,
              help="Only projects in this status, repeatable: --status failed --status partial.")
@pass_ctl
def list_projects(ctl, statuses):
    """List projects with their status, last success and next run."""
    found = ctl.client.list_projects()
    if statuses:
        found = [project for project in found if project.get("status") in statuses]
        empty = f"no project is {' or '.join(statuses)}"
    else:
        empty = "no projects yet; add one with: mirrorctl projects add NAME --upstream rsync://HOST/MODULE"
    ctl.emit(found, lambda found, now: project_table(found, now) if found else empty)


@projects.command()
@click.argument("name")
@pass_ctl
def show(ctl, name):
    """Show every setting and timestamp of one project."""
    ctl.emit(ctl.client.get_project(name), project_details)


@projects.command()
@click.argument("name")
@click.option("--upstream", metavar="URL", required=True, help="rsync://[user@]host[:port]/module[/path]")
@project_options(editing=False)
@pass_ctl
def add(ctl, name, upstream, **options):
    """Create project NAME mirroring --upstream.

    \b
    Example:
      mirrorctl projects add debian --upstream rsync://ftp.example.org/debian \\
          --schedule '0 */6 * * *' --option --bwlimit=20000 --exclude '*.iso'
    """
    fields = {"name": name, **project_fields(upstream=upstream, **options)}
    created = ctl.client.create_project(fields)
    ctl.emit(created, lambda created, now: f"created project {name}\n\n{project_details(created, now)}")


@projects.command()
@click.argument("name")
@click.option("--upstream", metavar="URL", help="A new rsync:// upstream.")
@project_options(editing=True)
@pass_ctl
def edit(ctl, name, upstream, manual, no_options, no_excludes, no_password, **options):
    """Change settings of project NAME; what is not given stays as it is."""
    for clear, given, names in ((manual, options["schedule"], "--manual and --schedule"),
                                (no_options, options["rsync_options"], "--no-options and --option"),
                                (no_excludes, options["excludes"], "--no-excludes and --exclude"),
                                (no_password, options["password_stdin"], "--no-password and --password-stdin")):
        if clear and given:
            raise click.UsageError(f"{names} exclude each other")
    changes = project_fields(upstream=upstream, **options)
    cleared = {"schedule": manual, "rsync_options": no_options, "excludes": no_excludes,
               "upstream_password": no_password}
    changes.update({field: [] if field in ("rsync_options", "excludes") else None
                    for field, clear in cleared.items() if clear})
    if not changes:
        raise click.UsageError("nothing to change; see mirrorctl projects edit --help")
    updated = ctl.client.update_project(name, changes)
    ctl.emit(updated, lambda updated, now:
             f"updated project {name}: {', '.join(sorted(changes))}\n\n{project_details(updated, now)}")


@projects.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Cancel a run in progress first (else the master refuses).")
@pass_ctl
def rm(ctl, name, force):
    """Delete project NAME and its run history; its files stay on the master's disk.

    Prints nothing with --json (the API answers with no body).
    """
    ctl.client.delete_project(name, force=force)
    if not ctl.as_json:
        click.echo(f"removed project {name}; its files stay on the master's disk")


@projects.command()
@click.argument("name")
@pass_ctl
def enable(ctl, name):
    """Let project NAME sync again (on its schedule and on demand)."""
    updated = ctl.client.update_project(name, {"enabled": True})
    ctl.emit(updated, lambda updated, now: f"enabled project {name}")


@projects.command()
@click.argument("name")
@pass_ctl
def disable(ctl, name):
    """Stop project NAME from syncing; queued runs are cancelled."""
    updated = ctl.client.update_project(name, {"enabled": False})
    ctl.emit(updated, lambda updated, now: f"disabled project {name}")


@projects.command()
@click.argument("name")
@click.option("--follow", is_flag=True,
              help="Wait for the run, showing its states, each slave's state and new log lines; "
                   "exit 1 unless it ends in success.")
@click.option("-f", "--force", is_flag=True,
              help="Start even when MAX_CONCURRENT_SYNCS pulls are already running (like tunasynctl start -f).")
@pass_ctl
def sync(ctl, name, follow, force):
    """Start a sync of project NAME now.

    A sync asked for while one is queued joins it; while one runs, one more is queued.
    """
    run = ctl.client.trigger_sync(name, force=force)
    if not follow:
        ctl.emit(run, lambda run, now: f"{_queued_line(run)}\nfollow it with: mirrorctl runs log {run['id']} --follow")
        return
    if not ctl.as_json:
        click.echo(_queued_line(run))
    echo = (lambda line: None) if ctl.as_json else click.echo
    try:
        final = RunFollower(ctl.client, echo, sleep=ctl.sleep).follow(run)
    except KeyboardInterrupt:
        raise StoppedFollowing(f"stopped following run {run['id']}; it goes on: "
                               f"mirrorctl runs show {run['id']}") from None
    ctl.emit(final, lambda final, now: outcome(final))
    if final.get("state") != "success":
        details = [final[key] for key in ("error", "warning") if final.get(key)]
        raise CliError(f"run {final['id']} of {name} ended {final.get('state')}"
                       + (f": {'; '.join(details)}" if details else ""))


def _queued_line(run):
    if run.get("coalesced"):
        return f"run {run['id']} of {run['project']} was already {run['state']}; this sync joined it"
    return f"run {run['id']} of {run['project']}: {run['state']}"
