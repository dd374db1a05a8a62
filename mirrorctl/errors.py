"""The failures mirrorctl reports: each is one line on stderr and exit status 1, never a traceback."""

import click


class CliError(click.ClickException):
    """A failure the user can act on; click prints ``Error: <message>`` and exits 1."""

    exit_code = 1
    code = "error"


class ConfigProblem(CliError):
    """The URL, token or config file cannot be used."""

    code = "config_problem"


class MasterUnreachable(CliError):
    """No HTTP answer came back from the master."""

    code = "master_unreachable"


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
    code = "stopped_following"


def error_document(error):
    """What ``--json`` prints for a failure: the API's error shape, plus the HTTP status when there was one."""
    if isinstance(error, click.UsageError):
        code = "usage_error"
    else:
        code = getattr(error, "code", "error")
    return {"error": code, "message": error.format_message(), "status": getattr(error, "status", None),
            "fields": getattr(error, "fields", {}), "exit_code": error.exit_code}
