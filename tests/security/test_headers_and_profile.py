"""Security headers everywhere; HSTS, HTTPS and Secure cookies in the production profile; the
production settings pass `manage.py check --deploy`."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client, override_settings

from accounts.services import create_api_key

pytestmark = pytest.mark.django_db

ROOT = Path(django_settings.BASE_DIR)
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PASSWORD = "correct horse battery staple"
# What JOINADMIN_SECURE=true sets (joinadmin/settings.py), for requests through the test client.
PRODUCTION = {
    "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
    "SECURE_SSL_REDIRECT": True,
    "SECURE_REDIRECT_EXEMPT": [r"^healthz$", r"^readyz$", r"^metrics$"],
    "SECURE_HSTS_SECONDS": 31536000,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
    "SESSION_COOKIE_SECURE": True,
    "CSRF_COOKIE_SECURE": True,
}


def assert_security_headers(response: Any) -> None:
    assert response["Content-Security-Policy"] == CSP
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


@pytest.mark.parametrize("page", ["/", "/tokens/", "/joins/", "/hosts/", "/audit/actions/"])
def test_console_pages_carry_the_security_headers(admin_client: Client, page: str):
    response = admin_client.get(page)
    assert response.status_code == 200
    assert_security_headers(response)


def test_the_login_page_and_the_error_pages_carry_them_too(client: Client):
    assert_security_headers(client.get("/accounts/login/"))
    assert_security_headers(client.get("/no-such-page/"))


def test_api_answers_carry_the_security_headers(admin_user: Any, client: Client):
    key = create_api_key(admin_user).secret
    response = client.get("/api/v1/tokens", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200
    assert_security_headers(response)
    refused = client.post("/api/v1/join", data="{}", content_type="application/json")
    assert refused.status_code == 400
    assert_security_headers(refused)
    assert refused["Cache-Control"] == "no-store"


def test_outside_the_production_profile_there_is_no_hsts_and_cookies_are_not_secure(
    client: Client, admin_user: Any, settings: Any
):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    admin_user.set_password(PASSWORD)
    admin_user.save()
    response = client.post(
        "/accounts/login/", {"username": admin_user.username, "password": PASSWORD}
    )
    assert response.status_code == 302
    assert "Strict-Transport-Security" not in response
    assert not response.cookies["sessionid"]["secure"]


def test_the_production_profile_sends_hsts_over_https(db: None):
    with override_settings(**PRODUCTION):
        response = Client().get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert_security_headers(response)


def test_the_production_profile_redirects_plain_http_except_probes_and_metrics(db: None):
    with override_settings(**PRODUCTION):
        client = Client()
        redirect = client.get("/accounts/login/")
        probe = client.get("/healthz")
        metrics = client.get("/metrics")
    assert redirect.status_code == 301
    assert redirect["Location"] == "https://testserver/accounts/login/"
    assert probe.status_code == 200
    assert metrics.status_code == 200


def test_the_production_profile_makes_session_and_csrf_cookies_secure(
    admin_user: Any, settings: Any
):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    admin_user.set_password(PASSWORD)
    admin_user.save()
    with override_settings(**PRODUCTION):
        client = Client(enforce_csrf_checks=True)
        form = client.get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")
        csrf = form.cookies["csrftoken"]
        response = client.post(
            "/accounts/login/",
            {
                "username": admin_user.username,
                "password": PASSWORD,
                "csrfmiddlewaretoken": form.context["csrf_token"],
            },
            HTTP_X_FORWARDED_PROTO="https",
            HTTP_REFERER="https://testserver/accounts/login/",
            SERVER_PORT="443",
        )
    assert csrf["secure"] and csrf["samesite"] == "Lax"
    assert response.status_code == 302
    session = response.cookies["sessionid"]
    assert session["secure"] and session["httponly"] and session["samesite"] == "Lax"


# --- The settings module itself, as a deployment starts it -----------------------------------


def run_manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`manage.py ARGS` in a fresh process with a production-like environment plus `env`."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JOINADMIN_", "PROMETHEUS_", "DJANGO_"))
    }
    environment.update(
        JOINADMIN_DATA_DIR=str(tmp_path),
        JOINADMIN_SECURE="true",
        JOINADMIN_SECRET_KEY=secrets.token_urlsafe(48),  # 64 characters
        JOINADMIN_ALLOWED_HOSTS="joinadmin.example.com",
        JOINADMIN_CSRF_TRUSTED_ORIGINS="https://joinadmin.example.com",
    )
    environment.update(env)
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_is_clean_in_the_production_profile(tmp_path: Path):
    result = run_manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_fails_with_debug_on(tmp_path: Path):
    result = run_manage(
        tmp_path, "check", "--deploy", "--fail-level", "WARNING", JOINADMIN_DEBUG="true"
    )
    assert result.returncode != 0
    assert "security.W018" in result.stderr


def test_check_deploy_is_also_clean_when_hsts_preload_is_asked_for(tmp_path: Path):
    # The preload reminder is silenced only while preload is off; asked for, it has no cause.
    result = run_manage(
        tmp_path, "check", "--deploy", "--fail-level", "WARNING", JOINADMIN_HSTS_PRELOAD="true"
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_production_profile_refuses_a_short_secret_key(tmp_path: Path):
    result = run_manage(tmp_path, "check", JOINADMIN_SECRET_KEY="too-short")
    assert result.returncode != 0
    assert "needs a secret key of at least 50 random characters" in result.stderr


def test_the_production_profile_settings_are_what_the_docs_say(tmp_path: Path):
    code = (
        "import json; from django.conf import settings as s; print(json.dumps({"
        "'hsts': s.SECURE_HSTS_SECONDS, 'subdomains': s.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
        "'preload': s.SECURE_HSTS_PRELOAD, 'redirect': s.SECURE_SSL_REDIRECT, "
        "'proxy': list(s.SECURE_PROXY_SSL_HEADER), 'session': s.SESSION_COOKIE_SECURE, "
        "'csrf': s.CSRF_COOKIE_SECURE, 'debug': s.DEBUG, 'frame': s.X_FRAME_OPTIONS}))"
    )
    result = run_manage(tmp_path, "shell", "-c", code)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values == {
        "hsts": 31536000,
        "subdomains": True,
        "preload": False,
        "redirect": True,
        "proxy": ["HTTP_X_FORWARDED_PROTO", "https"],
        "session": True,
        "csrf": True,
        "debug": False,
        "frame": "DENY",
    }


def test_every_new_variable_and_metric_is_documented():
    example = (ROOT / ".env.example").read_text()
    guide = (ROOT / "docs" / "production.md").read_text()
    for variable in (
        "JOINADMIN_HSTS_PRELOAD",
        "JOINADMIN_LOGIN_MAX_FAILURES",
        "JOINADMIN_LOGIN_MAX_FAILURES_PER_ADDRESS",
        "JOINADMIN_LOGIN_LOCKOUT_SECONDS",
        "JOINADMIN_METRICS_ALLOW",
        "JOINADMIN_GC_FREEZE",
        "PROMETHEUS_MULTIPROC_DIR",
    ):
        assert variable in example, variable
        assert variable in guide, variable
    for metric in (
        "joinadmin_join_attempts_total",
        "joinadmin_join_duration_seconds",
        "joinadmin_aws_calls_total",
        "joinadmin_aws_throttles_total",
    ):
        assert metric in guide, metric
    for path in ("deploy/nginx/joinadmin.conf", "deploy/systemd/joinadmin.service"):
        assert path in guide and (ROOT / path).is_file(), path


@pytest.mark.parametrize(
    "url", ["joinadmin.example.com", "ftp://joinadmin.example.com", "https://a.example/crl?x=1"]
)
def test_a_public_url_that_is_not_an_http_address_is_refused_at_start(tmp_path: Path, url: str):
    result = run_manage(tmp_path, "check", JOINADMIN_PUBLIC_URL=url)
    assert result.returncode != 0
    assert "JOINADMIN_PUBLIC_URL" in result.stderr and "https://host[:port][/path]" in result.stderr
