"""``mirrorctl``: drive a mirror-sync master from the shell.

The root group reads the global options; each area (projects, runs, slaves,
status) lives in its own module. Tests pass a ``Ctl`` with fakes at its
seams as click's ``obj``.
"""

import errno

import click

from mirrorctl.context import Ctl
from mirrorctl.errors import CliError
from mirrorctl.projects import projects
from mirrorctl.runs import runs
from mirrorctl.slaves import slaves
from mirrorctl.status import status


class RootGroup(click.Group):
    """Turns any unexpected exception into one line on stderr instead of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:  # a bug or an answer we did not foresee; still no traceback
            if isinstance(error, OSError) and error.errno == errno.EPIPE:
                raise  # click's main ends quietly when the reader of a pipe goes away
            raise CliError(f"unexpected {type(error).__name__}: {error}") from error


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", metavar="URL", help="The master's API, e.g. http://master:5000 (else MIRRORSYNC_URL).")
@click.option("--token", metavar="TOKEN",
              help="API token (else MIRRORSYNC_TOKEN); prefer the variable or the config file, "
                   "which other users cannot see in the process list.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer (one document) instead of text.")
@click.pass_context
def cli(ctx, url, token, as_json):
    """Drive a mirror-sync master: projects, runs, slaves and the status feed.

    \b
    The master's URL and an API token come from, first to last:
      --url / --token
      MIRRORSYNC_URL / MIRRORSYNC_TOKEN
      a TOML file with keys url and token: MIRRORSYNC_CONFIG, or
      ~/.config/mirrorctl.toml (mode 0600, else mirrorctl warns)
    The URL defaults to http://127.0.0.1:5000.

    Exit status: 0 on success, 1 when the master refused or failed a request
    (or a followed run did not end in success), 2 on a usage error, 130 when
    Ctrl-C stops following a run (the run goes on).
    """
    ctl = ctx.ensure_object(Ctl)
    ctl.url, ctl.token, ctl.as_json = url, token, as_json


for group in (projects, runs, slaves, status):
    cli.add_command(group)


def main():
    """Console-script entry point; click exits quietly when the reader of a pipe goes away."""
    cli.main(prog_name="mirrorctl")
