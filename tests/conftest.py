"""Shared fixtures: the personas every test suite signs in as.

- `admin_user` / `admin_client`: member of joinadmin-admins (manages tokens and hosts)
- `auditor_user` / `auditor_client`: member of joinadmin-auditors (reads everything)
- `plain_user` / `plain_client`: signed in, but in neither group (every console page is 403)
- `superuser`: Django superuser in no group (may do everything)

The users have unusable passwords (nothing to hash, so fixtures stay fast); tests that need a
password log in with one they set themselves. Each `*_client` is its own `Client`, so one test
can act as several personas at once.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client

from accounts.constants import ADMINS_GROUP, AUDITORS_GROUP
from accounts.services import ensure_groups


def _make_user(username: str, group: str | None = None, **extra: Any) -> Any:
    ensure_groups()
    user = get_user_model().objects.create_user(username=username, password=None, **extra)
    if group is not None:
        user.groups.add(Group.objects.get(name=group))
    return user


def _client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin_user(db: None) -> Any:
    return _make_user("alice-admin", ADMINS_GROUP)


@pytest.fixture
def auditor_user(db: None) -> Any:
    return _make_user("bob-auditor", AUDITORS_GROUP)


@pytest.fixture
def plain_user(db: None) -> Any:
    return _make_user("carol-nogroup")


@pytest.fixture
def superuser(db: None) -> Any:
    return _make_user("root", is_superuser=True, is_staff=True)


@pytest.fixture
def admin_client(admin_user: Any) -> Client:
    return _client_for(admin_user)


@pytest.fixture
def auditor_client(auditor_user: Any) -> Client:
    return _client_for(auditor_user)


@pytest.fixture
def plain_client(plain_user: Any) -> Client:
    return _client_for(plain_user)


@pytest.fixture(autouse=True)
def _isolated_cache() -> None:
    """Each test starts with an empty cache: rate-limit counters, lockouts and cached summaries
    must not leak from one test into the next (ids differ across tests on PostgreSQL, where
    sequences do not roll back)."""
    from django.core.cache import cache

    from joins import authority
    from tokens import cache as token_cache

    cache.clear()
    # Per-process copies keyed by database ids, which SQLite hands out again after a rollback.
    token_cache.clear()
    authority.reset_cache()


@pytest.fixture(scope="session", autouse=True)
def _join_writer_stopped(django_db_setup: None, django_db_blocker: Any) -> Any:
    """Stop the join writer's thread (and close its connection) before the test database is
    destroyed: PostgreSQL refuses to drop a database that still has a connection."""
    yield
    from joins.writer import writer

    writer.stop()
