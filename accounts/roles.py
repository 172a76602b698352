"""Who may do what: one place that answers for the console, the API and the templates."""

from __future__ import annotations

from typing import Any

from accounts.constants import ADMINS_GROUP, AUDITORS_GROUP


def _groups(user: Any) -> set[str]:
    cached = getattr(user, "_joinadmin_groups", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        user._joinadmin_groups = cached
    return cached


def can_manage(user: Any) -> bool:
    """Admins and superusers change tokens and hosts."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return bool(user.is_superuser or ADMINS_GROUP in _groups(user))


def can_view(user: Any) -> bool:
    """Auditors read everything; admins too."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return can_manage(user) or AUDITORS_GROUP in _groups(user)
