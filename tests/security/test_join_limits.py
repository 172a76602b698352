"""The join endpoint against floods and oversized bodies: refused with the contract's codes,
each refusal recorded in the join history like any other attempt."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.cache import cache
from django.test import Client

from joins.models import JoinAttempt

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clean_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(scope="module")
def tls_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def join(client: Client, body: Any, address: str, **extra: Any):  # type: ignore[no-untyped-def]
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(
        "/api/v1/join", data=data, content_type="application/json", REMOTE_ADDR=address, **extra
    )


def test_the_per_token_limit_answers_429_with_retry_after_whatever_the_source(
    client: Client, settings: Any, tls_pem: str
):
    settings.JOIN_RATE_LIMIT = "off"
    settings.JOIN_TOKEN_RATE_LIMIT = "2/m"
    body = {"token": "asg-token", "ec2_identity_document": "x", "public_tls_key": tls_pem}
    answers = [join(client, body, f"192.0.2.{n}") for n in (1, 2, 3)]
    assert [a.status_code for a in answers] == [403, 403, 429]
    limited = answers[2]
    assert limited.json()["error"] == "rate_limited"
    assert "token" in limited.json()["message"]
    assert 1 <= int(limited["Retry-After"]) <= 60
    # Another token has its own budget.
    other = join(client, {**body, "token": "other-token"}, "192.0.2.4")
    assert other.status_code == 403


def test_a_rate_limited_join_is_recorded_with_who_and_why(
    client: Client, settings: Any, tls_pem: str
):
    settings.JOIN_RATE_LIMIT = "off"
    settings.JOIN_TOKEN_RATE_LIMIT = "1/m"
    body = {"token": "asg-token", "ec2_identity_document": "x", "public_tls_key": tls_pem}
    join(client, body, "192.0.2.1")
    response = join(client, {**body, "node_name": "web-7"}, "192.0.2.9", HTTP_USER_AGENT="flood/1")
    attempt = JoinAttempt.objects.get(pk=int(response.json()["join_attempt_id"]))
    assert (attempt.outcome, attempt.error) == ("denied", "rate_limited")
    assert (attempt.token, attempt.node_name) == ("asg-token", "web-7")
    assert (attempt.remote_addr, attempt.user_agent) == ("192.0.2.9", "flood/1")
    assert "rate limit 1/m per token exceeded by 'asg-token'" in attempt.reason
    assert [c["name"] for c in attempt.checks] == ["request", "request"]
    assert attempt.checks[-1]["ok"] is False


def test_a_body_over_the_limit_answers_413_and_is_recorded(client: Client, settings: Any):
    settings.JOIN_RATE_LIMIT = "off"
    settings.JOIN_MAX_BODY_BYTES = 1024
    body = json.dumps({"token": "asg-token", "ec2_identity_document": "A" * 4096})
    response = join(client, body, "192.0.2.5", HTTP_USER_AGENT="big/1")
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large"
    assert "1024 bytes" in response.json()["message"]
    attempt = JoinAttempt.objects.get(pk=int(response.json()["join_attempt_id"]))
    assert (attempt.outcome, attempt.error) == ("denied", "request_too_large")
    assert (attempt.remote_addr, attempt.user_agent) == ("192.0.2.5", "big/1")
    # Nothing of an oversized body is read, not even the claimed token name.
    assert attempt.token == "" and attempt.document is None


def test_a_body_at_the_limit_is_read(client: Client, settings: Any):
    settings.JOIN_RATE_LIMIT = "off"
    body = json.dumps({"token": "asg-token"})
    settings.JOIN_MAX_BODY_BYTES = len(body)
    response = join(client, body, "192.0.2.6")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
