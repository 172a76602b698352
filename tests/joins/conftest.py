"""Fixtures for the join tests: a test AWS signing authority trusted through
JOINADMIN_IID_CERTS_DIR, moto standing in for EC2 and STS, and helpers to build requests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import time_machine
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from moto import mock_aws

from joins import authority, trust
from tests.support.iid_signer import IIDSigner, make_document
from tokens.models import Token

ACCOUNT = "123456789012"
OTHER_ACCOUNT = "222222222222"
OTHER_ROLE = f"arn:aws:iam::{OTHER_ACCOUNT}:role/joinadmin-DescribeInstances-role"
LAUNCH = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
IMAGE_ID = "ami-0abcdef1234567890"
SIGNER_REGIONS = ("us-west-2", "us-west-1", "us-east-1", "eu-west-1")


@pytest.fixture(scope="session")
def iid_signer(tmp_path_factory: pytest.TempPathFactory) -> tuple[IIDSigner, Path]:
    signer = IIDSigner(regions=SIGNER_REGIONS)
    certs = tmp_path_factory.mktemp("iid-certs")
    signer.write_certs(certs)
    return signer, certs


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto in-process for EC2 and STS, with fake credentials and no IMDS lookups."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        # moto would otherwise load thousands of public AMIs into every fresh backend.
        "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    trust.reset()
    with mock_aws():
        yield
    trust.reset()


@dataclass
class Instance:
    account_id: str
    region: str
    instance_id: str

    @property
    def host_id(self) -> str:
        return f"{self.account_id}-{self.instance_id}"


@dataclass
class JoinWorld:
    """Everything a join test arranges: instances in moto, signed documents, tokens, keys."""

    signer: IIDSigner
    tls_pem: str
    ssh_line: str
    tls_key: Any = field(repr=False)
    ssh_key: Any = field(repr=False)

    def ec2(self, region: str, account_id: str = ACCOUNT):
        if account_id == ACCOUNT:
            return boto3.client("ec2", region_name=region)
        creds = boto3.client("sts", region_name=region).assume_role(
            RoleArn=f"arn:aws:iam::{account_id}:role/test-setup", RoleSessionName="setup"
        )["Credentials"]
        return boto3.client(
            "ec2",
            region_name=region,
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )

    def launch(
        self, region: str = "us-west-2", account_id: str = ACCOUNT, state: str = "running"
    ) -> Instance:
        client = self.ec2(region, account_id)
        answer = client.run_instances(ImageId=IMAGE_ID, MinCount=1, MaxCount=1)
        instance_id = answer["Instances"][0]["InstanceId"]
        if state == "stopped":
            client.stop_instances(InstanceIds=[instance_id])
        elif state == "terminated":
            client.terminate_instances(InstanceIds=[instance_id])
        return Instance(account_id, region, instance_id)

    def document(self, instance: Instance, pending_time: datetime = LAUNCH, **extra: Any) -> str:
        return self.signer.sign(
            make_document(
                account_id=instance.account_id,
                instance_id=instance.instance_id,
                region=instance.region,
                pending_time=pending_time,
                **extra,
            )
        )

    def body(self, token: str, document: str, **fields: Any) -> dict[str, Any]:
        data: dict[str, Any] = {
            "token": token,
            "ec2_identity_document": document,
            "public_tls_key": self.tls_pem,
            "public_ssh_key": self.ssh_line,
        }
        data.update(fields)
        return {k: v for k, v in data.items() if v is not None}


@pytest.fixture
def world(iid_signer, aws, settings, db) -> JoinWorld:  # type: ignore[no-untyped-def]
    signer, certs = iid_signer
    settings.IID_CERTS_DIR = str(certs)
    settings.JOIN_RATE_LIMIT = "off"
    trust.reset()
    authority.reset_cache()
    tls_key = ec.generate_private_key(ec.SECP256R1())
    ssh_key = ed25519.Ed25519PrivateKey.generate()
    return JoinWorld(
        signer=signer,
        tls_pem=tls_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
        ssh_line=ssh_key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode(),
        tls_key=tls_key,
        ssh_key=ssh_key,
    )


def make_token(
    name: str = "ec2-token",
    *,
    allow: list[dict] | None = None,
    roles: list[str] | None = None,
    ttl: str = "5m",
    expires: datetime | None = None,
) -> Token:
    return Token.objects.create(
        name=name,
        roles=roles or ["Node"],
        allow=allow
        if allow is not None
        else [{"aws_account": ACCOUNT, "aws_regions": ["us-west-2"]}],
        aws_iid_ttl=ttl,
        expires=expires,
    )


@pytest.fixture
def at_launch() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(LAUNCH + timedelta(seconds=30), tick=True) as traveller:
        yield traveller


def post_join(client, body: Any, **extra: Any):  # type: ignore[no-untyped-def]
    payload = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post("/api/v1/join", data=payload, content_type="application/json", **extra)


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return Path(__file__).parent / "samples"
