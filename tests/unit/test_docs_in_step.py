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


def test_the_rsyncd_unit_reads_the_config_the_scheduler_writes():
    from master.rsyncd import config_paths
    env = dict(re.findall(r"^MIRRORSYNC_([A-Z_]+)=(.*)$", sample_texts()["mirror-sync.env"], re.MULTILINE))
    config_path, _ = config_paths(env["DATA_DIR"])
    assert f"--config={config_path}" in sample_texts()["mirror-sync-rsyncd.service"]
    assert f"--port={env['RSYNCD_PORT']}" in sample_texts()["mirror-sync-rsyncd.service"]


BARE_COMMAND = re.compile(r"(?:^|[\s|;(])(python3?|mirrorctl|gunicorn)(?=\s)")


def readme_command_lines():
    return [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("    ")]


def test_readme_commands_run_the_virtualenvs_programs():
    # After `make setup` there is no `mirrorctl` on PATH and the system's python lacks the dependencies.
    bare = [line.strip() for line in readme_command_lines() if BARE_COMMAND.search(line)]
    assert not bare, f"commands that need .venv/bin/: {bare}"
    assert "source .venv/bin/activate" in (ROOT / "README.md").read_text()
