"""The slave's enrolled identity in STATE_DIR/credentials.json, and how state files are written.

The identity is issued once by the master; a restart reads it back and never
registers again. Several gunicorn workers starting together enroll once: the
first takes a file lock, the others find the file when they get the lock.
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import secrets

from common.errors import ConfigError

CREDENTIALS_FILE = "credentials.json"
ENROLL_LOCK_FILE = "enroll.lock"
FIELDS = ("name", "signing_key", "rsync_user", "rsync_password", "master_url")


@dataclasses.dataclass(frozen=True)
class Credentials:
    name: str
    signing_key: str = dataclasses.field(repr=False)
    rsync_user: str
    rsync_password: str = dataclasses.field(repr=False)
    master_url: str

    @property
    def enrollment(self):
        """What tells this identity from any other the slave held before: a master rebuilt on a new
        database hands out run ids again, and only orders of the same enrollment compare by them."""
        return hashlib.sha256(b"mirror-sync enrollment\0" + self.signing_key.encode()).hexdigest()[:16]


def ensure_private_dir(path):
    """Create ``path`` (and parents) readable by this user only; an existing one is left as it is."""
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)


def write_json_atomically(path, data, mode=0o600):
    """Replace ``path`` with ``data`` as JSON so a reader sees the old file or the new one, never half.

    Raises OSError.
    """
    directory = os.path.dirname(path)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(data, stream, sort_keys=True)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def create_json_exclusively(path, data, mode=0o644):
    """Write ``path`` only if it does not exist yet; returns False when it did. Raises OSError.

    The file appears complete or not at all (written aside, then hard-linked into place),
    so two processes racing on the same name cannot both win.
    """
    directory = os.path.dirname(path)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(data, stream, sort_keys=True)
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    _fsync_directory(directory)
    return True


def read_json(path):
    """The JSON document in ``path``, or None when there is no such file. Raises ValueError, OSError."""
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except FileNotFoundError:
        return None


def _fsync_directory(directory):
    fd = os.open(directory or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CredentialStore:
    """Reads and writes the identity; safe to share between threads and processes."""

    def __init__(self, state_dir):
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, CREDENTIALS_FILE)
        self._lock_path = os.path.join(state_dir, ENROLL_LOCK_FILE)
        self._cached = None
        self._stamp = None

    def load(self):
        """The identity, or None before enrollment. Raises ConfigError when the file is unreadable.

        Another process may enroll again and replace the file: a changed file is read again.
        """
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._cached = None
            return None
        except OSError as error:
            raise ConfigError(f"STATE_DIR: cannot read {self.path} ({error.strerror})") from None
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if self._cached is not None and self._stamp == stamp:
            return self._cached
        try:
            data = read_json(self.path)
        except (OSError, ValueError) as error:
            raise ConfigError(f"STATE_DIR: cannot read {self.path} ({error}); "
                              "move it away to enroll this slave again") from None
        if data is None:
            return None
        self._stamp = stamp
        if not isinstance(data, dict) or any(not isinstance(data.get(f), str) or not data[f] for f in FIELDS):
            raise ConfigError(f"STATE_DIR: {self.path} is not a complete identity; "
                              "move it away to enroll this slave again")
        self._cached = Credentials(**{field: data[field] for field in FIELDS})
        return self._cached

    def save(self, credentials):
        """Write the identity, 0600. Raises OSError."""
        ensure_private_dir(self.state_dir)
        write_json_atomically(self.path, dataclasses.asdict(credentials), mode=0o600)
        self._cached = None  # read back, with the new file's stamp

    def forget(self, credentials):
        """Set ``credentials`` aside (credentials.json.forgotten) so the next enroll registers again.

        A file another process already replaced is left alone. Raises OSError.
        """
        with self._enrollment_lock():
            current = self.load()
            if current is not None and current.signing_key == credentials.signing_key:
                os.replace(self.path, f"{self.path}.forgotten")
            self._cached = None

    def enroll(self, register, master_url):
        """The identity, calling ``register()`` for one only if no process has enrolled yet.

        ``register()`` returns the master's credentials dict; whatever it raises passes through.
        """
        with self._enrollment_lock():
            existing = self.load()
            if existing is not None:
                return existing
            issued = register()
            credentials = Credentials(name=issued["name"], signing_key=issued["signing_key"],
                                      rsync_user=issued["rsync_user"],
                                      rsync_password=issued["rsync_password"], master_url=master_url)
            self.save(credentials)
            return credentials

    @contextlib.contextmanager
    def _enrollment_lock(self):
        ensure_private_dir(self.state_dir)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
