"""Filters of the join history, shared by the API, the console and the exports."""

from __future__ import annotations

import django_filters

from joins.constants import ERROR_CODES, OUTCOMES
from joins.models import JoinAttempt


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
    since = django_filters.IsoDateTimeFilter(field_name="time", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="time", lookup_expr="lt")

    class Meta:
        model = JoinAttempt
        fields = ["token", "host_id", "instance_id", "account", "region", "outcome", "error",
                  "remote_addr", "since", "until"]

    def filter_prefix(self, queryset, name, value):  # type: ignore[no-untyped-def]
        """Exact match, or a prefix search when the value ends with `*`."""
        value = value.strip()
        if value.endswith("*"):
            return queryset.filter(**{f"{name}__startswith": value[:-1]})
        return queryset.filter(**{name: value})
