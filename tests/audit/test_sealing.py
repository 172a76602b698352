"""Sealing, verifying and pruning the audit records against the database."""

from __future__ import annotations

import base64
import itertools
import threading
from dataclasses import replace
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from audit import sealing
from audit.digests import RangeHasher, derive_signing_key, public_key_text, sign
from audit.models import AdminAction, Seal, SealVerification
from audit.sealing import SealError, prune_sealed, seal_pending, verify_seals
from audit.services import (
    latest_seal,
    latest_verification,
    seal_key_fingerprint,
    verification_is_authentic,
)
from joins.models import Host, JoinAttempt
from tests.audit import days_ago, make_actions, make_attempts

pytestmark = pytest.mark.django_db


def kinds(report: sealing.VerificationReport) -> list[str]:
    return [problem.kind for problem in report.problems]


def named(report: sealing.VerificationReport, kind: str) -> list[int]:
    return [row_id for p in report.problems if p.kind == kind for row_id in p.row_ids]


# --- Sealing ---------------------------------------------------------------------------------


def test_a_sealed_history_verifies_clean_and_the_run_is_recorded():
    make_attempts(25)
    make_actions(3)
    made = seal_pending(chunk=10)
    assert [(s.stream, s.row_count) for s in made] == [
        ("joinattempt", 10),
        ("joinattempt", 10),
        ("joinattempt", 5),
        ("adminaction", 3),
    ]
    report = verify_seals()
    assert report.ok, [p.line() for p in report.problems]
    assert report.rows_checked == 28 and report.seals_checked == 4
    record = latest_verification()
    assert record is not None and record.ok and record.rows_checked == 28
    assert verification_is_authentic(record)


def test_seals_form_one_chain_per_stream_over_contiguous_id_ranges():
    make_attempts(25)
    seals = seal_pending(chunk=10, streams=["joinattempt"])
    assert [s.seq for s in seals] == [1, 2, 3]
    assert seals[0].previous_digest == "0" * 64
    for earlier, later in itertools.pairwise(seals):
        assert later.previous_digest == earlier.digest
        assert later.first_id == earlier.last_id + 1
    assert seals[-1].last_id == JoinAttempt.objects.order_by("-id").first().pk


def test_each_seal_carries_the_public_key_the_console_shows():
    make_attempts(2)
    seal = seal_pending()[0]
    raw = base64.b64decode(seal.public_key)
    assert len(raw) == 32
    assert latest_seal("joinattempt").pk == seal.pk
    assert seal_key_fingerprint().startswith("SHA256:")


def test_rows_younger_than_the_lag_wait_even_when_later_rows_are_older():
    old = make_attempts(3)
    young = make_attempts(1, age=timedelta(seconds=5))
    make_attempts(1)  # an old time but a later id: it must wait for the young row before it
    made = seal_pending(lag=timedelta(seconds=60))
    assert len(made) == 1
    assert made[0].last_id == old[-1].pk and made[0].row_count == 3
    assert made[0].last_id < young[0].pk


def test_a_second_run_seals_only_what_came_since_and_an_idle_run_seals_nothing():
    make_attempts(4)
    first = seal_pending()
    make_attempts(2)
    second = seal_pending()
    assert [s.seq for s in second] == [2]
    assert second[0].first_id == first[0].last_id + 1 and second[0].row_count == 2
    assert seal_pending() == []


def test_an_empty_history_seals_nothing_and_verifies_clean():
    assert seal_pending() == []
    assert verify_seals().ok


def test_deleting_a_user_does_not_look_like_tampering_with_their_actions(admin_user):
    make_actions(2, actor=admin_user)
    seal_pending()
    admin_user.delete()
    assert AdminAction.objects.filter(actor__isnull=True).count() == 2
    assert verify_seals().ok


# --- Detection -------------------------------------------------------------------------------


def test_a_changed_row_is_detected_and_named():
    rows = make_attempts(12)
    seal_pending(chunk=5)
    JoinAttempt.objects.filter(pk=rows[7].pk).update(outcome="allowed", error="")
    report = verify_seals()
    assert not report.ok
    assert kinds(report) == ["row_changed"]
    assert named(report, "row_changed") == [rows[7].pk]
    assert str(rows[7].pk) in report.problems[0].line()


def test_a_change_inside_a_json_column_is_detected():
    rows = make_attempts(3)
    seal_pending()
    checks = rows[1].checks
    checks[1]["ok"] = True
    JoinAttempt.objects.filter(pk=rows[1].pk).update(checks=checks)
    assert named(verify_seals(), "row_changed") == [rows[1].pk]


def test_a_deleted_row_is_detected_and_named():
    rows = make_attempts(6)
    seal_pending()
    JoinAttempt.objects.filter(pk=rows[2].pk).delete()
    report = verify_seals()
    assert kinds(report) == ["row_deleted"]
    assert named(report, "row_deleted") == [rows[2].pk]


def test_a_row_inserted_into_a_gap_of_a_sealed_range_is_detected_and_named():
    rows = make_attempts(5)
    gap = rows[2]
    JoinAttempt.objects.filter(pk=gap.pk).delete()  # e.g. a rolled-back insert left a gap
    seal_pending()
    forged = make_attempts(1)[0]
    JoinAttempt.objects.filter(pk=forged.pk).update(id=gap.pk)
    report = verify_seals()
    assert kinds(report) == ["row_inserted"]
    assert named(report, "row_inserted") == [gap.pk]


def test_a_row_inserted_below_the_first_sealed_id_is_detected():
    rows = make_attempts(3)
    seal_pending()
    forged = make_attempts(1)[0]
    JoinAttempt.objects.filter(pk=forged.pk).update(id=rows[0].pk - 1000)
    assert named(verify_seals(), "row_inserted") == [rows[0].pk - 1000]


def test_admin_actions_are_checked_too():
    actions = make_actions(4)
    seal_pending()
    AdminAction.objects.filter(pk=actions[0].pk).update(reason="nothing happened")
    assert named(verify_seals(), "row_changed") == [actions[0].pk]


def test_an_edited_seal_digest_is_detected():
    make_attempts(3)
    seal = seal_pending()[0]
    Seal.objects.filter(pk=seal.pk).update(range_digest="00" * 32)
    report = verify_seals()
    assert "seal_altered" in kinds(report) and "signature_invalid" in kinds(report)
    assert "range_unchecked" in kinds(report)


def test_a_replaced_signature_is_detected():
    make_attempts(3)
    seal = seal_pending()[0]
    other = sign(derive_signing_key("x" * 40), seal.payload().to_bytes())
    Seal.objects.filter(pk=seal.pk).update(signature=other)
    assert kinds(verify_seals()) == ["signature_invalid", "range_unchecked"]


def test_a_seal_rewritten_with_another_key_is_untrusted_unless_that_key_is_given():
    rows = make_attempts(3)
    seal = seal_pending()[0]
    JoinAttempt.objects.filter(pk=rows[0].pk).update(reason="rewritten")
    # Someone without our secret recomputes the range and signs it with a key of their own.
    key = derive_signing_key("an attacker's own secret value")
    forged = RangeHasher("joinattempt")
    for values in sealing._rows(sealing.STREAMS["joinattempt"], seal.column_list, above=None):
        forged.add(values[0], values)
    payload = replace(
        seal.payload(), range_digest=forged.range_digest(), public_key=public_key_text(key)
    )
    Seal.objects.filter(pk=seal.pk).update(
        range_digest=payload.range_digest,
        public_key=payload.public_key,
        digest=payload.digest(),
        signature=sign(key, payload.to_bytes()),
    )
    assert "untrusted_key" in kinds(verify_seals(record=False))
    assert verify_seals(extra_keys=[public_key_text(key)], record=False).ok


def test_a_broken_chain_link_is_detected():
    make_attempts(9)
    seal_pending(chunk=3)
    Seal.objects.filter(stream="joinattempt", seq=2).delete()
    report = verify_seals()
    assert "seal_missing" in kinds(report) and "chain_broken" in kinds(report)


def test_altered_per_row_hashes_are_reported():
    make_attempts(3)
    seal = seal_pending()[0]
    Seal.objects.filter(pk=seal.pk).update(leaves=b"\x01garbage")
    assert kinds(verify_seals()) == ["leaves_altered"]


def test_truncating_the_chain_is_noticed_by_the_next_verification():
    make_attempts(6)
    seal_pending(chunk=3)
    assert verify_seals().ok
    newest = Seal.objects.get(stream="joinattempt", seq=2)
    JoinAttempt.objects.filter(id__gte=newest.first_id).delete()
    newest.delete()
    assert "seal_vanished" in kinds(verify_seals())


def test_a_verification_of_one_stream_does_not_hide_a_truncated_other_stream():
    make_attempts(6)
    make_actions(2)
    seal_pending(chunk=3)
    assert verify_seals().ok
    assert verify_seals(streams=["adminaction"]).ok
    newest = Seal.objects.get(stream="joinattempt", seq=2)
    JoinAttempt.objects.filter(id__gte=newest.first_id).delete()
    newest.delete()
    assert kinds(verify_seals()) == ["seal_vanished"]


def test_a_faked_verification_record_is_not_authentic_and_is_reported():
    make_attempts(2)
    seal_pending()
    JoinAttempt.objects.all().update(reason="edited")
    failed = verify_seals().record
    assert failed is not None and not failed.ok
    SealVerification.objects.filter(pk=failed.pk).update(ok=True, problem_count=0, problems="")
    faked = SealVerification.objects.get(pk=failed.pk)
    assert not verification_is_authentic(faked)
    assert "verification_altered" in kinds(verify_seals())


# --- Concurrency -----------------------------------------------------------------------------


def test_a_seal_run_that_loses_the_race_for_a_link_retries_instead_of_forking(monkeypatch):
    make_attempts(10)
    real_head = sealing._head
    raced = []

    def head_read_just_before_another_run_commits(stream: str) -> Seal | None:
        stale = real_head(stream)
        if not raced:
            raced.append(stream)
            monkeypatch.setattr(sealing, "_head", real_head)
            seal_pending(chunk=4)  # the other run writes links 1-3 first
            monkeypatch.setattr(sealing, "_head", head_read_just_before_another_run_commits)
        return stale

    monkeypatch.setattr(sealing, "_head", head_read_just_before_another_run_commits)
    seal_pending(chunk=4)
    seals = list(Seal.objects.filter(stream="joinattempt").order_by("seq"))
    assert [s.seq for s in seals] == [1, 2, 3]
    assert len({s.previous_digest for s in seals}) == 3
    assert verify_seals().ok


@pytest.mark.django_db(transaction=True)
def test_concurrent_seal_runs_on_separate_connections_build_one_chain():
    make_attempts(40)
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            seal_pending(chunk=3)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # A run may give up after losing every retry; it must never leave a fork behind.
    assert all(isinstance(exc, SealError) for exc in errors), errors
    seal_pending(chunk=3)
    seals = list(Seal.objects.filter(stream="joinattempt").order_by("seq"))
    assert [s.seq for s in seals] == list(range(1, 15))
    assert sum(s.row_count for s in seals) == 40
    assert verify_seals().ok


def test_a_run_that_keeps_losing_gives_up_with_a_clear_error(monkeypatch):
    make_attempts(3)
    seal_pending()
    make_attempts(2)
    monkeypatch.setattr(sealing, "_head", lambda stream: None)  # always the stale head
    with pytest.raises(SealError, match="one `audit seal` at a time"):
        seal_pending(streams=["joinattempt"])
    assert Seal.objects.filter(stream="joinattempt").count() == 1


# --- Pruning ---------------------------------------------------------------------------------


def test_prune_removes_only_whole_sealed_ranges_older_than_the_date():
    old = make_attempts(6, age=timedelta(days=40))
    recent = make_attempts(3, age=timedelta(days=2))
    seal_pending(chunk=3)  # seals: old 1-3, old 4-6, recent 7-9
    unsealed_but_old = make_attempts(2, age=timedelta(days=50))
    host = Host.objects.create(
        host_id="h-1",
        account_id="123456789012",
        region="us-west-2",
        instance_id="i-1",
        token="ec2-token",
        first_joined_at=days_ago(40),
        last_joined_at=days_ago(40),
        last_attempt=old[0],
    )
    pruned = prune_sealed(days_ago(30), actor="cli:test")
    assert [(p.stream, p.seq, p.rows) for p in pruned] == [
        ("joinattempt", 1, 3),
        ("joinattempt", 2, 3),
    ]
    left = set(JoinAttempt.objects.values_list("id", flat=True))
    assert left == {row.pk for row in recent + unsealed_but_old}
    first, second, third = Seal.objects.filter(stream="joinattempt").order_by("seq")
    assert first.is_pruned and second.is_pruned and not third.is_pruned
    assert bytes(first.leaves) == b""
    host.refresh_from_db()
    assert host.last_attempt is None
    assert AdminAction.objects.filter(action="audit.prune").count() == 2
    assert verify_seals().ok


def test_pruning_stops_at_the_first_range_that_is_too_recent():
    make_attempts(3, age=timedelta(days=40))
    make_attempts(3, age=timedelta(days=1))
    make_attempts(3, age=timedelta(days=40))
    seal_pending(chunk=3)
    assert [p.seq for p in prune_sealed(days_ago(30), actor="cli:test")] == [1]
    assert JoinAttempt.objects.count() == 6


def test_a_dry_run_prune_deletes_nothing():
    make_attempts(3, age=timedelta(days=40))
    seal_pending()
    assert len(prune_sealed(days_ago(30), actor="cli:test", dry_run=True)) == 1
    assert JoinAttempt.objects.count() == 3
    assert not Seal.objects.get().is_pruned


def test_prune_keeps_a_tampered_range_as_evidence():
    rows = make_attempts(6, age=timedelta(days=40))
    seal_pending(chunk=3)
    JoinAttempt.objects.filter(pk=rows[4].pk).update(reason="edited")
    with pytest.raises(SealError, match="does not verify"):
        prune_sealed(days_ago(30), actor="cli:test")
    assert JoinAttempt.objects.count() == 3  # the first, intact range went; the rest stays
    assert JoinAttempt.objects.filter(pk=rows[4].pk).exists()


def test_prune_refuses_a_date_in_the_future():
    with pytest.raises(SealError, match="future"):
        prune_sealed(timezone.now() + timedelta(days=1), actor="cli:test")


def test_a_row_put_back_into_a_pruned_range_is_named():
    rows = make_attempts(3, age=timedelta(days=40))
    make_attempts(1)
    seal_pending(chunk=3)
    assert len(prune_sealed(days_ago(30), actor="cli:test")) == 1
    JoinAttempt.objects.create(**{**_fields(rows[1]), "id": rows[1].pk})
    report = verify_seals()
    assert named(report, "row_inserted") == [rows[1].pk]


def test_rows_deleted_under_a_forged_prune_mark_are_reported():
    rows = make_attempts(3, age=timedelta(days=40))
    seal = seal_pending()[0]
    JoinAttempt.objects.filter(pk__in=[r.pk for r in rows]).delete()
    Seal.objects.filter(pk=seal.pk).update(pruned_at=timezone.now(), prune_signature="")
    report = verify_seals()
    assert "prune_mark_invalid" in kinds(report)
    assert named(report, "row_deleted") == [r.pk for r in rows]


def _fields(row: JoinAttempt) -> dict:
    names = [f.attname for f in JoinAttempt._meta.concrete_fields if f.attname != "id"]
    return {name: getattr(row, name) for name in names}
