"""The OpenAPI document is generated from the same schemas the API validates with."""

import re


def test_every_api_route_is_in_the_openapi_document(app, client):
    document = client.get("/api/v1/openapi.json")
    assert document.status_code == 200
    paths = set(document.json["paths"])
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        path = re.sub(r"\{\w+\(max=\d+\):(\w+)\}", r"{\1}", path)
        if path.startswith("/api/v1/") and path not in ("/api/v1/openapi.json", "/api/v1/docs",
                                                       "/api/v1/docs/<path:filename>"):
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
