"""The join's token cache (tokens/cache.py): a kept resource serves only while the row holds
exactly what it was built from."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine

from tokens import cache
from tokens.models import Token

pytestmark = pytest.mark.django_db

FROZEN = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def make(name: str = "cached", roles: list[str] | None = None) -> Token:
    return Token.objects.create(
        name=name,
        roles=roles or ["Node"],
        allow=[{"aws_account": "123456789012", "aws_regions": ["us-west-2"]}],
    )


@pytest.fixture(autouse=True)
def _empty() -> None:
    cache.clear()


def test_an_unchanged_row_is_served_from_the_kept_resource(
    django_assert_num_queries,  # type: ignore[no-untyped-def]
) -> None:
    make()
    first = cache.token_of_row("cached", cache.read_row("cached"))
    assert first is not None and first.resource.roles == ("Node",)
    with django_assert_num_queries(1):
        again = cache.token_of_row("cached", cache.read_row("cached"))
    assert again is first
    assert first.snapshot["spec"]["roles"] == ["Node"]


def test_a_missing_token_is_none() -> None:
    assert cache.token_of_row("nope", cache.read_row("nope")) is None


def test_any_change_of_the_row_is_seen_by_the_next_read() -> None:
    """Even one that leaves `updated_at` as it was (a clock that stands still, a bulk update)."""
    with time_machine.travel(FROZEN, tick=False):
        row = make()
        assert cache.token_of_row("cached", cache.read_row("cached")).resource.roles == ("Node",)  # type: ignore[union-attr]
        Token.objects.filter(pk=row.pk).update(roles=["Node", "Kube"])
        assert cache.token_of_row("cached", cache.read_row("cached")).resource.roles == (
            "Node",
            "Kube",
        )  # type: ignore[union-attr]
        row.refresh_from_db()
        row.description = "edited"
        row.save()
        assert (
            cache.token_of_row("cached", cache.read_row("cached")).resource.description == "edited"
        )  # type: ignore[union-attr]


def test_a_deleted_or_recreated_token_is_seen_at_once() -> None:
    with time_machine.travel(FROZEN, tick=False):
        make()
        assert cache.token_of_row("cached", cache.read_row("cached")) is not None
        Token.objects.filter(name="cached").delete()
        assert cache.token_of_row("cached", cache.read_row("cached")) is None
        make(roles=["Db"])
        assert cache.token_of_row("cached", cache.read_row("cached")).resource.roles == ("Db",)  # type: ignore[union-attr]


def test_a_row_that_changes_while_it_is_read_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    row = make()
    real = cache.read_row
    calls = []

    def version(name: str):  # type: ignore[no-untyped-def]
        calls.append(name)
        if len(calls) == 2:  # after the resource was built: an admin edits the token
            Token.objects.filter(pk=row.pk).update(description="changed meanwhile")
        return real(name)

    monkeypatch.setattr(cache, "read_row", version)
    assert cache.token_of_row("cached", cache.read_row("cached")) is not None
    assert "cached" not in cache._entries
    monkeypatch.setattr(cache, "read_row", real)
    assert (
        cache.token_of_row("cached", cache.read_row("cached")).resource.description
        == "changed meanwhile"
    )  # type: ignore[union-attr]
    assert "cached" in cache._entries
