"""Registered hosts: list with filters and pages, detail with history, and forgetting a host."""

from __future__ import annotations

import ipaddress
import re

import pytest
from django.test import Client

from audit.models import AdminAction
from joins.models import Host
from tests.console import ACCOUNT, OTHER_ACCOUNT, make_attempt, make_host, make_token

pytestmark = pytest.mark.django_db

HOST_ID = f"{ACCOUNT}-i-0123456789abcdef0"


def host_links(html: str) -> list[str]:
    return re.findall(r'href="/hosts/([^/"]+)/"', html)


def test_the_empty_host_list_explains_itself(auditor_client: Client):
    assert "No hosts yet" in auditor_client.get("/hosts/").content.decode()


def test_the_list_filters_by_token_account_and_region(auditor_client: Client):
    make_host(f"{ACCOUNT}-i-000000000000000a1", token="web", region="us-west-2")
    make_host(f"{ACCOUNT}-i-000000000000000a2", token="db", region="us-west-2")
    make_host(f"{OTHER_ACCOUNT}-i-000000000000000a3", token="web", region="eu-west-1")
    html = auditor_client.get("/hosts/?token=web").content.decode()
    assert sorted(host_links(html)) == [
        f"{ACCOUNT}-i-000000000000000a1",
        f"{OTHER_ACCOUNT}-i-000000000000000a3",
    ]
    html = auditor_client.get(f"/hosts/?token=web&account={OTHER_ACCOUNT}").content.decode()
    assert host_links(html) == [f"{OTHER_ACCOUNT}-i-000000000000000a3"]
    assert 'name="token" value="web"' in html
    html = auditor_client.get("/hosts/?region=us-east-1").content.decode()
    assert "No hosts match" in html


def test_the_list_pages_and_keeps_the_filter(auditor_client: Client, django_assert_max_num_queries):
    for index in range(60):
        make_host(f"{ACCOUNT}-i-{index:017x}", token="web")
    with django_assert_max_num_queries(8):
        html = auditor_client.get("/hosts/?token=web").content.decode()
    assert len(host_links(html)) == 50
    assert 'href="?token=web&amp;page=2" rel="next"' in html
    assert "Page 1 of 2" in html
    html = auditor_client.get("/hosts/?token=web&page=2").content.decode()
    assert len(host_links(html)) == 10


def test_the_detail_shows_the_host_and_its_history(auditor_client: Client):
    make_token("ec2-token")
    host = make_host(HOST_ID)
    for _ in range(3):
        make_attempt(host_id=HOST_ID)
    make_attempt(host_id=f"{ACCOUNT}-i-0ffffffffffffffff")
    html = auditor_client.get(f"/hosts/{HOST_ID}/").content.decode()
    assert host.node_name in html and "us-west-2" in html and "i-0123456789abcdef0" in html
    assert len(re.findall(r'href="/joins/\d+/"', html)) == 3
    assert f'href="/joins/?host_id={HOST_ID}"' in html
    assert 'href="/tokens/ec2-token/"' in html


def test_forget_asks_for_a_reason_first(admin_client: Client):
    make_host(HOST_ID)
    html = admin_client.get(f"/hosts/{HOST_ID}/forget/").content.decode()
    assert "Forget host" in html and '<textarea name="reason"' in html
    assert "not revoked" in html
    response = admin_client.post(f"/hosts/{HOST_ID}/forget/", {"reason": "   "})
    assert response.status_code == 200
    assert 'id="id_reason_error"' in response.content.decode()
    assert Host.objects.filter(host_id=HOST_ID).exists()
    assert not AdminAction.objects.exists()


def test_forget_removes_the_host_and_records_who_why_and_from_where(
    admin_client: Client, admin_user
):
    make_host(HOST_ID)
    response = admin_client.post(
        f"/hosts/{HOST_ID}/forget/",
        {"reason": "instance rebuilt from a new AMI"},
        REMOTE_ADDR="192.0.2.10",
    )
    assert response.status_code == 302 and response["Location"] == "/hosts/"
    assert not Host.objects.filter(host_id=HOST_ID).exists()
    action = AdminAction.objects.get(action="host.forget")
    assert action.object_id == HOST_ID and action.actor == admin_user
    assert action.reason == "instance rebuilt from a new AMI"
    assert action.remote_addr == "192.0.2.10" and action.via == "console"
    assert "was forgotten" in admin_client.get("/hosts/").content.decode()


def test_forget_believes_forwarded_for_only_from_a_trusted_proxy(admin_client: Client, settings):
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("10.0.0.0/8")]
    make_host(HOST_ID)
    admin_client.post(
        f"/hosts/{HOST_ID}/forget/",
        {"reason": "test"},
        REMOTE_ADDR="10.1.2.3",
        HTTP_X_FORWARDED_FOR="198.51.100.77",
    )
    assert AdminAction.objects.get().remote_addr == "198.51.100.77"
