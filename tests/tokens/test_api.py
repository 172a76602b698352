"""`/api/v1/tokens`: authentication, permissions, JSON and YAML bodies, 409 and force,
all-or-nothing multi-document uploads, and the admin log."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from accounts.services import create_api_key
from audit.models import AdminAction
from tokens.models import Token

pytestmark = pytest.mark.django_db

TOKEN_YAML = """
kind: token
version: v2
metadata:
  name: ec2-token
spec:
  roles: [Node]
  join_method: ec2
  aws_iid_ttl: 5m
  allow:
  - aws_account: "111111111111"
    aws_regions: [us-west-1, us-west-2]
"""

TWO_DOCS = (
    TOKEN_YAML
    + """---
kind: token
version: v2
metadata:
  name: second
spec:
  roles: [node, app]
  allow:
  - aws_account: "222222222222"
"""
)


def bearer(user) -> Client:  # type: ignore[no-untyped-def]
    return Client(HTTP_AUTHORIZATION=f"Bearer {create_api_key(user).secret}")


def post_yaml(client: Client, text: str, query: str = ""):  # type: ignore[no-untyped-def]
    return client.post(f"/api/v1/tokens{query}", data=text, content_type="application/yaml")


def test_anonymous_callers_are_refused(client):
    response = client.get("/api/v1/tokens")
    assert response.status_code in {401, 403}
    assert response.json()["error"] in {"not_authenticated", "permission_denied"}


def test_a_revoked_or_unknown_key_is_refused(admin_user):
    new = create_api_key(admin_user)
    new.key.revoke()
    response = Client(HTTP_AUTHORIZATION=f"Bearer {new.secret}").get("/api/v1/tokens")
    assert response.status_code == 401
    assert Client(HTTP_AUTHORIZATION="Bearer ja_nope_nope").get("/api/v1/tokens").status_code == 401


def test_an_admin_key_creates_a_token_from_yaml(admin_user):
    response = post_yaml(bearer(admin_user), TOKEN_YAML)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["metadata"]["name"] == "ec2-token"
    assert body["spec"]["allow"] == [
        {"aws_account": "111111111111", "aws_regions": ["us-west-1", "us-west-2"]}
    ]
    token = Token.objects.get(name="ec2-token")
    assert token.roles == ["Node"] and token.aws_iid_ttl == "5m"
    action = AdminAction.objects.get(action="token.import")
    assert action.actor == admin_user and action.via == "api" and action.before is None


def test_an_admin_creates_a_token_from_json(admin_client):
    doc = {
        "kind": "token",
        "version": "v2",
        "metadata": {"name": "j"},
        "spec": {"roles": ["Node"], "allow": [{"aws_account": "111111111111"}]},
    }
    response = admin_client.post(
        "/api/v1/tokens", data=json.dumps(doc), content_type="application/json"
    )
    assert response.status_code == 201, response.content
    assert Token.objects.get(name="j").join_method == "ec2"


def test_an_auditor_reads_but_cannot_write(admin_client, auditor_client, auditor_user):
    assert post_yaml(admin_client, TOKEN_YAML).status_code == 201
    assert auditor_client.get("/api/v1/tokens").status_code == 200
    assert auditor_client.get("/api/v1/tokens/ec2-token").status_code == 200
    assert post_yaml(bearer(auditor_user), TWO_DOCS).status_code == 403
    assert auditor_client.delete("/api/v1/tokens/ec2-token").status_code == 403
    assert Token.objects.count() == 1


def test_a_user_without_a_group_sees_nothing(plain_user):
    assert bearer(plain_user).get("/api/v1/tokens").status_code == 403


def test_an_existing_name_conflicts_unless_forced(admin_client):
    assert post_yaml(admin_client, TOKEN_YAML).status_code == 201
    conflict = post_yaml(admin_client, TOKEN_YAML.replace("5m", "10m"))
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "token_exists"
    assert Token.objects.get().aws_iid_ttl == "5m"
    forced = post_yaml(admin_client, TOKEN_YAML.replace("5m", "10m"), "?force=true")
    assert forced.status_code == 201
    assert Token.objects.get().aws_iid_ttl == "10m"
    update = AdminAction.objects.filter(object_id="ec2-token").order_by("id").last()
    assert update.before["spec"]["aws_iid_ttl"] == "5m"
    assert update.after["spec"]["aws_iid_ttl"] == "10m"


def test_a_multi_document_upload_is_all_or_nothing(admin_client):
    broken = TWO_DOCS.replace('"222222222222"', '"22"')
    response = post_yaml(admin_client, broken)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_token_resource"
    assert body["details"][0]["document"] == 1
    assert body["details"][0]["field"] == "spec.allow[0].aws_account"
    assert Token.objects.count() == 0
    response = post_yaml(admin_client, TWO_DOCS)
    assert response.status_code == 201
    assert [r["metadata"]["name"] for r in response.json()["results"]] == ["ec2-token", "second"]
    assert Token.objects.get(name="second").roles == ["Node", "App"]


def test_a_conflict_in_one_document_writes_none(admin_client):
    assert post_yaml(admin_client, TOKEN_YAML).status_code == 201
    assert post_yaml(admin_client, TWO_DOCS).status_code == 409
    assert not Token.objects.filter(name="second").exists()


def test_put_replaces_and_keeps_the_name(admin_client):
    assert post_yaml(admin_client, TOKEN_YAML).status_code == 201
    current = admin_client.get("/api/v1/tokens/ec2-token").json()
    current["spec"]["roles"] = ["Node", "Proxy"]
    current.pop("status")
    response = admin_client.put(
        "/api/v1/tokens/ec2-token", data=json.dumps(current), content_type="application/json"
    )
    assert response.status_code == 200, response.content
    assert Token.objects.get().roles == ["Node", "Proxy"]
    current["metadata"]["name"] = "renamed"
    response = admin_client.put(
        "/api/v1/tokens/ec2-token", data=json.dumps(current), content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "metadata.name"


def test_delete_removes_and_records(admin_client):
    assert post_yaml(admin_client, TOKEN_YAML).status_code == 201
    assert admin_client.delete("/api/v1/tokens/ec2-token").status_code == 204
    assert admin_client.delete("/api/v1/tokens/ec2-token").status_code == 404
    assert AdminAction.objects.filter(action="token.delete", object_id="ec2-token").count() == 1


def test_unknown_token_is_404(admin_client):
    response = admin_client.get("/api/v1/tokens/missing")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_session_writes_need_csrf(admin_user):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)
    assert post_yaml(browser, TOKEN_YAML).status_code == 403
    assert Token.objects.count() == 0


def test_the_openapi_schema_and_probes_answer(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/join" in schema.content and b"/api/v1/tokens" in schema.content
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["database"] == "ok"
