"""Join history, hosts and CA over the API; the `hosts` and `verify_iid` commands."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from audit.models import AdminAction
from joins.models import Host, JoinAttempt
from tests.joins.conftest import LAUNCH, make_token, post_join

pytestmark = pytest.mark.django_db(transaction=True)
SAMPLES = Path(__file__).parent / "samples"


@pytest.fixture
def joined(client, world, at_launch):  # type: ignore[no-untyped-def]
    instance = world.launch()
    make_token()
    assert post_join(client, world.body("ec2-token", world.document(instance))).status_code == 200
    post_join(client, b"garbage")
    return instance


def test_join_attempts_are_listed_newest_first_and_filtered(auditor_client, joined):
    body = auditor_client.get("/api/v1/join-attempts").json()
    assert [r["outcome"] for r in body["results"]] == ["denied", "allowed"]
    assert body["next"] is None
    allowed = body["results"][1]
    for field in (
        "id",
        "time",
        "token",
        "join_method",
        "remote_addr",
        "requested_host_id",
        "host_id",
        "account_id",
        "region",
        "instance_id",
        "pending_time",
        "roles",
        "outcome",
        "error",
        "message",
        "checks",
        "duration_ms",
    ):
        assert field in allowed
    assert allowed["checks"][0] == {
        "name": "request",
        "ok": True,
        "detail": allowed["checks"][0]["detail"],
    }
    only = auditor_client.get("/api/v1/join-attempts", {"outcome": "allowed"}).json()["results"]
    assert [r["host_id"] for r in only] == [joined.host_id]
    by_instance = auditor_client.get(
        "/api/v1/join-attempts", {"instance_id": joined.instance_id}
    ).json()
    assert len(by_instance["results"]) == 1
    by_error = auditor_client.get("/api/v1/join-attempts", {"error": "invalid_request"}).json()
    assert len(by_error["results"]) == 1
    assert (
        auditor_client.get("/api/v1/join-attempts", {"since": "2099-01-01T00:00:00Z"}).json()[
            "results"
        ]
        == []
    )
    detail = auditor_client.get(f"/api/v1/join-attempts/{allowed['id']}").json()
    assert detail["token_snapshot"]["metadata"]["name"] == "ec2-token"


def test_join_attempts_paginate_with_a_cursor(auditor_client, db):
    for index in range(5):
        JoinAttempt.objects.create(
            time=LAUNCH, outcome="denied", error="iid_malformed", token=f"t{index}"
        )
    first = auditor_client.get("/api/v1/join-attempts", {"limit": 2}).json()
    assert [r["token"] for r in first["results"]] == ["t4", "t3"]
    second = auditor_client.get(first["next"]).json()
    assert [r["token"] for r in second["results"]] == ["t2", "t1"]


def test_anonymous_and_groupless_callers_cannot_read_history(client, plain_user):
    assert client.get("/api/v1/join-attempts").status_code in {401, 403}
    client.force_login(plain_user)
    assert client.get("/api/v1/join-attempts").status_code == 403
    assert client.get("/api/v1/hosts").status_code == 403
    assert client.get("/api/v1/ca").status_code == 403


def test_hosts_are_listed_and_an_admin_forgets_one(admin_client, auditor_client, joined):
    hosts = auditor_client.get("/api/v1/hosts").json()["results"]
    assert [h["host_id"] for h in hosts] == [joined.host_id]
    assert auditor_client.get(f"/api/v1/hosts/{joined.host_id}").json()["roles"] == ["Node"]
    assert auditor_client.delete(f"/api/v1/hosts/{joined.host_id}").status_code == 403
    response = admin_client.delete(f"/api/v1/hosts/{joined.host_id}?reason=rebuilt")
    assert response.status_code == 204
    assert not Host.objects.exists()
    action = AdminAction.objects.get(action="host.forget")
    assert action.reason == "rebuilt" and action.before["host_id"] == joined.host_id
    assert admin_client.delete(f"/api/v1/hosts/{joined.host_id}").status_code == 404


def test_a_forgotten_instance_may_join_again(client, admin_client, world, at_launch):
    instance = world.launch()
    make_token()
    document = world.document(instance)
    assert post_join(client, world.body("ec2-token", document)).status_code == 200
    call_command("hosts", "forget", instance.host_id, "--reason", "reimaged", stdout=io.StringIO())
    assert post_join(client, world.body("ec2-token", document)).status_code == 200
    assert AdminAction.objects.get(action="host.forget").via == "cli"


def test_the_ca_endpoint_gives_the_public_material(auditor_client, joined):
    body = auditor_client.get("/api/v1/ca").json()
    assert body["tls_ca_certs"][0].startswith("-----BEGIN CERTIFICATE-----")
    assert body["ssh_ca_keys"][0].startswith("ssh-ed25519 ")
    assert "PRIVATE" not in json.dumps(body)


def test_hosts_ls_lists_and_forget_of_an_unknown_host_fails(joined):
    out = io.StringIO()
    call_command("hosts", "ls", stdout=out)
    assert joined.host_id in out.getvalue()
    with pytest.raises(CommandError, match="no host"):
        call_command("hosts", "forget", "123456789012-i-00000000", stdout=io.StringIO())


def verify(*args: str) -> tuple[int, dict]:
    out = io.StringIO()
    try:
        call_command("verify_iid", *args, stdout=out)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, json.loads(out.getvalue())


def test_verify_iid_passes_the_real_sample_at_its_pending_time():
    code, result = verify(
        str(SAMPLES / "teleport-instance1-us-west-2.rsa2048.p7.b64"), "--at", "2021-09-03T21:26:00Z"
    )
    assert code == 0 and result["ok"] is True
    assert result["host_id"] == "278576220453-i-078517ca8a70a1dde"
    assert [c["name"] for c in result["checks"]] == ["document", "pending_time"]


def test_verify_iid_fails_the_sample_after_the_ttl_and_with_a_token_whose_rules_do_not_match():
    code, result = verify(
        str(SAMPLES / "teleport-instance1-us-west-2.rsa2048.p7.b64"), "--at", "2021-09-03T21:30:45Z"
    )
    assert code == 1 and result["error"] == "iid_expired"
    make_token("other", allow=[{"aws_account": "111111111111"}])
    code, result = verify(
        str(SAMPLES / "teleport-instance1-us-west-2.rsa2048.p7.b64"),
        "--at",
        "2021-09-03T21:26:00Z",
        "--token",
        "other",
    )
    assert code == 1 and result["error"] == "no_matching_rule"
    make_token(
        "good", allow=[{"aws_account": "278576220453", "aws_regions": ["us-west-2"]}], ttl="10m"
    )
    code, result = verify(
        str(SAMPLES / "teleport-instance1-us-west-2.rsa2048.p7.b64"),
        "--at",
        "2021-09-03T21:34:00Z",
        "--token",
        "good",
    )
    assert code == 0 and result["matched_rule"] == 0


def test_verify_iid_refuses_the_dsa_sample_and_bad_arguments():
    code, result = verify(str(SAMPLES / "teleport-rfd41-us-west-2.pkcs7-dsa.p7.b64"))
    assert code == 1 and result["error"] == "iid_unsupported_form"
    with pytest.raises(CommandError, match="RFC 3339"):
        verify(str(SAMPLES / "teleport-instance1-us-west-2.rsa2048.p7.b64"), "--at", "yesterday")
    with pytest.raises(CommandError, match="no token"):
        verify(str(SAMPLES / "teleport-instance1-us-west-2.rsa2048.p7.b64"), "--token", "ghost")


def test_the_real_sample_joins_when_moto_knows_its_instance(client, world, settings):
    """The AWS-signed sample, verified with AWS's built-in certificate, and moto answering
    DescribeInstances for the sample's instance id."""
    import time_machine
    from moto.ec2.models import ec2_backends

    from joins import trust

    settings.IID_CERTS_DIR = None
    trust.reset()
    sample = (SAMPLES / "teleport-instance1-us-west-2.rsa2048.p7.b64").read_text()
    launched = world.launch(region="us-west-2")
    backend = ec2_backends["123456789012"]["us-west-2"]
    for reservation in backend.reservations.values():
        for item in reservation.instances:
            if item.id == launched.instance_id:
                item.id = "i-078517ca8a70a1dde"
    make_token(allow=[{"aws_account": "278576220453", "aws_regions": ["us-west-2"]}])
    with time_machine.travel("2021-09-03T21:26:00Z", tick=False):
        response = post_join(client, world.body("ec2-token", sample))
    assert response.status_code == 200, response.content
    assert response.json()["host_id"] == "278576220453-i-078517ca8a70a1dde"
