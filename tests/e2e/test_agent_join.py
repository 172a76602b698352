"""End to end: the real agent, reading a fake IMDS, joins a live server whose AWS is moto's
HTTP server; the credentials it writes are checked with openssl and ssh-keygen."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from joins.models import Host, JoinAttempt
from tests.e2e import ACCOUNT, agent, agent_join
from tests.support.fake_imds import FakeIMDS
from tests.support.iid_signer import make_document
from tokens.models import Token

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_agent_joins_a_live_server_and_gets_verifiable_credentials(
    live_server, launched, tmp_path
):
    signer, instance_id = launched.signer, launched.instance_id
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
        result = agent_join(live_server.url, data_dir, imds, tmp_path)
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
