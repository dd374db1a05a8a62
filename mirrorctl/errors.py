"""The failures mirrorctl reports: each is one line on stderr and exit status 1, never a traceback."""

import click


class CliError(click.ClickException):
    """A failure the user can act on; click prints ``Error: <message>`` and exits 1."""

    exit_code = 1


class ConfigProblem(CliError):
    """The URL, token or config file cannot be used."""


class MasterUnreachable(CliError):
    """No HTTP answer came back from the master."""


class ApiError(CliError):
    """The master answered 4xx/5xx; ``status``, ``code`` and ``fields`` come from its JSON error body."""

    def __init__(self, message, status, code="error", fields=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.fields = fields or {}


class StoppedFollowing(CliError):
    """Ctrl-C while following a run; the run itself goes on."""

    exit_code = 130
