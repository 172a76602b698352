"""Tokens in Django's admin: for looking, not for editing.

A token changed here would skip `validate_resource` and the admin action log, so the admin shows
tokens read-only and sends changes to the console; a deletion goes through `delete_token`, which
records it.
"""

from __future__ import annotations

import contextlib
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from joinadmin.console import source_address
from tokens.models import Token
from tokens.services import TokenNotFoundError, delete_token


@admin.register(Token)
class TokenAdmin(admin.ModelAdmin):
    list_display = ("name", "join_method", "roles", "aws_iid_ttl", "expires", "updated_at")
    list_filter = ("join_method",)
    search_fields = ("name", "description")
    ordering = ("name",)
    readonly_fields = [field.name for field in Token._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: Token) -> None:
        # Deleted meanwhile is the outcome the user asked for.
        with contextlib.suppress(TokenNotFoundError):
            delete_token(
                obj.name, actor=request.user, via="admin", remote_addr=source_address(request)
            )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Token]) -> None:
        for token in queryset:
            self.delete_model(request, token)
