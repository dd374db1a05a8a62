"""What every command gets: the master client (built on first use) and the output mode."""

import json
import os
import time

import click

from common.texts import printable_lines
from mirrorctl.client import MasterClient
from mirrorctl.config import load_settings
from mirrorctl.transport import RequestsTransport
from mirrorctl.units import utc_now


def warn(message):
    click.echo(f"Warning: {message}", err=True)


class Ctl:
    """What the root command's options chose; ``client`` reads the configuration on first use.

    ``transport``, ``now`` and ``sleep`` are the seams tests replace (HTTP, the clock, polling waits).
    """

    def __init__(self, transport=None, now=utc_now, sleep=time.sleep):
        self.transport = transport
        self.now = now
        self.sleep = sleep
        self.url = None
        self.token = None
        self.as_json = False
        self._client = None

    @property
    def client(self):
        """Raises ConfigProblem when the URL or config file cannot be used."""
        if self._client is None:
            settings = load_settings(self.url, self.token, os.environ, warn)
            self._client = MasterClient(settings, self.transport or RequestsTransport())
        return self._client

    def emit(self, document, human):
        """Print ``document`` as JSON with --json, else ``human(document, now)``."""
        if self.as_json:
            click.echo(json.dumps(document, indent=2))
        else:
            # Texts from the master (slaves' errors, rsync's) never reach the terminal raw.
            click.echo(printable_lines(human(document, self.now())))


pass_ctl = click.make_pass_decorator(Ctl)
