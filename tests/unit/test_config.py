"""Settings come from settings.py, then MIRRORSYNC_* variables, then overrides; bad ones fail clearly."""

import subprocess
import sys

import pytest

from common.config import load_settings
from common.errors import ConfigError


def test_role_defaults_for_the_api_port():
    assert load_settings("master", environ={})["API_PORT"] == 5000
    assert load_settings("slave", environ={})["API_PORT"] == 7000


def test_environment_overrides_defaults_and_overrides_win():
    env = {"MIRRORSYNC_API_PORT": "5001", "MIRRORSYNC_MAX_CONCURRENT_SYNCS": "8"}
    settings = load_settings("master", environ=env)
    assert settings["API_PORT"] == 5001 and settings["MAX_CONCURRENT_SYNCS"] == 8
    assert load_settings("master", {"API_PORT": 6000}, environ=env)["API_PORT"] == 6000


@pytest.mark.parametrize("name, value, words", [
    ("API_PORT", "http", "API_PORT must be a int"),
    ("API_PORT", "70000", "API_PORT must be between"),
    ("MAX_CONCURRENT_SYNCS", "0", "MAX_CONCURRENT_SYNCS must be between"),
    ("LOG_LEVEL", "LOUD", "LOG_LEVEL must be one of"),
    ("SNAPSHOT_METHOD", "zfs", "SNAPSHOT_METHOD must be one of auto, btrfs, hardlinks"),
    ("UPSTREAM_DELETIONS", "slave", "UPSTREAM_DELETIONS must be one of rsync, listed"),
    ("DATABASE_URL", "mysql://x", "DATABASE_URL must be"),
    ("MASTER_URL", "ftp://x", "MASTER_URL must be"),
    ("CA_BUNDLE", "/no/such/ca.pem", "CA_BUNDLE must name a readable file"),
    ("TLS_CERT_FILE", __file__, "TLS_CERT_FILE and TLS_KEY_FILE must be set together"),
    ("MIRROR_NAME", "mirror/../x", "MIRROR_NAME must be a host name"),
    ("MIRROR_NAME", "master", "MIRROR_NAME must not be 'master'"),
    ("HOOKS_DIR", "/no/such/hooks", "HOOKS_DIR must name an existing directory"),
    ("SYNC_SCRIPTS_DIR", "/no/such/scripts", "SYNC_SCRIPTS_DIR must name an existing directory"),
    ("HOOK_TIMEOUT", "0", "HOOK_TIMEOUT must be between"),
    ("TRACE_SPONSOR", "a\nb", "TRACE_SPONSOR must be one line"),
])
def test_a_bad_setting_names_itself(name, value, words):
    with pytest.raises(ConfigError, match=words):
        load_settings("master", environ={f"MIRRORSYNC_{name}": value})


def test_master_refuses_to_start_with_one_clear_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "master"], capture_output=True, text=True, timeout=60,
                            env={"MIRRORSYNC_DATA_DIR": str(tmp_path), "MIRRORSYNC_API_PORT": "nope",
                                 "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "API_PORT" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_site_settings_are_optional_and_checked():
    settings = load_settings("master", environ={})
    assert (settings["SITE_URL"], settings["SITE_NAME"], settings["SITE_ABBR"]) == (None, None, None)
    settings = load_settings("master", environ={"MIRRORSYNC_SITE_URL": "https://mirrors.example.org/",
                                                "MIRRORSYNC_SITE_NAME": "Example Mirrors",
                                                "MIRRORSYNC_SITE_ABBR": "EXM"})
    assert settings["SITE_URL"] == "https://mirrors.example.org"
    assert (settings["SITE_NAME"], settings["SITE_ABBR"]) == ("Example Mirrors", "EXM")


@pytest.mark.parametrize("name, value", [
    ("SITE_URL", "ftp://mirrors.example.org"),
    ("SITE_URL", "https://user:pw@mirrors.example.org"),
    ("SITE_URL", "https://mirrors.example.org/?q=<script>"),
    ("SITE_URL", "https://"),
    ("SITE_NAME", "x" * 101),
    ("SITE_NAME", "two\nlines"),
    ("SITE_ABBR", "has space"),
    ("SITE_ABBR", "<b>"),
])
def test_a_bad_site_setting_names_itself(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings("master", environ={f"MIRRORSYNC_{name}": value})


@pytest.mark.parametrize("role", ["master", "slave"])
def test_an_rsync_older_than_3_1_stops_the_start_with_one_line(tmp_path, role):
    old = tmp_path / "old-rsync"
    old.write_text("#!/bin/sh\necho 'rsync  version 3.0.9  protocol version 30'\n")
    old.chmod(0o755)
    settings = {"RSYNC_BINARY": str(old), "LOG_LEVEL": "WARNING", "JOIN_TOKEN": "j"}
    if role == "master":
        from master import create_app
        settings["DATA_DIR"] = str(tmp_path / "data")
    else:
        from slave import create_app
        settings.update(STATE_DIR=str(tmp_path / "state"), PUBLIC_DIR=str(tmp_path / "public"),
                        START_BACKGROUND=False, SLAVE_NAME="m1")
    with pytest.raises(ConfigError) as refused:
        create_app(settings)
    assert str(refused.value) == (f"RSYNC_BINARY: {old} is rsync 3.0.9; mirror-sync needs rsync 3.1 or later")


def test_the_installed_rsync_is_new_enough():
    from common.rsync import MINIMUM_VERSION, rsync_version
    assert rsync_version("rsync")[:2] >= MINIMUM_VERSION
