"""A throwaway PostgreSQL cluster on a free loopback port, for tests that prove PostgreSQL works.

``TemporaryPostgres.available()`` says why it cannot run (no server
installed) so callers can skip with that reason. As root, the server runs as
the ``postgres`` user, because PostgreSQL refuses to run as root.
"""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile

from tests.support.processes import free_port, wait_for


def _bindir():
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if candidates:
        return os.path.dirname(candidates[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


class TemporaryPostgres:
    def __init__(self):
        self.bindir = _bindir()
        self.port = free_port()
        self.root = None
        self.process = None

    @classmethod
    def available(cls):
        """None when a cluster can be made here, else the reason it cannot."""
        if _bindir() is None:
            return "PostgreSQL server is not installed (apt-get install postgresql)"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no 'postgres' user to run the server as"
        return None

    def _as_server_user(self, argv):
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    def url(self, database="mirrorsync"):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def __enter__(self):
        self.root = tempfile.mkdtemp(prefix="mirrorsync-pg-")
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        data = os.path.join(self.root, "data")
        subprocess.run(self._as_server_user([os.path.join(self.bindir, "initdb"), "-D", data, "-U", "postgres",
                                             "--auth=trust", "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True)
        self.log = open(os.path.join(self.root, "server.log"), "wb")
        self.process = subprocess.Popen(
            self._as_server_user([os.path.join(self.bindir, "postgres"), "-D", data, "-p", str(self.port),
                                  "-k", self.root, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                                  "-c", "max_connections=200"]),
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        createdb = self._as_server_user([os.path.join(self.bindir, "createdb"), "-h", "127.0.0.1",
                                         "-p", str(self.port), "-U", "postgres", "mirrorsync"])
        wait_for(lambda: subprocess.run(createdb, capture_output=True).returncode == 0, 30,
                 interval=0.1, message="the PostgreSQL server to accept connections")
        return self

    def __exit__(self, *exc_info):
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)
