"""Signing in and out of the console."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture
def fast_hashing(settings):  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_the_login_page_has_username_and_password_fields(client: Client):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="username"' in html and 'name="password"' in html
    assert '<label for="id_username">' in html


def test_a_user_signs_in_and_lands_where_they_were_going(client: Client, admin_user, fast_hashing):
    admin_user.set_password("correct horse battery staple")
    admin_user.save()
    response = client.post(
        "/accounts/login/?next=/tokens/",
        {
            "username": admin_user.username,
            "password": "correct horse battery staple",
            "next": "/tokens/",
        },
    )
    assert response.status_code == 302 and response["Location"] == "/tokens/"
    assert client.get("/tokens/").status_code == 200


def test_a_wrong_password_is_refused_with_a_message(client: Client, admin_user, fast_hashing):
    admin_user.set_password("right")
    admin_user.save()
    response = client.post("/accounts/login/", {"username": admin_user.username, "password": "no"})
    assert response.status_code == 200
    assert b"correct username and password" in response.content
    assert client.get("/").status_code == 302


def test_login_does_not_redirect_off_site(client: Client, admin_user, fast_hashing):
    admin_user.set_password("pw-123456")
    admin_user.save()
    response = client.post(
        "/accounts/login/",
        {"username": admin_user.username, "password": "pw-123456", "next": "https://evil.example/"},
    )
    assert response.status_code == 302 and response["Location"] == "/"


def test_sign_out_is_a_post_form_in_the_header(admin_client: Client):
    html = admin_client.get("/").content.decode()
    assert '<form method="post" action="/accounts/logout/"' in html
    assert admin_client.get("/accounts/logout/").status_code == 405
    response = admin_client.post("/accounts/logout/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert admin_client.get("/").status_code == 302


def test_pages_carry_the_strict_content_security_policy(admin_client: Client):
    response = admin_client.get("/")
    assert "script-src 'self'" in response["Content-Security-Policy"]
    html = response.content.decode()
    assert "<script" not in html and "style=" not in html and "<style" not in html
