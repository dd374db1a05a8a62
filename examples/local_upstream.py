#!/usr/bin/env python3
"""A local upstream for trying mirror-sync: an rsync module over a sample tree, until Ctrl-C.

    .venv/bin/python examples/local_upstream.py --dir /tmp/tour/upstream --port 8873 --module tour

It fills DIR/tree with the sample tree ``make demo`` uses (odd file names,
hard links, symlinks, empty and private directories) unless DIR/tree already
exists, then serves it read-only with a real ``rsync --daemon`` on 127.0.0.1
as ``rsync://127.0.0.1:PORT/MODULE/``. Change files under DIR/tree while it
runs to see a change travel. Ctrl-C or SIGTERM stops the daemon; the files stay.
"""

import argparse
import re
import signal
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(1, str(REPO_ROOT))

from tests.support.rsyncd import RsyncDaemon, RsyncDaemonError  # noqa: E402
from tests.support.trees import build_tricky_tree  # noqa: E402

MODULE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def module_name(value):
    if not MODULE_NAME.fullmatch(value):
        raise argparse.ArgumentTypeError("a module name is lower-case letters, digits, '.', '_' or '-'")
    return value


def port_number(value):
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError("a port is a number from 1 to 65535")
    return int(value)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Serve a sample tree as an rsync module on 127.0.0.1, "
                                                 "as a local upstream for mirror-sync, until Ctrl-C.")
    parser.add_argument("--dir", type=Path, required=True, metavar="PATH",
                        help="the tree goes to PATH/tree, the daemon's own files to PATH/rsyncd")
    parser.add_argument("--port", type=port_number, default=8873, help="TCP port (default 8873)")
    parser.add_argument("--module", type=module_name, default="tour", help="module name (default tour)")
    return parser.parse_args(argv)


def _stop(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    args = parse_args(argv)
    root = args.dir.resolve()
    tree = root / "tree"
    if tree.exists():
        print(f"serving the existing tree in {tree}", flush=True)
    else:
        build_tricky_tree(tree)
        print(f"built a sample tree in {tree}", flush=True)
    signal.signal(signal.SIGTERM, _stop)
    daemon = RsyncDaemon(root / "rsyncd", {args.module: tree}, port=args.port)
    try:
        daemon.start()
    except (RsyncDaemonError, OSError) as error:
        print(f"error: the rsync daemon did not start: {str(error).splitlines()[0]} "
              f"(its log: {daemon.log_path})", file=sys.stderr)
        return 1
    try:
        print(f"upstream ready: {daemon.url(args.module)} serves {tree} (Ctrl-C stops)", flush=True)
        returncode = daemon.process.wait()
    except KeyboardInterrupt:
        print("upstream stopped", flush=True)
        return 0
    finally:
        daemon.stop()
    print(f"error: the rsync daemon exited with code {returncode}; see {daemon.log_path}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
