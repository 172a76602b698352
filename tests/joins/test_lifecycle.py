"""Instance lifecycle: `hosts reconcile` against moto's instances that run, stopped and
terminated, in batches, through the right credentials, and what it records."""

from __future__ import annotations

import io
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from audit.models import AdminAction
from joins import lifecycle
from joins.aws import AwsError
from joins.lifecycle import NOT_FOUND, reconcile_hosts
from joins.models import Host, JoinAttempt, RevokedCertificate
from joins.trust import ec2_lookup
from tests.joins.conftest import ACCOUNT, OTHER_ACCOUNT, OTHER_ROLE, make_token, post_join

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def register(instance: Any, token: str = "ec2-token", **fields: Any) -> Host:
    """A host row as a join writes it, for an instance moto knows (or not)."""
    values: dict[str, Any] = {
        "host_id": instance.host_id,
        "account_id": instance.account_id,
        "region": instance.region,
        "instance_id": instance.instance_id,
        "node_name": instance.instance_id,
        "roles": ["Node"],
        "token": token,
        "first_joined_at": NOW - timedelta(hours=2),
        "last_joined_at": NOW - timedelta(hours=2),
        "tls_cert_serial": format(secrets.randbits(127) | 1 << 127, "x"),
        "ssh_cert_serial": str(secrets.randbits(63)),
        "cert_expires": NOW + timedelta(hours=22),
    }
    values.update(fields)
    return Host.objects.create(**values)


class Gone:
    """An instance AWS has never heard of (or forgot after termination)."""

    def __init__(self, account_id: str = ACCOUNT, region: str = "us-west-2") -> None:
        self.account_id = account_id
        self.region = region
        self.instance_id = "i-0" + secrets.token_hex(8)

    @property
    def host_id(self) -> str:
        return f"{self.account_id}-{self.instance_id}"


class CountingLookup:
    """The real lookup, remembering the ids of every call (and failing regions on demand)."""

    def __init__(self, failing: dict[str, AwsError] | None = None) -> None:
        self.calls: list[tuple[str, str, list[str]]] = []
        self.failing = failing or {}

    def describe(
        self,
        *,
        region: str,
        instance_ids: list[str],
        role_arn: str = "",
        deadline: float | None = None,
        report_not_found: bool = False,
    ):  # type: ignore[no-untyped-def]
        self.calls.append((region, role_arn, list(instance_ids)))
        if region in self.failing:
            raise self.failing[region]
        return ec2_lookup().describe(
            region=region,
            instance_ids=instance_ids,
            role_arn=role_arn,
            deadline=deadline,
            report_not_found=report_not_found,
        )


def run(**kwargs: Any):  # type: ignore[no-untyped-def]
    return reconcile_hosts(actor="cli:test", now=NOW, **kwargs)


def test_it_records_running_and_stopped_and_retires_the_terminated(world):
    make_token()
    running = register(world.launch())
    stopped = register(world.launch(state="stopped"))
    terminated = register(world.launch(state="terminated"))
    report = run()
    assert report.ok
    assert dict(report.states) == {"running": 1, "stopped": 1, "terminated": 1}
    running.refresh_from_db()
    stopped.refresh_from_db()
    terminated.refresh_from_db()
    assert (running.aws_state, running.retired_at, running.revoked_at) == ("running", None, None)
    assert (stopped.aws_state, stopped.retired_at, stopped.revoked_at) == ("stopped", None, None)
    assert running.aws_state_checked_at == NOW and stopped.aws_state_checked_at == NOW
    assert terminated.aws_state == "terminated"
    assert terminated.retired_at == NOW and terminated.revoked_at == NOW
    assert "terminated" in terminated.revocation_reason
    assert report.retired == [terminated.host_id]


def test_a_terminated_host_has_its_certificate_revoked_and_its_row_kept(world):
    make_token()
    host = register(world.launch(state="terminated"))
    run()
    assert Host.objects.filter(host_id=host.host_id).exists()
    revoked = RevokedCertificate.objects.get(host_id=host.host_id)
    assert revoked.serial == host.tls_cert_serial
    assert revoked.ssh_serial == host.ssh_cert_serial
    assert revoked.revoked_at == NOW and revoked.not_after == host.cert_expires


def test_a_host_whose_instance_aws_no_longer_knows_is_retired_as_not_found(world):
    make_token()
    alive = register(world.launch())
    gone = register(Gone())
    report = run()
    gone.refresh_from_db()
    alive.refresh_from_db()
    assert gone.aws_state == NOT_FOUND and gone.retired_at == NOW
    assert RevokedCertificate.objects.filter(serial=gone.tls_cert_serial).exists()
    # AWS refuses a whole call over one unknown id; the known one is still answered.
    assert alive.aws_state == "running" and alive.retired_at is None
    assert report.states == {"running": 1, NOT_FOUND: 1}


def test_it_asks_in_batches_of_at_most_the_batch_size(world):
    make_token()
    hosts = [register(world.launch()) for _ in range(5)]
    lookup = CountingLookup()
    report = run(batch=2, lookup=lookup)
    assert [len(ids) for _, _, ids in lookup.calls] == [2, 2, 1]
    assert report.calls == 3 and report.states == {"running": 5}
    assert {h.instance_id for h in hosts} == {i for _, _, ids in lookup.calls for i in ids}


def test_a_batch_size_outside_one_to_a_hundred_is_refused(world):
    with pytest.raises(ValueError, match="between 1 and 100"):
        run(batch=101)
    with pytest.raises(CommandError, match="between 1 and 100"):
        call_command("hosts", "reconcile", "--batch", "0", stdout=io.StringIO())


def test_hosts_of_another_account_are_asked_through_their_rules_role(world):
    make_token("cross", allow=[{"aws_account": OTHER_ACCOUNT, "aws_role": OTHER_ROLE}])
    host = register(world.launch(account_id=OTHER_ACCOUNT, state="terminated"), token="cross")
    lookup = CountingLookup()
    run(lookup=lookup)
    assert lookup.calls == [("us-west-2", OTHER_ROLE, [host.instance_id])]
    host.refresh_from_db()
    assert host.aws_state == "terminated" and host.retired_at == NOW


def test_a_deleted_token_falls_back_to_the_server_credentials_and_says_so(world):
    host = register(world.launch(state="stopped"), token="deleted-token")
    lookup = CountingLookup()
    report = run(lookup=lookup)
    assert lookup.calls == [("us-west-2", "", [host.instance_id])]
    assert any(
        "'deleted-token' no longer exists" in note and "server's own credentials" in note
        for note in report.notes
    )
    host.refresh_from_db()
    assert host.aws_state == "stopped"


def test_a_deleted_token_uses_the_role_recorded_with_the_join(world):
    instance = world.launch(account_id=OTHER_ACCOUNT)
    attempt = JoinAttempt.objects.create(
        time=NOW,
        outcome="allowed",
        host_id=instance.host_id,
        matched_rule=0,
        token_snapshot={
            "spec": {"allow": [{"aws_account": OTHER_ACCOUNT, "aws_role": OTHER_ROLE}]}
        },
    )
    host = register(instance, token="deleted-token", last_attempt=attempt)
    lookup = CountingLookup()
    report = run(lookup=lookup)
    assert lookup.calls == [("us-west-2", OTHER_ROLE, [host.instance_id])]
    assert any("rule that admitted the host" in note for note in report.notes)
    host.refresh_from_db()
    assert host.aws_state == "running"


def test_not_found_through_credentials_of_another_account_leaves_the_host_alone(world):
    # The server's credentials see their own account only: "not found" proves nothing here.
    host = register(Gone(account_id=OTHER_ACCOUNT), token="deleted-token")
    report = run(account_of_server=lambda region: ACCOUNT)
    host.refresh_from_db()
    assert host.retired_at is None and host.aws_state == ""
    assert report.unverified == [host.host_id]
    assert not RevokedCertificate.objects.exists()


def test_an_aws_error_leaves_that_groups_hosts_untouched_and_fails_the_command(world, monkeypatch):
    make_token(allow=[{"aws_account": ACCOUNT}])
    west = register(world.launch(state="terminated"))
    east = register(world.launch(region="us-east-1", state="terminated"))
    failing = CountingLookup({"us-east-1": AwsError("aws_denied", "AccessDenied: no ec2 for you")})
    monkeypatch.setattr(lifecycle, "ec2_lookup", lambda: failing)
    out = io.StringIO()
    with pytest.raises(CommandError, match="AccessDenied: no ec2 for you"):
        call_command("hosts", "reconcile", stdout=out)
    east.refresh_from_db()
    west.refresh_from_db()
    assert east.aws_state == "" and east.retired_at is None
    assert west.retired_at is not None
    assert "error: us-east-1" in out.getvalue()
    action = AdminAction.objects.get(action="hosts.reconcile")
    assert action.after["ok"] is False and action.after["retired"] == [west.host_id]


def test_each_run_records_one_admin_action_and_prints_a_summary(world):
    make_token()
    stopped = register(world.launch(state="stopped"))
    terminated = register(world.launch(state="terminated"))
    out = io.StringIO()
    call_command("hosts", "reconcile", stdout=out)
    text = out.getvalue()
    assert "checked 2 of 2 hosts" in text and "1 stopped, 1 terminated" in text
    assert f"retired {terminated.host_id}" in text and stopped.host_id not in text
    action = AdminAction.objects.get()
    assert action.action == "hosts.reconcile" and action.via == "cli"
    assert action.after["states"] == {"stopped": 1, "terminated": 1}
    assert action.after["retired"] == [terminated.host_id] and action.after["revoked"] == 1


def test_a_second_run_skips_retired_hosts_and_revokes_nothing_twice(world):
    make_token()
    register(world.launch(state="terminated"))
    first = run()
    second = run()
    assert len(first.retired) == 1 and first.crl_number == 1
    assert second.hosts == 0 and second.retired == [] and second.crl_number is None
    assert RevokedCertificate.objects.count() == 1
    assert AdminAction.objects.filter(action="hosts.reconcile").count() == 2


def test_a_retired_host_keeps_its_instance_from_joining_again(client, world, at_launch):
    make_token()
    instance = world.launch(state="terminated")
    register(instance, retired_at=NOW, aws_state="terminated")
    response = post_join(client, world.body("ec2-token", world.document(instance)))
    assert response.status_code == 403
    assert response.json()["error"] == "instance_already_joined"


def test_every_certificate_issued_to_a_re_joined_host_is_revoked(world):
    make_token()
    host = register(world.launch(state="terminated"))
    earlier = format(secrets.randbits(127) | 1 << 127, "x")
    JoinAttempt.objects.create(
        time=NOW - timedelta(hours=3),
        outcome="allowed",
        host_id=host.host_id,
        tls_cert_serial=earlier,
    )
    JoinAttempt.objects.create(
        time=NOW - timedelta(days=3),
        outcome="allowed",
        host_id=host.host_id,
        tls_cert_serial="abcdef",
    )
    run()
    assert set(RevokedCertificate.objects.values_list("serial", flat=True)) == {
        host.tls_cert_serial,
        earlier,
    }


def test_the_hosts_api_shows_the_lifecycle_fields(world, admin_client):
    make_token()
    host = register(world.launch(state="terminated"))
    run()
    body = admin_client.get(f"/api/v1/hosts/{host.host_id}").json()
    assert body["aws_state"] == "terminated"
    assert body["retired_at"] is not None and body["revoked_at"] is not None
    assert "terminated" in body["revocation_reason"]


def test_a_host_that_joined_minutes_ago_is_not_retired_for_not_found(world):
    # Right after a launch DescribeInstances may not know the instance yet.
    make_token()
    young = register(Gone(), last_joined_at=NOW - timedelta(minutes=3))
    report = run()
    young.refresh_from_db()
    assert young.aws_state == NOT_FOUND and young.retired_at is None
    assert report.young == [young.host_id] and not RevokedCertificate.objects.exists()
