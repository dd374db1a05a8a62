"""The OpenAPI document is generated from the same schemas the API validates with."""

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]


def test_every_api_route_is_in_the_openapi_document(app, client):
    document = client.get("/api/v1/openapi.json")
    assert document.status_code == 200
    paths = set(document.json["paths"])
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        path = re.sub(r"\{\w+\(max=\d+\):(\w+)\}", r"{\1}", path)
        if path.startswith("/api/v1/") and path != "/api/v1/openapi.json" and not path.startswith("/api/v1/docs"):
            assert path in paths, f"{path} is missing from the OpenAPI document"


def test_the_document_carries_the_validation_rules_and_hides_secrets(client):
    schemas = client.get("/api/v1/openapi.json").json["components"]["schemas"]
    project = schemas["Project"]["properties"]
    assert project["upstream_password"].get("writeOnly") is True
    assert project["status"].get("readOnly") is True
    assert project["retries"]["maximum"] == 10
    assert set(project["publish"]["enum"]) == {"delay", "atomic"}


def test_the_document_describes_cancel_and_forced_delete(client):
    paths = client.get("/api/v1/openapi.json").json["paths"]
    assert "post" in paths["/api/v1/runs/{run_id}/cancel"]
    assert "force" in [p["name"] for p in paths["/api/v1/projects/{name}"]["delete"]["parameters"]]


def test_interactive_docs_are_served(client):
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and b"openapi.json" in page.data


class LinkCollector(HTMLParser):
    """Every URL a page makes the browser load or follow: src, href and action attributes."""

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href", "action") and value]


def linked_urls(html):
    collector = LinkCollector()
    collector.feed(html)
    return collector.urls


def assert_same_origin(urls, page):
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{page} loads {url} from another host"


def test_the_docs_load_their_assets_from_the_master_itself(client):
    page = client.get("/api/v1/docs")
    urls = linked_urls(page.text)
    assert_same_origin(urls, "/api/v1/docs")
    kinds = {".css": "text/css", ".js": "javascript"}
    assets = [url for url in urls if url.endswith(tuple(kinds))]
    assert len(assets) >= 3, urls  # the stylesheet, the standalone preset and the bundle
    for url in assets:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert kinds[Path(url).suffix] in asset.content_type, (url, asset.content_type)
        assert len(asset.data) > 10_000, f"{url} is not Swagger UI ({len(asset.data)} bytes)"
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy, "browsers are told to load nothing from elsewhere"


def test_the_docs_turn_off_the_online_validator_badge(client):
    # Swagger UI otherwise shows an image fetched from validator.swagger.io.
    assert '"validatorUrl": null' in client.get("/api/v1/docs").text


def test_a_missing_asset_is_a_404(client):
    assert client.get("/api/v1/docs/assets/no-such-file.js").status_code == 404
    assert client.get("/api/v1/docs/assets/../../settings.py").status_code == 404


def test_no_template_or_stylesheet_of_master_or_slave_names_another_host():
    pages = [path for app in ("master", "slave") for kind in ("templates/*.html", "static/*")
             for path in (ROOT / app).glob(kind)]
    assert len(pages) >= 4, pages
    for path in pages:
        text = path.read_text()
        assert not re.search(r"(?:https?:)?//[\w.-]+\.\w", text.replace("http-equiv", "")), \
            f"{path.name} refers to another host"
        assert "@import" not in text, f"{path.name} imports a stylesheet"


def test_the_status_pages_link_only_to_the_master(client, make_project):
    make_project("debian")
    for url in ("/", "/projects/debian", "/runs/424242"):
        page = client.get(url)
        assert page.content_type.startswith("text/html"), url
        assert_same_origin(linked_urls(page.text), url)
