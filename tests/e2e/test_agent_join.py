"""End to end: the real agent, reading a fake IMDS, joins a live server whose AWS is moto's
HTTP server; the credentials it writes are checked with openssl and ssh-keygen."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from joins import authority, trust
from joins.models import Host, JoinAttempt
from tests.support.fake_imds import FakeIMDS
from tests.support.iid_signer import IIDSigner, make_document
from tokens.models import Token

pytestmark = pytest.mark.django_db(transaction=True)
ACCOUNT = "123456789012"


@pytest.fixture
def moto_server(monkeypatch):  # type: ignore[no-untyped-def]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL_EC2": url,
        "AWS_ENDPOINT_URL_STS": url,
        "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    trust.reset()
    yield url
    server.stop()
    trust.reset()


def agent(*args: str, imds: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds,
        "NO_PROXY": "*",
    }
    return subprocess.run(
        [sys.executable, "-m", "joinadmin_agent", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def test_the_agent_joins_a_live_server_and_gets_verifiable_credentials(
    live_server, moto_server, settings, tmp_path
):
    signer = IIDSigner(regions=("us-west-2",))
    signer.write_certs(tmp_path / "certs")
    settings.IID_CERTS_DIR = str(tmp_path / "certs")
    settings.JOIN_RATE_LIMIT = "off"
    authority.reset_cache()
    instance_id = boto3.client("ec2", region_name="us-west-2").run_instances(
        ImageId="ami-0abcdef1234567890", MinCount=1, MaxCount=1
    )["Instances"][0]["InstanceId"]
    Token.objects.create(
        name="ec2-token",
        roles=["Node"],
        allow=[{"aws_account": ACCOUNT, "aws_regions": ["us-west-2"]}],
    )
    document = make_document(
        account_id=ACCOUNT,
        instance_id=instance_id,
        region="us-west-2",
        pending_time=datetime.now(UTC) - timedelta(seconds=20),
    )
    data_dir = tmp_path / "agent"
    with FakeIMDS(rsa2048=signer.sign(document), document=document) as imds:
        result = agent(
            "join",
            "--server",
            live_server.url,
            "--token",
            "ec2-token",
            "--data-dir",
            str(data_dir),
            "--node-name",
            "web-1",
            imds=imds.endpoint,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        host_id = f"{ACCOUNT}-{instance_id}"
        assert Host.objects.get().host_id == host_id
        assert JoinAttempt.objects.get().outcome == "allowed"
        joined = json.loads((data_dir / "join.json").read_text())
        assert joined["host_id"] == host_id

        # What was issued verifies with the real tools.
        verify = subprocess.run(
            [
                "openssl",
                "verify",
                "-CAfile",
                str(data_dir / "tls-ca.crt"),
                str(data_dir / "tls.crt"),
            ],
            capture_output=True,
            text=True,
        )
        assert verify.returncode == 0 and ": OK" in verify.stdout, verify.stderr
        listing = subprocess.run(
            ["ssh-keygen", "-L", "-f", str(data_dir / "ssh_host_key-cert.pub")],
            capture_output=True,
            text=True,
        )
        assert listing.returncode == 0, listing.stderr
        assert "host certificate" in listing.stdout and host_id in listing.stdout

        # A second run of the same instance is refused as already joined and says so.
        again = agent(
            "join",
            "--server",
            live_server.url,
            "--token",
            "ec2-token",
            "--data-dir",
            str(tmp_path / "agent2"),
            imds=imds.endpoint,
            cwd=tmp_path,
        )
        assert again.returncode == 1
        assert "instance_already_joined" in again.stderr
    assert JoinAttempt.objects.filter(error="instance_already_joined").count() == 1
    assert shutil.which("openssl") and shutil.which("ssh-keygen")
