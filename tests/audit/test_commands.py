"""`manage.py audit ...` and `manage.py seed_demo`: arguments, output and exit codes."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from audit.models import Seal, SealVerification
from audit.sealing import seal_pending, verify_seals
from joins.constants import CHECKS, ERROR_CODES
from joins.demo import FAILING_CHECK, REFUSALS
from joins.models import Host, JoinAttempt
from tests.audit import make_actions, make_attempts
from tokens.models import Token

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("audit", *args, stdout=out)
    return out.getvalue()


def test_audit_seal_prints_each_seal_and_the_chain_heads():
    make_attempts(3)
    make_actions(1)
    out = run("seal")
    seal = Seal.objects.get(stream="joinattempt")
    assert f"sealed joinattempt #1: ids {seal.first_id}-{seal.last_id}, 3 rows" in out
    assert f"head joinattempt #1 {seal.digest}" in out
    assert "head adminaction #1" in out and "key SHA256:" in out


def test_audit_seal_with_nothing_new_says_so():
    assert "nothing to seal" in run("seal")


def test_audit_seal_honours_the_lag():
    make_attempts(2, age=timedelta(seconds=30))
    assert "nothing to seal" in run("seal", "--lag", "60")
    assert "sealed joinattempt #1" in run("seal", "--lag", "10")


def test_audit_verify_exits_zero_with_a_summary_when_all_holds():
    make_attempts(4)
    run("seal")
    out = run("verify")
    assert "ok: 1 seals and 4 rows verified" in out
    assert SealVerification.objects.get().ok


def test_audit_verify_exits_non_zero_and_names_the_rows():
    rows = make_attempts(5)
    run("seal")
    JoinAttempt.objects.filter(pk=rows[1].pk).update(token="other")
    JoinAttempt.objects.filter(pk=rows[3].pk).delete()
    out = io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("audit", "verify", stdout=out)
    assert caught.value.returncode == 1
    report = out.getvalue()
    assert "PROBLEM row_changed: joinattempt seal #1" in report
    assert f"1 row changed: {rows[1].pk}" in report
    assert f"1 row deleted: {rows[3].pk}" in report
    assert not SealVerification.objects.get().ok


def test_audit_verify_accepts_a_rotated_key_when_given(monkeypatch):
    make_attempts(2)
    run("seal")
    old_key = run("key").split()[2]
    monkeypatch.setenv("JOINADMIN_SEAL_KEY_SECRET", "a brand new seal secret after rotation")
    with pytest.raises(CommandError):
        call_command("audit", "verify", stdout=io.StringIO())
    assert "ok:" in run("verify", "--trust-key", old_key)


def test_an_unusable_secret_stops_the_command_with_exit_code_two(monkeypatch, settings):
    monkeypatch.delenv("JOINADMIN_SEAL_KEY_SECRET", raising=False)
    settings.SECRET_KEY = "short"
    with pytest.raises(CommandError) as caught:
        call_command("audit", "seal", stdout=io.StringIO())
    assert caught.value.returncode == 2


def test_audit_prune_takes_a_date_and_reports_what_went():
    make_attempts(3, age=timedelta(days=60))
    make_attempts(2)
    seal_pending(chunk=3)
    out = run("prune", "--before", "2000-01-01")
    assert "pruned 0 sealed ranges" in out
    dry = run("prune", "--before", _days_ago_text(30), "--dry-run")
    assert "would prune joinattempt seal #1" in dry and JoinAttempt.objects.count() == 5
    out = run("prune", "--before", _days_ago_text(30))
    assert "pruned 1 sealed ranges, 3 rows" in out
    assert JoinAttempt.objects.count() == 2
    assert verify_seals().ok


def test_audit_prune_refuses_an_unreadable_date():
    with pytest.raises(CommandError) as caught:
        call_command("audit", "prune", "--before", "last tuesday", stdout=io.StringIO())
    assert caught.value.returncode == 2


def _days_ago_text(days: int) -> str:
    return (timezone.now() - timedelta(days=days)).date().isoformat()


# --- seed_demo -------------------------------------------------------------------------------


def test_seed_demo_creates_the_requested_counts():
    out = io.StringIO()
    err = io.StringIO()
    call_command("seed_demo", attempts=400, hosts=25, seed=7, batch=64, stdout=out, stderr=err)
    assert JoinAttempt.objects.count() == 400
    assert Host.objects.count() == 25
    assert Token.objects.filter(name__startswith="demo-").count() == 5
    assert "wrote 400 join attempts" in out.getvalue()


def test_seeded_hosts_point_at_their_allowed_attempt():
    call_command("seed_demo", attempts=300, hosts=20, seed=3, stdout=io.StringIO())
    for host in Host.objects.select_related("last_attempt"):
        assert host.last_attempt is not None
        assert host.last_attempt.outcome == "allowed"
        assert host.last_attempt.host_id == host.host_id


def test_seeded_attempts_look_like_the_join_services_output():
    call_command("seed_demo", attempts=2000, hosts=50, seed=11, stdout=io.StringIO())
    errors = set(JoinAttempt.objects.exclude(error="").values_list("error", flat=True))
    assert {"instance_already_joined", "iid_expired", "token_invalid"} <= errors
    assert errors <= set(ERROR_CODES)
    order = [*CHECKS, "internal"]
    for attempt in JoinAttempt.objects.all()[:500]:
        names = [check["name"] for check in attempt.checks]
        assert names == sorted(names, key=order.index)
        assert all(check["ok"] for check in attempt.checks[:-1])
        assert attempt.checks[-1]["ok"] == (attempt.outcome == "allowed")
        if attempt.outcome != "allowed":
            assert attempt.checks[-1]["detail"] == attempt.reason


def test_every_refusal_the_demo_writes_uses_a_contract_code_and_its_check():
    for code, _ in REFUSALS:
        assert code in ERROR_CODES
        assert FAILING_CHECK[code] in (*CHECKS, "internal")


def test_seeded_times_follow_ids_and_stay_within_the_days_asked():
    call_command("seed_demo", attempts=500, hosts=10, days=3, seed=5, stdout=io.StringIO())
    times = list(JoinAttempt.objects.order_by("id").values_list("time", flat=True))
    assert times == sorted(times)
    assert times[-1] - times[0] <= timedelta(days=3)


def test_seeding_again_appends_after_sealed_history():
    call_command("seed_demo", attempts=200, hosts=5, seed=1, stdout=io.StringIO())
    seal_pending(lag=timedelta(0))
    call_command("seed_demo", attempts=100, hosts=5, seed=2, stdout=io.StringIO())
    assert JoinAttempt.objects.count() == 300
    assert verify_seals().ok


def test_seed_demo_refuses_more_hosts_than_attempts():
    with pytest.raises(CommandError, match="hosts <= attempts"):
        call_command("seed_demo", attempts=5, hosts=10, stdout=io.StringIO())
