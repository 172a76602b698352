"""End to end: the real agent joins a live server, then re-joins by itself on later runs.

The server's clock is moved on with time_machine between runs (the live server runs in this
process), far past the token's aws_iid_ttl, so that only the proof of the host's key can let the
second run in. AWS is moto's HTTP server, IMDS the fake one; the agent is a real subprocess.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from joins.models import Host, JoinAttempt
from tests.e2e import ACCOUNT, agent_join
from tests.support.fake_imds import FakeIMDS
from tests.support.iid_signer import make_document
from tokens.models import Token

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_agent_rejoins_a_live_server_by_itself_and_an_old_document_is_refused(
    live_server, launched, tmp_path
):
    signer, instance_id = launched.signer, launched.instance_id
    host_id = f"{ACCOUNT}-{instance_id}"
    Token.objects.create(
        name="ec2-token",
        roles=["Node"],
        allow_rejoin=True,
        allow=[{"aws_account": ACCOUNT, "aws_regions": ["us-west-2"]}],
    )
    launched = datetime.now(UTC) - timedelta(seconds=20)
    first_document = make_document(
        account_id=ACCOUNT, instance_id=instance_id, region="us-west-2", pending_time=launched
    )
    data_dir = tmp_path / "agent"

    with FakeIMDS(rsa2048=signer.sign(first_document), document=first_document) as imds:
        joined = agent_join(live_server.url, data_dir, imds, tmp_path)
        assert joined.returncode == 0, joined.stderr
        assert joined.stdout.startswith(f"joined as {host_id}")
        first_serial = Host.objects.get().tls_cert_serial
        first_key = (data_dir / "tls.key").read_bytes()

        # A reboot, six hours later: the same document, far past the 5m TTL.
        with time_machine.travel(datetime.now(UTC) + timedelta(hours=6), tick=True):
            rebooted = agent_join(live_server.url, data_dir, imds, tmp_path)
        assert rebooted.returncode == 0, rebooted.stderr
        assert rebooted.stdout.startswith(f"re-joined as {host_id}")
        host = Host.objects.get()
        assert host.join_count == 2 and host.tls_cert_serial != first_serial
        attempt = JoinAttempt.objects.order_by("-id").first()
        assert attempt.outcome == "allowed" and attempt.message == "re-joined"
        assert (
            "signature verifies"
            in next(c for c in attempt.checks if c["name"] == "rejoin")["detail"]
        )
        assert (data_dir / "tls.key").read_bytes() == first_key
        assert json.loads((data_dir / "join.json").read_text())["join_attempt_id"] == str(
            attempt.pk
        )

        # A stop/start a day later: IMDS serves a newer document, which is recorded.
        restarted_at = datetime.now(UTC) + timedelta(days=1)
        newer = make_document(
            account_id=ACCOUNT,
            instance_id=instance_id,
            region="us-west-2",
            pending_time=restarted_at,
        )
        imds.rsa2048, imds.document = signer.sign(newer), newer
        # Within the TTL, a fresh data dir on this instance has no key to prove: already joined.
        with time_machine.travel(restarted_at + timedelta(minutes=2), tick=True):
            stranger = agent_join(live_server.url, tmp_path / "other", imds, tmp_path)
        assert stranger.returncode == 1
        assert "instance_already_joined" in stranger.stderr
        with time_machine.travel(restarted_at + timedelta(minutes=30), tick=True):
            restarted = agent_join(live_server.url, data_dir, imds, tmp_path)
        assert restarted.returncode == 0, restarted.stderr
        assert Host.objects.get().pending_time == restarted_at.replace(microsecond=0)

        # The key alone with the first, older document (say, from an old backup): refused.
        imds.rsa2048, imds.document = signer.sign(first_document), first_document
        with time_machine.travel(restarted_at + timedelta(hours=2), tick=True):
            replayed = agent_join(live_server.url, data_dir, imds, tmp_path)
        assert replayed.returncode == 1
        assert "iid_replayed" in replayed.stderr

    host = Host.objects.get()
    assert host.join_count == 3
    assert list(JoinAttempt.objects.order_by("id").values_list("error", flat=True)) == [
        "",
        "",
        "instance_already_joined",
        "",
        "iid_replayed",
    ]
