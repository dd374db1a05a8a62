"""Validators for names, rsync URLs, rsync options and patterns.

Each raises marshmallow.ValidationError with a sentence a user can act on.
They refuse anything that could become an rsync flag, a shell word, a
``host::module`` form or a path outside its root.
"""

import ipaddress
import re
import urllib.parse

from marshmallow import ValidationError

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
RSYNC_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                         r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
MODULE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
# Path segments below the module: printable, no control characters or backslashes.
PATH_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._+~@=,%-]{1,255}$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _ascii_printable(value, what):
    if CONTROL_RE.search(value):
        raise ValidationError(f"{what} must not contain control characters (NUL, newline, tab...).")
    if not value.isascii():
        raise ValidationError(f"{what} must be ASCII; look-alike characters are refused.")


def validate_slug(value):
    """A project name: lower-case letters, digits, '.', '_' and '-', starting with a letter or digit."""
    _ascii_printable(value, "A name")
    if not SLUG_RE.match(value) or ".." in value:
        raise ValidationError(
            "Must be 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit.")


# Names the rsync daemon reads as something other than a module: "[global]" is its
# section of global parameters, so a project of that name could never be pulled.
RESERVED_PROJECT_NAMES = frozenset({"global"})


def validate_project_name(value):
    """A slug that is also a module name the rsync daemon serves."""
    validate_slug(value)
    if value.lower() in RESERVED_PROJECT_NAMES:
        raise ValidationError(f"{value!r} is reserved by the rsync daemon; choose another name.")


def validate_host(host):
    if host.startswith("[") and host.endswith("]"):
        try:
            if "%" in host:  # zone ids take any text; a mirror never needs one
                raise ValueError
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValidationError(f"{host!r} is not a valid IPv6 address.") from None
        return
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValidationError(f"{host!r} is not a valid IPv4 address.") from None
        return
    if not HOSTNAME_RE.match(host):
        raise ValidationError(f"{host!r} is not a valid host name or IPv4 address.")


def parse_rsync_url(value):
    """Split ``rsync://[user@]host[:port]/module[/path]`` into its parts, checking each.

    Returns a dict with user, host, port, module and path.
    """
    _ascii_printable(value, "The upstream")
    if len(value) > 1024:
        raise ValidationError("The upstream URL is longer than 1024 characters.")
    if not value.startswith("rsync://"):
        raise ValidationError("Must be an rsync:// URL: rsync://[user@]host[:port]/module[/path].")
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError as error:
        raise ValidationError(f"Not a valid URL: {error}.") from None
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValidationError("An rsync URL has no query or fragment.")
    netloc = parts.netloc
    user = None
    if "@" in netloc:
        user, _, netloc = netloc.rpartition("@")
        if ":" in user:
            raise ValidationError("Put the password in upstream_password, never in the URL.")
        if not RSYNC_USER_RE.match(user):
            raise ValidationError(f"{user!r} is not a valid rsync user name.")
    host, port = netloc, None
    match = re.match(r"^(\[[^\]]*\]|[^:]*)(?::(\d{1,5}))?$", netloc)
    if not match:
        raise ValidationError(f"{netloc!r} is not host[:port].")
    host, port = match.group(1), match.group(2)
    if not host:
        raise ValidationError("The upstream URL has no host.")
    validate_host(host)
    if port is not None:
        port = int(port)
        if not 1 <= port <= 65535:
            raise ValidationError("The port must be between 1 and 65535.")
    segments = [s for s in parts.path.split("/") if s != ""]
    if not segments:
        raise ValidationError("The upstream URL names no module: rsync://host/module[/path].")
    module, path = segments[0], segments[1:]
    if not MODULE_RE.match(module):
        raise ValidationError(f"{module!r} is not a valid rsync module name.")
    for segment in path:
        if segment in (".", ".."):
            raise ValidationError("The upstream path must not contain '.' or '..' segments.")
        if not PATH_SEGMENT_RE.match(segment) or segment.startswith("-"):
            raise ValidationError(f"The upstream path segment {segment!r} has characters that are not allowed.")
    return {"user": user, "host": host, "port": port, "module": module, "path": "/".join(path)}


def validate_rsync_url(value):
    parse_rsync_url(value)


# Upstreams a sync script (method: command) may name besides rsync:// ones.
SCRIPT_URL_SCHEMES = ("http", "https", "ftp", "git", "ssh")


def validate_upstream_url(value):
    """An rsync:// URL, or for a sync script an http(s)/ftp/git/ssh URL of a valid host, without a password."""
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme == "rsync" or scheme not in SCRIPT_URL_SCHEMES:
        parse_rsync_url(value)
        return
    _ascii_printable(value, "The upstream")
    if len(value) > 1024 or " " in value:
        raise ValidationError("The upstream URL must be at most 1024 characters, without spaces.")
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as error:
        raise ValidationError(f"Not a valid URL: {error}.") from None
    if parts.password is not None:
        raise ValidationError("Put the password in upstream_password, never in the URL.")
    if not parts.hostname:
        raise ValidationError("The upstream URL has no host.")
    validate_host(f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname)


def is_rsync_url(value):
    return value.lower().startswith("rsync://")


def upstream_host(value):
    """The host part of an upstream URL, as trace files name the upstream mirror."""
    try:
        return urllib.parse.urlsplit(value).hostname or value
    except ValueError:
        return value


def public_rsync_url(value):
    """The upstream URL without its user part, for the public status feed."""
    if not is_rsync_url(value):
        parts = urllib.parse.urlsplit(value)
        host = parts.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
    parts = parse_rsync_url(value)
    port = f":{parts['port']}" if parts["port"] else ""
    path = f"/{parts['path']}" if parts["path"] else ""
    return f"rsync://{parts['host']}{port}/{parts['module']}{path}"


def validate_pattern(value):
    """An exclude/include pattern: one line of printable text, not starting with '-'."""
    _ascii_printable(value, "A pattern")
    if not value or len(value) > 255:
        raise ValidationError("A pattern must be 1-255 characters long.")
    if value.startswith(("-", "+")):
        raise ValidationError("A pattern must not start with '-' or '+' (it could be read as a flag or rule).")


def validate_secret(value):
    if CONTROL_RE.search(value):
        raise ValidationError("Must not contain control characters (NUL, newline...).")
    if not 1 <= len(value) <= 256:
        raise ValidationError("Must be 1-256 characters long.")


# --- rsync options -------------------------------------------------------

_SIZE = re.compile(r"^\d{1,12}(?:\.\d{1,3})?[KMGTkmgt]?[Bb]?$")
_COUNT = re.compile(r"^\d{1,9}$")
_CHMOD = re.compile(r"^(?:[DF]?[ugoa]*[-+=][rwxXst]*|[DF]?[0-7]{3,4})(?:,(?:[DF]?[ugoa]*[-+=][rwxXst]*|[DF]?[0-7]{3,4}))*$")

# Flags a mirror admin tunes and that name neither a program nor a file.
ALLOWED_FLAGS = frozenset({
    "-4", "-6", "--ipv4", "--ipv6", "--no-motd", "-c", "--checksum", "--size-only",
    "--ignore-times", "--delete-excluded", "--delete-before", "--delete-during",
    "--delete-delay", "--delete-after", "--ignore-errors", "--force", "-m",
    "--prune-empty-dirs", "-z", "--compress", "--no-compress", "--sparse", "--omit-dir-times",
    "--omit-link-times", "--no-perms", "--no-owner", "--no-group", "--no-times",
    "--copy-unsafe-links", "--ignore-existing", "--existing", "--update", "-u", "--fuzzy",
    "--partial", "-v", "--verbose", "-q", "--quiet", "--itemize-changes", "-i",
    "--no-hard-links", "--no-delete", "--no-iconv", "--no-whole-file", "--whole-file", "-W",
    "--mkpath", "--old-args", "--inc-recursive", "--no-inc-recursive",
})
# Options taking a value, with the shape the value must have.
VALUED_OPTIONS = {
    "--bwlimit": _SIZE,
    "--timeout": _COUNT,
    "--contimeout": _COUNT,
    "--max-delete": _COUNT,
    "--max-size": _SIZE,
    "--min-size": _SIZE,
    "--modify-window": _COUNT,
    "--chmod": _CHMOD,
    "--exclude": None,   # checked with validate_pattern
    "--include": None,
    "--block-size": _COUNT,
}
# Refused with a reason: each runs a program, reads or writes a file on the
# master, or changes where files land.
REFUSED_OPTIONS = {
    "-e": "names a program to run", "--rsh": "names a program to run",
    "--rsync-path": "names a program to run", "--password-file": "reads a file on the master",
    "--log-file": "writes a file on the master", "--log-file-format": "shapes the master's log file",
    "--files-from": "reads a file on the master", "--include-from": "reads a file on the master",
    "--exclude-from": "reads a file on the master", "--filter": "can read merge files on the master",
    "-f": "can read merge files on the master", "-F": "can read merge files on the master",
    "--write-batch": "writes a file on the master", "--only-write-batch": "writes a file on the master",
    "--read-batch": "reads a file on the master", "--config": "reads a file on the master",
    "--temp-dir": "writes outside the project's tree", "-T": "writes outside the project's tree",
    "--backup-dir": "writes outside the project's tree", "--partial-dir": "writes outside the project's tree",
    "--compare-dest": "reads outside the project's tree", "--copy-dest": "reads outside the project's tree",
    "--link-dest": "reads outside the project's tree", "--daemon": "starts a daemon",
    "--server": "is internal to rsync", "--sender": "is internal to rsync",
    "--remove-source-files": "changes the upstream", "--port": "belongs in the upstream URL",
    "--sockopts": "is not tunable here", "--outbuf": "is not tunable here",
    "--info": "would break progress and stats parsing", "--debug": "floods the run log",
    "-h": "would break stats parsing", "--human-readable": "would break stats parsing",
    "--out-format": "would break output parsing", "--log-format": "would break output parsing",
    "--stop-after": "is not tunable here", "--stop-at": "is not tunable here",
    "--iconv": "is not tunable here", "--usermap": "is not tunable here", "--groupmap": "is not tunable here",
    "--chown": "is not tunable here", "--copy-links": "would follow links out of the upstream tree",
    "-L": "would follow links out of the upstream tree", "--copy-dirlinks": "would follow links out of the tree",
    "-k": "would follow links out of the tree", "--keep-dirlinks": "would follow links out of the tree",
    "-K": "would follow links out of the tree", "--munge-links": "is not tunable here",
    "--no-delay-updates": "is managed by mirror-sync", "--delay-updates": "is already on",
    "--inplace": "conflicts with --delay-updates", "--append": "conflicts with --delay-updates",
    "--append-verify": "conflicts with --delay-updates",
    "--trust-sender": "turns off rsync's checks of what the upstream sends",
    "--super": "is not tunable here", "--fake-super": "is not tunable here",
}


MAX_DESCRIPTION = 200
MAX_HELP_URL = 512
MAX_PUBLIC_PATH = 256
# Segments never start with a dot (no "..", no hidden directories); "//" would leave the site.
PUBLIC_PATH_RE = re.compile(r"^/(?:[A-Za-z0-9_~+-][A-Za-z0-9._~+-]*(?:/[A-Za-z0-9_~+-][A-Za-z0-9._~+-]*)*/?)?$")
# RFC 3986's characters for a path, query and fragment, without quotes that could end an attribute.
URL_REST_RE = re.compile(r"^[A-Za-z0-9._~!$&()*+,;=:@%/?#-]*$")


def validate_description(value):
    """A short text for visitors: one line of printable characters in any script."""
    if not value.strip() or value != value.strip():
        raise ValidationError("Must be text without leading or trailing spaces; use null to clear it.")
    if len(value) > MAX_DESCRIPTION:
        raise ValidationError(f"Must be at most {MAX_DESCRIPTION} characters long.")
    if not value.isprintable():
        raise ValidationError("Must be one line of printable characters (no control or formatting characters).")


def validate_help_url(value):
    """An http(s) URL of a page for visitors: a real host, no user or password, nothing that breaks out."""
    message = "Must be an http:// or https:// URL such as https://mirrors.example.org/help/debian/."
    _ascii_printable(value, "A URL")
    if len(value) > MAX_HELP_URL:
        raise ValidationError(f"Must be at most {MAX_HELP_URL} characters long.")
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValidationError(message) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise ValidationError(message)
    if port is not None and not 1 <= port <= 65535:
        raise ValidationError("The port must be between 1 and 65535.")
    host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    validate_host(host)
    if not URL_REST_RE.match(value[len(parts.scheme) + 3 + len(parts.netloc):]):
        raise ValidationError(message)


def validate_public_path(value):
    """Where a project's files are on the site: '/debian', '/pub/debian/'; no '..', no other host."""
    _ascii_printable(value, "A path")
    if len(value) > MAX_PUBLIC_PATH or not PUBLIC_PATH_RE.match(value):
        raise ValidationError("Must be a path starting with '/', such as /debian/, made of letters, digits "
                              "and '.', '_', '~', '+', '-', with no segment starting with '.'.")


def _refuse_spaced_option(value):
    """'--bwlimit 1000' is one shell word with a space where '=' belongs: say what was meant."""
    name, _, rest = value.partition(" ")
    rest = rest.strip()
    if name in VALUED_OPTIONS and rest and not rest.startswith("-"):
        raise ValidationError(f"{value!r} has a space where '=' belongs; did you mean {name}={rest}?")
    if not rest:
        raise ValidationError(f"{value!r} ends in a space; rsync options have none.")
    raise ValidationError(f"{value!r} is more than one option; give each option as its own item, "
                          "with values after '=' (--bwlimit=1000).")


def validate_rsync_option(value):
    """One rsync option: a listed flag, or ``--name=value`` with a checked value."""
    _ascii_printable(value, "An rsync option")
    if len(value) > 300:
        raise ValidationError("An rsync option must be at most 300 characters long.")
    if not value.startswith("-"):
        raise ValidationError(f"{value!r} is not an rsync option (options start with '-').")
    name, has_value, argument = value.partition("=")
    if " " in name:
        _refuse_spaced_option(value)
    if name in REFUSED_OPTIONS:
        raise ValidationError(f"{name} is refused: it {REFUSED_OPTIONS[name]}.")
    if not has_value:
        if name in VALUED_OPTIONS:
            raise ValidationError(f"{name} needs a value, written as {name}=VALUE in one item.")
        if name not in ALLOWED_FLAGS:
            raise ValidationError(f"{name} is not an allowed rsync option.")
        return
    if name not in VALUED_OPTIONS:
        if name in ALLOWED_FLAGS:
            raise ValidationError(f"{name} takes no value.")
        raise ValidationError(f"{name} is not an allowed rsync option.")
    shape = VALUED_OPTIONS[name]
    if shape is None:
        validate_pattern(argument)
    elif not shape.match(argument):
        raise ValidationError(f"{argument!r} is not a valid value for {name}.")


EXECUTABLE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}$")


def validate_executable_name(value):
    """The bare name of an executable in a configured directory: no '/', never a path."""
    _ascii_printable(value, "A name")
    if "/" in value:
        raise ValidationError("Give the bare name of an executable in its directory, not a path ('/').")
    if not EXECUTABLE_NAME_RE.match(value):
        raise ValidationError("Must be 1-128 letters, digits, '.', '_', '+' or '-', not starting with '.' or '-'.")


def validate_argument(value):
    """One argument of a sync script: printable text; it never meets a shell."""
    if CONTROL_RE.search(value):
        raise ValidationError("An argument must not contain control characters (NUL, newline...).")
    if len(value) > 1024:
        raise ValidationError("An argument must be at most 1024 characters long.")


def validate_relative_path(value):
    """A path inside the upstream tree, such as ``project/trace/master``."""
    _ascii_printable(value, "A path")
    segments = value.split("/")
    if not value or len(value) > 255 or value.startswith("/") or "" in segments:
        raise ValidationError("Must be a relative path such as 'lastupdate' or 'project/trace/master'.")
    for segment in segments:
        if segment in (".", "..") or segment.startswith("-") or not PATH_SEGMENT_RE.match(segment):
            raise ValidationError(f"The path segment {segment!r} is not allowed.")


def validate_push_token(value):
    """A push token: 16-256 printable ASCII characters without spaces (it travels in a header)."""
    _ascii_printable(value, "A push token")
    if not 16 <= len(value) <= 256 or " " in value:
        raise ValidationError("A push token must be 16-256 printable ASCII characters without spaces.")
