"""The master's rsync daemon configuration follows the database."""

import os
import stat

from master import rsyncd
from tests.conftest import JOIN_TOKEN


def enroll(client, name):
    return client.post("/api/v1/slaves/register", json={"name": name, "url": f"http://{name}:7000"},
                       headers={"Authorization": f"Bearer {JOIN_TOKEN}"}).json


def render(app):
    with app.app_context():
        rsyncd.write_config()
    config_path, secrets_path = rsyncd.config_paths(app.config["DATA_DIR"])
    with open(config_path) as config, open(secrets_path) as secrets:
        return config.read(), secrets.read(), secrets_path


def modules(text):
    """module name -> {key: value} of a rendered rsyncd.conf."""
    found, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            current = found.setdefault(line[1:-1], {})
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return found


def test_one_read_only_module_per_project_open_only_to_enabled_slaves(app, client, admin, make_project):
    make_project("debian")
    make_project("fedora")
    one, two = enroll(client, "one"), enroll(client, "two")
    client.patch("/api/v1/slaves/two", json={"enabled": False}, headers=admin)
    text, secrets, secrets_path = render(app)
    found = modules(text)
    assert set(found) == {"debian", "fedora"}
    # The module holds the project's snapshots; an order names its run's snapshot inside it.
    assert found["debian"]["path"] == os.path.join(app.config["DATA_DIR"], ".snapshots", "debian")
    assert found["debian"]["auth users"] == one["rsync_user"]
    assert "read only = yes" in text and "refuse options = copy-links" in text
    assert "socket options = TCP_NODELAY" in text, "small writes go at once, as the slaves send theirs"
    assert secrets == f"{one['rsync_user']}:{one['rsync_password']}\n"
    assert two["rsync_password"] not in secrets, "a disabled slave must not be able to pull"
    assert stat.S_IMODE(os.stat(secrets_path).st_mode) == 0o600
    assert one["rsync_password"] not in text


def test_with_no_slaves_no_module_is_open_to_anyone(app, make_project):
    make_project("debian")
    text, secrets, _ = render(app)
    assert modules(text)["debian"]["auth users"] == rsyncd.NOBODY
    assert secrets == ""


def test_a_deleted_project_or_slave_disappears_on_the_next_render(app, client, admin, make_project):
    make_project("debian")
    one = enroll(client, "one")
    render(app)
    client.delete("/api/v1/projects/debian", headers=admin)
    client.delete("/api/v1/slaves/one", headers=admin)
    text, secrets, _ = render(app)
    assert modules(text) == {} and one["rsync_password"] not in secrets
    with app.app_context():
        assert rsyncd.write_config() is False, "nothing changed: nothing rewritten"


def test_the_rsyncd_config_command_writes_files_for_a_system_daemon(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from master.__main__ import cli
    monkeypatch.setenv("MIRRORSYNC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MIRRORSYNC_LOG_LEVEL", "WARNING")
    config_path, secrets_path = tmp_path / "etc" / "rsyncd.conf", tmp_path / "etc" / "rsyncd.secrets"
    config_path.parent.mkdir()
    result = CliRunner().invoke(cli, ["rsyncd-config", "--config", str(config_path), "--secrets", str(secrets_path)])
    assert result.exit_code == 0, result.output
    assert f"--config={config_path}" in result.output
    assert f"secrets file = {secrets_path}" in config_path.read_text()
    assert stat.S_IMODE(os.stat(secrets_path).st_mode) == 0o600


def settings_of(text):
    """Global key -> value of a rendered rsyncd.conf (what comes before the first module)."""
    found = {}
    for line in text.split("\n[", 1)[0].splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            found[key.strip()] = value.strip()
    return found


def test_as_a_service_user_the_config_names_no_uid_or_gid(app, make_project, monkeypatch):
    make_project("debian")
    monkeypatch.setattr(rsyncd, "daemon_identity", lambda: None)
    text, _, _ = render(app)
    found = settings_of(text)
    assert "uid" not in found and "gid" not in found, "rsync refuses them unless it is root (setgroups failed)"
    assert found["use chroot"] == "no"


def test_as_root_the_daemon_switches_to_the_owner_of_the_trees_and_chroots(app, make_project, monkeypatch):
    make_project("debian")
    monkeypatch.setattr(rsyncd, "daemon_identity", lambda: (0, 0))
    found = settings_of(render(app)[0])
    assert (found["uid"], found["gid"], found["use chroot"]) == ("0", "0", "yes")


def test_the_identity_is_only_claimed_by_root():
    if os.geteuid() == 0:
        assert rsyncd.daemon_identity() == (0, os.getegid())
    else:
        assert rsyncd.daemon_identity() is None


def test_each_module_serves_a_bounded_number_of_pulls_counted_in_the_state_dir(app, make_project):
    app.config["RSYNCD_MAX_CONNECTIONS"] = 7
    make_project("debian")
    text, _, _ = render(app)
    lines = [line.strip() for line in text.splitlines()]
    assert "max connections = 7" in lines
    lock = next(line for line in lines if line.startswith("lock file = "))
    assert lock == f"lock file = {os.path.join(app.config['DATA_DIR'], '.mirrorsync', 'rsyncd.lock')}"


def test_a_project_named_like_the_daemons_global_section_gets_no_module(app, make_project):
    from master.db import db
    from master.models import Project
    make_project("debian")
    with app.app_context():  # one that a build before the refusal let in
        db.session.execute(db.update(Project).where(Project.name == "debian").values(name="global"))
        db.session.commit()
    text, _, _ = render(app)
    assert "[global]" not in text and "global" not in modules(text)
