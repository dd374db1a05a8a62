"""A Debian-style archive built with the real tools, and a real apt client pointed at a mirror of it.

``DebianArchive`` builds packages with ``dpkg-deb`` and indices with
``apt-ftparchive``, published the way the Debian archive is: by-hash copies
of the indices (``Acquire-By-Hash: yes``), and the pool files and by-hash
files of the previous version kept, so a client holding the previous index
still finds what it names. ``AptClient`` runs ``apt-get update`` and
``apt-get download`` with a private configuration, as root, against an
http:// URL. ``ensure_debian_tools()`` installs apt-utils when missing.
"""

import concurrent.futures
import gzip
import hashlib
import os
import random
import shutil
import subprocess

SUITE, COMPONENT, ARCH = "stable", "main", "amd64"
INDEX_DIR = f"dists/{SUITE}/{COMPONENT}/binary-{ARCH}"
BASE_MTIME = 1_700_000_000


def ensure_debian_tools():
    """Install apt-utils (apt-ftparchive) with apt-get when it is missing; returns what is still missing."""
    if shutil.which("apt-ftparchive") is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-q", "apt-utils"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600, check=False)
    return [tool for tool in ("dpkg-deb", "apt-ftparchive", "apt-get") if shutil.which(tool) is None]


class DebianArchive:
    """``packages`` packages in ``root``; ``publish(version, changed)`` rebuilds ``changed`` of them."""

    def __init__(self, root, packages=60, payload=48 * 1024, work=None):
        self.root = os.fspath(root)
        self.names = [f"pkg{number:03d}" for number in range(packages)]
        self.payload = payload
        self.work = os.fspath(work or os.path.join(os.path.dirname(self.root), "deb-build"))
        self.current = {}        # package -> version in the newest index
        self.kept = set()        # pool and by-hash paths the previous index named
        self.version = 0

    def publish(self, version, changed=None):
        """Index ``version``: ``changed`` packages (all of them the first time) get a new build."""
        changed = list(self.names if not self.current else changed)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda name: self._build(name, version), changed))
        for name in changed:
            self.current[name] = version
        previous = self.kept
        named = {self.pool_path(name, built) for name, built in self.current.items()}
        by_hash = self._write_indices(version)
        for path in self._files("pool") | self._files(f"{INDEX_DIR}/by-hash"):
            if path not in named | previous | by_hash:
                os.unlink(os.path.join(self.root, path))
        self.kept = named | by_hash
        self.version = version

    def pool_path(self, name, version):
        return f"pool/{COMPONENT}/{name[0]}/{name}/{name}_{version}_{ARCH}.deb"

    def _build(self, name, version):
        package = os.path.join(self.work, f"{name}_{version}")
        os.makedirs(os.path.join(package, "DEBIAN"), exist_ok=True)
        os.makedirs(os.path.join(package, "usr/share", name), exist_ok=True)
        with open(os.path.join(package, "DEBIAN/control"), "w") as control:
            control.write(f"Package: {name}\nVersion: {version}\nArchitecture: {ARCH}\n"
                          f"Maintainer: Mirror Test <test@example.org>\nDescription: test package {name}\n")
        with open(os.path.join(package, "usr/share", name, "data"), "wb") as data:
            data.write(random.Random(f"{name}-{version}").randbytes(self.payload))
        target = os.path.join(self.root, self.pool_path(name, version))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        subprocess.run(["dpkg-deb", "--build", "--root-owner-group", "-Znone", package, target],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        shutil.rmtree(package)
        os.utime(target, (BASE_MTIME + version, BASE_MTIME + version))

    def _write_indices(self, version):
        mtime = BASE_MTIME + version
        packages = subprocess.run(["apt-ftparchive", "packages", "pool"], cwd=self.root, check=True,
                                  capture_output=True).stdout
        # Only the newest build of each package goes in the index, as in the real archive.
        stanzas = [s for s in packages.split(b"\n\n") if s.strip()]
        wanted = {self.pool_path(name, built).encode() for name, built in self.current.items()}
        packages = b"\n\n".join(s for s in stanzas
                                if any(line.split(b": ", 1)[-1] in wanted
                                       for line in s.splitlines() if line.startswith(b"Filename: "))) + b"\n"
        index_dir = os.path.join(self.root, INDEX_DIR)
        os.makedirs(os.path.join(index_dir, "by-hash", "SHA256"), exist_ok=True)
        compressed = gzip.compress(packages, mtime=0)
        by_hash = set()
        for name, data in (("Packages", packages), ("Packages.gz", compressed)):
            digest = hashlib.sha256(data).hexdigest()
            hashed = f"{INDEX_DIR}/by-hash/SHA256/{digest}"
            _write(os.path.join(self.root, hashed), data, mtime)
            by_hash.add(hashed)
            _write(os.path.join(index_dir, name), data, mtime)
        release = subprocess.run(
            ["apt-ftparchive", "-o", f"APT::FTPArchive::Release::Suite={SUITE}",
             "-o", f"APT::FTPArchive::Release::Codename={SUITE}",
             "-o", f"APT::FTPArchive::Release::Architectures={ARCH}",
             "-o", f"APT::FTPArchive::Release::Components={COMPONENT}",
             "-o", "APT::FTPArchive::Release::Acquire-By-Hash=yes",
             # As in Debian's Release files: MD5Sum and SHA256 only. apt fetches by-hash under the
             # strongest hash listed, so a SHA512 list would send it to by-hash/SHA512, which is not
             # there, and back to the plain names.
             "-o", "APT::FTPArchive::Release::SHA1=false", "-o", "APT::FTPArchive::Release::SHA512=false",
             "-o", f"APT::FTPArchive::Release::Description=version {version}",
             "release", f"dists/{SUITE}/{COMPONENT}"],
            cwd=self.root, check=True, capture_output=True).stdout
        # Paths in Release are relative to dists/<suite>, as apt expects.
        release = release.replace(f" binary-{ARCH}/".encode(), f" {COMPONENT}/binary-{ARCH}/".encode())
        release = b"\n".join(line for line in release.splitlines() if b"by-hash" not in line) + b"\n"
        _write(os.path.join(self.root, "dists", SUITE, "Release"), release, mtime)
        return by_hash

    def _files(self, top):
        found = set()
        for directory, _, names in os.walk(os.path.join(self.root, top)):
            for name in names:
                found.add(os.path.relpath(os.path.join(directory, name), self.root))
        return found


def _write(path, data, mtime):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    staging = path + ".tmp"
    with open(staging, "wb") as stream:
        stream.write(data)
    os.utime(staging, (mtime, mtime))
    os.replace(staging, path)


class AptClient:
    """apt-get with everything under ``root``: sources, lists, cache, status; never the system's."""

    def __init__(self, root, url):
        self.root = os.fspath(root)
        for directory in ("etc/sources.list.d", "etc/preferences.d", "etc/apt.conf.d", "state/lists/partial",
                          "cache/archives/partial", "downloads"):
            os.makedirs(os.path.join(self.root, directory), exist_ok=True)
        self.sources = os.path.join(self.root, "etc/sources.list")
        with open(self.sources, "w") as sources:
            sources.write(f"deb [trusted=yes arch={ARCH}] {url.rstrip('/')}/ {SUITE} {COMPONENT}\n")
        self.status = os.path.join(self.root, "state/status")
        open(self.status, "w").close()

    def _argv(self, *command):
        options = {
            "Dir::Etc::sourcelist": self.sources,
            "Dir::Etc::sourceparts": os.path.join(self.root, "etc/sources.list.d"),
            "Dir::Etc::preferencesparts": os.path.join(self.root, "etc/preferences.d"),
            "Dir::Etc::parts": os.path.join(self.root, "etc/apt.conf.d"),
            "Dir::State": os.path.join(self.root, "state"),
            "Dir::State::status": self.status,
            "Dir::Cache": os.path.join(self.root, "cache"),
            "Debug::NoLocking": "1",
            "APT::Architecture": ARCH,
            "APT::Architectures": ARCH,
            "APT::Sandbox::User": "root",
            "Acquire::Languages": "none",
            "Acquire::http::Pipeline-Depth": "0",
            "Acquire::Retries": "0",
        }
        argv = ["apt-get", "-q"]
        for name, value in options.items():
            argv += ["-o", f"{name}={value}"]
        return argv + list(command)

    def update(self):
        """(ok, output) of one ``apt-get update``: ok only with exit 0 and no fetch error or warning."""
        done = subprocess.run(self._argv("update"), capture_output=True, text=True, timeout=60,
                              env=_apt_env())
        output = done.stdout + done.stderr
        bad = [line for line in output.splitlines() if line.startswith(("Err:", "E:", "W:"))]
        return done.returncode == 0 and not bad, output

    def download(self, names):
        """(ok, output, the .deb names fetched) of one ``apt-get download``, in a fresh folder."""
        target = os.path.join(self.root, "downloads")
        shutil.rmtree(target)
        os.makedirs(target)
        done = subprocess.run(self._argv("download", *names), cwd=target, capture_output=True, text=True,
                              timeout=60, env=_apt_env())
        output = done.stdout + done.stderr
        bad = [line for line in output.splitlines() if line.startswith(("Err:", "E:", "W:"))]
        return done.returncode == 0 and not bad, output, sorted(os.listdir(target))


def _apt_env():
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
