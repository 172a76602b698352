"""Join attempts and hosts in Django's admin, read-only.

Attempts are the audit trail and are never edited. A host is forgotten from the console or the
API, which ask for the reason and record it; the admin has no form for that reason.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from joins.models import Host, JoinAttempt


class ReadOnlyAdmin(admin.ModelAdmin):
    """Shows rows; adds, changes and deletes nothing."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(JoinAttempt)
class JoinAttemptAdmin(ReadOnlyAdmin):
    list_display = ("id", "time", "outcome", "error", "token", "host_id", "region", "remote_addr")
    list_filter = ("outcome", "error")
    search_fields = ("=token", "=host_id", "=instance_id", "=remote_addr")
    # The changelist must not COUNT a history of millions of rows.
    show_full_result_count = False
    ordering = ("-id",)


@admin.register(Host)
class HostAdmin(ReadOnlyAdmin):
    list_display = ("host_id", "node_name", "token", "account_id", "region", "last_joined_at")
    list_filter = ("region",)
    search_fields = ("=host_id", "node_name", "=token", "=account_id", "=instance_id")
    ordering = ("-last_joined_at",)
    raw_id_fields = ("last_attempt",)
