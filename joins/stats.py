"""Aggregates of the join history for the dashboard's charts.

Every function answers with one grouped query over a bounded time range (`time >= since AND
time < until`), which the (time, id) index turns into a range scan: the cost follows the number
of attempts in the chosen range, never the size of the whole history. The hour is truncated in
the database (`TruncHour`, in UTC), on SQLite and PostgreSQL alike, so that only one row per hour
and outcome comes back; coarser buckets are summed here from those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import CharField, Count, Q
from django.db.models.functions import Cast, Substr, TruncHour

from joins.constants import OUTCOME_ALLOWED, OUTCOMES
from joins.models import JoinAttempt

REFUSED = tuple(outcome for outcome in OUTCOMES if outcome != OUTCOME_ALLOWED)
TOP_LIMIT = 8


@dataclass(frozen=True)
class StatsRange:
    """A choice of `?range=`: how far back the charts look and how wide a column is."""

    key: str
    label: str  # "24 hours"
    span: timedelta
    step: timedelta  # a whole number of hours that divides a day, or whole days
    step_label: str  # "hour", "6 hours", "day"

    @property
    def columns(self) -> int:
        return self.span // self.step


RANGES: dict[str, StatsRange] = {
    r.key: r
    for r in (
        StatsRange("24h", "24 hours", timedelta(hours=24), timedelta(hours=1), "hour"),
        # Hourly columns over a week or a month would be too thin to read; an hour is still
        # what the database groups by, and the columns sum whole hours.
        StatsRange("7d", "7 days", timedelta(days=7), timedelta(hours=6), "6 hours"),
        StatsRange("30d", "30 days", timedelta(days=30), timedelta(days=1), "day"),
    )
}
DEFAULT_RANGE = "24h"


def chosen_range(value: str | None) -> StatsRange:
    """The range named by `?range=`; anything else is the default, so a bad link still works."""
    return RANGES.get(value or "", RANGES[DEFAULT_RANGE])


@dataclass(frozen=True)
class Window:
    """The buckets of a range ending now: `starts[-1]` holds `now`; `until` ends the last one."""

    starts: list[datetime]
    step: timedelta

    @property
    def since(self) -> datetime:
        return self.starts[0]

    @property
    def until(self) -> datetime:
        return self.starts[-1] + self.step

    def index(self, moment: datetime) -> int | None:
        """The bucket of `moment`, or None outside the window."""
        if not self.since <= moment < self.until:
            return None
        return int((moment - self.since) // self.step)


def window(stats_range: StatsRange, now: datetime) -> Window:
    """Buckets aligned on UTC hour, quarter-day or day boundaries, the last one holding `now`."""
    now = now.astimezone(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    step = stats_range.step
    last = midnight + ((now - midnight) // step) * step
    n = stats_range.columns
    return Window(starts=[last - step * (n - 1 - i) for i in range(n)], step=step)


@dataclass(frozen=True)
class Timeline:
    """Attempts per bucket and outcome: `counts["denied"][i]` is the i-th bucket's denials."""

    window: Window
    counts: dict[str, list[int]] = field(default_factory=dict)

    @property
    def totals(self) -> dict[str, int]:
        return {outcome: sum(values) for outcome, values in self.counts.items()}

    @property
    def total(self) -> int:
        return sum(self.totals.values())


def _in(win: Window) -> Q:
    return Q(time__gte=win.since, time__lt=win.until)


def _hour_of(value: datetime | str) -> datetime:
    if isinstance(value, str):
        return datetime.strptime(value, "%Y-%m-%d %H").replace(tzinfo=UTC)
    return value


def _hour_expression() -> Any:
    """The attempt's UTC hour, computed by the database.

    SQLite has no date truncation of its own: Django's TruncHour calls back into Python for
    every row (seconds over a million rows). The stored text is already UTC
    ('YYYY-MM-DD HH:MM:SS...'), so its first 13 characters name the hour natively.
    """
    if connection.vendor == "sqlite":
        return Substr(Cast("time", CharField()), 1, 13)
    return TruncHour("time", tzinfo=UTC)


def hourly_counts(since: datetime, until: datetime) -> dict[datetime, dict[str, int]]:
    """Attempts per UTC hour and outcome in [since, until), hours without attempts left out
    (one query, one row per hour)."""
    rows = (
        JoinAttempt.objects.filter(time__gte=since, time__lt=until)
        .annotate(hour=_hour_expression())
        .order_by()
        .values("hour")
        .annotate(**{outcome: Count("id", filter=Q(outcome=outcome)) for outcome in OUTCOMES})
    )
    return {_hour_of(row["hour"]): {outcome: row[outcome] for outcome in OUTCOMES} for row in rows}


def fold(hourly: dict[datetime, dict[str, int]], win: Window) -> Timeline:
    """The hours that fall in `win`, summed into its buckets (a bucket is whole hours)."""
    counts = {outcome: [0] * len(win.starts) for outcome in OUTCOMES}
    for hour, by_outcome in hourly.items():
        i = win.index(hour)
        if i is None:
            continue
        for outcome in OUTCOMES:
            counts[outcome][i] += by_outcome.get(outcome, 0)
    return Timeline(window=win, counts=counts)


def attempts_timeline(win: Window) -> Timeline:
    """Attempts in each bucket of `win`, split by outcome (one query)."""
    return fold(hourly_counts(win.since, win.until), win)


def top_refusals(win: Window, limit: int = TOP_LIMIT) -> list[tuple[str, int]]:
    """The most frequent error codes of denied or failed attempts in `win`: (code, count)."""
    rows = (
        JoinAttempt.objects.filter(_in(win), outcome__in=REFUSED)
        .order_by()
        .values_list("error")
        .annotate(n=Count("id"))
        .order_by("-n", "error")[:limit]
    )
    return [(code, n) for code, n in rows]


@dataclass(frozen=True)
class TokenCounts:
    """Attempts in the window that named one token, by outcome."""

    token: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def top_tokens(win: Window, limit: int = TOP_LIMIT) -> list[TokenCounts]:
    """The tokens named by the most attempts in `win`, each split by outcome (one query)."""
    rows = (
        JoinAttempt.objects.filter(_in(win))
        .order_by()
        .values("token")
        .annotate(
            total=Count("id"),
            **{outcome: Count("id", filter=Q(outcome=outcome)) for outcome in OUTCOMES},
        )
        .order_by("-total", "token")[:limit]
    )
    return [TokenCounts(token=row["token"], counts={o: row[o] for o in OUTCOMES}) for row in rows]
