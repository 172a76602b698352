"""Sign-in throttling: failures lock the account name and the source address for a while."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
import time_machine
from django.core.cache import cache
from django.test import Client, override_settings
from django.utils import timezone

from audit.models import AdminAction
from joinadmin import security

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
OTHER_ADDRESS = "198.51.100.7"
REDIS_URL = os.environ.get("JOINADMIN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(autouse=True)
def throttle(settings: Any) -> Iterator[None]:
    """Small limits, fast hashing, and a clean cache before and after each test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.LOGIN_MAX_FAILURES = 3
    settings.LOGIN_MAX_FAILURES_PER_ADDRESS = 5
    settings.LOGIN_LOCKOUT_SECONDS = 600
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def alice(admin_user: Any) -> Any:
    admin_user.set_password(PASSWORD)
    admin_user.save()
    return admin_user


def sign_in(client: Client, username: str, password: str, address: str = "127.0.0.1"):  # type: ignore[no-untyped-def]
    return client.post(
        "/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address
    )


def is_signed_in(client: Client) -> bool:
    return client.get("/").status_code == 200


def test_three_wrong_passwords_lock_the_account_and_the_page_says_so(client: Client, alice: Any):
    for _ in range(2):
        response = sign_in(client, alice.username, "wrong")
        assert response.status_code == 200
        assert b"correct username and password" in response.content
    response = sign_in(client, alice.username, "wrong")
    assert response.status_code == 429
    html = response.content.decode()
    assert "Too many failed sign-in attempts for this account" in html
    assert "locked for about 10 minutes" in html
    assert 590 <= int(response["Retry-After"]) <= 600


def test_a_locked_account_is_refused_even_with_the_right_password(client: Client, alice: Any):
    for _ in range(3):
        sign_in(client, alice.username, "wrong")
    response = sign_in(client, alice.username, PASSWORD, address=OTHER_ADDRESS)
    assert response.status_code == 429
    assert b"no password is checked until then" in response.content
    assert not is_signed_in(client)


def test_the_account_lock_ignores_case_and_spaces_in_the_name(client: Client, alice: Any):
    for name in ("ALICE-ADMIN", " alice-admin", "Alice-Admin"):
        sign_in(client, name, "wrong")
    assert sign_in(client, alice.username, PASSWORD).status_code == 429


def test_the_lock_lifts_after_the_lockout_period(client: Client, alice: Any):
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        for _ in range(3):
            sign_in(client, alice.username, "wrong")
        traveller.shift(timedelta(seconds=590))
        assert sign_in(client, alice.username, PASSWORD).status_code == 429
        traveller.shift(timedelta(seconds=11))
        response = sign_in(client, alice.username, PASSWORD)
    assert response.status_code == 302
    assert is_signed_in(client)


def test_a_successful_sign_in_clears_the_failures_of_the_account(client: Client, alice: Any):
    for _ in range(2):
        sign_in(client, alice.username, "wrong", address=OTHER_ADDRESS)
    assert sign_in(client, alice.username, PASSWORD).status_code == 302
    client.post("/accounts/logout/")
    for _ in range(2):
        assert sign_in(client, alice.username, "wrong", address=OTHER_ADDRESS).status_code == 200
    assert sign_in(client, alice.username, PASSWORD).status_code == 302


def test_failures_for_many_names_lock_the_address(client: Client, alice: Any):
    for index in range(4):
        assert sign_in(client, f"guess-{index}", "wrong").status_code == 200
    response = sign_in(client, "guess-4", "wrong")
    assert response.status_code == 429
    assert b"your network address (127.0.0.1)" in response.content
    # The right password of a real account does not get through from the locked address...
    assert sign_in(client, alice.username, PASSWORD).status_code == 429
    # ...but the account itself is not locked: from elsewhere it signs in.
    assert sign_in(Client(), alice.username, PASSWORD, address=OTHER_ADDRESS).status_code == 302


def test_names_that_do_not_exist_are_locked_like_real_ones(client: Client, db: None):
    for _ in range(3):
        response = sign_in(client, "nobody-by-this-name", "wrong", address=OTHER_ADDRESS)
    assert response.status_code == 429
    assert b"for this account" in response.content


def test_a_lockout_is_recorded_once_in_the_admin_action_log(
    client: Client, alice: Any, admin_client: Client
):
    for _ in range(5):
        sign_in(client, alice.username, "wrong", address=OTHER_ADDRESS)
    rows = list(AdminAction.objects.filter(action="login.lockout"))
    assert len(rows) == 1
    row = rows[0]
    assert (row.object_type, row.object_id) == ("account", alice.username)
    assert row.remote_addr == OTHER_ADDRESS
    assert row.actor is None and row.actor_name == "system"
    assert "3 failed sign-in attempts" in row.reason
    assert "login.lockout" in admin_client.get("/audit/actions/").content.decode()


def test_the_django_admin_sign_in_shares_the_same_budget(client: Client, superuser: Any):
    superuser.set_password(PASSWORD)
    superuser.save()
    for _ in range(3):
        client.post("/django-admin/login/", {"username": superuser.username, "password": "wrong"})
    response = client.post(
        "/django-admin/login/", {"username": superuser.username, "password": PASSWORD}
    )
    assert b"Too many failed sign-in attempts for this account" in response.content
    assert sign_in(client, superuser.username, PASSWORD).status_code == 429


def test_an_operator_can_lift_a_lock(client: Client, alice: Any):
    for _ in range(3):
        sign_in(client, alice.username, "wrong")
    security.lift_lockout(username=alice.username, address="127.0.0.1")
    assert sign_in(client, alice.username, PASSWORD).status_code == 302


def test_with_redis_the_lock_is_shared_between_servers(alice: Any):
    location = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "joinadmin-test",
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
    with override_settings(CACHES={"default": location}):
        cache.clear()
        try:
            one_server, another_server = Client(), Client()
            for _ in range(3):
                sign_in(one_server, alice.username, "wrong")
            keys = redis.Redis.from_url(REDIS_URL).keys("joinadmin-test:*login:lock:account:*")
            assert len(keys) == 1
            response = sign_in(another_server, alice.username, PASSWORD, address=OTHER_ADDRESS)
            assert response.status_code == 429
            assert b"Too many failed sign-in attempts for this account" in response.content
        finally:
            cache.clear()


def test_sign_in_is_refused_when_the_cache_cannot_be_reached(client: Client, alice: Any):
    unreachable = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
    with override_settings(CACHES={"default": unreachable}):
        response = sign_in(client, alice.username, PASSWORD)
    assert response.status_code == 503
    assert b"Sign-in is unavailable right now" in response.content
    assert not is_signed_in(client)
