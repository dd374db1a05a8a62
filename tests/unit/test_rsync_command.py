"""build_command: what rsync is asked to do, and what never reaches its command line."""

import pytest

from common.rsync import DAEMON_OPTIONS, DEFAULT_OPTIONS, ENFORCED_OPTIONS, RsyncJob, build_command

SOURCE = "rsync://mirror@127.0.0.1:8730/debian/dists"


def test_mirroring_defaults_come_first():
    argv = build_command(RsyncJob(SOURCE, "/srv/debian"))
    assert argv[0] == "rsync"
    assert argv[1:1 + len(DEFAULT_OPTIONS)] == list(DEFAULT_OPTIONS)
    for option in ("--recursive", "--links", "--perms", "--times", "--hard-links", "--delete-delay",
                   "--delay-updates", "--safe-links", "--stats", "--no-human-readable"):
        assert option in DEFAULT_OPTIONS
    for kept_from_upstream in ("--archive", "-a", "--devices", "-D", "--specials", "--owner", "-o", "--group",
                               "-g", "--numeric-ids"):
        assert kept_from_upstream not in DEFAULT_OPTIONS, "devices, specials and owners must never land"


def test_no_project_option_can_bring_back_devices_owners_or_set_id_bits():
    argv = build_command(RsyncJob(SOURCE, "/srv/debian", options=("--chmod=u+s,g+s,o+w",)))
    user = argv.index("--chmod=u+s,g+s,o+w")
    assert argv[user + 1:user + 1 + len(ENFORCED_OPTIONS)] == list(ENFORCED_OPTIONS)
    assert {"--no-devices", "--no-specials", "--no-owner", "--no-group", "--chmod=ug-s,go-w"} <= set(
        ENFORCED_OPTIONS)


def test_job_options_then_excludes_then_end_of_options_then_paths():
    job = RsyncJob(SOURCE, "/srv/debian", options=("--bwlimit=1000", "--contimeout=10"),
                   excludes=("*.tmp", ".~tmp~/"))
    argv = build_command(job, binary="/usr/bin/rsync")
    assert argv[0] == "/usr/bin/rsync"
    tail = argv[1 + len(DEFAULT_OPTIONS):]
    assert tail == [*DAEMON_OPTIONS, "--bwlimit=1000", "--contimeout=10", *ENFORCED_OPTIONS, "--exclude=*.tmp",
                    "--exclude=.~tmp~/", "--", SOURCE + "/", "/srv/debian/"]


@pytest.mark.parametrize("source, daemon", [
    ("rsync://mirror.example.org/debian", True),
    ("mirror.example.org::debian", True),
    ("mirror.example.org:/srv/debian", False),   # a remote shell: no socket of rsync's own
    ("/srv/upstream/debian", False),
    ("./dir::with-colons", False),
])
def test_a_pull_from_an_rsync_daemon_sends_small_writes_at_once(source, daemon):
    argv = build_command(RsyncJob(source, "/srv/debian"))
    assert ("--sockopts=TCP_NODELAY" in argv) is daemon
    assert argv.index("--") > (argv.index("--sockopts=TCP_NODELAY") if daemon else 0)


def test_exclude_pattern_with_spaces_stays_one_argument():
    argv = build_command(RsyncJob(SOURCE, "/srv/x", excludes=("dir with space/*",)))
    assert "--exclude=dir with space/*" in argv


def test_paths_that_look_like_options_come_after_end_of_options():
    argv = build_command(RsyncJob("--rsh=evil", "-rf"))
    marker = argv.index("--")
    assert argv[marker + 1:] == ["--rsh=evil/", "-rf/"]


def test_existing_trailing_slash_is_not_doubled():
    argv = build_command(RsyncJob(SOURCE + "/", "/srv/debian/"))
    assert argv[-2:] == [SOURCE + "/", "/srv/debian/"]


def test_password_never_reaches_the_command_line_or_the_job_repr():
    job = RsyncJob(SOURCE, "/srv/debian", options=("--bwlimit=10",), password="hunter2-secret")
    argv = build_command(job)
    assert not any("hunter2-secret" in arg for arg in argv)
    assert "hunter2-secret" not in repr(job)


def test_the_job_is_immutable():
    job = RsyncJob(SOURCE, "/srv/debian")
    with pytest.raises(AttributeError):
        job.source = "rsync://elsewhere/x"

