"""The master's REST API as Python calls; every refusal becomes one readable ApiError."""

import json
from urllib.parse import quote

from mirrorctl.config import DEFAULT_URL_SOURCE
from mirrorctl.errors import ApiError, MasterUnreachable
from mirrorctl.transport import ConnectionFailed

API = "/api/v1"
# Projects asked for per request when listing them all.
PROJECT_PAGE = 500


class MasterClient:
    """One master (``settings.url``, ``settings.token``) reached through ``transport.send``."""

    def __init__(self, settings, transport):
        self.settings = settings
        self.transport = transport

    # Projects

    def list_projects(self):
        """Every project, following the master's pages (X-Next-Cursor) to the last one."""
        projects, cursor = [], None
        while True:
            params = {"limit": PROJECT_PAGE} if cursor is None else {"limit": PROJECT_PAGE, "cursor": cursor}
            reply = self._send("GET", "/projects", params=params)
            projects += self._decode(reply, "/projects")
            cursor = reply.header("X-Next-Cursor")
            if not cursor:
                return projects

    def get_project(self, name):
        return self._json("GET", f"/projects/{_segment(name)}")

    def create_project(self, fields):
        return self._json("POST", "/projects", body=fields)

    def update_project(self, name, changes):
        return self._json("PATCH", f"/projects/{_segment(name)}", body=changes)

    def delete_project(self, name, force=False):
        self._send("DELETE", f"/projects/{_segment(name)}", params={"force": "true"} if force else None)

    def trigger_sync(self, name, force=False):
        params = {"force": "true"} if force else None
        return self._json("POST", f"/projects/{_segment(name)}/syncs", params=params)

    def list_runs(self, name, limit=None, before=None):
        params = {key: value for key, value in (("limit", limit), ("before", before)) if value is not None}
        return self._json("GET", f"/projects/{_segment(name)}/runs", params=params)

    # Runs

    def get_run(self, run_id):
        return self._json("GET", f"/runs/{_segment(run_id)}")

    def cancel_run(self, run_id):
        return self._json("POST", f"/runs/{_segment(run_id)}/cancel")

    def read_log(self, run_id, offset=0):
        """Return (bytes, next_offset) of the run's log from byte ``offset``."""
        reply = self._send("GET", f"/runs/{_segment(run_id)}/log", params={"offset": offset}, accept="text/plain")
        next_offset = reply.header("X-Next-Offset")
        return reply.body, int(next_offset) if next_offset and next_offset.isdigit() else offset + len(reply.body)

    # Slaves

    def list_slaves(self):
        return self._json("GET", "/slaves")

    def get_slave(self, name):
        return self._json("GET", f"/slaves/{_segment(name)}")

    def update_slave(self, name, changes):
        return self._json("PATCH", f"/slaves/{_segment(name)}", body=changes)

    def delete_slave(self, name):
        self._send("DELETE", f"/slaves/{_segment(name)}")

    # Public feed

    def status_feed(self):
        return self._json("GET", "/status")

    def _json(self, method, path, params=None, body=None):
        return self._decode(self._send(method, path, params=params, body=body), path)

    def _decode(self, reply, path):
        try:
            return json.loads(reply.body)
        except ValueError:
            raise ApiError(f"the master at {self.settings.url} answered {API}{path} with something that is "
                           f"not JSON; is {self.settings.url_source} the master's address?", reply.status) from None

    def _send(self, method, path, params=None, body=None, accept="application/json"):
        """Raises MasterUnreachable, or ApiError for any answer that is not 2xx."""
        headers = {"Accept": accept}
        if self.settings.token:
            headers["Authorization"] = f"Bearer {self.settings.token}"
        try:
            reply = self.transport.send(method, self.settings.url + API + path, headers, params=params, json=body)
        except ConnectionFailed as error:
            hint = "; set MIRRORSYNC_URL" if self.settings.url_source == DEFAULT_URL_SOURCE else ""
            raise MasterUnreachable(f"cannot reach the master at {self.settings.url}: {error}{hint}") from None
        if not 200 <= reply.status < 300:
            raise self._refusal(reply)
        return reply

    def _refusal(self, reply):
        try:
            body = json.loads(reply.body)
        except ValueError:
            body = None
        if not (isinstance(body, dict) and isinstance(body.get("message"), str)):
            if 300 <= reply.status < 400 and reply.header("Location"):
                return ApiError(f"the master at {self.settings.url} redirects to {reply.header('Location')}; "
                                f"point {self.settings.url_source} there", reply.status)
            snippet = " ".join(reply.body.decode("utf-8", "replace").split())[:120]
            return ApiError(f"the master at {self.settings.url} answered HTTP {reply.status}"
                            + (f": {snippet}" if snippet else ""), reply.status)
        code, fields = body.get("error", "error"), body.get("fields") or {}
        message = _clause(body["message"])
        if reply.status == 401:
            message = self._token_refused(message)
        elif reply.status == 403:
            message = f"not allowed: {message}"
        elif fields and reply.status in (400, 422):
            message = "; ".join(_field_problems(fields)) or message
        elif reply.status >= 500:
            message = f"the master failed (HTTP {reply.status}): {message}"
        return ApiError(message, reply.status, code, fields)

    def _token_refused(self, message):
        """Names where the token came from, so the user fixes the right one."""
        source = self.settings.token_source
        if not self.settings.token:
            where = f" or token = \"...\" in {self.settings.config_file}" if self.settings.config_file else ""
            return f"the master wants a token and none is set: pass --token, set MIRRORSYNC_TOKEN{where}"
        if source == "MIRRORSYNC_TOKEN":
            return (f"the token from the environment variable MIRRORSYNC_TOKEN was refused: {message}; "
                    "set it to a valid token")
        if source == "--token":
            return f"the token given with --token was refused: {message}"
        path = source.removeprefix("token in ")
        return (f"the token from {path} was refused: {message}; fix its 'token' there "
                "(MIRRORSYNC_TOKEN or --token would take precedence)")


def _segment(value):
    # The master validates names; quoting keeps a typo from reaching a different URL.
    return quote(str(value), safe="")


def _clause(sentence):
    """'There is no run 7.' -> 'there is no run 7', to follow 'Error: '."""
    sentence = sentence.strip().rstrip(".")
    first_word = sentence.split(" ", 1)[0]
    if first_word[:1].isupper() and (len(first_word) == 1 or first_word[1:].islower()):
        sentence = sentence[0].lower() + sentence[1:]  # but 'API ...' stays as it is
    return sentence


def _field_problems(fields, prefix=""):
    """Lines 'invalid upstream: ...'; list items nest as {"0": [...]} and read rsync_options[0]."""
    problems = []
    for key, value in fields.items():
        name = f"{prefix}[{key}]" if prefix and str(key).isdigit() else f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            problems += _field_problems(value, name)
            continue
        messages = value if isinstance(value, list) else [value]
        text = ", ".join(str(message).rstrip(".") for message in messages)
        problems.append(f"invalid request: {text}" if name in ("body", "json") else f"invalid {name}: {text}")
    return problems
