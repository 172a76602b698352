"""Account workflows shared by the console, the API and the commands."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.db import transaction
from django.utils import timezone

from accounts.constants import (
    ADMIN_PERMISSIONS,
    ADMINS_GROUP,
    API_KEY_PREFIX,
    AUDITOR_PERMISSIONS,
    AUDITORS_GROUP,
)
from accounts.models import ApiKey, hash_secret


class ApiKeyError(Exception):
    """An API key operation that cannot be done; `code` names why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def ensure_groups() -> None:
    """Create the two console groups with their permissions; safe to run at every start."""
    for name, perms in ((AUDITORS_GROUP, AUDITOR_PERMISSIONS), (ADMINS_GROUP, ADMIN_PERMISSIONS)):
        group, _ = Group.objects.get_or_create(name=name)
        wanted = []
        for dotted in perms:
            app_label, codename = dotted.split(".", 1)
            wanted.extend(
                Permission.objects.filter(content_type__app_label=app_label, codename=codename)
            )
        group.permissions.set(wanted)


@dataclass(frozen=True)
class BootstrapResult:
    username: str
    password: str | None  # set only when the account was created now


def ensure_admin(username: str = "admin") -> BootstrapResult:
    """Make sure a superuser exists; create `username` with a random password if none does.

    The password is returned once and never stored in clear: the caller prints it on first run.
    """
    ensure_groups()
    user_model = get_user_model()
    if user_model.objects.filter(is_superuser=True).exists():
        return BootstrapResult(username=username, password=None)
    password = secrets.token_urlsafe(18)
    user = user_model.objects.create_superuser(username=username, email="", password=password)
    user.groups.add(Group.objects.get(name=ADMINS_GROUP))
    return BootstrapResult(username=username, password=password)


@dataclass(frozen=True)
class NewApiKey:
    key: ApiKey
    secret: str  # the full key, shown once


def create_api_key(user: AbstractBaseUser, name: str = "") -> NewApiKey:
    """Create a key for `user`. The full key is returned once; only its hash is stored."""
    prefix = secrets.token_hex(4)
    while ApiKey.objects.filter(prefix=prefix).exists():
        prefix = secrets.token_hex(4)
    body = secrets.token_urlsafe(32)
    full = f"{API_KEY_PREFIX}_{prefix}_{body}"
    key = ApiKey.objects.create(user=user, name=name, prefix=prefix, secret_hash=hash_secret(full))
    return NewApiKey(key=key, secret=full)


def authenticate_api_key(presented: str) -> ApiKey | None:
    """Return the usable key matching `presented`, or None. Compares hashes in constant time."""
    parts = presented.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX:
        return None
    key = ApiKey.objects.usable().select_related("user").filter(prefix=parts[1]).first()
    if key is None or not hmac.compare_digest(key.secret_hash, hash_secret(presented.strip())):
        return None
    now = timezone.now()
    # Writing on every request would turn reads into writes; a minute of precision is plenty.
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key


@transaction.atomic
def revoke_api_key(prefix: str) -> ApiKey:
    """Revoke the key whose prefix is `prefix` (the `ja_` part may be included)."""
    prefix = prefix.strip()
    if prefix.startswith(f"{API_KEY_PREFIX}_"):
        prefix = prefix.split("_", 2)[1]
    key = ApiKey.objects.select_for_update().filter(prefix=prefix).first()
    if key is None:
        raise ApiKeyError("not_found", f"no API key with prefix {prefix!r}")
    if key.is_revoked:
        raise ApiKeyError("already_revoked", f"API key {prefix} was already revoked")
    key.revoke()
    return key
