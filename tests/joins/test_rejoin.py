"""Re-join of a registered host through the API: what a proof of its key opens, and what not.

Every test first joins an instance at launch (the token allows re-joins unless it says
otherwise), then comes back later, past the token's five-minute TTL, with a challenge from
`POST /api/v1/join/challenge` and a signature made with the host's key.
"""

from __future__ import annotations

import base64
import json
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
import time_machine
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from joins.models import Host, JoinAttempt
from joins.rejoin import rejoin_message, sign_message
from tests.joins.conftest import LAUNCH, Instance, JoinWorld, make_token, post_join
from tokens.models import Token

pytestmark = pytest.mark.django_db(transaction=True)

LATER = LAUNCH + timedelta(days=3)  # far past the token's aws_iid_ttl of 5m
RESTART = LAUNCH + timedelta(days=2)  # pendingTime of a stop/start


@contextmanager
def at(moment: datetime):  # type: ignore[no-untyped-def]
    with time_machine.travel(moment, tick=True):
        yield


def rejoin_token(name: str = "ec2-token", **fields: Any) -> Token:
    token = make_token(name, **fields)
    token.allow_rejoin = True
    token.save()
    return token


def pem(private_key: Any) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def ssh_line(private_key: Any) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def get_challenge(client, host_id: str) -> str:  # type: ignore[no-untyped-def]
    response = client.post(
        "/api/v1/join/challenge",
        data=json.dumps({"host_id": host_id}),
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    return response.json()["challenge"]


def signed_body(
    world: JoinWorld,
    document: str,
    challenge: str,
    host_id: str,
    *,
    signer: Any = None,
    tls_key: Any = None,
    ssh_key: Any = None,
    token: str = "ec2-token",
) -> dict[str, Any]:
    """A join body with a `rejoin` block; `signer` defaults to the key the world joined with."""
    tls_key = tls_key or world.tls_key
    ssh_key = ssh_key or world.ssh_key
    message = rejoin_message(
        challenge=challenge,
        host_id=host_id,
        document=document,
        tls_public_key=tls_key.public_key(),
        ssh_public_key=ssh_key.public_key(),
    )
    signature = sign_message(signer or world.tls_key, message)
    body = world.body(token, document, host_id=host_id)
    body["public_tls_key"] = pem(tls_key)
    body["public_ssh_key"] = ssh_line(ssh_key)
    body["rejoin"] = {"challenge": challenge, "signature": base64.b64encode(signature).decode()}
    return body


def rejoin(client, world: JoinWorld, instance: Instance, document: str, **kwargs: Any):  # type: ignore[no-untyped-def]
    challenge = get_challenge(client, instance.host_id)
    return post_join(client, signed_body(world, document, challenge, instance.host_id, **kwargs))


def join_at_launch(client, world: JoinWorld, instance: Instance | None = None) -> Instance:  # type: ignore[no-untyped-def]
    instance = instance or world.launch()
    with at(LAUNCH + timedelta(seconds=30)):
        response = post_join(client, world.body("ec2-token", world.document(instance)))
    assert response.status_code == 200, response.content
    return instance


def last_attempt() -> JoinAttempt:
    return JoinAttempt.objects.order_by("-id").first()  # type: ignore[return-value]


def assert_refused(response, code: str) -> JoinAttempt:  # type: ignore[no-untyped-def]
    assert response.status_code == 403, response.content
    assert response.json()["error"] == code
    attempt = last_attempt()
    assert str(attempt.pk) == response.json()["join_attempt_id"]
    assert attempt.outcome == "denied" and attempt.error == code
    assert attempt.checks[-1]["ok"] is False
    return attempt


def host_unchanged(host_id: str, serial: str) -> None:
    host = Host.objects.get(host_id=host_id)
    assert host.join_count == 1
    assert host.tls_cert_serial == serial


# --- success ----------------------------------------------------------------------------------


def test_a_rebooted_host_rejoins_with_the_same_document_and_a_proof_of_its_key(client, world):
    rejoin_token()
    instance = join_at_launch(client, world)
    first = Host.objects.get()
    with at(LATER):
        response = rejoin(client, world, instance, world.document(instance))

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["host_id"] == instance.host_id
    assert body["rejoined"] is True
    assert body["tls_cert"].startswith("-----BEGIN CERTIFICATE-----")
    host = Host.objects.get()
    assert host.join_count == 2
    assert host.tls_cert_serial != first.tls_cert_serial
    assert host.last_joined_at > first.last_joined_at
    assert host.first_joined_at == first.first_joined_at
    attempt = last_attempt()
    assert attempt.outcome == "allowed" and attempt.message == "re-joined"
    assert host.last_attempt_id == attempt.pk
    assert [check["name"] for check in attempt.checks] == [
        "request",
        "token",
        "join_method",
        "roles",
        "document",
        "host_id",
        "rejoin",
        "pending_time",
        "allow_rule",
        "instance",
        "issue",
    ]
    assert all(check["ok"] for check in attempt.checks)
    proof = attempt.checks[6]["detail"]
    assert "signature verifies with its registered ECDSA P-256 key" in proof
    assert "same launch" in proof
    assert "does not apply to a re-join" in attempt.checks[7]["detail"]


def test_a_restarted_host_rejoins_with_its_newer_document_and_the_newer_time_is_recorded(
    client, world
):
    rejoin_token()
    instance = join_at_launch(client, world)
    with at(RESTART + timedelta(hours=6)):
        response = rejoin(client, world, instance, world.document(instance, pending_time=RESTART))

    assert response.status_code == 200, response.content
    assert Host.objects.get().pending_time == RESTART
    assert "started again" in last_attempt().checks[6]["detail"]


def test_a_rejoin_may_move_the_host_to_new_keys_and_the_old_key_no_longer_proves_anything(
    client, world
):
    rejoin_token()
    instance = join_at_launch(client, world)
    new_tls, new_ssh = ec.generate_private_key(ec.SECP256R1()), ed25519.Ed25519PrivateKey.generate()
    document = world.document(instance)
    with at(LATER):
        moved = rejoin(client, world, instance, document, tls_key=new_tls, ssh_key=new_ssh)
        assert moved.status_code == 200, moved.content
        assert Host.objects.get().tls_public_key == pem(new_tls)
        assert "replaces the registered one" in last_attempt().checks[6]["detail"]
        stale = rejoin(client, world, instance, document)  # signed with the old key
    assert_refused(stale, "rejoin_proof_invalid")


# --- refusals ---------------------------------------------------------------------------------


def test_a_replayed_older_document_is_refused_after_a_restart_was_recorded(client, world):
    rejoin_token()
    instance = join_at_launch(client, world)
    old_document = world.document(instance)
    with at(RESTART + timedelta(hours=1)):
        restarted = rejoin(client, world, instance, world.document(instance, pending_time=RESTART))
        assert restarted.status_code == 200, restarted.content
        serial = Host.objects.get().tls_cert_serial
    with at(LATER):
        replayed = rejoin(client, world, instance, old_document)

    attempt = assert_refused(replayed, "iid_replayed")
    assert attempt.checks[-1]["name"] == "rejoin"
    assert "older than" in attempt.reason
    host = Host.objects.get()
    assert host.tls_cert_serial == serial and host.join_count == 2


def test_a_document_of_another_instance_with_this_hosts_challenge_and_proof_is_refused(
    client, world
):
    rejoin_token()
    mine = join_at_launch(client, world)
    other = world.launch()
    world_other_doc = world.document(other)
    serial = Host.objects.get().tls_cert_serial
    with at(LATER):
        # Challenge and signature are this host's; the document is the other instance's.
        challenge = get_challenge(client, mine.host_id)
        body = signed_body(world, world_other_doc, challenge, mine.host_id)
        body["host_id"] = other.host_id
        response = post_join(client, body)

    attempt = assert_refused(response, "rejoin_challenge_invalid")
    assert "issued for another host" in attempt.reason
    host_unchanged(mine.host_id, serial)
    assert not Host.objects.filter(host_id=other.host_id).exists()


def test_a_registered_other_instance_cannot_be_opened_with_this_hosts_key(client, world):
    rejoin_token()
    mine = join_at_launch(client, world)
    other = world.launch()
    other_key = ec.generate_private_key(ec.SECP256R1())
    with at(LAUNCH + timedelta(seconds=40)):
        body = world.body("ec2-token", world.document(other))
        body["public_tls_key"] = pem(other_key)
        assert post_join(client, body).status_code == 200
    serial = Host.objects.get(host_id=other.host_id).tls_cert_serial
    with at(LATER):
        # A challenge for the other host, its document, and this host's valid signature.
        response = rejoin(client, world, other, world.document(other))

    attempt = assert_refused(response, "rejoin_proof_invalid")
    assert "registered ECDSA P-256 key" in attempt.reason
    host_unchanged(other.host_id, serial)
    assert Host.objects.get(host_id=mine.host_id).join_count == 1


def test_another_hosts_proof_does_not_open_this_host(client, world):
    rejoin_token()
    instance = join_at_launch(client, world)
    serial = Host.objects.get().tls_cert_serial
    another_hosts_key = ec.generate_private_key(ec.SECP256R1())
    with at(LATER):
        response = rejoin(
            client,
            world,
            instance,
            world.document(instance),
            signer=another_hosts_key,
            tls_key=another_hosts_key,
        )
    assert_refused(response, "rejoin_proof_invalid")
    host_unchanged(instance.host_id, serial)


def test_a_registered_host_without_a_proof_is_still_already_joined(client, world):
    rejoin_token()
    instance = join_at_launch(client, world)
    serial = Host.objects.get().tls_cert_serial
    with at(LAUNCH + timedelta(seconds=60)):  # even inside the TTL
        response = post_join(client, world.body("ec2-token", world.document(instance)))
    attempt = assert_refused(response, "instance_already_joined")
    assert [check["name"] for check in attempt.checks][-1] == "not_joined"
    host_unchanged(instance.host_id, serial)


def test_a_rejoin_block_without_a_signature_is_an_invalid_request_and_recorded(client, world):
    rejoin_token()
    instance = join_at_launch(client, world)
    with at(LATER):
        body = world.body("ec2-token", world.document(instance))
        body["rejoin"] = {"challenge": get_challenge(client, instance.host_id)}
        response = post_join(client, body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "rejoin.signature" in response.json()["message"]
    assert last_attempt().error == "invalid_request"


def test_a_used_challenge_is_refused_the_second_time(client, world):
    rejoin_token()
    instance = join_at_launch(client, world)
    with at(LATER):
        body = signed_body(
            world,
            world.document(instance),
            get_challenge(client, instance.host_id),
            instance.host_id,
        )
        assert post_join(client, body).status_code == 200
        serial = Host.objects.get().tls_cert_serial
        again = post_join(client, body)
    attempt = assert_refused(again, "rejoin_challenge_invalid")
    assert "already used" in attempt.message
    host = Host.objects.get()
    assert host.join_count == 2 and host.tls_cert_serial == serial


def test_an_expired_challenge_is_refused(client, world):
    rejoin_token()
    instance = join_at_launch(client, world)
    serial = Host.objects.get().tls_cert_serial
    with at(LATER):
        challenge = get_challenge(client, instance.host_id)
    with at(LATER + timedelta(seconds=61)):
        response = post_join(
            client, signed_body(world, world.document(instance), challenge, instance.host_id)
        )
    attempt = assert_refused(response, "rejoin_challenge_invalid")
    assert "expired" in attempt.message
    host_unchanged(instance.host_id, serial)


def test_a_challenge_issued_before_the_hosts_join_cannot_be_used(client, world):
    rejoin_token()
    instance = world.launch()
    with at(LAUNCH + timedelta(seconds=10)):
        early = get_challenge(client, instance.host_id)
    join_at_launch(client, world, instance)
    with at(LAUNCH + timedelta(seconds=45)):
        response = post_join(
            client, signed_body(world, world.document(instance), early, instance.host_id)
        )
    assert_refused(response, "rejoin_challenge_invalid")


def test_a_signature_by_a_wrong_key_is_refused(client, world):
    rejoin_token()
    instance = join_at_launch(client, world)
    serial = Host.objects.get().tls_cert_serial
    with at(LATER):
        response = rejoin(
            client,
            world,
            instance,
            world.document(instance),
            signer=ed25519.Ed25519PrivateKey.generate(),
        )
    assert_refused(response, "rejoin_proof_invalid")
    host_unchanged(instance.host_id, serial)


def test_a_tampered_request_does_not_match_what_was_signed(client, world):
    rejoin_token()
    instance = join_at_launch(client, world)
    serial = Host.objects.get().tls_cert_serial
    attacker = ec.generate_private_key(ec.SECP256R1())
    with at(LATER):
        body = signed_body(
            world,
            world.document(instance),
            get_challenge(client, instance.host_id),
            instance.host_id,
        )
        body["public_tls_key"] = pem(attacker)  # certificates for someone else's key
        response = post_join(client, body)
    assert_refused(response, "rejoin_proof_invalid")
    host_unchanged(instance.host_id, serial)


def test_a_token_without_allow_rejoin_keeps_the_host_already_joined(client, world):
    make_token()
    instance = join_at_launch(client, world)
    with at(LATER):
        response = rejoin(client, world, instance, world.document(instance))
    attempt = assert_refused(response, "instance_already_joined")
    assert "allow_rejoin" in attempt.reason


def test_a_rejoin_through_another_token_is_refused(client, world):
    rejoin_token()
    rejoin_token("other-token")
    instance = join_at_launch(client, world)
    with at(LATER):
        challenge = get_challenge(client, instance.host_id)
        body = signed_body(
            world, world.document(instance), challenge, instance.host_id, token="other-token"
        )
        response = post_join(client, body)
    attempt = assert_refused(response, "instance_already_joined")
    assert "through token 'ec2-token'" in attempt.reason


def test_a_revoked_host_cannot_rejoin(client, world):
    rejoin_token()
    instance = join_at_launch(client, world)
    Host.objects.update(revoked_at=LAUNCH + timedelta(days=1), revocation_reason="compromised")
    with at(LATER):
        response = rejoin(client, world, instance, world.document(instance))
    attempt = assert_refused(response, "instance_already_joined")
    assert "compromised" in attempt.reason


def test_a_stopped_instance_cannot_rejoin_even_with_a_good_proof(client, world):
    rejoin_token()
    instance = join_at_launch(client, world)
    world.ec2(instance.region).stop_instances(InstanceIds=[instance.instance_id])
    with at(LATER):
        response = rejoin(client, world, instance, world.document(instance))
    attempt = assert_refused(response, "instance_not_running")
    assert [check["name"] for check in attempt.checks][-2:] == ["allow_rule", "instance"]


def test_a_host_registered_before_rejoins_existed_has_no_key_to_prove(client, world):
    rejoin_token()
    instance = join_at_launch(client, world)
    Host.objects.update(tls_public_key="", pending_time=None)
    with at(LATER):
        response = rejoin(client, world, instance, world.document(instance))
    attempt = assert_refused(response, "rejoin_proof_invalid")
    assert "no usable recorded TLS key" in attempt.reason


def test_a_forgotten_host_with_a_proof_is_checked_as_a_first_join(client, world):
    rejoin_token()
    instance = join_at_launch(client, world)
    Host.objects.all().delete()
    with at(LATER):
        stale = rejoin(client, world, instance, world.document(instance))
        assert_refused(stale, "iid_expired")
        fresh_launch = LATER - timedelta(seconds=20)
        fresh = rejoin(client, world, instance, world.document(instance, pending_time=fresh_launch))
    assert fresh.status_code == 200, fresh.content
    assert "rejoined" not in fresh.json()
    names = [check["name"] for check in last_attempt().checks]
    assert names[6:] == ["rejoin", "pending_time", "allow_rule", "not_joined", "instance", "issue"]
    assert Host.objects.get().join_count == 1


# --- the challenge endpoint -------------------------------------------------------------------


def test_the_challenge_endpoint_answers_any_well_formed_host_id_alike(client, world):
    rejoin_token()
    instance = join_at_launch(client, world)
    with at(LATER):
        known = client.post(
            "/api/v1/join/challenge",
            data={"host_id": instance.host_id},
            content_type="application/json",
        )
        unknown = client.post(
            "/api/v1/join/challenge",
            data={"host_id": "123456789012-i-0aaaaaaaaaaaaaaaa"},
            content_type="application/json",
        )
    for response in (known, unknown):
        assert response.status_code == 200
        assert response["Cache-Control"] == "no-store"
        assert set(response.json()) == {"host_id", "challenge", "expires"}
    expires = datetime.fromisoformat(known.json()["expires"].replace("Z", "+00:00"))
    assert timedelta(seconds=59) <= expires - LATER <= timedelta(seconds=61)
    assert known.json()["challenge"] != unknown.json()["challenge"]
    assert JoinAttempt.objects.count() == 1  # the first join only: challenges are not attempts


@pytest.mark.parametrize(
    "payload",
    [b"{}", b"not json", b'{"host_id": "i-0123"}', b'{"host_id": ["123456789012-i-01234567"]}'],
)
def test_the_challenge_endpoint_refuses_a_body_without_a_host_id(client, world, payload):
    response = client.post("/api/v1/join/challenge", data=payload, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_the_challenge_endpoint_refuses_a_large_body_and_get(client, world):
    large = client.post(
        "/api/v1/join/challenge", data=b"{" + b" " * 5000 + b"}", content_type="application/json"
    )
    assert large.status_code == 413
    assert large.json()["error"] == "request_too_large"
    assert client.get("/api/v1/join/challenge").status_code == 405


def test_the_challenge_endpoint_is_rate_limited_per_source(client, world, settings):
    from django.core.cache import cache

    cache.clear()
    settings.JOIN_RATE_LIMIT = "2/m"
    answers = [
        client.post(
            "/api/v1/join/challenge",
            data={"host_id": "123456789012-i-01234567"},
            content_type="application/json",
        ).status_code
        for _ in range(3)
    ]
    cache.clear()
    assert answers == [200, 200, 429]
