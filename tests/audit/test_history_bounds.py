"""The history's time and prefix filters, sped up by seals and index ranges, select exactly the
rows their plain definitions select, whatever the order of times and ids."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.sealing import seal_pending
from audit.services import sealed_id_ceiling, sealed_id_floor
from joins.filters import JoinAttemptFilter
from joins.models import JoinAttempt
from tests.audit import make_attempts

pytestmark = pytest.mark.django_db


def selected(**params: str) -> set[int]:
    filterset = JoinAttemptFilter(params, queryset=JoinAttempt.objects.all())
    assert filterset.is_valid(), filterset.errors
    return set(filterset.qs.values_list("id", flat=True))


def shuffled_history(count: int) -> list[JoinAttempt]:
    """Rows whose times do not follow their ids (a slow join commits after faster ones)."""
    rows = make_attempts(count, age=timedelta(days=5))
    rng = random.Random(4)
    now = timezone.now()
    for row in rows:
        row.time = now - timedelta(days=5) + timedelta(hours=rng.uniform(0, 96))
        JoinAttempt.objects.filter(pk=row.pk).update(time=row.time)
    return rows


def moments(rows: list[JoinAttempt]) -> list[str]:
    times = sorted(row.time for row in rows)
    picks = [times[0] - timedelta(hours=1), times[len(times) // 3], times[-1]]
    picks += [times[-1] + timedelta(hours=1)]
    return [moment.isoformat() for moment in picks]


def test_time_filters_match_their_plain_definition_on_a_sealed_shuffled_history():
    rows = shuffled_history(60)
    seal_pending(chunk=7)
    for moment in moments(rows):
        assert selected(since=moment) == set(
            JoinAttempt.objects.filter(time__gte=moment).values_list("id", flat=True)
        )
        assert selected(until=moment) == set(
            JoinAttempt.objects.filter(time__lt=moment).values_list("id", flat=True)
        )


def test_time_filters_still_see_old_rows_that_came_after_the_last_seal():
    rows = shuffled_history(20)
    seal_pending(chunk=5)
    straggler = make_attempts(1, age=timedelta(days=30))[0]  # unsealed, and older than all
    moment = min(row.time for row in rows).isoformat()
    assert straggler.pk in selected(until=moment)
    assert selected(until=moment) == {straggler.pk}


def test_a_time_window_before_everything_sealed_is_empty():
    make_attempts(10, age=timedelta(days=2))
    seal_pending()
    long_ago = (timezone.now() - timedelta(days=30)).isoformat()
    assert selected(until=long_ago) == set()
    filterset = JoinAttemptFilter({"until": long_ago}, queryset=JoinAttempt.objects.all())
    assert not filterset.qs.exists()


def test_seal_bounds_rule_out_only_ranges_that_cannot_hold_a_row():
    old = make_attempts(5, age=timedelta(days=10))
    new = make_attempts(5, age=timedelta(days=1))
    seal_pending(chunk=5)
    middle = timezone.now() - timedelta(days=5)
    assert sealed_id_floor("joinattempt", middle) == new[0].pk
    ceiling, head = sealed_id_ceiling("joinattempt", middle)
    assert ceiling == old[-1].pk and head == new[-1].pk


def test_without_seals_the_time_filters_are_unbounded():
    make_attempts(3)
    assert sealed_id_floor("joinattempt", timezone.now()) is None
    assert sealed_id_ceiling("joinattempt", timezone.now()) is None
    assert len(selected(until=timezone.now().isoformat())) == 3


def test_a_prefix_filter_finds_exactly_the_ids_that_start_with_it():
    make_attempts(1, instance_id="i-0abc", host_id="1-i-0abc")
    make_attempts(1, instance_id="i-0abd", host_id="1-i-0abd")
    make_attempts(1, instance_id="i-0ab", host_id="1-i-0ab")
    make_attempts(1, instance_id="i-0ABC", host_id="1-i-0ABC")
    make_attempts(1, instance_id="i-0ac", host_id="1-i-0ac")
    found = {JoinAttempt.objects.get(pk=pk).instance_id for pk in selected(instance_id="i-0ab*")}
    assert found == {"i-0abc", "i-0abd", "i-0ab"}
    assert len(selected(host_id="1-i-0abc")) == 1
    assert len(selected(host_id="1-i-0a*")) == 4


@pytest.mark.parametrize("rows", [4, 40])
def test_the_time_filtered_history_page_runs_the_same_queries_whatever_its_size(
    rows, auditor_client, django_assert_num_queries
):
    make_attempts(rows, age=timedelta(days=3))
    seal_pending(chunk=5)
    since = (timezone.now() - timedelta(days=4)).strftime("%Y-%m-%dT%H:%M:%S")
    until = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    # session, user, groups; seal bounds (since: 1, until: aggregate and unsealed tail); the page
    with django_assert_num_queries(7):
        response = auditor_client.get(f"/joins/?since={since}&until={until}")
    assert response.status_code == 200
