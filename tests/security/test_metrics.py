"""/metrics: join counts by outcome and code, latency, AWS calls and throttles; who may read it;
numbers added up across gunicorn workers."""

from __future__ import annotations

import os
import runpy
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from django.conf import settings as django_settings
from django.core.cache import cache
from django.test import Client
from moto import mock_aws
from prometheus_client.parser import text_string_to_metric_families

from accounts.services import create_api_key
from joinadmin import metrics
from joins.aws import Ec2Lookup

pytestmark = pytest.mark.django_db

ROOT = Path(django_settings.BASE_DIR)
OUTSIDE = "203.0.113.9"


@pytest.fixture(autouse=True)
def open_join(settings: Any) -> Iterator[None]:
    settings.JOIN_RATE_LIMIT = "off"
    cache.clear()
    yield
    cache.clear()


def scrape(client: Client, **extra: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics and index every sample by name and labels."""
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def attempts(samples: dict, outcome: str, code: str) -> float:
    return samples[("joinadmin_join_attempts_total", (("code", code), ("outcome", outcome)))]


def durations(samples: dict, outcome: str) -> float:
    return samples[("joinadmin_join_duration_seconds_count", (("outcome", outcome),))]


def aws_calls(samples: dict, operation: str, result: str) -> float:
    key = ("joinadmin_aws_calls_total", (("operation", operation), ("result", result)))
    return samples[key]


def test_a_refused_join_is_counted_by_outcome_and_code(client: Client):
    before = scrape(client)
    for _ in range(2):
        response = client.post("/api/v1/join", data="not json", content_type="application/json")
        assert response.status_code == 400
    after = scrape(client)
    assert (
        attempts(after, "denied", "invalid_request") - attempts(before, "denied", "invalid_request")
        == 2
    )
    assert durations(after, "denied") - durations(before, "denied") == 2
    assert attempts(after, "allowed", "ok") == attempts(before, "allowed", "ok")


def test_an_oversized_join_is_counted_as_request_too_large(client: Client, settings: Any):
    settings.JOIN_MAX_BODY_BYTES = 100
    before = scrape(client)
    client.post("/api/v1/join", data="x" * 500, content_type="application/json")
    after = scrape(client)
    assert attempts(after, "denied", "request_too_large") == (
        attempts(before, "denied", "request_too_large") + 1
    )


def test_every_outcome_and_code_is_exported_from_the_start(client: Client):
    samples = scrape(client)
    assert ("joinadmin_join_attempts_total", (("code", "ok"), ("outcome", "allowed"))) in samples
    assert (
        "joinadmin_join_attempts_total",
        (("code", "aws_unavailable"), ("outcome", "error")),
    ) in samples
    assert durations(samples, "error") >= 0
    assert aws_calls(samples, "DescribeInstances", "throttled") >= 0
    key = ("joinadmin_aws_throttles_total", (("operation", "AssumeRole"),))
    assert key in samples


def test_record_join_keeps_unknown_codes_out_of_the_labels():
    before = metrics.JOIN_ATTEMPTS.labels("denied", "other")._value.get()
    metrics.record_join("denied", "<script>made-up</script>", 0.01)
    assert metrics.JOIN_ATTEMPTS.labels("denied", "other")._value.get() == before + 1


def test_another_address_is_refused(client: Client):
    response = client.get("/metrics", REMOTE_ADDR=OUTSIDE)
    assert response.status_code == 403
    assert b"JOINADMIN_METRICS_ALLOW" in response.content
    assert b"joinadmin_join_attempts_total" not in response.content


def test_loopback_behind_an_untrusted_proxy_is_refused(client: Client):
    # nginx on the same machine: the peer is 127.0.0.1 for every visitor.
    response = client.get("/metrics", HTTP_X_FORWARDED_FOR=OUTSIDE)
    assert response.status_code == 403


def test_behind_a_trusted_proxy_the_client_address_decides(client: Client, settings: Any):
    settings.TRUSTED_PROXIES = [ipaddress_network("127.0.0.1/32")]
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR=OUTSIDE).status_code == 403
    settings.METRICS_ALLOW = [ipaddress_network("203.0.113.0/24")]
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR=OUTSIDE).status_code == 200


def test_an_allowed_network_may_read(client: Client, settings: Any):
    settings.METRICS_ALLOW = [ipaddress_network("203.0.113.0/24")]
    assert client.get("/metrics", REMOTE_ADDR=OUTSIDE).status_code == 200


def test_a_signed_in_admin_may_read_from_anywhere(admin_client: Client, auditor_client: Client):
    assert admin_client.get("/metrics", REMOTE_ADDR=OUTSIDE).status_code == 200
    assert auditor_client.get("/metrics", REMOTE_ADDR=OUTSIDE).status_code == 403


def test_an_admins_api_key_may_read_from_anywhere(
    client: Client, admin_user: Any, auditor_user: Any
):
    admin_key = create_api_key(admin_user).secret
    auditor_key = create_api_key(auditor_user).secret
    ok = client.get("/metrics", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {admin_key}")
    assert ok.status_code == 200
    refused = client.get(
        "/metrics", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {auditor_key}"
    )
    assert refused.status_code == 403
    bogus = client.get("/metrics", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION="Bearer ja_x_y")
    assert bogus.status_code == 403


def test_only_get_is_served(client: Client):
    assert client.post("/metrics").status_code == 405


def ipaddress_network(text: str) -> Any:
    import ipaddress

    return ipaddress.ip_network(text)


# --- AWS calls ---------------------------------------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


def test_describe_instances_calls_are_counted_by_result(client: Client, aws_env: None):
    before = scrape(client)
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-west-2")
        instance = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)
        instance_id = instance["Instances"][0]["InstanceId"]
        lookup = Ec2Lookup()
        assert instance_id in lookup.describe(region="us-west-2", instance_ids=[instance_id])
        assert lookup.describe(region="us-west-2", instance_ids=["i-0000000000000dead"]) == {}
        role = "arn:aws:iam::222222222222:role/describe"
        # The other account's view (through AssumeRole) does not hold this instance.
        lookup.describe(region="us-west-2", instance_ids=[instance_id], role_arn=role)
    after = scrape(client)
    assert (
        aws_calls(after, "DescribeInstances", "ok") - aws_calls(before, "DescribeInstances", "ok")
        == 1
    )
    assert (
        aws_calls(after, "DescribeInstances", "not_found")
        - aws_calls(before, "DescribeInstances", "not_found")
        == 2
    )
    assert aws_calls(after, "AssumeRole", "ok") - aws_calls(before, "AssumeRole", "ok") == 1


class _Body:
    def __init__(self, content: bytes) -> None:
        self.content = content

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.content


def _throttled(**_: Any) -> AWSResponse:
    """What EC2 answers when the account's API rate is spent (it uses 503 for it)."""
    body = (
        b"<Response><Errors><Error><Code>RequestLimitExceeded</Code>"
        b"<Message>Request limit exceeded.</Message></Error></Errors>"
        b"<RequestID>r-1</RequestID></Response>"
    )
    return AWSResponse("https://ec2.us-west-2.amazonaws.com/", 503, {}, _Body(body))


def test_throttling_is_counted_per_attempt_and_the_call_once(client: Client, aws_env: None):
    """Three attempts (botocore's max_attempts counts retries), all throttled: three throttles
    counted, one throttled call."""
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 2})
    ec2 = boto3.session.Session().client("ec2", region_name="us-west-2", config=config)
    metrics.watch_aws_client(ec2)
    metrics.watch_aws_client(ec2)  # registering twice must not count twice
    ec2.meta.events.register("before-send.ec2.DescribeInstances", _throttled)
    before = scrape(client)
    with pytest.raises(ec2.exceptions.ClientError):
        ec2.describe_instances(InstanceIds=["i-0123456789abcdef0"])
    after = scrape(client)
    throttles = ("joinadmin_aws_throttles_total", (("operation", "DescribeInstances"),))
    assert after[throttles] - before[throttles] == 3
    assert (
        aws_calls(after, "DescribeInstances", "throttled")
        - aws_calls(before, "DescribeInstances", "throttled")
        == 1
    )


@pytest.mark.parametrize(
    ("parsed", "result"),
    [
        ({"ResponseMetadata": {"HTTPStatusCode": 200}}, "ok"),
        (
            {"Error": {"Code": "Throttling"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
            "throttled",
        ),
        ({"Error": {"Code": "X"}, "ResponseMetadata": {"HTTPStatusCode": 429}}, "throttled"),
        ({"Error": {"Code": "UnauthorizedOperation"}}, "denied"),
        (
            {"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
            "denied",
        ),
        ({"Error": {"Code": "InvalidInstanceID.NotFound"}}, "not_found"),
        (
            {"Error": {"Code": "InternalError"}, "ResponseMetadata": {"HTTPStatusCode": 500}},
            "unavailable",
        ),
        ({"Error": {"Code": "Odd"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "error"),
    ],
)
def test_aws_answers_are_classified_in_plain_results(parsed: dict, result: str):
    assert metrics.classify_aws_answer(parsed) == result


# --- Several gunicorn workers -------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    from joinadmin import metrics
    metrics.record_join("denied", "iid_expired", 0.2)
    metrics.record_join("allowed", "ok", 0.05)
    """
)
COLLECT = textwrap.dedent(
    """
    from joinadmin import metrics
    print(metrics.exposition().decode())
    """
)


def run_python(code: str, multiproc_dir: Path) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def test_numbers_of_several_worker_processes_are_added_up(tmp_path: Path):
    for _ in range(3):  # three workers, each its own process
        run_python(WORKER, tmp_path)
    text = run_python(COLLECT, tmp_path)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert attempts(samples, "denied", "iid_expired") == 3
    assert attempts(samples, "allowed", "ok") == 3
    assert durations(samples, "allowed") == 3


def test_gunicorn_sets_up_the_metrics_folder_and_cleans_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Set, then removed: monkeypatch restores only what it has seen, and the config sets it.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "placeholder")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    monkeypatch.setenv("JOINADMIN_DATA_DIR", str(tmp_path))
    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    folder = tmp_path / "prometheus"
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(folder)
    folder.mkdir()
    (folder / "counter_4242.db").write_bytes(b"stale")
    (folder / "keep.txt").write_text("not ours")
    config["on_starting"](None)
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]
    (folder / "gauge_livesum_4343.db").write_bytes(b"live")
    config["child_exit"](None, SimpleNamespace(pid=4343))
    assert not (folder / "gauge_livesum_4343.db").exists()


def test_an_operators_own_metrics_folder_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "mine"))
    runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "mine")


def test_the_latency_histogram_has_buckets_up_to_the_aws_budget(client: Client):
    body = client.get("/metrics").content.decode()
    assert "# TYPE joinadmin_join_duration_seconds histogram" in body
    for bound in ("0.05", "0.25", "1.0", "10.0", "+Inf"):
        assert f'joinadmin_join_duration_seconds_bucket{{le="{bound}",outcome="allowed"}}' in body


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_real_gunicorn_with_two_workers_reports_every_join(tmp_path: Path):
    """gunicorn.conf.py as deployed: each refused join is counted once in the scrape, whichever
    worker served it, and the scrape is refused to a proxied visitor."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JOINADMIN_", "PROMETHEUS_", "DATABASE_URL", "DJANGO_"))
    }
    port = free_port()
    env.update(JOINADMIN_DATA_DIR=str(tmp_path), JOINADMIN_WORKERS="2", PORT=str(port))
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    stale = tmp_path / "prometheus"
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"from a previous run")
    gunicorn = Path(sys.executable).with_name("gunicorn")
    server = subprocess.Popen(
        [str(gunicorn), "-c", "gunicorn.conf.py", "joinadmin.wsgi"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        for _ in range(12):
            request = urllib.request.Request(
                f"{base}/api/v1/join", data=b"nope", headers={"Content-Type": "application/json"}
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == 400
        text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
        proxied = urllib.request.Request(f"{base}/metrics", headers={"X-Forwarded-For": OUTSIDE})
        with pytest.raises(urllib.error.HTTPError) as forbidden:
            urllib.request.urlopen(proxied, timeout=10)
    finally:
        server.terminate()
        server.wait(timeout=30)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert attempts(samples, "denied", "invalid_request") == 12
    assert durations(samples, "denied") == 12
    assert forbidden.value.code == 403
    assert not (stale / "counter_1.db").exists()
