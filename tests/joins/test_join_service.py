"""The join endpoint's decisions: Teleport's sixteen EC2 cases and every contract code."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine

from joins.models import Host, JoinAttempt
from tests.joins.conftest import (
    ACCOUNT,
    LAUNCH,
    OTHER_ACCOUNT,
    OTHER_ROLE,
    make_token,
    post_join,
)

pytestmark = pytest.mark.django_db(transaction=True)


def only_attempt() -> JoinAttempt:
    attempts = list(JoinAttempt.objects.all())
    assert len(attempts) == 1, attempts
    return attempts[0]


def assert_refused(response, status: int, code: str) -> JoinAttempt:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == code
    assert body["message"]
    attempt = only_attempt()
    assert body["join_attempt_id"] == str(attempt.pk)
    assert attempt.error == code
    assert attempt.outcome in {"denied", "error"}
    assert Host.objects.count() == 0
    return attempt


# --- Teleport's cases -------------------------------------------------------------------------


def test_it_joins_a_running_instance_matching_the_rule(client, world, at_launch):
    instance = world.launch()
    make_token()
    response = post_join(
        client, world.body("ec2-token", world.document(instance), node_name="web-1")
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["host_id"] == instance.host_id
    assert body["roles"] == ["Node"]
    assert body["node_name"] == "web-1"
    assert body["tls_cert"].startswith("-----BEGIN CERTIFICATE-----")
    assert body["tls_ca_certs"] and body["ssh_ca_keys"]
    assert body["ssh_cert"].startswith("ssh-ed25519-cert-v01@openssh.com ")
    attempt = only_attempt()
    assert attempt.outcome == "allowed" and attempt.error == ""
    assert [c["name"] for c in attempt.checks] == [
        "request",
        "token",
        "join_method",
        "roles",
        "document",
        "host_id",
        "pending_time",
        "allow_rule",
        "not_joined",
        "instance",
        "issue",
    ]
    assert all(c["ok"] for c in attempt.checks)
    host = Host.objects.get()
    assert host.host_id == instance.host_id and host.tls_cert_serial == attempt.tls_cert_serial
    assert host.last_attempt_id == attempt.pk


def test_it_joins_with_the_second_of_several_rules(client, world, at_launch):
    instance = world.launch()
    make_token(
        allow=[
            {"aws_account": "883474662888", "aws_regions": ["us-west-1"]},
            {"aws_account": ACCOUNT, "aws_regions": ["us-west-2"]},
        ]
    )
    response = post_join(client, world.body("ec2-token", world.document(instance)))
    assert response.status_code == 200, response.content
    assert only_attempt().matched_rule == 1


def test_it_joins_with_a_rule_listing_several_regions(client, world, at_launch):
    instance = world.launch()
    make_token(
        allow=[{"aws_account": ACCOUNT, "aws_regions": ["us-east-1", "us-west-2", "us-east-2"]}]
    )
    assert post_join(client, world.body("ec2-token", world.document(instance))).status_code == 200


def test_it_joins_with_a_rule_without_regions(client, world, at_launch):
    instance = world.launch()
    make_token(allow=[{"aws_account": ACCOUNT}])
    assert post_join(client, world.body("ec2-token", world.document(instance))).status_code == 200


def test_it_refuses_a_wrong_account(client, world, at_launch):
    instance = world.launch()
    make_token(allow=[{"aws_account": "999999999999", "aws_regions": ["us-west-2"]}])
    response = post_join(client, world.body("ec2-token", world.document(instance)))
    attempt = assert_refused(response, 403, "no_matching_rule")
    assert "999999999999" in attempt.reason and ACCOUNT in attempt.reason


def test_it_refuses_a_wrong_region(client, world, at_launch):
    instance = world.launch()
    make_token(allow=[{"aws_account": ACCOUNT, "aws_regions": ["us-east-1"]}])
    response = post_join(client, world.body("ec2-token", world.document(instance)))
    assert_refused(response, 403, "no_matching_rule")


def test_it_refuses_a_host_id_other_than_the_documents(client, world, at_launch):
    instance = world.launch()
    make_token()
    body = world.body("ec2-token", world.document(instance), host_id=f"{ACCOUNT}-i-99999999")
    attempt = assert_refused(post_join(client, body), 403, "host_id_mismatch")
    assert attempt.requested_host_id == f"{ACCOUNT}-i-99999999"
    assert attempt.host_id == instance.host_id


def test_it_refuses_a_request_without_a_document(client, world, at_launch):
    make_token()
    body = world.body("ec2-token", "")
    attempt = assert_refused(post_join(client, body), 400, "invalid_request")
    assert "ec2_identity_document" in attempt.message


def test_it_refuses_a_bad_document(client, world, at_launch):
    make_token()
    attempt = assert_refused(
        post_join(client, world.body("ec2-token", "baddocument")), 403, "iid_malformed"
    )
    assert attempt.token == "ec2-token"


def test_it_refuses_an_instance_that_already_joined(client, world, at_launch):
    instance = world.launch()
    make_token()
    document = world.document(instance)
    assert post_join(client, world.body("ec2-token", document)).status_code == 200
    second = post_join(client, world.body("ec2-token", document))
    assert second.status_code == 403
    assert second.json()["error"] == "instance_already_joined"
    assert Host.objects.count() == 1
    assert JoinAttempt.objects.filter(error="instance_already_joined").count() == 1


def test_it_refuses_an_instance_that_already_joined_with_another_claimed_host_id(
    client, world, at_launch
):
    instance = world.launch()
    make_token()
    document = world.document(instance)
    assert post_join(client, world.body("ec2-token", document)).status_code == 200
    second = post_join(client, world.body("ec2-token", document, host_id="fake-id"))
    assert second.json()["error"] in {"host_id_mismatch", "instance_already_joined"}
    assert Host.objects.count() == 1


@pytest.mark.parametrize("state", ["stopped", "terminated"])
def test_it_refuses_an_instance_that_is_not_running(client, world, at_launch, state):
    instance = world.launch(state=state)
    make_token()
    attempt = assert_refused(
        post_join(client, world.body("ec2-token", world.document(instance))),
        403,
        "instance_not_running",
    )
    assert state in attempt.reason


def test_it_refuses_an_instance_aws_does_not_know(client, world, at_launch):
    from tests.joins.conftest import Instance

    make_token()
    ghost = Instance(ACCOUNT, "us-west-2", "i-0123456789abcdef0")
    assert_refused(
        post_join(client, world.body("ec2-token", world.document(ghost))), 403, "instance_not_found"
    )


def test_it_refuses_a_document_older_than_the_default_ttl(client, world):
    instance = world.launch()
    make_token()
    with time_machine.travel(LAUNCH + timedelta(minutes=5, seconds=1), tick=False):
        response = post_join(client, world.body("ec2-token", world.document(instance)))
    attempt = assert_refused(response, 403, "iid_expired")
    assert "5m" in attempt.reason


def test_it_accepts_a_document_within_a_custom_ttl(client, world):
    instance = world.launch()
    make_token(ttl="10m")
    with time_machine.travel(LAUNCH + timedelta(minutes=9), tick=False):
        response = post_join(client, world.body("ec2-token", world.document(instance)))
    assert response.status_code == 200, response.content


def test_it_refuses_a_document_older_than_a_custom_ttl(client, world):
    instance = world.launch()
    make_token(ttl="10m")
    with time_machine.travel(LAUNCH + timedelta(minutes=11), tick=False):
        response = post_join(client, world.body("ec2-token", world.document(instance)))
    assert_refused(response, 403, "iid_expired")


# --- Beyond Teleport: every other contract code ----------------------------------------------


def test_it_joins_another_account_through_assume_role(client, world, at_launch):
    instance = world.launch(account_id=OTHER_ACCOUNT)
    make_token(
        allow=[{"aws_account": OTHER_ACCOUNT, "aws_regions": ["us-west-2"], "aws_role": OTHER_ROLE}]
    )
    response = post_join(client, world.body("ec2-token", world.document(instance)))
    assert response.status_code == 200, response.content
    assert OTHER_ROLE in only_attempt().checks[-2]["detail"]


def test_it_does_not_find_another_accounts_instance_without_the_role(client, world, at_launch):
    instance = world.launch(account_id=OTHER_ACCOUNT)
    make_token(allow=[{"aws_account": OTHER_ACCOUNT, "aws_regions": ["us-west-2"]}])
    assert_refused(
        post_join(client, world.body("ec2-token", world.document(instance))),
        403,
        "instance_not_found",
    )


def test_it_refuses_an_unknown_token_and_tells_the_auditor_why(client, world, at_launch):
    instance = world.launch()
    attempt = assert_refused(
        post_join(client, world.body("nope", world.document(instance))), 403, "token_invalid"
    )
    assert "no token named 'nope'" in attempt.reason


def test_it_refuses_an_expired_token_with_the_same_code(client, world, at_launch):
    instance = world.launch()
    make_token(expires=LAUNCH - timedelta(hours=1))
    response = post_join(client, world.body("ec2-token", world.document(instance)))
    attempt = assert_refused(response, 403, "token_invalid")
    assert "expired at" in attempt.reason
    assert response.json()["message"] == "the token does not exist or has expired"


def test_it_refuses_another_join_method(client, world, at_launch):
    instance = world.launch()
    make_token()
    body = world.body("ec2-token", world.document(instance), join_method="iam")
    assert_refused(post_join(client, body), 403, "join_method_mismatch")


def test_it_refuses_a_role_the_token_does_not_allow(client, world, at_launch):
    instance = world.launch()
    make_token(roles=["Node"])
    body = world.body("ec2-token", world.document(instance), roles=["Proxy"])
    assert_refused(post_join(client, body), 403, "role_not_allowed")


def test_it_grants_a_subset_of_roles_matched_case_insensitively(client, world, at_launch):
    instance = world.launch()
    make_token(roles=["Node", "App", "WindowsDesktop"])
    body = world.body("ec2-token", world.document(instance), roles=["app", "windows_desktop"])
    response = post_join(client, body)
    assert response.status_code == 200, response.content
    assert response.json()["roles"] == ["App", "WindowsDesktop"]


def test_it_refuses_a_document_from_a_region_without_a_certificate(client, world, at_launch):
    from tests.support.iid_signer import IIDSigner, make_document

    make_token(allow=[{"aws_account": ACCOUNT}])
    stranger = IIDSigner(regions=("xx-nowhere-1",))
    document = stranger.sign(
        make_document(
            account_id=ACCOUNT,
            instance_id="i-0123456789abcdef0",
            region="xx-nowhere-1",
            pending_time=LAUNCH,
        )
    )
    assert_refused(
        post_join(client, world.body("ec2-token", document)), 403, "iid_region_unsupported"
    )


def test_it_refuses_a_document_signed_by_someone_else(client, world, at_launch):
    from tests.support.iid_signer import IIDSigner, make_document

    instance = world.launch()
    make_token()
    forger = IIDSigner(regions=("us-west-2",), authority="forger")
    document = forger.sign(
        make_document(
            account_id=ACCOUNT,
            instance_id=instance.instance_id,
            region="us-west-2",
            pending_time=LAUNCH,
        )
    )
    assert_refused(
        post_join(client, world.body("ec2-token", document)), 403, "iid_signature_invalid"
    )


def test_it_refuses_the_dsa_form_of_the_document(client, world, at_launch, samples_dir):
    make_token(allow=[{"aws_account": "278576220453"}])
    dsa = (samples_dir / "teleport-rfd41-us-west-2.pkcs7-dsa.p7.b64").read_text()
    assert_refused(post_join(client, world.body("ec2-token", dsa)), 403, "iid_unsupported_form")


def test_it_refuses_a_pending_time_in_the_future(client, world):
    instance = world.launch()
    make_token()
    with time_machine.travel(LAUNCH - timedelta(minutes=2), tick=False):
        response = post_join(client, world.body("ec2-token", world.document(instance)))
    assert_refused(response, 403, "iid_pending_time_in_future")


def test_it_accepts_a_pending_time_within_the_minute_of_skew(client, world):
    instance = world.launch()
    make_token()
    with time_machine.travel(LAUNCH - timedelta(seconds=50), tick=False):
        response = post_join(client, world.body("ec2-token", world.document(instance)))
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"not json", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"token": 5}', "token must be a string"),
        (
            b'{"token": "t", "ec2_identity_document": "x", "public_tls_key": "garbage"}',
            "public_tls_key",
        ),
    ],
)
def test_it_refuses_a_malformed_request_and_records_it(client, world, payload, fragment):
    attempt = assert_refused(post_join(client, payload), 400, "invalid_request")
    assert fragment in attempt.message


def test_it_refuses_a_weak_rsa_key(client, world, at_launch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    pem = weak.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    instance = world.launch()
    make_token()
    body = world.body("ec2-token", world.document(instance), public_tls_key=pem)
    assert_refused(post_join(client, body), 400, "invalid_request")


def test_it_refuses_a_body_over_the_limit(client, world, settings):
    settings.JOIN_MAX_BODY_BYTES = 1000
    attempt = assert_refused(post_join(client, {"token": "x" * 2000}), 413, "request_too_large")
    assert attempt.checks[0]["name"] == "request"


def test_it_rate_limits_a_source_address(client, world, settings):
    settings.JOIN_RATE_LIMIT = "2/m"
    from django.core.cache import cache

    cache.clear()
    codes = [post_join(client, b"{}", REMOTE_ADDR="192.0.2.7") for _ in range(3)]
    assert [r.status_code for r in codes] == [400, 400, 429]
    assert int(codes[2]["Retry-After"]) >= 1
    assert JoinAttempt.objects.filter(error="rate_limited", remote_addr="192.0.2.7").count() == 1
    assert post_join(client, b"{}", REMOTE_ADDR="192.0.2.8").status_code == 400


def test_a_role_only_rule_admits_only_the_roles_account(client, world, at_launch):
    instance = world.launch()
    make_token(allow=[{"aws_role": OTHER_ROLE}])
    attempt = assert_refused(
        post_join(client, world.body("ec2-token", world.document(instance))),
        403,
        "no_matching_rule",
    )
    assert OTHER_ACCOUNT not in attempt.message
