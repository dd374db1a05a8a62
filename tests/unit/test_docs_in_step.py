"""What users copy must stay true: README's configuration reference and the deployment samples."""

import importlib
import re
from pathlib import Path

import pytest

import settings

ROOT = Path(__file__).resolve().parents[2]
SETTING_NAMES = {name for name in vars(settings) if name.isupper()}
DEPLOY = ROOT / "examples" / "deploy"


def readme_section(title):
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_every_setting_is_in_the_readme_configuration_reference_and_nothing_else():
    table = readme_section("Configuration")
    documented = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            first_cell = row.split("|")[1]
            documented |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    assert documented == SETTING_NAMES, (
        f"missing from README: {sorted(SETTING_NAMES - documented)}; "
        f"not settings: {sorted(documented - SETTING_NAMES)}")


def test_every_default_in_the_reference_matches_settings_py():
    table = readme_section("Configuration")
    for row in table.splitlines():
        cells = [cell.strip() for cell in row.split("|")[1:-1]]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        defaults = [d.strip().strip("`") for d in cells[1].split(",")]
        if len(defaults) != len(names):
            continue  # a prose default ("SQLite in ...") is checked by reading
        for name, default in zip(names, defaults):
            value = getattr(settings, name)
            if value is None:
                assert default in ("none",) or " " in default or "/" in default, (name, default)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                assert float(default.replace(",", "")) == value, (name, default, value)
            elif isinstance(value, str):
                assert default == value, (name, default, value)


def sample_texts():
    return {path.name: path.read_text() for path in sorted(DEPLOY.iterdir())}


def test_deployment_samples_set_only_real_settings():
    for name, text in sample_texts().items():
        for variable in re.findall(r"MIRRORSYNC_([A-Z0-9_]+)=", text):
            assert variable in SETTING_NAMES, f"{name} sets MIRRORSYNC_{variable}, which is no setting"


@pytest.mark.parametrize("unit, target", [
    ("mirror-sync-api.service", "master:create_app()"),
    ("mirror-sync-scheduler.service", "-m master.scheduler"),
    ("mirror-sync-slave.service", "slave:create_app()"),
    ("mirror-sync-rsyncd.service", "--daemon"),
])
def test_each_unit_starts_what_exists(unit, target):
    [exec_start] = re.findall(r"^ExecStart=(.*)$", sample_texts()[unit], re.MULTILINE)
    assert target in exec_start
    if ":create_app()" in target:
        module = importlib.import_module(target.split(":")[0])
        assert callable(module.create_app)
    if target == "-m master.scheduler":
        assert callable(importlib.import_module("master.scheduler").main)


def sample_env(name):
    return dict(re.findall(r"^MIRRORSYNC_([A-Z_]+)=(.*)$", sample_texts()[name], re.MULTILINE))


def unit_values(unit, key):
    return re.findall(rf"^{key}=(.*)$", sample_texts()[unit], re.MULTILINE)


UNITS = sorted(name for name in sample_texts() if name.endswith(".service"))
MASTER_UNITS = ("mirror-sync-api.service", "mirror-sync-scheduler.service", "mirror-sync-rsyncd.service")


def test_the_rsyncd_unit_reads_the_config_the_scheduler_writes_and_waits_for_it():
    from master.rsyncd import config_paths
    env = sample_env("master.env")
    config_path, _ = config_paths(env["DATA_DIR"])
    assert f"--config={config_path}" in sample_texts()["mirror-sync-rsyncd.service"]
    assert f"--port={env['RSYNCD_PORT']}" in sample_texts()["mirror-sync-rsyncd.service"]
    assert unit_values("mirror-sync-rsyncd.path", "PathExists") == [config_path]
    assert unit_values("mirror-sync-rsyncd.path", "Unit") == ["mirror-sync-rsyncd.service"]
    assert unit_values("mirror-sync-rsyncd.service", "ConditionPathExists") == [config_path]


@pytest.mark.parametrize("unit", UNITS)
def test_each_unit_reads_an_env_file_that_is_a_sample(unit):
    for name in unit_values(unit, "EnvironmentFile"):
        assert name.lstrip("-").startswith("/etc/mirror-sync/")
        assert name.lstrip("-").rsplit("/", 1)[1] in sample_texts(), f"{unit} reads {name}, which no sample is"
    expected = "master.env" if unit in MASTER_UNITS else "slave.env"
    if unit != "mirror-sync-rsyncd.service":  # rsync reads no MIRRORSYNC_ settings
        assert unit_values(unit, "EnvironmentFile") == [f"/etc/mirror-sync/{expected}"]


@pytest.mark.parametrize("unit", UNITS)
def test_each_unit_runs_as_the_service_user_with_a_writable_tmp(unit):
    assert unit_values(unit, "User") == ["mirrorsync"]
    assert unit_values(unit, "ProtectSystem") == ["strict"]
    assert unit_values(unit, "PrivateTmp") == ["true"], "ProtectSystem=strict leaves no writable /tmp"
    [exec_start] = unit_values(unit, "ExecStart")
    if "gunicorn" in exec_start:
        tmp_dir = re.search(r"--worker-tmp-dir (\S+)", exec_start).group(1)
        assert tmp_dir == f"/run/{unit_values(unit, 'RuntimeDirectory')[0]}", "gunicorn's heartbeat files"


def test_where_tls_is_used_a_ca_bundle_is_set():
    master, slave = sample_env("master.env"), sample_env("slave.env")
    assert slave["MASTER_URL"].startswith("https://") and slave["CA_BUNDLE"]
    assert "--certfile" in sample_texts()["mirror-sync-slave.service"]
    assert slave["SLAVE_URL"].startswith("https://") and master["CA_BUNDLE"], "the master verifies slaves"


def test_nginx_fronts_the_api_with_tls_and_buffering():
    nginx = sample_texts()["mirror-sync.nginx.conf"]
    [exec_start] = unit_values("mirror-sync-api.service", "ExecStart")
    bind = re.search(r"--bind (\S+)", exec_start).group(1)
    assert bind.startswith("127.0.0.1:"), "gunicorn is reached only through the proxy"
    assert f"proxy_pass http://{bind};" in nginx
    for directive in ("listen 443 ssl;", "ssl_certificate ", "ssl_certificate_key ", "proxy_request_buffering on;",
                      "proxy_buffering on;", "X-Forwarded-Proto"):
        assert directive in nginx, directive
    assert f"MIRRORSYNC_API_PORT={bind.rsplit(':', 1)[1]}" in sample_texts()["master.env"]


def guide_text():
    return (ROOT / "docs" / "deploy.md").read_text()


def test_the_guide_installs_every_sample_and_the_readme_points_to_it():
    for name in sample_texts():
        assert name in guide_text(), f"docs/deploy.md does not install {name}"
    assert "(docs/deploy.md)" in readme_section("Deployment")


@pytest.mark.parametrize("unit", UNITS)
def test_the_guide_creates_every_path_a_unit_needs(unit):
    created = set(re.findall(r"^    (?:install -d|useradd) .* (/\S+)$", guide_text(), re.MULTILINE))
    installed = set(re.findall(r"^    install -o .* (/\S+)$", guide_text(), re.MULTILINE))
    for path in " ".join(unit_values(unit, "ReadWritePaths")).split():
        if not path.endswith("/.mirrorsync"):  # the master makes its own state directory
            assert path in created, f"{unit} writes {path}, which the guide does not create"
    for key in ("EnvironmentFile",):
        for path in unit_values(unit, key):
            assert path.lstrip("-") in installed, f"{unit} reads {path}, which the guide does not install"
    for path in re.findall(r"--(?:certfile|keyfile) (\S+)", unit_values(unit, "ExecStart")[0]):
        assert path in installed, f"{unit} reads {path}, which the guide does not install"
    assert re.search(rf"^    useradd .*\b{unit_values(unit, 'User')[0]}$", guide_text(), re.MULTILINE)


BARE_COMMAND = re.compile(r"(?:^|[\s|;(])(python3?|mirrorctl|gunicorn)(?=\s)")


def readme_command_lines():
    return [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("    ")]


def test_readme_commands_run_the_virtualenvs_programs():
    # After `make setup` there is no `mirrorctl` on PATH and the system's python lacks the dependencies.
    bare = [line.strip() for line in readme_command_lines() if BARE_COMMAND.search(line)]
    assert not bare, f"commands that need .venv/bin/: {bare}"
    assert "source .venv/bin/activate" in (ROOT / "README.md").read_text()
