"""A small client for the mirror-sync master's REST API, shared by the example scripts.

It reads ``MIRRORSYNC_URL`` (default http://127.0.0.1:5000) and
``MIRRORSYNC_TOKEN`` from the environment. Every 4xx/5xx becomes an
``ApiError`` carrying the API's message and per-field messages; a master that
cannot be reached becomes ``MasterUnreachable``. ``run_reporting_errors``
turns both into one readable message on stderr and a non-zero exit code.
"""

import os
import sys
from urllib.parse import quote

import requests

DEFAULT_URL = "http://127.0.0.1:5000"
REQUEST_TIMEOUT = 30
FINAL_RUN_STATES = ("success", "partial", "failed", "interrupted", "cancelled")
GOOD_RUN_STATES = ("success", "partial")


class ApiError(Exception):
    """The master refused a request; ``message`` and ``fields`` come from its JSON error body."""

    def __init__(self, status, code, message, fields=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}

    def __str__(self):
        lines = [f"{self.message} (HTTP {self.status} {self.code})"]
        lines += [f"  {field}: {message}" for field, message in _flatten_fields(self.fields)]
        return "\n".join(lines)


def _flatten_fields(fields, prefix=""):
    """Yield (field, message) pairs; errors of list items nest as {"0": [...]}, shown as field[0]."""
    for key, value in sorted(fields.items(), key=lambda item: str(item[0])):
        name = f"{prefix}[{key}]" if prefix and str(key).isdigit() else f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            yield from _flatten_fields(value, name)
        elif isinstance(value, (list, tuple)):
            yield name, "; ".join(str(message) for message in value)
        else:
            yield name, str(value)


class MasterUnreachable(Exception):
    """No HTTP answer came back from the master at all."""


class MirrorSyncClient:
    """A requests session bound to one master URL and bearer token."""

    def __init__(self, url=None, token=None, timeout=REQUEST_TIMEOUT):
        self.url = (url or os.environ.get("MIRRORSYNC_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("MIRRORSYNC_TOKEN")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        if self.token:
            self.session.headers["Authorization"] = f"Bearer {self.token}"

    def request(self, method, path, **kwargs):
        """Send one request and return the response; raises ApiError or MasterUnreachable."""
        url = self.url + path
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.ConnectionError:
            raise MasterUnreachable(
                f"cannot reach the mirror-sync master at {self.url}: is it running? "
                "(set MIRRORSYNC_URL to point elsewhere)"
            ) from None
        except requests.Timeout:
            raise MasterUnreachable(
                f"the mirror-sync master at {self.url} did not answer within {self.timeout}s"
            ) from None
        if response.status_code >= 400:
            raise self._error_from(response)
        return response

    def _error_from(self, response):
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "message" in body:
            error = ApiError(response.status_code, body.get("error", "error"),
                             body["message"], body.get("fields"))
        else:
            snippet = " ".join(response.text.split())[:200]
            error = ApiError(response.status_code, "error",
                             f"{response.request.method} {response.url} failed: {snippet or response.reason}")
        if response.status_code == 401 and not self.token:
            error.message += " (set MIRRORSYNC_TOKEN to an API token)"
        return error

    def list_projects(self):
        """Every project: the master answers a page at a time and names the next in X-Next-Cursor."""
        projects, params = [], {"limit": 500}
        while True:
            response = self.request("GET", "/api/v1/projects", params=params)
            projects += response.json()
            cursor = response.headers.get("X-Next-Cursor")
            if not cursor:
                return projects
            params = {"limit": 500, "cursor": cursor}

    def get_project(self, name):
        return self.request("GET", f"/api/v1/projects/{_segment(name)}").json()

    def create_project(self, project):
        return self.request("POST", "/api/v1/projects", json=project).json()

    def update_project(self, name, changes):
        return self.request("PATCH", f"/api/v1/projects/{_segment(name)}", json=changes).json()

    def delete_project(self, name):
        self.request("DELETE", f"/api/v1/projects/{_segment(name)}")

    def trigger_sync(self, name):
        return self.request("POST", f"/api/v1/projects/{_segment(name)}/syncs").json()

    def project_runs(self, name, limit=None):
        params = {"limit": limit} if limit is not None else None
        return self.request("GET", f"/api/v1/projects/{_segment(name)}/runs", params=params).json()

    def get_run(self, run_id):
        return self.request("GET", f"/api/v1/runs/{_segment(run_id)}").json()

    def run_log(self, run_id):
        return self.request("GET", f"/api/v1/runs/{_segment(run_id)}/log",
                            headers={"Accept": "text/plain"}).text

    def run_log_from(self, run_id, offset):
        """The log's bytes from ``offset`` and the offset to ask for next (``X-Next-Offset``)."""
        response = self.request("GET", f"/api/v1/runs/{_segment(run_id)}/log", params={"offset": offset},
                                headers={"Accept": "text/plain"})
        return response.content, int(response.headers.get("X-Next-Offset", offset + len(response.content)))

    def list_slaves(self):
        return self.request("GET", "/api/v1/slaves").json()

    def update_slave(self, name, changes):
        return self.request("PATCH", f"/api/v1/slaves/{_segment(name)}", json=changes).json()

    def delete_slave(self, name):
        self.request("DELETE", f"/api/v1/slaves/{_segment(name)}")

    def status_feed(self):
        """The public feed; it needs no token."""
        return self.request("GET", "/api/v1/status").json()

    def list_tokens(self):
        return self.request("GET", "/api/v1/tokens").json()

    def create_token(self, token):
        return self.request("POST", "/api/v1/tokens", json=token).json()

    def revoke_token(self, token_id):
        return self.request("DELETE", f"/api/v1/tokens/{_segment(token_id)}").json()


def _segment(value):
    # A name is validated by the master; quoting keeps a typo from reaching another URL.
    return quote(str(value), safe="")


def run_reporting_errors(main):
    """Run ``main()`` and return its exit code; API and connection errors print one message and give 1."""
    try:
        return main() or 0
    except ApiError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except MasterUnreachable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
