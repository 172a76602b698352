"""Fixtures of the end-to-end tests: moto's HTTP server as AWS, and one launched instance whose
documents the server trusts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest

from joins import authority, trust
from tests.support.iid_signer import IIDSigner
from tests.support.live import moto_http_server


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's HTTP server, which this process's AWS clients (the live server's) talk to."""
    with moto_http_server() as aws_env:
        for name, value in aws_env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        trust.reset()
        yield aws_env["AWS_ENDPOINT_URL_EC2"]
    trust.reset()


@dataclass(frozen=True)
class Launched:
    signer: IIDSigner
    instance_id: str


@pytest.fixture
def launched(moto_server, settings, tmp_path) -> Launched:  # type: ignore[no-untyped-def]
    """A running instance in us-west-2, and a signer whose certificate the server trusts."""
    signer = IIDSigner(regions=("us-west-2",))
    signer.write_certs(tmp_path / "certs")
    settings.IID_CERTS_DIR = str(tmp_path / "certs")
    settings.JOIN_RATE_LIMIT = "off"
    authority.reset_cache()
    instance_id = boto3.client("ec2", region_name="us-west-2").run_instances(
        ImageId="ami-0abcdef1234567890", MinCount=1, MaxCount=1
    )["Instances"][0]["InstanceId"]
    return Launched(signer=signer, instance_id=instance_id)
