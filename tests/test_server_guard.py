"""Other web pages kept out: a DNS-rebinding ``Host`` and a cross-site write are refused on every
route, with and without API keys; the service's own pages, non-browser clients and the origins an
operator allows get through; ``OPTIONS`` says what a route takes."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient
from test_server_support import LiveServer, add_concept, add_user, photo, settings, wait_ready

from rap.server import create_app
from rap.server.guard import SAFE_METHODS
from rap.server.openapi import document

REBINDING = {"Host": "attacker.example:18558", "Origin": "http://attacker.example:18558"}
CROSS_SITE = [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Referer": "http://evil.example/form.html"},
]


def writing_routes() -> list[tuple[str, str]]:
    """Every route of the published API that changes or computes something: (method, path with its parameters filled)."""
    return [
        (method.upper(), path.replace("{name}", "bo").replace("{n}", "1"))
        for path, operations in document()["paths"].items()
        for method in operations
        if method.upper() not in SAFE_METHODS
    ]


ROUTES = writing_routes()


@pytest.fixture(params=["keyed", "no-auth"])
def api(request, rap_home):
    """(client, headers) with a concept ``bo``, in keyed or ``--no-auth`` mode."""
    with TestClient(create_app(settings(), auth=request.param == "keyed")) as client:
        wait_ready(client)
        headers = add_user(rap_home, "alice") if request.param == "keyed" else {}
        add_concept(client, headers, "bo")
        yield client, headers


def test_every_writing_route_is_covered():
    assert ("POST", "/v1/concepts") in ROUTES and ("DELETE", "/v1/concepts/bo/images/1") in ROUTES
    assert ("POST", "/v1/chat/completions") in ROUTES and len(ROUTES) >= 11


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_a_rebinding_host_and_a_cross_site_write_are_refused(api, method, path):
    client, headers = api
    files = [("image", photo())] if method == "POST" and "chat" not in path else None
    data = {"name": "planted", "question": "hi", "text": "hi"} if files else None
    rebound = client.request(method, path, headers=headers | REBINDING, files=files, data=data)
    assert rebound.status_code == 400 and rebound.json()["error"]["code"] == "invalid_host", rebound.text
    for cross in CROSS_SITE:
        refused = client.request(method, path, headers=headers | cross, files=files, data=data)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "cross_site_request", (cross, refused.text)
    concepts = client.get("/v1/concepts", headers=headers).json()["concepts"]
    assert [(c["name"], len(c["images"])) for c in concepts] == [("bo", 1)]


def test_reads_are_refused_under_a_rebinding_host_too(api):
    client, headers = api
    assert client.get("/v1/concepts", headers=headers | REBINDING).status_code == 400
    assert client.get("/v1/concepts/bo/images/1", headers=headers | REBINDING).status_code == 400


def test_the_services_own_pages_and_plain_clients_may_write(api):
    client, headers = api
    for own in ({"Origin": "http://testserver"}, {"Sec-Fetch-Site": "same-origin"}, {"Referer": "http://testserver/index.html"}, {}):
        assert client.patch("/v1/concepts/bo", json={"info": "mine"}, headers=headers | own).status_code == 200, own


def test_an_allowed_origin_may_write_and_gets_cors_headers(rap_home):
    app = create_app(settings(cors_origins=["https://app.example"], allowed_hosts=["rap.example"]), auth=False)
    with TestClient(app, base_url="http://rap.example") as client:
        wait_ready(client)
        add_concept(client, {"Origin": "https://app.example"}, "bo")
        preflight = client.options(
            "/v1/concepts/bo", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "DELETE"}
        )
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert client.delete("/v1/concepts/bo", headers={"Origin": "https://elsewhere.example"}).status_code == 403
        assert client.delete("/v1/concepts/bo", headers={"Origin": "https://app.example"}).status_code == 204


def test_cors_is_closed_by_default(api):
    client, headers = api
    answer = client.get("/v1/concepts", headers=headers | {"Origin": "https://app.example"})
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


def test_options_names_the_methods_a_route_takes(api):
    client, headers = api
    answer = client.options("/v1/concepts/bo")
    assert answer.status_code == 204 and answer.headers["Allow"] == "DELETE, GET, OPTIONS, PATCH"
    assert client.options("/v1/chat/completions").headers["Allow"] == "OPTIONS, POST"
    assert client.options("/v1/no-such-route").status_code == 404


def test_over_a_socket_the_listening_address_and_localhost_are_answered(rap_home):
    with LiveServer(create_app(settings(), auth=False)) as live, httpx.Client(base_url=live.url) as http:
        port = live.url.rsplit(":", 1)[1]
        assert http.get("/v1/concepts").status_code == 200
        assert http.get("/v1/concepts", headers={"Host": f"localhost:{port}"}).status_code == 200
        refused = http.get("/v1/concepts", headers={"Host": f"attacker.example:{port}"})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_host"
        assert http.delete("/v1/concepts/x", headers={"Origin": "http://attacker.example"}).status_code == 403
