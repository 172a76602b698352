"""Django's admin shows every model and changes nothing behind the services' backs."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.services import create_api_key
from audit.models import AdminAction
from tests.console import make_attempt, make_host, make_token
from tokens.models import Token

pytestmark = pytest.mark.django_db


@pytest.fixture
def root_client(superuser) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(superuser)
    return client


def test_every_model_is_listed_and_viewable(root_client: Client, superuser):
    token = make_token("web")
    host = make_host()
    attempt = make_attempt()
    key = create_api_key(superuser).key
    action = AdminAction.objects.create(
        time=attempt.time, action="x", object_type="token", object_id="web"
    )
    for model, pk in [
        ("tokens/token", token.pk),
        ("joins/host", host.pk),
        ("joins/joinattempt", attempt.pk),
        ("audit/adminaction", action.pk),
        ("accounts/apikey", key.pk),
    ]:
        assert root_client.get(f"/django-admin/{model}/").status_code == 200, model
        page = root_client.get(f"/django-admin/{model}/{pk}/change/")
        assert page.status_code == 200, model
        assert b'name="_save"' not in page.content, model
        assert root_client.get(f"/django-admin/{model}/add/").status_code == 403, model


def test_the_audit_trail_cannot_be_deleted_there(root_client: Client):
    attempt = make_attempt()
    response = root_client.post(
        f"/django-admin/joins/joinattempt/{attempt.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 403


def test_deleting_a_token_there_goes_through_the_service(root_client: Client, superuser):
    token = make_token("web")
    response = root_client.post(f"/django-admin/tokens/token/{token.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Token.objects.exists()
    action = AdminAction.objects.get(action="token.delete")
    assert action.actor == superuser and action.via == "admin"
