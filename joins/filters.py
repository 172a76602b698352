"""Filters of the join history, shared by the API, the console and the exports."""

from __future__ import annotations

import functools
import sys
from datetime import UTC, datetime

import django_filters
from django.db import connections
from django.db.models import F
from django.db.models.functions import Coalesce

from audit.services import sealed_id_ceiling, sealed_id_floor
from joins.constants import ERROR_CODES, OUTCOMES
from joins.models import JoinAttempt

#: The seal chain whose time summaries bound the time filters (see audit.services).
SEALED_STREAM = "joinattempt"


def as_utc(value: datetime) -> datetime:
    """The instant in UTC. ISO 8601 allows offsets PostgreSQL refuses (beyond +-15:59, e.g.
    -21:30); the instant itself is fine, so compare in UTC. Instants outside the calendar clamp
    to its ends."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        edge = datetime.min if value.year < 2 else datetime.max
        return edge.replace(tzinfo=UTC)


class JoinAttemptFilter(django_filters.FilterSet):
    """Each filter is an equality or a range on an indexed column (see JoinAttempt.Meta)."""

    token = django_filters.CharFilter(field_name="token")
    host_id = django_filters.CharFilter(method="filter_prefix")
    instance_id = django_filters.CharFilter(method="filter_prefix")
    account = django_filters.CharFilter(field_name="account_id")
    region = django_filters.CharFilter(field_name="region")
    outcome = django_filters.ChoiceFilter(choices=[(o, o) for o in OUTCOMES])
    error = django_filters.ChoiceFilter(choices=[(c, c) for c in ERROR_CODES])
    remote_addr = django_filters.CharFilter(field_name="remote_addr")
    since = django_filters.IsoDateTimeFilter(field_name="time", method="filter_since")
    until = django_filters.IsoDateTimeFilter(field_name="time", method="filter_until")

    class Meta:
        model = JoinAttempt
        fields = [
            "token",
            "host_id",
            "instance_id",
            "account",
            "region",
            "outcome",
            "error",
            "remote_addr",
            "since",
            "until",
        ]

    # The history pages by id, newest first. A bare time range cannot use that order: the
    # database either walks ids from the newest and skips every row outside the range (a million
    # rows for "until last spring") or reads the whole range and sorts it. The seals record each
    # id range's earliest and latest time, so they turn a time bound into an exact id bound.

    # Once an id bound applies, the time test is written so that no index matches it: the
    # planners take `time` and `id` for independent columns, underestimate the rows of the time
    # index by the id range's share, and would read every matching row by time and sort them
    # (a day of history: 11,000 rows). Walking the bounded id range instead meets at most about
    # one seal's worth of rows outside the time range before the newest match.

    def filter_since(self, queryset, name, value):  # type: ignore[no-untyped-def]
        """`time >= value`, and ids from the first sealed range that can hold such a row."""
        value = as_utc(value)
        floor = sealed_id_floor(SEALED_STREAM, value, using=queryset.db)
        if floor is None:
            return queryset.filter(time__gte=value)
        return queryset.alias(_since=_unindexed("time")).filter(_since__gte=value, id__gte=floor)

    def filter_until(self, queryset, name, value):  # type: ignore[no-untyped-def]
        """`time < value`, and ids up to the last sealed range that can hold such a row."""
        value = as_utc(value)
        bound = sealed_id_ceiling(SEALED_STREAM, value, using=queryset.db)
        if bound is None:
            return queryset.filter(time__lt=value)
        ceiling, sealed_up_to = bound
        # Rows after the last seal carry no time summary; the bound holds only if none of them
        # is older than `value`. Ordering by id keeps this a short walk of the newest rows.
        unsealed_older = (
            JoinAttempt.objects.using(queryset.db)
            .filter(id__gt=sealed_up_to, time__lt=value)
            .order_by("id")
            .values_list("id", flat=True)[:1]
        )
        if list(unsealed_older):
            return queryset.filter(time__lt=value)
        if ceiling is None:
            return queryset.none()
        return queryset.alias(_until=_unindexed("time")).filter(_until__lt=value, id__lte=ceiling)

    def filter_prefix(self, queryset, name, value):  # type: ignore[no-untyped-def]
        """Exact match, or a prefix search when the value ends with `*`.

        `startswith` alone becomes LIKE, which SQLite runs case-insensitively and so never on an
        index: a million-row history would be read in full. Where text compares code point by
        code point, "starts with P" is also the range [P, P with its last character bumped),
        which the (column, id) index serves; `startswith` stays to keep the exact meaning.
        """
        value = value.strip()
        if not value.endswith("*"):
            return queryset.filter(**{name: value})
        prefix = value[:-1]
        if not prefix:
            return queryset
        queryset = queryset.filter(**{f"{name}__startswith": prefix})
        if prefix[-1] != chr(sys.maxunicode) and _compares_by_code_point(queryset.db):
            bumped = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            queryset = queryset.filter(**{f"{name}__gte": prefix, f"{name}__lt": bumped})
        return queryset


def _unindexed(column: str) -> Coalesce:
    """The column's value in a form no index matches (it is never NULL, so it is the value)."""
    return Coalesce(F(column), F(column))


@functools.cache
def _collation_of(alias: str, name: str) -> str:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT datcollate FROM pg_database WHERE datname = current_database()")
        row = cursor.fetchone()
    return str(row[0]) if row else ""


def _compares_by_code_point(alias: str) -> bool:
    """Whether text columns sort by code point, so that a prefix is one contiguous range.

    SQLite's default BINARY collation does. PostgreSQL does under the C collations; under a
    linguistic one (en_US.UTF-8) strings with a common prefix need not sit together, so only
    `startswith` is used there (exact, but not served by the index).
    """
    connection = connections[alias]
    if connection.vendor == "sqlite":
        return True
    if connection.vendor == "postgresql":
        collation = _collation_of(alias, str(connection.settings_dict.get("NAME")))
        return collation.replace("-", "").lower() in {"c", "posix", "c.utf8", "ucs_basic"}
    return False
