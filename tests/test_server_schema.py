"""The committed OpenAPI document is the app's, and the app keeps to it under schemathesis's
generated requests, authenticated: no 5xx, no response outside the schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from test_server_support import add_concept, settings
from fastapi.testclient import TestClient

from rap.server import create_app
from rap.server.openapi import document
from rap.server.users import UserDB

schemathesis = pytest.importorskip("schemathesis")
# A schema cannot say "a photo" or "a name that is one word": valid-looking data may rightly get a 4xx.
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402
DOCUMENT = Path(__file__).parents[1] / "docs" / "openapi.json"


def test_the_committed_openapi_document_is_up_to_date():
    assert json.loads(DOCUMENT.read_text()) == document(), "regenerate: python -m rap.server.openapi > docs/openapi.json"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    home = tmp_path_factory.mktemp("schema-home")
    app = create_app(settings(home=home, rate_limit=100_000, failed_signins="100000/minute"))
    app.state.runtime.load()
    _, key = UserDB.at_home(home).add("fuzz")
    headers = {"Authorization": f"Bearer {key}"}
    add_concept(TestClient(app), headers, "bo")  # no lifespan: schemathesis's client runs none either
    yield app, headers
    app.state.runtime.close()


UNSAYABLE = {
    "invalid_image": "bytes that are not a photo (a schema cannot say 'a photo')",
    "the last message must be the user's": "a chat that does not end with the user's words (JSON Schema cannot speak of an array's last item)",
    "the question is empty": "the same, a last user message of blank text",
    "the messages carry": "more images than max_chat_images over all of a chat's messages (JSON Schema counts within one array only)",
}
"""The only refusals of requests the schema allows: what no JSON Schema can rule out."""


def unsayable(body: dict) -> bool:
    error = body["error"]
    return error["code"] in UNSAYABLE or any(error["message"].startswith(start) for start in UNSAYABLE)


@pytest.mark.slow
def test_the_api_keeps_to_its_schema(api):
    """Every operation, a few generated requests each (bounded: the whole run takes seconds); a request the
    schema allows is never refused, but for an upload that is not a photo."""
    app, headers = api
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    rejected = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def keeps_to_schema(case):
            response = case.call(headers=headers)
            case.validate_response(response, excluded_checks=[positive_data_acceptance])
            if response.status_code in (400, 413, 422) and not unsayable(response.json()):
                rejected.append((operation.label, response.status_code, response.text[:200]))

        keeps_to_schema()
    assert not rejected, rejected
