"""/mirrors, the visitors' page: files, description, help, state, times and size; a search that needs no script."""

import re

import pytest

from tests.unit.test_distribution import pull

SECRET = "upstream-pw-7f3e9a1c"


def row(body, name):
    match = re.search(rf'<tr id="mirror-{name}"([^>]*)>(.*?)</tr>', body, re.S)
    assert match, f"no row for {name}"
    return match.group(1), match.group(2)


@pytest.fixture
def site(app, client, admin, make_project, clock, fake_rsync):
    """debian synced 3 h ago with a description and help; arch failed; fedora disabled; pypi never ran."""
    make_project("debian", upstream="rsync://mirroruser@mirror.example.org/debian", upstream_password=SECRET,
                 schedule="0 */6 * * *", description="The universal operating system",
                 help_url="https://help.example.org/debian/", public_path="/debian/")
    make_project("arch", description="A simple, lightweight distribution")
    make_project("fedora", enabled=False)
    make_project("pypi")
    pull(app, client, admin, "debian")
    fake_rsync.exit_codes = [23]
    pull(app, client, admin, "arch")
    clock.advance(3 * 3600 + 120)
    return app


def test_each_mirror_shows_its_files_description_help_state_times_and_size(site, client):
    response = client.get("/mirrors")
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and response.mimetype == "text/html"

    _, debian = row(body, "debian")
    assert '<a class="files" href="/debian/">debian</a>' in debian
    assert "The universal operating system" in debian
    assert '<a class="help" href="https://help.example.org/debian/" rel="noopener">help</a>' in debian
    assert '<span class="badge state-success">success</span>' in debian
    assert ('<span class="when"><time datetime="2026-01-01T00:00:00Z">2026-01-01 00:00 UTC</time> '
            '<span class="muted">(3 h ago)</span></span>') in debian
    assert ('<span class="when"><time datetime="2026-01-01T06:00:00Z">2026-01-01 06:00 UTC</time> '
            '<span class="muted">(in 2 h)</span></span>') in debian
    assert "1.2 KiB" in debian
    assert '<span class="badge state-failed">failed</span>' in row(body, "arch")[1]
    assert '<span class="badge state-paused">paused</span>' in row(body, "fedora")[1]
    assert '<span class="badge state-new">new</span>' in row(body, "pypi")[1]
    assert "4 mirrors" in body


def test_links_go_to_the_site_url_when_one_is_set(site, client):
    site.config["SITE_URL"] = "https://mirrors.example.org"
    site.config["SITE_NAME"] = "Example Mirrors"
    body = client.get("/mirrors").get_data(as_text=True)
    assert '<a class="files" href="https://mirrors.example.org/debian/">debian</a>' in body
    assert '<a class="files" href="https://mirrors.example.org/pypi">pypi</a>' in body
    assert "<title>Example Mirrors · mirrors</title>" in body and "<h1>Example Mirrors</h1>" in body


def test_the_page_never_shows_errors_logs_upstreams_or_paths(site, client, app):
    body = client.get("/mirrors").get_data(as_text=True)
    for private in ("rsync://", "mirroruser", "mirror.example.org", SECRET, "exit", "code 23",
                    app.config["DATA_DIR"], "/runs/"):
        assert private not in body, private


@pytest.mark.parametrize("query, shown", [
    ("deb", {"debian"}),
    ("LIGHTWEIGHT", {"arch"}),
    ("simple distribution", {"arch"}),
    ("operating distribution", set()),
    ("", {"debian", "arch", "fedora", "pypi"}),
])
def test_the_search_filters_on_the_server_without_script(site, client, query, shown):
    body = client.get("/mirrors", query_string={"q": query}).get_data(as_text=True)
    visible = {name for name in ("debian", "arch", "fedora", "pypi") if "hidden" not in row(body, name)[0]}
    assert visible == shown
    assert f'value="{query}"' in body
    assert ('<p class="empty" id="mirror-none">' in body) == (not shown)


def test_the_search_is_escaped_and_bad_ones_are_refused_with_a_page(site, client):
    body = client.get("/mirrors", query_string={"q": '"><script>alert(1)</script>'}).get_data(as_text=True)
    assert "<script>alert" not in body and "&lt;script&gt;" in body
    refused = client.get("/mirrors", query_string={"q": "x" * 101})
    assert refused.status_code == 422 and refused.mimetype == "text/html"
    assert client.get("/mirrors", query_string={"q": "a\nb"}).status_code == 422
    assert client.get("/mirrors", query_string={"utm_source": "x"}).status_code == 200


def test_only_scripts_and_styles_from_the_site_run(site, client):
    response = client.get("/mirrors")
    body = response.get_data(as_text=True)
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert re.findall(r"<script[^>]*>", body) == ['<script src="/static/mirrors.js" defer>']
    assert "</script>" in body and not re.search(r"<script[^>]*>[^<]+</script>", body)
    assert " style=" not in body and "<style" not in body and " on" not in re.sub(r'"[^"]*"', "", body)
    assert client.get("/static/mirrors.js").status_code == 200


def test_the_page_is_public_even_when_the_operator_pages_are_not(site, client):
    site.config["STATUS_PUBLIC"] = False
    assert client.get("/").status_code == 401
    assert client.get("/mirrors").status_code == 200


def test_a_queued_run_keeps_the_state_before_it(site, client, admin):
    client.post("/api/v1/projects/debian/syncs", headers=admin)
    client.post("/api/v1/projects/arch/syncs", headers=admin)
    body = client.get("/mirrors").get_data(as_text=True)
    assert "state-success" in row(body, "debian")[1]
    assert "state-failed" in row(body, "arch")[1]


def test_without_a_site_url_each_slaves_public_url_carries_the_links(site, client, admin):
    from tests.unit.test_distribution import enroll
    for name in ("mirror1", "mirror2", "hidden"):
        enroll(client, name)
    for name, url in (("mirror1", "https://mirror1.example.org/"), ("mirror2", "http://mirror2.example.org:8080")):
        answer = client.patch(f"/api/v1/slaves/{name}", json={"public_url": url}, headers=admin)
        assert answer.status_code == 200 and answer.json["public_url"] == url
    body = client.get("/mirrors").get_data(as_text=True)
    _, debian = row(body, "debian")
    assert '<a class="files" href="https://mirror1.example.org/debian/">debian</a>' in debian
    assert ('on <a href="https://mirror1.example.org/debian/">mirror1</a> · '
            '<a href="http://mirror2.example.org:8080/debian/">mirror2</a>') in debian
    assert "hidden" not in debian

    client.patch("/api/v1/slaves/mirror2", json={"enabled": False}, headers=admin)
    _, debian = row(client.get("/mirrors").get_data(as_text=True), "debian")
    assert "mirror2" not in debian and 'class="hosts' not in debian, "one host: the name's link says it all"


@pytest.mark.parametrize("url", ["ftp://mirror1.example.org", "https://user@mirror1.example.org",
                                 "https://mirror1.example.org/?x=1", "javascript:alert(1)", "//mirror1", 5])
def test_a_bad_slave_public_url_is_refused_and_named(client, admin, url):
    from tests.support.api_errors import assert_error_shape
    from tests.unit.test_distribution import enroll
    enroll(client, "mirror1")
    assert_error_shape(client.patch("/api/v1/slaves/mirror1", json={"public_url": url}, headers=admin),
                       field="public_url")
