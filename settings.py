"""Commented defaults for both roles.

Every setting here can be overridden by an environment variable
``MIRRORSYNC_<NAME>`` (for example ``MIRRORSYNC_API_PORT=5001``); tests pass
overrides to ``create_app({...})``. ``common/config.py`` parses and checks
them, so a bad value fails at start with one line naming the setting.
"""

# --- both roles ---------------------------------------------------------

# Address the HTTP API listens on (``python -m master`` / ``python -m slave``).
API_HOST = "127.0.0.1"
# Port of the HTTP API; None means the role's default: master 5000, slave 7000.
API_PORT = None
# Shared enrollment secret slaves present to ``POST /api/v1/slaves/register``.
JOIN_TOKEN = None
# Slaves enroll by a key exchange bound to JOIN_TOKEN, so no secret crosses the
# network. Older slaves send the join token itself and get their keys in clear:
# the master takes that only over HTTPS or from its own host, unless this is True.
INSECURE_ENROLLMENT = False
# The most slaves that may be enrolled at once; a further enrollment is refused
# (409), so a leaked join token cannot flood the master with slaves.
MAX_SLAVES = 256
# Python logging level: DEBUG, INFO, WARNING, ERROR.
LOG_LEVEL = "INFO"
# How many rsyncs may run at the same time (upstream pulls on the master,
# pulls from the master on a slave).
MAX_CONCURRENT_SYNCS = 4
# How many run logs are kept per project; older ones are deleted.
LOG_RETENTION = 100
# A signed request older or newer than this many seconds is refused.
SIGNATURE_MAX_AGE = 300
# HTTPS between master and slaves. CA_BUNDLE: a PEM file of the CAs whose
# certificates this process trusts when it calls the other side (None: the
# system's). TLS_CERT_FILE/TLS_KEY_FILE: serve the built-in server
# (python -m master / python -m slave) over HTTPS; under gunicorn use its
# --certfile/--keyfile instead.
CA_BUNDLE = None
TLS_CERT_FILE = None
TLS_KEY_FILE = None
# rsync program to run (a bare name is looked up on PATH).
RSYNC_BINARY = "rsync"
# What Debian trace files (projects with ``trace: debian``) say about this site;
# None leaves the line out. TRACE_COUNTRY is an ISO 3166 code such as "DE".
TRACE_MAINTAINER = None
TRACE_SPONSOR = None
TRACE_COUNTRY = None
TRACE_LOCATION = None
TRACE_THROUGHPUT = None

# --- master -------------------------------------------------------------

# Trees live in DATA_DIR/<project>; the master's own state (SQLite database,
# run logs, lock files) lives in DATA_DIR/.mirrorsync, which no project name
# can collide with.
DATA_DIR = "./var/master"
# SQLAlchemy URL; None means SQLite at DATA_DIR/.mirrorsync/mirrorsync.db.
# PostgreSQL works too: postgresql://user@host/dbname (password via PGPASSWORD
# or ~/.pgpass keeps it off the command line).
DATABASE_URL = None
# If set, an admin API token with this value exists from start-up.
ADMIN_TOKEN = None
# Port and address of the master's rsync daemon that slaves pull from.
RSYNCD_PORT = 8730
RSYNCD_ADDRESS = "127.0.0.1"
# Address the managed rsync daemon binds to; None means RSYNCD_ADDRESS when
# that is an IP address, else every interface.
RSYNCD_BIND = None
# Pulls each module of the master's rsync daemon serves at once (0: no limit); a
# slave over the limit is told to try later and catches up on a later sweep.
RSYNCD_MAX_CONNECTIONS = 100
# Seconds without a heartbeat after which a slave counts as offline.
HEARTBEAT_TIMEOUT = 60
# Orders to slaves go out in parallel through this many threads (at least as many as
# slaves, so that a fan-out is one wave).
DISPATCH_WORKERS = 64
# Seconds to wait for a slave to accept an order before it counts as unreachable.
DISPATCH_TIMEOUT = 5
# Seconds a slave may take to report beyond the project's timeout before its
# part of the run ends as "timeout".
SLAVE_GRACE = 300
# Seconds a slave that accepted an order may go without a word (its "syncing"
# report, any report, a heartbeat) before its part ends as "timeout": a dead or
# silent slave is given up on this soon, a live one keeps its part open until
# the deadline above, however long its pull takes.
SLAVE_START_TIMEOUT = 120
# Seconds between looks for slaves that missed a tree and need to catch up.
CATCHUP_INTERVAL = 15
# Seconds between the executor's looks for queued runs.
POLL_INTERVAL = 1.0
# Seconds between the scheduler's reconciliations of its timers with the database.
RECONCILE_INTERVAL = 5.0
# A transient upstream failure (connection refused, I/O timeout, rsync exit
# 5, 10, 12, 30, 35) is retried after RETRY_BASE_DELAY * 2^(attempt-1)
# seconds, jittered to 50-100% and capped at RETRY_MAX_DELAY, up to the
# project's ``retries``.
RETRY_BASE_DELAY = 30
RETRY_MAX_DELAY = 1800
# Default wall-clock limit, in seconds, for one upstream pull of a new project.
DEFAULT_TIMEOUT = 21600
# A network that fails authentication (bearer token or join token)
# AUTH_FAILURE_LIMIT times within AUTH_FAILURE_WINDOW seconds gets 429 Too Many
# Requests for its further failures until the window ends.
# Only failures are limited: a valid token or join token always passes, and signed
# slave traffic is never counted. Failures count per /24 (IPv4) or /64 (IPv6).
AUTH_FAILURE_LIMIT = 20
AUTH_FAILURE_WINDOW = 60
# How many reverse proxies stand in front of the API (0: none). With N, the client
# address and scheme are taken from the N-th last X-Forwarded-For/-Proto entry (werkzeug's
# ProxyFix); never set it higher than the real number of proxies, or clients can pick
# their own address.
TRUSTED_PROXIES = 0
# Largest request body the API accepts, in bytes.
MAX_CONTENT_LENGTH = 65536
# Name of the master in Debian trace files: it writes project/trace/<MIRROR_NAME>
# after each good pull. None means this host's fully qualified name.
MIRROR_NAME = None
# Directory of the executables projects may name as hooks (pre_sync,
# post_success, post_failure); None allows no hooks.
HOOKS_DIR = None
# Seconds a hook may run before its process group is ended.
HOOK_TIMEOUT = 600
# Directory of the sync scripts projects with ``method: command`` may name;
# None allows no command projects.
SYNC_SCRIPTS_DIR = None
# Whether the HTML status pages (/, /projects/<name>, /runs/<id>) are open to
# anyone; False asks for a bearer API token, like the API.
STATUS_PUBLIC = True
# Who the mirror site is, for visitors and for mirrorz.json: the public base
# URL where the projects' files are served (None: links go to each project's
# public_path on the host the page is read from), the site's name and its
# short name (mirrorz's "abbr", for example TUNA).
SITE_URL = None
SITE_NAME = None
SITE_ABBR = None

# --- slave --------------------------------------------------------------

# URL of the master's API.
MASTER_URL = "http://127.0.0.1:5000"
# Name this slave enrolls under; None means the host name.
SLAVE_NAME = None
# Name of this slave in Debian trace files (project/trace/<PUBLIC_NAME>),
# usually the public host name visitors use; None means SLAVE_NAME.
PUBLIC_NAME = None
# URL the master uses to reach this slave's API; None means http://<API_HOST>:<API_PORT>.
SLAVE_URL = None
# Trees land in PUBLIC_DIR/<project>.
PUBLIC_DIR = "./var/public"
# Credentials, the report outbox and run logs live here.
STATE_DIR = "./var/slave"
# Seconds between heartbeats to the master.
HEARTBEAT_INTERVAL = 15
# Longest wait, in seconds, between two tries to deliver a report.
REPORT_RETRY_MAX = 60
# Seconds between two walks of a project's whole published tree to check its digest. Between
# them a changes-only pull checks the paths it moved and every directory (a file made, removed
# or renamed anywhere shows at once; a file rewritten in place at the next walk). 0: every pull.
# On the master: seconds between two walks of a project's new tree; between them a pull's tree
# is described from its previous one and what rsync itemized (each path it names looked at again).
VERIFY_INTERVAL = 3600
# Master, upstream_filelist projects: the longest time, in seconds, between two pulls that compare the
# whole tree with upstream (a plain rsync); between them a pull transfers what the list says changed.
# 0: every pull is a full one.
FILELIST_FULL_INTERVAL = 86400
# How the master starts a pull's new tree as the previous one: "auto" takes a btrfs snapshot
# where the project's snapshots (DATA_DIR/.snapshots/<project>) are on btrfs and the btrfs
# command is installed, and a copy made of hard links elsewhere; "btrfs" fails a pull that
# cannot have a snapshot; "hardlinks" never takes one.
SNAPSHOT_METHOD = "auto"
# Who deletes from the master's new tree what upstream no longer has: "rsync" (its --delete-delay,
# after the transfer) or "listed": for a plain rsync project (no excludes, no trace files, only
# options that change neither the list nor the deletions), rsync names every upstream entry and
# the master deletes, after the transfer, what the previous tree had and no name matches. That
# spares rsync's second look at every directory of the tree (0.07-0.2 s of rsync's time at 100,000
# files, measured alone; in the fan-out bench the master's reading of the names costs about as
# much, see bench/README); names that do not add up to rsync's own count make the pull run again with rsync deleting.
UPSTREAM_DELETIONS = "rsync"
# Seconds between two progress reports of a running pull (how far rsync has come);
# each one also tells the master this slave is alive (see SLAVE_START_TIMEOUT).
PROGRESS_INTERVAL = 10
# Serve a small public page at / and a tunasync-style /jobs feed of what this
# slave holds (from its own records), for visitors of this host.
STATUS_PAGE = False
# Watch each published tree (an inotify watch per directory, counted against
# fs.inotify.max_user_watches) for files rewritten in place or their modes or times
# changed behind this slave's back; the next pull repairs them. Off: those show at
# the next walk (VERIFY_INTERVAL), as names made, removed or renamed still do at once.
WATCH_TREES = True
# Seconds an edited published tree (seen by WATCH_TREES) is left alone before this slave pulls
# the run it holds again from the master, which repairs it; a tree edited without a pause is
# pulled again after six times that. 0: the project's next pull repairs it.
REPAIR_DELAY = 10
