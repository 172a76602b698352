"""The IMDSv2 client against a fake metadata service on 127.0.0.1."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from joinadmin_agent.imds import MAX_BODY_BYTES, ImdsClient, ImdsError
from tests.agent.test_client import closed_port_url
from tests.support.fake_imds import (
    DOCUMENT_PATH,
    RSA2048_PATH,
    SAMPLE_DOCUMENT,
    SAMPLE_HOST_ID,
    SAMPLE_RSA2048,
    TOKEN_PATH,
    FakeIMDS,
)


@pytest.fixture(autouse=True)
def _no_imds_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", raising=False)
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)


def fast_client(endpoint: str, slept: list[float] | None = None, **kwargs: object) -> ImdsClient:
    options: dict[str, object] = {"connect_timeout": 0.5, "request_timeout": 0.5}
    options.update(kwargs)
    return ImdsClient(endpoint, sleep=(slept if slept is not None else []).append, **options)  # type: ignore[arg-type]


def test_it_reads_both_documents_with_a_session_token_from_the_put() -> None:
    with FakeIMDS() as imds:
        identity = fast_client(imds.endpoint).fetch_identity()

    assert identity.rsa2048 == SAMPLE_RSA2048
    assert identity.document == SAMPLE_DOCUMENT
    assert identity.host_id == SAMPLE_HOST_ID
    assert identity.region == "us-west-2"
    assert identity.private_ip == "10.0.0.12"
    put, *gets = imds.requests
    assert (put["method"], put["path"]) == ("PUT", TOKEN_PATH)
    assert int(put["headers"]["X-aws-ec2-metadata-token-ttl-seconds"]) > 0
    assert [(get["method"], get["path"]) for get in gets] == [
        ("GET", RSA2048_PATH),
        ("GET", DOCUMENT_PATH),
    ]
    assert all(get["headers"]["X-aws-ec2-metadata-token"] in imds.tokens for get in gets)


def test_the_fake_refuses_reads_without_the_session_token() -> None:
    with FakeIMDS() as imds, pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(imds.endpoint + RSA2048_PATH, timeout=2)

    assert refused.value.code == 401


def test_it_never_falls_back_to_imdsv1_when_the_service_issues_no_token() -> None:
    with FakeIMDS() as imds:
        imds.token_status = 405
        with pytest.raises(ImdsError, match="does not fall back to IMDSv1"):
            fast_client(imds.endpoint).fetch_identity()

    assert [request["method"] for request in imds.requests] == ["PUT"]


def test_a_refused_token_says_that_imds_is_probably_disabled() -> None:
    with FakeIMDS() as imds:
        imds.token_status = 403
        with pytest.raises(ImdsError, match="IMDS is probably disabled"):
            fast_client(imds.endpoint).fetch_identity()


def test_an_unreachable_service_gives_a_clear_error_after_a_few_attempts() -> None:
    endpoint = closed_port_url()
    slept: list[float] = []

    with pytest.raises(ImdsError) as failed:
        fast_client(endpoint, slept, attempts=3).fetch_identity()

    message = str(failed.value)
    assert f"cannot reach the instance metadata service at {endpoint}" in message
    assert "is this an EC2 instance?" in message
    assert "hop limit" in message
    assert len(slept) == 2


def test_a_service_that_does_not_answer_times_out_quickly_with_a_clear_error() -> None:
    with FakeIMDS() as imds:
        imds.hang = True
        started = time.monotonic()
        with pytest.raises(ImdsError) as failed:
            fast_client(imds.endpoint, attempts=2).fetch_identity()
        elapsed = time.monotonic() - started

    assert "timed out" in str(failed.value)
    assert "is this an EC2 instance?" in str(failed.value)
    assert elapsed < 3
    assert len(imds.requests) == 2


def test_server_errors_are_retried() -> None:
    slept: list[float] = []
    with FakeIMDS() as imds:
        imds.fail_statuses = [500, 503]
        identity = fast_client(imds.endpoint, slept).fetch_identity()

    assert identity.host_id == SAMPLE_HOST_ID
    assert slept == [0.25, 0.5]


def test_an_oversized_answer_is_refused() -> None:
    with (
        FakeIMDS(rsa2048="A" * (MAX_BODY_BYTES + 10)) as imds,
        pytest.raises(ImdsError, match=f"exceeds {MAX_BODY_BYTES} bytes"),
    ):
        fast_client(imds.endpoint).fetch_identity()


def test_an_rsa2048_answer_that_is_not_base64_is_refused() -> None:
    with (
        FakeIMDS(rsa2048="<html>captive portal</html>") as imds,
        pytest.raises(ImdsError, match="base64"),
    ):
        fast_client(imds.endpoint).fetch_identity()


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"instanceId": None}, "instanceId"),
        ({"accountId": "12345"}, "accountId"),
        ({"region": ""}, "region"),
        ({"privateIp": "10.0.0.12, evil"}, "privateIp"),
    ],
)
def test_a_document_with_a_missing_or_malformed_field_is_refused(
    change: dict[str, object], complaint: str
) -> None:
    with (
        FakeIMDS(document={**SAMPLE_DOCUMENT, **change}) as imds,
        pytest.raises(ImdsError, match=complaint),
    ):
        fast_client(imds.endpoint).fetch_identity()


def test_a_document_that_is_not_json_is_refused() -> None:
    with (
        FakeIMDS(document="not json") as imds,
        pytest.raises(ImdsError, match="not a JSON object"),
    ):
        fast_client(imds.endpoint).fetch_identity()


def test_the_endpoint_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeIMDS() as imds:
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint + "/")
        identity = ImdsClient().fetch_identity()

    assert identity.host_id == SAMPLE_HOST_ID


def test_the_default_endpoint_is_the_link_local_address() -> None:
    assert ImdsClient().endpoint.url == "http://169.254.169.254"


def test_imds_use_can_be_disabled_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with FakeIMDS() as imds, pytest.raises(ImdsError, match="AWS_EC2_METADATA_DISABLED"):
        fast_client(imds.endpoint).fetch_identity()

    assert imds.requests == []


@pytest.mark.parametrize(
    "endpoint",
    ["ftp://169.254.169.254", "http://user:pw@169.254.169.254", "http://169.254.169.254/latest"],
)
def test_an_unusable_endpoint_is_refused(endpoint: str) -> None:
    with pytest.raises(ImdsError, match="AWS_EC2_METADATA_SERVICE_ENDPOINT"):
        ImdsClient(endpoint)
