"""schemathesis against /api/schema/, through the WSGI app, signed in as an admin with an API key.

Each operation gets a bounded, deterministic set of generated requests (valid and invalid) and
every answer must be a non-5xx that the schema documents: status code, content type, headers
and body shape. Two request-side checks are left out on purpose, because the API is right to
differ from what JSON Schema can say:

- "schema-valid request rejected": a token resource has rules JSON Schema cannot express (the
  name in the path equals `metadata.name`, ARN and region syntax, TTL bounds), so schema-valid
  documents are refused with 400 `invalid_token_resource` and the reasons;
- "schema-violating request accepted": the list filters treat an empty value as no filter, the
  way the console's HTML forms send them, and an unusable `limit` falls back to the default.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.services import create_api_key
from joinadmin.wsgi import application
from tests.console import make_attempt, make_host, make_token

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api_key(admin_user: Any) -> Iterator[str]:
    """An admin's API key, with some rows for the read operations to return.

    The WSGI app runs in the test's own database transaction: Django's request signals would
    close that connection after every request (the test client unhooks them the same way).
    """
    make_token("ec2-token", metadata={"labels": {"team": "ops"}})
    make_host()
    make_attempt()
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield create_api_key(admin_user, name="schemathesis").secret
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=20,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_api_operation_answers_without_5xx_and_as_its_schema_says(
    case: schemathesis.Case, api_key: str
):
    case.call_and_validate(headers={"Authorization": f"Bearer {api_key}"}, checks=CHECKS)


# --- What the run found, pinned as plain tests --------------------------------------------------


@pytest.fixture
def admin_api(admin_user: Any) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {create_api_key(admin_user).secret}"}


def test_forgetting_a_host_with_a_blank_reason_records_the_default_one(
    client: Any, admin_api: dict[str, str]
):
    from audit.models import AdminAction

    host = make_host()
    response = client.delete(f"/api/v1/hosts/{host.host_id}?reason=%1F", **admin_api)
    assert response.status_code == 204
    row = AdminAction.objects.get(action="host.forget")
    assert row.reason == "forgotten through the API without a stated reason"


@pytest.mark.parametrize("reason", [["a list"], {"an": "object"}, "nul\x00byte"])
def test_forgetting_a_host_with_a_malformed_reason_is_a_400(
    client: Any, admin_api: dict[str, str], reason: Any
):
    host = make_host()
    response = client.delete(
        f"/api/v1/hosts/{host.host_id}",
        data=json.dumps({"reason": reason}),
        content_type="application/json",
        **admin_api,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_a_missing_join_attempt_answers_the_not_found_code(client: Any, admin_api: dict[str, str]):
    response = client.get("/api/v1/join-attempts/999999", **admin_api)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_an_unknown_api_address_answers_json_not_the_console_page(
    client: Any, admin_api: dict[str, str]
):
    response = client.get("/api/v1/join-attempts/not-a-number", **admin_api)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "not_found"
    console = client.get("/no-such-page/")
    assert console.status_code == 404 and console["Content-Type"].startswith("text/html")


def test_the_schema_names_the_api_key_scheme_and_unique_operation_ids(client: Any):
    document = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    scheme = document["components"]["securitySchemes"]["apiKeyAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert "v1_tokens_list" in ids
