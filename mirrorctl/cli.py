"""``mirrorctl``: drive a mirror-sync master from the shell.

The root group reads the global options; each area (projects, runs, slaves,
status) lives in its own module. Tests pass a ``Ctl`` with fakes at its
seams as click's ``obj``.
"""

import errno
import json
import sys
from importlib import metadata

import click
from click.shell_completion import get_completion_class

from mirrorctl.context import Ctl
from mirrorctl.errors import CliError, error_document
from mirrorctl.projects import projects
from mirrorctl.runs import runs
from mirrorctl.slaves import slaves
from mirrorctl.status import status

PROG_NAME = "mirrorctl"
COMPLETE_VAR = "_MIRRORCTL_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


def version():
    try:
        return metadata.version("mirror-sync")
    except metadata.PackageNotFoundError:
        return "unknown (not installed: run make setup)"


def hoist_json_flag(args):
    """Move every ``--json`` before ``--`` to the front, so it works before or after the subcommand."""
    args = list(args)
    end = args.index("--") if "--" in args else len(args)
    found = "--json" in args[:end]
    if found:
        args = ["--json"] + [arg for arg in args[:end] if arg != "--json"] + args[end:]
    return args, found


class RootGroup(click.Group):
    """Turns any unexpected exception into one line on stderr instead of a traceback.

    With ``--json`` anywhere on the line, that line is a JSON error document.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:  # a bug or an answer we did not foresee; still no traceback
            if isinstance(error, OSError) and error.errno == errno.EPIPE:
                raise  # click's main ends quietly when the reader of a pipe goes away
            raise CliError(f"unexpected {type(error).__name__}: {error}") from error

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args, as_json = hoist_json_flag(sys.argv[1:] if args is None else args)
        if not (as_json and standalone_mode):
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as error:
            click.echo(json.dumps(error_document(error)), err=True)
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo(json.dumps({"error": "aborted", "message": "aborted", "status": None, "fields": {}}),
                       err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", metavar="URL", help="The master's API, e.g. http://master:5000 (else MIRRORSYNC_URL).")
@click.option("--token", metavar="TOKEN",
              help="API token (else MIRRORSYNC_TOKEN); prefer the variable or the config file, "
                   "which other users cannot see in the process list.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the API's JSON answer (one document) instead of text, and errors as one JSON line "
                   "on stderr. Accepted anywhere on the line.")
@click.version_option(version(), "--version", prog_name=PROG_NAME, message="%(prog)s %(version)s")
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


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell):
    """Print the shell completion script for SHELL (bash, zsh or fish).

    \b
    bash:  eval "$(mirrorctl completion bash)"       (in ~/.bashrc)
    zsh:   eval "$(mirrorctl completion zsh)"        (in ~/.zshrc)
    fish:  mirrorctl completion fish > ~/.config/fish/completions/mirrorctl.fish
    """
    click.echo(get_completion_class(shell)(cli, {}, PROG_NAME, COMPLETE_VAR).source())


for group in (projects, runs, slaves, status, completion):
    cli.add_command(group)


def main():
    """Console-script entry point; click exits quietly when the reader of a pipe goes away."""
    cli.main(prog_name=PROG_NAME, complete_var=COMPLETE_VAR)
