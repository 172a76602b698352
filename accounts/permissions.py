"""DRF permissions built on `accounts.roles`."""

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from accounts.roles import can_manage, can_view


class ReadForAuditorsWriteForAdmins(BasePermission):
    """Auditors and admins read; only admins write."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in SAFE_METHODS:
            return can_view(request.user)
        return can_manage(request.user)


class AdminsOnly(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return can_manage(request.user)
