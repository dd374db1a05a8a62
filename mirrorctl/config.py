"""Where mirrorctl finds the master and its token.

Each of ``url`` and ``token`` comes from the first place that sets it:
``--url``/``--token``, then ``MIRRORSYNC_URL``/``MIRRORSYNC_TOKEN``, then the
TOML file named by ``MIRRORSYNC_CONFIG`` (default
``$XDG_CONFIG_HOME/mirrorctl.toml``, i.e. ``~/.config/mirrorctl.toml``).
"""

import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from mirrorctl.errors import ConfigProblem

DEFAULT_URL = "http://127.0.0.1:5000"
CONFIG_KEYS = ("url", "token")
CONFIG_FILE_NAME = "mirrorctl.toml"
DEFAULT_URL_SOURCE = "the default URL"


@dataclass(frozen=True)
class Settings:
    """The master to talk to; ``*_source`` says where each value came from, for error messages."""

    url: str
    url_source: str
    token: str | None
    token_source: str | None
    config_file: str | None = None  # the config file mirrorctl read or would read


def config_path(environ):
    """Return (path, named): the config file, and whether MIRRORSYNC_CONFIG named it."""
    named = environ.get("MIRRORSYNC_CONFIG")
    if named:
        return Path(named).expanduser(), True
    config_home = environ.get("XDG_CONFIG_HOME") or Path(environ.get("HOME") or "~").expanduser() / ".config"
    return Path(config_home) / CONFIG_FILE_NAME, False


def read_config_file(path, named, warn):
    """The file's keys as a dict ({} when the default file does not exist); raises ConfigProblem.

    ``warn`` gets one line when other users may read the file (it holds a token).
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if named:
            raise ConfigProblem(f"MIRRORSYNC_CONFIG names {path}, which does not exist") from None
        return {}
    except OSError as error:
        raise ConfigProblem(f"cannot read {path}: {error.strerror}") from None
    if stat.S_ISREG(mode) and mode & 0o077:
        warn(f"{path} can be read by other users (mode {stat.S_IMODE(mode):04o}); "
             f"it holds a token, so run: chmod 600 {path}")
    try:
        with open(path, "rb") as config_file:
            values = tomllib.load(config_file)
    except tomllib.TOMLDecodeError as error:
        raise ConfigProblem(f"{path} is not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigProblem(f"cannot read {path}: {error.strerror}") from None
    for key, value in values.items():
        if key not in CONFIG_KEYS:
            raise ConfigProblem(f"{path}: unknown key {key!r}; mirrorctl reads only 'url' and 'token'")
        if not isinstance(value, str):
            raise ConfigProblem(f"{path}: {key!r} must be a string")
    return values


def load_settings(url_option, token_option, environ, warn):
    """Settings from options, environment and config file, in that order; raises ConfigProblem."""
    path, named = config_path(environ)
    from_file = read_config_file(path, named, warn)
    url, url_source = _first((url_option, "--url"), (environ.get("MIRRORSYNC_URL"), "MIRRORSYNC_URL"),
                             (from_file.get("url"), f"url in {path}"), (DEFAULT_URL, DEFAULT_URL_SOURCE))
    token, token_source = _first((token_option, "--token"), (environ.get("MIRRORSYNC_TOKEN"), "MIRRORSYNC_TOKEN"),
                                 (from_file.get("token"), f"token in {path}"), (None, None))
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigProblem(f"{url_source} is not an http:// or https:// URL: {url!r}")
    return Settings(url=url.rstrip("/"), url_source=url_source, token=token, token_source=token_source,
                    config_file=str(path))


def _first(*candidates):
    # An empty value (MIRRORSYNC_TOKEN=) counts as unset, so it never hides the config file.
    for value, source in candidates:
        if value:
            return value.strip(), source
    return candidates[-1]
