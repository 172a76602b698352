"""An admin, in a real Chromium: logs in, creates a token with two allow rules, uploads a
two-document YAML, downloads Terraform; screenshots are kept as artifacts."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from accounts.services import ensure_groups
from tests.browser.conftest import DOWNLOADS, login, shot
from tokens.models import Token

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

UPLOAD = """kind: token
version: v2
metadata:
  name: fleet-web
spec:
  roles: [Node]
  aws_iid_ttl: 10m
  allow:
  - aws_account: "333333333333"
    aws_regions: [eu-west-1]
---
apiVersion: resources.teleport.dev/v2
kind: TeleportProvisionToken
metadata:
  name: fleet-db
spec:
  roles: [Db]
  join_method: ec2
  allow:
  - aws_account: "444444444444"
"""


@pytest.fixture
def admin_login(django_user_model):  # type: ignore[no-untyped-def]
    ensure_groups()
    django_user_model.objects.create_superuser("root", "", "a-long-browser-password")
    return "root", "a-long-browser-password"


def test_an_admin_manages_tokens_in_the_browser(page: Page, live_server, admin_login):
    login(page, live_server.url, *admin_login)
    expect(page.locator("h1")).to_be_visible()
    shot(page, "dashboard-empty")

    page.goto(f"{live_server.url}/tokens/new/")
    page.fill("input[name=name]", "ec2-token")
    page.check("input[name=roles][value=Node]")
    page.fill("input[name=aws_iid_ttl]", "5m")
    page.fill("input[name=rules-0-aws_account]", "111111111111")
    page.fill("input[name=rules-0-aws_regions]", "us-west-1, us-west-2")
    page.click("button[value=add_rule]:visible")
    page.fill("input[name=rules-1-aws_account]", "222222222222")
    page.fill("input[name=rules-1-aws_regions]", "us-east-1")
    page.fill(
        "input[name=rules-1-aws_role]",
        "arn:aws:iam::222222222222:role/joinadmin-DescribeInstances-role",
    )
    shot(page, "token-form")
    page.click("button.button--primary[value=save]")
    expect(page.locator("h1")).to_contain_text("ec2-token")
    shot(page, "token-detail")
    token = Token.objects.get(name="ec2-token")
    assert token.allow == [
        {"aws_account": "111111111111", "aws_regions": ["us-west-1", "us-west-2"]},
        {
            "aws_account": "222222222222",
            "aws_regions": ["us-east-1"],
            "aws_role": "arn:aws:iam::222222222222:role/joinadmin-DescribeInstances-role",
        },
    ]

    page.goto(f"{live_server.url}/tokens/upload/")
    page.fill("textarea[name=text]", UPLOAD)
    page.click("button[value=preview]")
    expect(page.get_by_text("fleet-web").first).to_be_visible()
    expect(page.get_by_text("fleet-db").first).to_be_visible()
    shot(page, "token-upload-preview")
    assert not Token.objects.filter(name__startswith="fleet-").exists()
    page.click("button[value=apply]")
    expect(page.get_by_text("fleet-web").first).to_be_visible()
    assert set(Token.objects.values_list("name", flat=True)) == {
        "ec2-token",
        "fleet-web",
        "fleet-db",
    }

    page.goto(f"{live_server.url}/tokens/")
    shot(page, "token-list")

    page.goto(f"{live_server.url}/tokens/ec2-token/")
    with page.expect_download() as download_info:
        page.click("a[href$='/download/terraform/']")
    download = download_info.value
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    target = DOWNLOADS / download.suggested_filename
    download.save_as(target)
    text = target.read_text()
    assert 'resource "teleport_provision_token"' in text
    assert "111111111111" in text and "222222222222" in text
    assert download.suggested_filename.endswith(".tf")
