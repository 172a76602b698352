"""Uploading token documents: preview first, then apply all or nothing."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from audit.models import AdminAction
from tests.console import make_token
from tokens.models import Token

pytestmark = pytest.mark.django_db

TWO_DOCUMENTS = """\
kind: token
version: v2
metadata:
  name: web
  description: web servers
spec:
  roles: [Node]
  join_method: ec2
  allow:
  - aws_account: "111111111111"
    aws_regions: [us-west-2]
---
kind: token
version: v2
metadata:
  name: databases
spec:
  roles: [Db]
  join_method: ec2
  allow:
  - aws_account: "222222222222"
"""


def preview(client: Client, **data: object):  # type: ignore[no-untyped-def]
    return client.post("/tokens/upload/", {"action": "preview", **data})


def apply(client: Client, content: str, replace: bool = False):  # type: ignore[no-untyped-def]
    data = {"action": "apply", "content": content}
    if replace:
        data["replace"] = "on"
    return client.post("/tokens/upload/", data)


def test_the_upload_page_offers_a_file_a_text_box_and_replace(admin_client: Client):
    html = admin_client.get("/tokens/upload/").content.decode()
    assert 'type="file"' in html and 'name="text"' in html and 'name="replace"' in html
    assert 'enctype="multipart/form-data"' in html


def test_preview_then_apply_two_documents(admin_client: Client, admin_user):
    response = preview(admin_client, text=TWO_DOCUMENTS)
    assert response.status_code == 200
    html = response.content.decode()
    assert "2 tokens in the upload" in html
    assert html.count("badge--create") == 2
    assert ">web<" in html and ">databases<" in html
    assert 'name="content"' in html and 'value="apply"' in html
    assert not Token.objects.exists()

    content = response.context["apply"].initial["content"]
    response = apply(admin_client, content)
    assert response.status_code == 302 and response["Location"] == "/tokens/"
    assert set(Token.objects.values_list("name", flat=True)) == {"web", "databases"}
    assert AdminAction.objects.filter(action="token.import", actor=admin_user).count() == 2
    page = admin_client.get("/tokens/").content.decode()
    assert "Imported 2 token(s): created web, databases." in page


def test_the_preview_reads_an_uploaded_file(admin_client: Client):
    upload = SimpleUploadedFile("tokens.yaml", TWO_DOCUMENTS.encode(), "application/yaml")
    html = admin_client.post(
        "/tokens/upload/", {"action": "preview", "file": upload}
    ).content.decode()
    assert "2 tokens in the upload" in html


def test_the_preview_marks_replacements_and_apply_needs_the_checkbox(admin_client: Client):
    make_token("web")
    html = preview(admin_client, text=TWO_DOCUMENTS).content.decode()
    assert "badge--replace" in html and "badge--create" in html
    assert "already exists" in html

    response = apply(admin_client, TWO_DOCUMENTS)
    assert response.status_code == 200
    assert "Nothing was imported: web already exists." in response.content.decode()
    assert not Token.objects.filter(name="databases").exists()
    assert Token.objects.get(name="web").description == "web for tests"

    assert apply(admin_client, TWO_DOCUMENTS, replace=True).status_code == 302
    assert Token.objects.get(name="web").description == "web servers"
    assert Token.objects.filter(name="databases").exists()


def test_errors_are_listed_by_document_and_field(admin_client: Client):
    broken = TWO_DOCUMENTS.replace('"222222222222"', '"22"')
    response = preview(admin_client, text=broken)
    html = response.content.decode()
    assert "Nothing can be imported yet" in html
    assert "<td>2</td>" in html  # the second document, counted from 1
    assert "spec.allow[0].aws_account" in html
    assert "is not an AWS account ID" in html
    # The text comes back in the box, ready to fix.
    assert "web servers" in html and 'name="text"' in html
    assert not Token.objects.exists()


def test_an_empty_upload_asks_for_input(admin_client: Client):
    html = preview(admin_client, text="   ").content.decode()
    assert "Choose a file or paste the token documents." in html


def test_apply_refuses_invalid_content_and_writes_nothing(admin_client: Client):
    response = apply(admin_client, TWO_DOCUMENTS.replace("[Db]", "[Auth]"))
    assert response.status_code == 200
    assert "spec.roles[0]" in response.content.decode()
    assert not Token.objects.exists()
