"""The status page in a real headless Chromium, against a real master, slave and upstream."""

import base64
import json
import os
import select
import shutil
import subprocess
import time

import pytest

from tests.integration.test_master_sync import create_project, sync
from tests.support.apt import apt_install
from tests.support.processes import DEFAULT_JOIN_TOKEN, start_slave, wait_for

pytestmark = pytest.mark.slow

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
BROWSER_TIMEOUT = 60
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _find_chromium():
    return next((path for path in CHROMIUM_PATHS if os.access(path, os.X_OK)), None) \
        or shutil.which("chromium")


@pytest.fixture(scope="session")
def chromium():
    """Path of a Chromium binary, installed with apt-get when we are root; skips when there is none."""
    found = _find_chromium()
    if found:
        return found
    failure = apt_install("chromium")
    found = _find_chromium()
    if not found:
        pytest.skip(f"needs Chromium and could not install it: {failure or 'no chromium binary after install'}")
    return found


FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")
NO_SCRIPT = "--blink-settings=scriptEnabled=false"


class Browser:
    """One headless Chromium command per call, with a throwaway profile."""

    def __init__(self, binary, profile):
        self.binary = binary
        self.profile = profile

    def run(self, *arguments):
        argv = [self.binary, *FLAGS, f"--user-data-dir={self.profile}"]
        done = subprocess.run(argv + list(arguments), capture_output=True, timeout=BROWSER_TIMEOUT, check=False,
                              stdin=subprocess.DEVNULL)
        errors = done.stderr.decode(errors="replace")[-2000:]
        assert done.returncode == 0, errors
        return done.stdout.decode(errors="replace"), errors

    def dump_dom(self, url):
        dom, errors = self.run("--dump-dom", url)
        assert dom.strip(), f"Chromium dumped no DOM for {url}: {errors}"
        return dom

    def screenshot(self, url, path):
        self.run(f"--screenshot={path}", "--window-size=1280,800", url)
        return assert_png(path)

    def with_script(self):
        """A DevToolsSession whose pages run script."""
        return DevToolsSession(self.binary, f"{self.profile}-script", list(FLAGS))

    def without_script(self):
        """A DevToolsSession whose pages may not run script."""
        return DevToolsSession(self.binary, f"{self.profile}-no-script", [*FLAGS, NO_SCRIPT])


def assert_png(path):
    assert path.exists(), f"Chromium wrote no screenshot at {path}"
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5 * 1024, f"{path}: {len(data)} bytes, not a real PNG"
    return path


class DevToolsSession:
    """Chromium driven over --remote-debugging-pipe (fd 3 in, fd 4 out): one page, no third-party client.

    Chromium's --dump-dom and --screenshot read the page back with script, so they print nothing once
    --blink-settings=scriptEnabled=false is set; the DevTools protocol reads the DOM and paints without it.
    """

    def __init__(self, binary, profile, flags):
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def wire_pipes():
            # Copies first, so that neither end is overwritten if it already sits on fd 3 or 4.
            reading, writing = os.dup(to_browser_read), os.dup(from_browser_write)
            os.dup2(reading, 3)
            os.dup2(writing, 4)

        self.process = subprocess.Popen(
            [binary, *flags, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=wire_pipes)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.events = []
        self.session = None

    def call(self, method, session=True, timeout=BROWSER_TIMEOUT, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive(timeout)
            if reply.get("id") == self._next_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method, timeout=BROWSER_TIMEOUT):
        while True:
            for event in self.events:
                if event["method"] == method:
                    self.events.remove(event)
                    return event.get("params", {})
            self.events.append(self._receive(timeout))

    def _receive(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_browser], [], [], max(0, left))
            assert ready, f"Chromium said nothing for {timeout} s"
            chunk = os.read(self._from_browser, 65536)
            assert chunk, "Chromium closed its DevTools pipe"
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def open_page(self, url, width=1280, height=800, javascript=True, record_requests=False):
        target = self.call("Target.createTarget", session=False, url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", session=False, targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable")
        if record_requests:
            self.call("Network.enable")
        self.call("Emulation.setScriptExecutionDisabled", value=not javascript)
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def outer_html(self):
        root = self.call("DOM.getDocument", depth=-1)["root"]["nodeId"]
        return self.call("DOM.getOuterHTML", nodeId=root)["outerHTML"]

    def requested_urls(self):
        """Every URL the page asked for so far (with ``record_requests``), in order."""
        return [event["params"]["request"]["url"] for event in self.events
                if event["method"] == "Network.requestWillBeSent"]

    def evaluate(self, expression):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def script_runs(self):
        """Whether the page may run script: evaluated as page script, so it fails when script is off."""
        result = self.call("Runtime.evaluate", expression="1 + 1", returnByValue=True)
        return result.get("result", {}).get("value") == 2

    def screenshot(self, path):
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self):
        try:
            self.call("Browser.close", session=False, timeout=10)
        except (AssertionError, OSError):
            pass
        finally:
            os.close(self._to_browser)
            os.close(self._from_browser)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def browser(chromium, tmp_path):
    return Browser(chromium, tmp_path / "chromium-profile")


@pytest.fixture
def mirrored(master_factory, tmp_path, upstream):
    """A master with one slave that holds a synced project: (master, api client, project name, run)."""
    from tests.integration.conftest import ApiClient
    master = master_factory(tmp_path / "data", extra_env={"MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN})
    api = ApiClient(master.url, master.admin_token)
    slave = start_slave(tmp_path / "mirror1", "mirror1", master.url, log_dir=tmp_path / "logs")
    try:
        wait_for(lambda: any(s["name"] == "mirror1" and s["state"] == "online"
                             for s in api.get("/api/v1/slaves").json()), 20, message="mirror1 online")
        create_project(api, "tricky", upstream.url, schedule="0 3 * * *")
        run = sync(api, master, "tricky")
        assert run["state"] == "success", run
        yield master, api, "tricky", run
    finally:
        slave.stop()
        api.close()


def test_status_page_renders_in_chromium_with_and_without_javascript(browser, mirrored, tmp_path):
    master, api, name, run = mirrored
    dom = browser.dump_dom(master.url + "/")
    assert '<meta http-equiv="refresh" content="10">' in dom
    assert f'<a href="/projects/{name}">{name}</a>' in dom
    assert '<span class="badge state-success">success</span>' in dom
    assert 'data-slave="mirror1"' in dom and '<span class="badge fresh-fresh">fresh</span>' in dom
    assert f'<a href="/runs/{run["id"]}">run {run["id"]}</a>' in dom
    assert "just now" in dom or " s ago" in dom
    assert "rsync://127.0.0.1:" in dom

    run_dom = browser.dump_dom(f"{master.url}/runs/{run['id']}")
    assert f"Run {run['id']} of {name}" in run_dom and '<th scope="row">mirror1</th>' in run_dom
    assert '<pre class="log">' not in run_dom and 'http-equiv="refresh"' not in run_dom, "a public page shows no log"

    shots = tmp_path / "screenshots"
    shots.mkdir()
    browser.screenshot(master.url + "/", shots / "status.png")
    browser.screenshot(f"{master.url}/runs/{run['id']}", shots / "run.png")



def test_status_page_works_with_javascript_off(browser, mirrored, tmp_path):
    master, api, name, run = mirrored
    assert "<script" not in api.get("/").text, "the page ships no script at all"
    session = browser.without_script()
    try:
        session.open_page("data:text/html,<title>before</title><script>document.title='ran'</script>",
                          javascript=False)
        assert "<title>before</title>" in session.outer_html(), "script still ran: the check would prove nothing"

        session.open_page(master.url + "/", javascript=False)
        dom = session.outer_html()
        assert f'<a href="/projects/{name}">{name}</a>' in dom
        assert '<span class="badge fresh-fresh">fresh</span>' in dom and 'data-slave="mirror1"' in dom
        assert_png(session.screenshot(tmp_path / "status-no-javascript.png"))

        session.open_page(f"{master.url}/runs/{run['id']}", javascript=False)
        dom = session.outer_html()
        assert f"Run {run['id']} of {name}" in dom and '<th scope="row">mirror1</th>' in dom
        assert '<pre class="log">' not in dom and "mirrorctl runs log" in dom
    finally:
        session.close()


def test_missing_run_is_a_readable_404_in_chromium(browser, master, tmp_path):
    dom = browser.dump_dom(master.url + "/runs/424242")
    assert "There is no run 424242." in dom and "Traceback" not in dom


def test_the_api_docs_render_offline_from_the_master_alone(browser, master, tmp_path):
    session = browser.with_script()
    try:
        session.open_page(master.url + "/api/v1/docs", record_requests=True)
        # Swagger UI draws one block per operation once it has read the OpenAPI document.
        wait_for(lambda: session.evaluate("document.querySelectorAll('.opblock').length") or None,
                 BROWSER_TIMEOUT, interval=0.2, message="Swagger UI to draw the operations")
        text = session.evaluate("document.body.innerText")
        assert "/api/v1/projects" in text and "mirror-sync master" in text
        requested = session.requested_urls()
        assert any(url.endswith("/api/v1/openapi.json") for url in requested), requested
        elsewhere = [url for url in requested if not url.startswith(master.url + "/") and not url.startswith("data:")]
        assert not elsewhere, f"the docs page loaded from other hosts: {elsewhere}"
        assert_png(session.screenshot(tmp_path / "api-docs.png"))
    finally:
        session.close()
