"""``mirrorctl slaves``: the public hosts that pull from the master."""

import click

from mirrorctl.context import pass_ctl
from mirrorctl.tables import slave_details, slave_table


@click.group()
def slaves():
    """The public hosts (slaves) fed by the master."""


@slaves.command("list")
@pass_ctl
def list_slaves(ctl):
    """List slaves with their state and when they were last heard from."""
    found = ctl.client.list_slaves()
    ctl.emit(found, lambda found, now: slave_table(found, now) if found else
             "no slaves yet; a slave enrolls itself when started with the master's JOIN_TOKEN")


@slaves.command()
@click.argument("name")
@pass_ctl
def show(ctl, name):
    """Show one slave."""
    ctl.emit(ctl.client.get_slave(name), slave_details)


@slaves.command()
@click.argument("name")
@pass_ctl
def enable(ctl, name):
    """Send orders to slave NAME again."""
    updated = ctl.client.update_slave(name, {"enabled": True})
    ctl.emit(updated, lambda updated, now: f"enabled slave {name}")


@slaves.command()
@click.argument("name")
@pass_ctl
def disable(ctl, name):
    """Stop sending orders to slave NAME; it keeps its credentials."""
    updated = ctl.client.update_slave(name, {"enabled": False})
    ctl.emit(updated, lambda updated, now: f"disabled slave {name}")


@slaves.command()
@click.argument("name")
@click.option("--public-url", metavar="URL",
              help="Where visitors fetch this host's files, e.g. https://mirror1.example.org.")
@click.option("--no-public-url", is_flag=True, help="Forget the public URL.")
@pass_ctl
def edit(ctl, name, public_url, no_public_url):
    """Change slave NAME's public URL, which the visitors' page links each project's files on."""
    if public_url and no_public_url:
        raise click.UsageError("--public-url and --no-public-url exclude each other")
    if not (public_url or no_public_url):
        raise click.UsageError("nothing to change; see mirrorctl slaves edit --help")
    updated = ctl.client.update_slave(name, {"public_url": None if no_public_url else public_url})
    ctl.emit(updated, lambda updated, now: f"updated slave {name}\n\n{slave_details(updated, now)}")


@slaves.command()
@click.argument("name")
@pass_ctl
def rm(ctl, name):
    """Delete slave NAME: it can no longer sign requests nor pull; it must enroll again.

    Prints nothing with --json (the API answers with no body).
    """
    ctl.client.delete_slave(name)
    if not ctl.as_json:
        click.echo(f"removed slave {name}; a slave still running with the join token enrolls again "
                   "(stop it first, or rotate JOIN_TOKEN)")
