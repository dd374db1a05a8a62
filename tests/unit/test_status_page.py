"""The HTML status pages: /, /projects/<name> and /runs/<id>, with fake rsync, slaves and clock."""

import datetime
import re

import markupsafe
import pytest

from common import runlogs
from common.config import load_settings
from common.errors import ConfigError
from master.paths import logs_root
from master.services import runs
from tests.conftest import ADMIN_TOKEN, JOIN_TOKEN
from tests.unit.test_distribution import enroll, pull, report

UPSTREAM_SECRET = "upstream-pw-7f3e9a1c"
HOSTILE_ERROR = '<script>alert("x")</script> & <b>bold</b>'


def page(client, path, **kwargs):
    response = client.get(path, **kwargs)
    return response, response.get_data(as_text=True)


def row_of(body, project):
    match = re.search(rf'<tr id="project-{project}">(.*?)</tr>', body, re.S)
    assert match, f"no row for {project}"
    return match.group(1)


def slave_cell(body, project, slave):
    match = re.search(rf'<td class="slave ([^"]*)" data-slave="{slave}"(.*?)</td>', row_of(body, project), re.S)
    assert match, f"no cell for {slave} in {project}'s row"
    return match.group(1), match.group(2)


@pytest.fixture
def fleet(app, client, admin, make_project, clock):
    """debian: a run all slaves got, then one that one got, two failed and three has not reported yet."""
    make_project("debian", upstream="rsync://mirroruser@mirror.example.org/debian",
                 upstream_password=UPSTREAM_SECRET, schedule="0 */6 * * *")
    make_project("fedora")
    make_project("pypi")
    credentials = {name: enroll(client, name) for name in ("one", "three", "two")}

    first_run = pull(app, client, admin, "debian")
    for one in credentials.values():
        report(client, one, clock, first_run)
    clock.advance(3 * 3600)

    debian_run = pull(app, client, admin, "debian")
    report(client, credentials["one"], clock, debian_run)
    report(client, credentials["two"], clock, debian_run, state="failed", error=HOSTILE_ERROR)

    with app.app_context():
        path = runlogs.log_path(logs_root(), "debian", debian_run)
        with open(path, "a") as log:
            log.writelines(f"line {number}\n" for number in range(500))
            log.write(f"{HOSTILE_ERROR}\n")
    return {"first_run": first_run, "debian_run": debian_run, "credentials": credentials}


@pytest.fixture
def failed_and_syncing(app, client, admin, fake_rsync, fleet):
    fake_rsync.exit_codes = [23]
    client.patch("/api/v1/projects/fedora", json={"retries": 0}, headers=admin)
    fleet["fedora_run"] = pull(app, client, admin, "fedora")
    fleet["pypi_run"] = client.post("/api/v1/projects/pypi/syncs", headers=admin).json["id"]
    with app.app_context():
        [claimed] = runs.claim_queued_runs(1)
        runs.record_progress(claimed.id, {"bytes": 512, "percent": 42, "rate": "3.10MB/s", "eta": "0:01:02"})
    return fleet


def test_front_page_lists_every_project_with_state_age_size_and_refresh(client, failed_and_syncing):
    response, body = page(client, "/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert '<meta http-equiv="refresh" content="10">' in body
    for name in ("debian", "fedora", "pypi"):
        assert f'href="/projects/{name}"' in body

    debian = row_of(body, "debian")
    assert "state-distributing" in debian and ">distributing<" in debian
    assert re.search(r'<time datetime="[^"]+Z" title="[^"]+Z">3 h ago</time>', debian), debian
    assert "1.2 KiB" in debian, "the tree size is shown in binary units"
    assert "in 3 h" in debian or re.search(r"in \d+ (h|min)", debian), "next run of a scheduled project"
    assert "rsync://mirror.example.org/debian" in debian

    fedora = row_of(body, "fedora")
    assert "state-failed" in fedora and ">failed<" in fedora and "never" in fedora
    assert "not scheduled" in fedora

    pypi = row_of(body, "pypi")
    assert ">syncing<" in pypi and f'href="/runs/{failed_and_syncing["pypi_run"]}"' in pypi
    assert "42%" in pypi and "3.10MB/s" in pypi


def test_each_slave_cell_is_coloured_and_spelled_out(client, fleet):
    _, body = page(client, "/")
    run_id = fleet["debian_run"]
    classes, content = slave_cell(body, "debian", "one")
    assert classes == "fresh-fresh" and ">fresh<" in content and f'href="/runs/{run_id}"' in content
    classes, content = slave_cell(body, "debian", "two")
    assert classes == "fresh-failed" and ">failed<" in content
    classes, content = slave_cell(body, "debian", "three")
    assert classes == "fresh-stale" and ">stale<" in content and f'href="/runs/{fleet["first_run"]}"' in content
    classes, _ = slave_cell(body, "fedora", "one")
    assert classes == "fresh-stale", "a slave that never got a project's tree is stale"
    assert '<th scope="col" class="slave">one</th>' in body


def test_page_is_a_table_with_header_scopes(client, fleet):
    _, body = page(client, "/")
    assert "<table" in body and '<th scope="col">Project</th>' in body and '<th scope="row">' in body


def test_hostile_looking_values_are_escaped_everywhere(client, fleet):
    for path in ("/", "/projects/debian", f"/runs/{fleet['debian_run']}"):
        _, body = page(client, path)
        assert "<script>" not in body and "<b>bold</b>" not in body, path


def test_public_run_page_shows_a_summary_never_the_log_or_error_texts(app, client, admin, fleet, fake_rsync,
                                                                     make_project):
    run_id = fleet["debian_run"]
    response, body = page(client, f"/runs/{run_id}")
    assert response.status_code == 200 and ">two</th>" in body and ">23<" in body
    assert '<pre class="log">' not in body and "line 499" not in body and "fake rsync" not in body
    assert "alert" not in body and "bold" not in body, "a slave's error text reached a public page"
    assert "mirrorctl runs log" in body
    fake_rsync.exit_codes = [10]
    make_project("arch", upstream="rsync://secretuser@mirror.example.org/arch")
    failed = pull(app, client, admin, "arch")
    with app.app_context():
        from master.db import db
        from master.models import Run
        db.session.get(Run, failed).error = "rsync: failed to connect to secretuser@host /srv/data/arch -v"
        db.session.commit()
    for path in (f"/runs/{failed}", "/projects/arch"):
        _, body = page(client, path)
        assert "/srv/data" not in body and "rsync exit code 10 (error in socket I/O)" in body, path


def test_private_run_page_shows_the_run_its_slaves_and_the_log_tail(private_fleet):
    client, run_id = private_fleet
    response, body = page(client, f"/runs/{run_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert str(markupsafe.escape(HOSTILE_ERROR)) in body and "<script>" not in body
    assert response.status_code == 200
    assert f"Run {run_id} of debian" in body and ">distributing<" in body
    assert '<meta http-equiv="refresh" content="10">' in body, "a run still going refreshes itself"
    assert ">manual<" in body
    table = body[body.index('<table class="slave-runs">'):body.index("</table>", body.index('<table class="slave-runs">'))]
    for name, state in (("one", "success"), ("two", "failed"), ("three", "dispatched")):
        assert re.search(rf'<th scope="row">{name}</th>\s*<td><span class="badge state-{state}">{state}</span>',
                         table), (name, table)
    assert ">23<" in table, "the failed slave's exit code"
    log = re.search(r'<pre class="log">(.*?)</pre>', body, re.S).group(1)
    lines = log.splitlines()
    assert len(lines) == 200 and lines[-2] == "line 499" and "line 300" not in lines
    assert "Last lines only." in body


def test_finished_run_page_does_not_refresh(app, client, admin, make_project):
    make_project("gentoo")
    run_id = pull(app, client, admin, "gentoo")
    response, body = page(client, f"/runs/{run_id}")
    assert response.status_code == 200 and ">success<" in body
    assert 'http-equiv="refresh"' not in body
    assert "No slave took part in this run." in body


def test_project_page_lists_recent_runs(client, failed_and_syncing):
    response, body = page(client, "/projects/fedora")
    assert response.status_code == 200
    assert f'href="/runs/{failed_and_syncing["fedora_run"]}"' in body and ">failed<" in body
    assert "Recent runs" in body


@pytest.mark.parametrize("path", ["/projects/nope", "/runs/999", "/runs/abc", "/runs/0", "/runs/" + "9" * 40])
def test_missing_project_or_run_is_an_html_404(client, path):
    response, body = page(client, path)
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "Not found" in body and "Traceback" not in body


def test_no_secret_reaches_any_page(app, client, fleet):
    credentials = fleet["credentials"]
    secrets = [UPSTREAM_SECRET, "mirroruser", ADMIN_TOKEN, JOIN_TOKEN]
    for one in credentials.values():
        secrets += [one["signing_key"], one["rsync_password"]]
    paths = ["/", "/projects/debian", "/projects/fedora", f"/runs/{fleet['debian_run']}", "/runs/999"]
    for path in paths:
        _, body = page(client, path)
        for secret in secrets:
            assert secret not in body, (path, secret)


@pytest.fixture
def private_fleet(private_app, clock):
    """The fleet fixture's debian run, on a master whose pages need a token."""
    client = private_app.test_client()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    private_app.config["JOIN_TOKEN"] = JOIN_TOKEN
    assert client.post("/api/v1/projects", json={"name": "debian", "upstream": "rsync://h/debian"},
                       headers=admin).status_code == 201
    credentials = {name: enroll(client, name) for name in ("one", "three", "two")}
    run_id = pull(private_app, client, admin, "debian")
    report(client, credentials["one"], clock, run_id)
    report(client, credentials["two"], clock, run_id, state="failed", error=HOSTILE_ERROR)
    with private_app.app_context():
        path = runlogs.log_path(logs_root(), "debian", run_id)
        with open(path, "a") as log:
            log.writelines(f"line {number}\n" for number in range(500))
            log.write(f"{HOSTILE_ERROR}\n")
    return client, run_id


@pytest.fixture
def private_app(tmp_path, clock, fake_rsync, fake_slaves):
    from master import create_app
    return create_app({"DATA_DIR": str(tmp_path / "private"), "ADMIN_TOKEN": ADMIN_TOKEN, "LOG_LEVEL": "WARNING",
                       "CLOCK": clock, "RSYNC_RUNNER": fake_rsync, "SLAVE_CLIENT": fake_slaves,
                       "STATUS_PUBLIC": False})


def test_private_pages_need_a_token(private_app, admin):
    client = private_app.test_client()
    client.post("/api/v1/projects", json={"name": "debian", "upstream": "rsync://h/debian"}, headers=admin)
    for path in ("/", "/projects/debian", "/runs/1"):
        response, body = page(client, path)
        assert response.status_code == 401 and response.mimetype == "text/html", path
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "STATUS_PUBLIC" in body and "Traceback" not in body and "debian</a>" not in body
    response, body = page(client, "/", headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 401
    response, body = page(client, "/", headers=admin)
    assert response.status_code == 200 and 'href="/projects/debian"' in body


def test_public_pages_need_no_token(client, make_project):
    make_project("debian")
    response, body = page(client, "/")
    assert response.status_code == 200 and 'href="/projects/debian"' in body


@pytest.mark.parametrize("raw, expected", [("1", True), ("yes", True), ("TRUE", True), (" 0 ", False),
                                           ("no", False), ("false", False)])
def test_status_public_is_read_from_the_environment(tmp_path, raw, expected):
    settings = load_settings("master", {"DATA_DIR": str(tmp_path)}, environ={"MIRRORSYNC_STATUS_PUBLIC": raw})
    assert settings["STATUS_PUBLIC"] is expected


def test_status_public_defaults_to_true_and_takes_a_bool_override(tmp_path):
    assert load_settings("master", {"DATA_DIR": str(tmp_path)}, environ={})["STATUS_PUBLIC"] is True
    assert load_settings("master", {"DATA_DIR": str(tmp_path), "STATUS_PUBLIC": False}, environ={})[
        "STATUS_PUBLIC"] is False


@pytest.mark.parametrize("raw", ["maybe", "", "2", 1])
def test_a_bad_status_public_fails_naming_the_setting(tmp_path, raw):
    with pytest.raises(ConfigError, match="STATUS_PUBLIC"):
        load_settings("master", {"DATA_DIR": str(tmp_path), "STATUS_PUBLIC": raw}, environ={})


def test_relative_ages_and_sizes_read_naturally(app):
    from master.api.pages import age, human_size
    with app.app_context():
        from master.seams import now
        moment = now()
        assert age(moment - datetime.timedelta(hours=3, minutes=5)) == "3 h ago"
        assert age(moment + datetime.timedelta(minutes=5)) == "in 5 min"
        assert age(moment - datetime.timedelta(days=3)) == "3 d ago"
        assert age(None) == "never"
    assert human_size(1288490189) == "1.2 GiB"
    assert human_size(512) == "512 B"
    assert human_size(None) == "unknown"
