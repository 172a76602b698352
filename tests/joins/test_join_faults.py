"""AWS faults and concurrent joins: the join fails closed and nothing is half-done."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import botocore.exceptions
import pytest
from botocore.awsrequest import AWSResponse
from django.db import connection
from django.test import Client

from joins import trust
from joins.models import Host, JoinAttempt
from tests.joins.conftest import make_token, post_join

pytestmark = pytest.mark.django_db(transaction=True)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: object):  # type: ignore[no-untyped-def]
        yield self._body


def ec2_error(status: int, code: str) -> Callable[..., AWSResponse]:
    body = (
        f"<Response><Errors><Error><Code>{code}</Code><Message>injected {code}</Message>"
        "</Error></Errors><RequestID>test</RequestID></Response>"
    ).encode()

    def handler(request, **_):  # type: ignore[no-untyped-def]
        return AWSResponse(request.url, status, {"Content-Type": "text/xml"}, _Raw(body))

    return handler


def timeout(request, **_):  # type: ignore[no-untyped-def]
    raise botocore.exceptions.ReadTimeoutError(endpoint_url=request.url)


def connection_reset(request, **_):  # type: ignore[no-untyped-def]
    raise botocore.exceptions.ConnectionClosedError(endpoint_url=request.url)


@pytest.fixture
def inject(monkeypatch):  # type: ignore[no-untyped-def]
    """Make DescribeInstances (or AssumeRole) answer with `handler` until the test removes it."""
    state: dict[str, object] = {}
    lookup = trust.ec2_lookup()
    real_client = lookup._client

    def client(region: str, role_arn: str):  # type: ignore[no-untyped-def]
        made = real_client(region, role_arn)
        handler = state.get("ec2")
        if handler is not None and getattr(made, "_fault", None) is not handler:
            made.meta.events.register_first("before-send.ec2.DescribeInstances", handler)
            made._fault = handler
        return made

    monkeypatch.setattr(lookup, "_client", client)

    def install(handler):  # type: ignore[no-untyped-def]
        state["ec2"] = handler
        lookup._clients.clear()

    def remove() -> None:
        state.pop("ec2", None)
        lookup._clients.clear()

    install.remove = remove  # type: ignore[attr-defined]
    return install


def assert_nothing_registered() -> None:
    assert Host.objects.count() == 0
    assert not JoinAttempt.objects.filter(outcome="allowed").exists()


@pytest.mark.parametrize(
    ("handler", "status", "code"),
    [
        (ec2_error(403, "UnauthorizedOperation"), 502, "aws_denied"),
        (ec2_error(403, "AuthFailure"), 502, "aws_denied"),
        (ec2_error(400, "RequestLimitExceeded"), 503, "aws_unavailable"),
        (ec2_error(503, "Unavailable"), 503, "aws_unavailable"),
        (ec2_error(500, "InternalError"), 503, "aws_unavailable"),
        (timeout, 503, "aws_unavailable"),
        (connection_reset, 503, "aws_unavailable"),
    ],
    ids=["unauthorized", "auth-failure", "throttled", "unavailable", "5xx", "timeout", "reset"],
)
def test_an_aws_fault_fails_closed_and_registers_nothing(
    client, world, at_launch, inject, handler, status, code
):
    instance = world.launch()
    make_token()
    inject(handler)
    response = post_join(client, world.body("ec2-token", world.document(instance)))
    assert response.status_code == status, response.content
    assert response.json()["error"] == code
    if code == "aws_unavailable":
        assert int(response["Retry-After"]) > 0
    attempt = JoinAttempt.objects.get()
    assert attempt.outcome == "error" and attempt.error == code
    assert "DescribeInstances" in attempt.reason
    assert_nothing_registered()


def test_the_same_instance_joins_once_aws_recovers(client, world, at_launch, inject):
    instance = world.launch()
    make_token()
    document = world.document(instance)
    inject(ec2_error(503, "Unavailable"))
    assert post_join(client, world.body("ec2-token", document)).status_code == 503
    inject.remove()
    assert post_join(client, world.body("ec2-token", document)).status_code == 200
    assert Host.objects.get().host_id == instance.host_id


def test_assume_role_denied_is_aws_denied(client, world, at_launch, monkeypatch):
    instance = world.launch(account_id="222222222222")
    role = "arn:aws:iam::222222222222:role/missing"
    make_token(allow=[{"aws_account": "222222222222", "aws_role": role}])

    def refuse(*_a, **_k):  # type: ignore[no-untyped-def]
        raise botocore.exceptions.ClientError(
            {
                "Error": {"Code": "AccessDenied", "Message": "not authorized to assume"},
                "ResponseMetadata": {"HTTPStatusCode": 403},
            },
            "AssumeRole",
        )

    import boto3

    real = boto3.session.Session.client

    def client_factory(self, service, *a, **k):  # type: ignore[no-untyped-def]
        made = real(self, service, *a, **k)
        if service == "sts":
            made.assume_role = refuse
        return made

    monkeypatch.setattr(boto3.session.Session, "client", client_factory)
    response = post_join(client, world.body("ec2-token", world.document(instance)))
    assert response.status_code == 502
    assert response.json()["error"] == "aws_denied"
    assert "AssumeRole" in JoinAttempt.objects.get().reason
    assert_nothing_registered()


def test_twenty_parallel_joins_of_one_instance_register_it_once(world, at_launch):
    instance = world.launch()
    make_token()
    payload = json.dumps(world.body("ec2-token", world.document(instance)))
    barrier = threading.Barrier(20)
    statuses: list[tuple[int, str]] = []
    lock = threading.Lock()

    def join() -> None:
        try:
            barrier.wait()
            response = Client().post("/api/v1/join", data=payload, content_type="application/json")
            with lock:
                statuses.append((response.status_code, response.json().get("error", "")))
        finally:
            connection.close()

    threads = [threading.Thread(target=join) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(statuses) == 20
    assert sorted(statuses).count((200, "")) == 1, statuses
    assert all(s == (403, "instance_already_joined") for s in statuses if s[0] != 200), statuses
    assert Host.objects.count() == 1
    assert JoinAttempt.objects.count() == 20
    assert JoinAttempt.objects.filter(outcome="allowed").count() == 1
    host = Host.objects.get()
    assert JoinAttempt.objects.get(outcome="allowed").tls_cert_serial == host.tls_cert_serial
