"""The visitors' page, and the project and run pages, in a real headless Chromium at phone and desktop widths."""

import base64
import re

import pytest
import requests

from tests.integration.conftest import ApiClient
from tests.integration.test_master_sync import create_project, sync
from tests.integration.test_status_page_browser import FLAGS, DevToolsSession, assert_png, chromium  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WIDTHS = {"phone": (400, 800), "desktop": (1280, 800)}
LONG_DESCRIPTION = ("Debian GNU/Linux, the universal operating system, with every architecture, the "
                    "security archive and the installer images of each point release")


@pytest.fixture
def site(master_factory, tmp_path, upstream):
    """A master whose projects have long names and descriptions, one synced: (master, api, run)."""
    master = master_factory(tmp_path / "data", extra_env={"MIRRORSYNC_SITE_NAME": "Example University Mirrors",
                                                          "MIRRORSYNC_SITE_URL": "https://mirrors.example.org"})
    api = ApiClient(master.url, master.admin_token)
    try:
        create_project(api, "debian", upstream.url, schedule="0 3 * * *", description=LONG_DESCRIPTION,
                       help_url="https://mirrors.example.org/help/debian/")
        create_project(api, "a-very-long-project-name-for-testing.example", upstream.url,
                       description="Another mirror", public_path="/pub/a-very-long-project-name-for-testing/")
        create_project(api, "archlinux", upstream.url, description="A simple, lightweight distribution")
        create_project(api, "fedora", upstream.url, enabled=False)
        run = sync(api, master, "debian")
        assert run["state"] == "success", run
        yield master, api, run
    finally:
        api.close()


@pytest.fixture
def session(chromium, tmp_path):  # noqa: F811 - the chromium fixture, imported above
    browser = DevToolsSession(chromium, tmp_path / "chromium-profile", list(FLAGS))
    yield browser
    browser.close()


def evaluate(session, expression):
    result = session.call("Runtime.evaluate", expression=expression, returnByValue=True)
    assert "exceptionDetails" not in result, result
    return result["result"].get("value")


def widths(session):
    """(the page's scroll width, the viewport's width) in CSS pixels."""
    return tuple(evaluate(session, "[document.documentElement.scrollWidth, window.innerWidth]"))


def full_screenshot(session, path):
    """The whole page, not only the part in the viewport."""
    height = evaluate(session, "document.documentElement.scrollHeight")
    width = evaluate(session, "window.innerWidth")
    data = session.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                        clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})["data"]
    path.write_bytes(base64.b64decode(data))
    return assert_png(path)


def test_the_visitors_page_fits_phone_and_desktop_widths(site, session, tmp_path):
    master, api, run = site
    shots = tmp_path / "screenshots"
    shots.mkdir()
    for label, (width, height) in WIDTHS.items():
        session.open_page(master.url + "/mirrors", width=width, height=height)
        scroll_width, viewport = widths(session)
        assert scroll_width <= viewport, f"/mirrors at {label} {width}px scrolls sideways: {scroll_width}px"
        full_screenshot(session, shots / f"mirrors-{label}.png")
        html = session.outer_html()
        assert '<a class="files" href="https://mirrors.example.org/debian">debian</a>' in html
        assert "Example University Mirrors" in html and LONG_DESCRIPTION in html

        for path in ("/projects/debian", f"/runs/{run['id']}", "/"):
            session.open_page(master.url + path, width=width, height=height)
            scroll_width, viewport = widths(session)
            assert scroll_width <= viewport, f"{path} at {label} {width}px scrolls sideways: {scroll_width}px"
            name = path.strip("/").replace("/", "-") or "index"
            full_screenshot(session, shots / f"{name}-{label}.png")


def test_the_search_filters_as_one_types_and_on_the_server_without_script(
        site, session, chromium, tmp_path):  # noqa: F811 - the chromium fixture, imported above
    master, _, _ = site
    session.open_page(master.url + "/mirrors", width=400, height=800)
    evaluate(session, """
        const input = document.getElementById('mirror-search');
        input.value = 'lightweight';
        input.dispatchEvent(new Event('input'));
    """)
    visible = evaluate(session, "Array.from(document.querySelectorAll('table.mirrors tbody tr'))"
                                ".filter(row => !row.hidden).map(row => row.id)")
    assert visible == ["mirror-archlinux"]
    assert evaluate(session, "document.getElementById('mirror-count').textContent").startswith("1 of 4 mirrors")
    assert evaluate(session, "location.search") == "?q=lightweight", "a refresh keeps the search"

    without = DevToolsSession(chromium, tmp_path / "no-script-profile",
                              [*FLAGS, "--blink-settings=scriptEnabled=false"])
    try:
        without.open_page(master.url + "/mirrors?q=lightweight", width=400, height=800, javascript=False)
        html = without.outer_html()
        assert '<tr id="mirror-archlinux" data-search="archlinux a simple, lightweight distribution">' in html
        for hidden in ("debian", "fedora"):
            assert re.search(rf'<tr id="mirror-{hidden}" data-search="[^"]*" hidden', html), hidden
        assert 'value="lightweight"' in html
        assert_png(without.screenshot(tmp_path / "mirrors-search-no-javascript.png"))
    finally:
        without.close()


def test_a_slaves_own_page_fits_a_phone_and_names_what_it_holds(master_factory, tmp_path, upstream, session):
    from tests.support.processes import DEFAULT_JOIN_TOKEN, start_slave, wait_for
    master = master_factory(tmp_path / "data", extra_env={"MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN})
    api = ApiClient(master.url, master.admin_token)
    slave = start_slave(tmp_path / "mirror1", "mirror1", master.url, log_dir=tmp_path / "logs",
                        extra_env={"MIRRORSYNC_STATUS_PAGE": "true",
                                   "MIRRORSYNC_PUBLIC_NAME": "mirror1.example.org"})
    try:
        wait_for(lambda: any(s["name"] == "mirror1" and s["state"] == "online"
                             for s in api.get("/api/v1/slaves").json()), 20, message="mirror1 online")
        create_project(api, "debian-with-a-long-name-for-phones", upstream.url)
        assert sync(api, master, "debian-with-a-long-name-for-phones")["state"] == "success"
        for label, (width, height) in WIDTHS.items():
            session.open_page(slave.url + "/", width=width, height=height)
            scroll_width, viewport = widths(session)
            assert scroll_width <= viewport, f"the slave's page at {width}px scrolls sideways: {scroll_width}px"
            html = session.outer_html()
            assert "<h1>mirror1.example.org</h1>" in html
            assert '<span class="badge state-success">success</span>' in html
            assert "rsync://" not in html and str(master.data_dir) not in html
            full_screenshot(session, tmp_path / f"slave-{label}.png")
        jobs = requests.get(slave.url + "/jobs", timeout=10).json()
        assert [(job["name"], job["status"], job["is_master"]) for job in jobs] == [
            ("debian-with-a-long-name-for-phones", "success", False)]
    finally:
        slave.stop()
        api.close()
