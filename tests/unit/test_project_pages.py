"""GET /api/v1/projects a page at a time, and mirrorctl following the pages to the end."""

from urllib.parse import urlsplit

from mirrorctl.client import MasterClient
from mirrorctl.config import Settings
from mirrorctl.transport import Reply
from tests.conftest import ADMIN_TOKEN


class FlaskTransport:
    """mirrorctl's transport seam, answered by the master app in-process."""

    def __init__(self, client):
        self.client = client
        self.requests = []

    def send(self, method, url, headers, params=None, json=None):
        self.requests.append(params)
        response = self.client.open(urlsplit(url).path, method=method, headers=headers, query_string=params,
                                    json=json)
        return Reply(response.status_code, response.data, {k.lower(): v for k, v in response.headers.items()})


def names(response):
    return [project["name"] for project in response.json]


def test_projects_come_a_page_at_a_time_by_name(client, admin, make_project):
    for index in reversed(range(7)):
        make_project(f"p{index}")
    first = client.get("/api/v1/projects?limit=3", headers=admin)
    assert names(first) == ["p0", "p1", "p2"]
    assert first.headers["X-Next-Cursor"] == "p2"
    assert first.headers["Link"] == '</api/v1/projects?limit=3&cursor=p2>; rel="next"'
    second = client.get(first.headers["Link"].split(">")[0][1:], headers=admin)
    assert names(second) == ["p3", "p4", "p5"]
    last = client.get(f"/api/v1/projects?limit=3&cursor={second.headers['X-Next-Cursor']}", headers=admin)
    assert names(last) == ["p6"] and "X-Next-Cursor" not in last.headers and "Link" not in last.headers


def test_an_explicit_limit_gets_the_whole_list_and_the_default_page_is_100(client, admin, make_project):
    for index in range(105):
        make_project(f"p{index:03d}")
    default = client.get("/api/v1/projects", headers=admin)
    assert len(default.json) == 100 and default.headers["X-Next-Cursor"] == "p099"
    everything = client.get("/api/v1/projects?limit=10000", headers=admin)
    assert len(everything.json) == 105 and "X-Next-Cursor" not in everything.headers


def test_bad_page_arguments_are_refused_with_the_field_named(client, admin):
    for query, field in (("limit=0", "limit"), ("limit=10001", "limit"), ("limit=ten", "limit"),
                         ("cursor=../etc", "cursor"), ("cursor=", "cursor")):
        response = client.get(f"/api/v1/projects?{query}", headers=admin)
        assert response.status_code == 422, query
        assert field in response.json["fields"], (query, response.json)


def test_mirrorctl_follows_the_pages_to_the_last_project(client, make_project, monkeypatch):
    monkeypatch.setattr("mirrorctl.client.PROJECT_PAGE", 4)
    for index in range(10):
        make_project(f"p{index}")
    transport = FlaskTransport(client)
    settings = Settings(url="http://master.test", url_source="--url", token=ADMIN_TOKEN, token_source="--token")
    listed = MasterClient(settings, transport).list_projects()
    assert [project["name"] for project in listed] == [f"p{index}" for index in range(10)]
    assert transport.requests == [{"limit": 4}, {"limit": 4, "cursor": "p3"}, {"limit": 4, "cursor": "p7"}]
