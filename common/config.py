"""Load settings: defaults from settings.py, then MIRRORSYNC_* variables, then overrides.

Every value is parsed and checked here, so a bad one fails at start with a
ConfigError whose message is one line naming the setting.
"""

import os
import re
import socket
from urllib.parse import urlsplit

import settings as defaults
from common.errors import ConfigError

ENV_PREFIX = "MIRRORSYNC_"
ROLE_PORTS = {"master": 5000, "slave": 7000}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
HOST_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def _text(name, value):
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string")
    return value.strip()


def _optional_text(name, value):
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    return _text(name, value)


def _number(kind, low, high):
    def parse(name, value):
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a {kind.__name__}, got {value!r}") from None
        if not low <= number <= high:
            raise ConfigError(f"{name} must be between {low} and {high}, got {value!r}")
        return number
    return parse


def _optional(parse):
    def wrapped(name, value):
        return None if value in (None, "") else parse(name, value)
    return wrapped


def _url(name, value):
    value = _text(name, value)
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


MAX_SITE_NAME = 100
MAX_SITE_ABBR = 32


def _site_name(name, value):
    value = _text(name, value)
    if len(value) > MAX_SITE_NAME or not value.isprintable():
        raise ConfigError(f"{name} must be printable text of at most {MAX_SITE_NAME} characters")
    return value


def _site_abbr(name, value):
    value = _text(name, value)
    if len(value) > MAX_SITE_ABBR or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in value):
        raise ConfigError(f"{name} must be up to {MAX_SITE_ABBR} ASCII letters, digits, '-', '_' or '.', "
                          f"got {value!r}")
    return value


def _site_url(name, value):
    value = _url(name, value)
    parts = urlsplit(value)
    if not parts.hostname or parts.username or parts.password or parts.query or parts.fragment \
            or any(c.isspace() or c in "\"<>\\" for c in value):
        raise ConfigError(f"{name} must be a plain http(s)://host[:port][/path] URL, got {value!r}")
    return value


def _log_level(name, value):
    level = _text(name, value).upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{name} must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


def _one_of(*choices):
    def parse(name, value):
        word = _text(name, value).lower()
        if word not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return word
    return parse


def _directory(name, value):
    return os.path.abspath(_text(name, value))


def _optional_path(exists, kind):
    """A parser for an optional absolute path that must already be a ``kind``."""
    def parse(name, value):
        if value is None or value == "":
            return None
        path = os.path.abspath(_text(name, value))
        if not exists(path):
            raise ConfigError(f"{name} must name {kind}, got {value!r}")
        return path
    return parse


_optional_file = _optional_path(os.path.isfile, "a readable file")
_optional_directory = _optional_path(os.path.isdir, "an existing directory")


def _optional_host_name(name, value):
    """A host name as it goes into a trace file name and a _hierarchy line."""
    value = _optional_text(name, value)
    if value is not None and not HOST_NAME.match(value):
        raise ConfigError(f"{name} must be a host name (letters, digits, '.', '-'), got {value!r}")
    if value is not None and value.lower() == "master":
        raise ConfigError(f"{name} must not be 'master': project/trace/master is upstream's trace")
    return value


def _optional_line(name, value):
    value = _optional_text(name, value)
    if value is not None and (len(value) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in value)):
        raise ConfigError(f"{name} must be one line of at most 200 characters")
    return value


TRUE_WORDS = ("1", "true", "yes")
FALSE_WORDS = ("0", "false", "no")


def _boolean(name, value):
    """A bool as given by overrides, or one of 1/0/true/false/yes/no from the environment."""
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else None
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be one of {'/'.join(TRUE_WORDS + FALSE_WORDS)}, got {value!r}")


def _database_url(name, value):
    if value is None or value == "":
        return None
    value = _text(name, value)
    if not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://", "postgres://")):
        raise ConfigError(f"{name} must be a sqlite:// or postgresql:// URL")
    if value.startswith("postgres://"):
        value = "postgresql://" + value[len("postgres://"):]
    return value


PARSERS = {
    "API_HOST": _text,
    "API_PORT": _optional(_number(int, 1, 65535)),
    "JOIN_TOKEN": _optional_text,
    "INSECURE_ENROLLMENT": _boolean,
    "MAX_SLAVES": _number(int, 1, 100000),
    "LOG_LEVEL": _log_level,
    "RSYNC_BINARY": _text,
    "DATA_DIR": _directory,
    "DATABASE_URL": _database_url,
    "ADMIN_TOKEN": _optional_text,
    "RSYNCD_PORT": _number(int, 1, 65535),
    "RSYNCD_ADDRESS": _text,
    "RSYNCD_BIND": _optional_text,
    "RSYNCD_MAX_CONNECTIONS": _number(int, 0, 100000),
    "SIGNATURE_MAX_AGE": _number(int, 10, 86400),
    "CA_BUNDLE": _optional_file,
    "TLS_CERT_FILE": _optional_file,
    "TLS_KEY_FILE": _optional_file,
    "HEARTBEAT_TIMEOUT": _number(float, 0.1, 86400),
    "DISPATCH_WORKERS": _number(int, 1, 512),
    "DISPATCH_TIMEOUT": _number(float, 0.1, 300),
    "SLAVE_GRACE": _number(float, 0, 86400),
    "SLAVE_START_TIMEOUT": _number(float, 0.1, 86400),
    "CATCHUP_INTERVAL": _number(float, 0.05, 3600),
    "HEARTBEAT_INTERVAL": _number(float, 0.05, 3600),
    "VERIFY_INTERVAL": _number(float, 0, 30 * 86400),
    "REPAIR_DELAY": _number(float, 0, 86400),
    "FILELIST_FULL_INTERVAL": _number(float, 0, 365 * 86400),
    "SNAPSHOT_METHOD": _one_of("auto", "btrfs", "hardlinks"),
    "UPSTREAM_DELETIONS": _one_of("rsync", "listed"),
    "REPORT_RETRY_MAX": _number(float, 0.05, 3600),
    "PROGRESS_INTERVAL": _number(float, 0.1, 3600),
    "MAX_CONCURRENT_SYNCS": _number(int, 1, 256),
    "POLL_INTERVAL": _number(float, 0.01, 60),
    "RECONCILE_INTERVAL": _number(float, 0.05, 600),
    "LOG_RETENTION": _number(int, 1, 100000),
    "DEFAULT_TIMEOUT": _number(int, 1, 30 * 86400),
    "RETRY_BASE_DELAY": _number(float, 0, 86400),
    "RETRY_MAX_DELAY": _number(float, 0, 7 * 86400),
    "MAX_CONTENT_LENGTH": _number(int, 1024, 64 * 1024 * 1024),
    "STATUS_PUBLIC": _boolean,
    "SITE_URL": _optional(_site_url),
    "SITE_NAME": _optional(_site_name),
    "SITE_ABBR": _optional(_site_abbr),
    "MIRROR_NAME": _optional_host_name,
    "PUBLIC_NAME": _optional_host_name,
    "TRACE_MAINTAINER": _optional_line,
    "TRACE_SPONSOR": _optional_line,
    "TRACE_COUNTRY": _optional_line,
    "TRACE_LOCATION": _optional_line,
    "TRACE_THROUGHPUT": _optional_line,
    "HOOKS_DIR": _optional_directory,
    "HOOK_TIMEOUT": _number(float, 1, 86400),
    "SYNC_SCRIPTS_DIR": _optional_directory,
    "AUTH_FAILURE_LIMIT": _number(int, 1, 1000000),
    "AUTH_FAILURE_WINDOW": _number(float, 1, 86400),
    "TRUSTED_PROXIES": _number(int, 0, 10),
    "MASTER_URL": _url,
    "SLAVE_NAME": _optional_text,
    "SLAVE_URL": _optional(_url),
    "PUBLIC_DIR": _directory,
    "STATE_DIR": _directory,
    "STATUS_PAGE": _boolean,
    "WATCH_TREES": _boolean,
}


def load_settings(role, overrides=None, environ=None):
    """Return the checked settings dict for ``role`` ("master" or "slave").

    Raises ConfigError naming the first bad setting.
    """
    environ = os.environ if environ is None else environ
    overrides = overrides or {}
    values = {}
    for name, parse in PARSERS.items():
        raw = getattr(defaults, name)
        if ENV_PREFIX + name in environ:
            raw = environ[ENV_PREFIX + name]
        if name in overrides:
            raw = overrides[name]
        values[name] = parse(name, raw)
    if bool(values["TLS_CERT_FILE"]) != bool(values["TLS_KEY_FILE"]):
        raise ConfigError("TLS_CERT_FILE and TLS_KEY_FILE must be set together")
    if values["API_PORT"] is None:
        values["API_PORT"] = ROLE_PORTS[role]
    if role == "master":
        values["MIRROR_NAME"] = values["MIRROR_NAME"] or socket.getfqdn()
    if role == "slave":
        values["SLAVE_NAME"] = values["SLAVE_NAME"] or socket.gethostname()
        values["PUBLIC_NAME"] = values["PUBLIC_NAME"] or values["SLAVE_NAME"]
        scheme = "https" if values["TLS_CERT_FILE"] else "http"
        values["SLAVE_URL"] = values["SLAVE_URL"] or f"{scheme}://{values['API_HOST']}:{values['API_PORT']}"
    # Objects that are not settings (fakes for seams) pass through untouched.
    for name, value in overrides.items():
        if name not in PARSERS:
            values[name] = value
    return values


def tls_verify(settings):
    """What requests' ``verify`` should be: the configured CA bundle, or the system's CAs."""
    return settings["CA_BUNDLE"] or True


def tls_context(settings):
    """The (cert, key) pair for werkzeug's built-in server, or None for plain HTTP."""
    if settings["TLS_CERT_FILE"]:
        return settings["TLS_CERT_FILE"], settings["TLS_KEY_FILE"]
    return None
