"""Who may open which console page: anonymous users sign in first, users without a role get a
403, auditors read everything and change nothing, admins and superusers do everything."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from audit.models import AdminAction
from joins.models import Host
from tests.console import make_attempt, make_host, make_token
from tokens.models import Token

pytestmark = pytest.mark.django_db

HOST_ID = "111111111111-i-0123456789abcdef0"

READ_PAGES = [
    "/",
    "/tokens/",
    "/tokens/ec2-token/",
    "/tokens/ec2-token/download/yaml/",
    "/joins/",
    "/joins/{attempt}/",
    "/joins/export.csv",
    "/joins/export.jsonl",
    "/hosts/",
    f"/hosts/{HOST_ID}/",
    "/audit/actions/",
]
CHANGE_PAGES = [
    "/tokens/new/",
    "/tokens/ec2-token/edit/",
    "/tokens/ec2-token/delete/",
    "/tokens/upload/",
    f"/hosts/{HOST_ID}/forget/",
]
ALL_PAGES = READ_PAGES + CHANGE_PAGES


@pytest.fixture
def rows() -> dict[str, Any]:
    make_token()
    make_host(HOST_ID)
    return {"attempt": make_attempt().pk}


def _url(template: str, rows: dict[str, Any]) -> str:
    return template.format(**rows)


@pytest.mark.parametrize("page", ALL_PAGES)
def test_anonymous_users_are_sent_to_the_login_page(client: Client, rows, page):
    url = _url(page, rows)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("page", CHANGE_PAGES)
def test_anonymous_posts_change_nothing(client: Client, rows, page):
    response = client.post(_url(page, rows), {"reason": "x", "action": "save"})
    assert response.status_code == 302
    assert Token.objects.filter(name="ec2-token").exists()
    assert Host.objects.filter(host_id=HOST_ID).exists()


@pytest.mark.parametrize("page", ALL_PAGES)
def test_users_without_a_role_get_a_403_page(plain_client: Client, rows, page):
    response = plain_client.get(_url(page, rows))
    assert response.status_code == 403
    assert b"no role in this console" in response.content
    assert b"joinadmin-auditors" in response.content


@pytest.mark.parametrize("page", READ_PAGES)
def test_auditors_read_every_page(auditor_client: Client, rows, page):
    assert auditor_client.get(_url(page, rows)).status_code == 200


@pytest.mark.parametrize("page", CHANGE_PAGES)
def test_auditors_cannot_open_or_post_the_change_pages(auditor_client: Client, rows, page):
    url = _url(page, rows)
    assert auditor_client.get(url).status_code == 403
    response = auditor_client.post(url, {"reason": "because", "action": "save", "name": "x"})
    assert response.status_code == 403
    assert b"can read the console but not change it" in response.content
    assert Token.objects.filter(name="ec2-token").exists()
    assert Host.objects.filter(host_id=HOST_ID).exists()
    assert not AdminAction.objects.exists()


@pytest.mark.parametrize("page", ALL_PAGES)
def test_admins_open_every_page(admin_client: Client, rows, page):
    assert admin_client.get(_url(page, rows)).status_code == 200


@pytest.mark.parametrize("page", CHANGE_PAGES)
def test_superusers_without_a_group_may_change(superuser, rows, page):
    client = Client()
    client.force_login(superuser)
    assert client.get(_url(page, rows)).status_code == 200


def test_auditors_see_no_change_controls(auditor_client: Client, rows):
    pages = {
        "/": ["/tokens/new/", "/tokens/upload/"],
        "/tokens/": ["/tokens/new/", "/tokens/upload/"],
        "/tokens/ec2-token/": ["/tokens/ec2-token/edit/", "/tokens/ec2-token/delete/"],
        f"/hosts/{HOST_ID}/": [f"/hosts/{HOST_ID}/forget/"],
    }
    for page, links in pages.items():
        html = auditor_client.get(page).content.decode()
        for link in links:
            assert f'href="{link}"' not in html, (page, link)


def test_admins_see_the_change_controls(admin_client: Client, rows):
    assert 'href="/tokens/new/"' in admin_client.get("/tokens/").content.decode()
    detail = admin_client.get("/tokens/ec2-token/").content.decode()
    assert 'href="/tokens/ec2-token/edit/"' in detail
    assert 'href="/tokens/ec2-token/delete/"' in detail
    assert (
        f'href="/hosts/{HOST_ID}/forget/"'
        in admin_client.get(f"/hosts/{HOST_ID}/").content.decode()
    )


def test_the_header_names_the_role(admin_client: Client, auditor_client: Client):
    assert b">Admin</span>" in admin_client.get("/").content
    assert b">Auditor</span>" in auditor_client.get("/").content


def test_missing_objects_answer_404(admin_client: Client):
    for url in [
        "/tokens/nope/",
        "/tokens/nope/edit/",
        "/tokens/nope/delete/",
        "/joins/999999/",
        "/hosts/nope/",
        "/hosts/nope/forget/",
        "/tokens/nope/download/yaml/",
    ]:
        assert admin_client.get(url).status_code == 404, url


def test_get_only_pages_refuse_other_methods(admin_client: Client, rows):
    assert admin_client.post("/tokens/").status_code == 405
    assert admin_client.post("/joins/export.csv").status_code == 405
