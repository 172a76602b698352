"""Token workflows: import, create, replace, delete. Each owns its transaction and its audit row."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction

from audit.services import record_action
from tokens.codecs import parse_tokens
from tokens.models import Token
from tokens.resource import FieldError, ResourceError, TokenResource


class TokenExistsError(Exception):
    """A token with this name exists and the caller did not ask to replace it."""

    code = "token_exists"

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        joined = ", ".join(self.names)
        self.message = (
            f"token {joined} already exists; use force (?force=true, --force, or the replace "
            "option) to replace it"
        )
        super().__init__(self.message)


class TokenNotFoundError(Exception):
    code = "not_found"

    def __init__(self, name: str) -> None:
        self.name = name
        self.message = f"no token named {name!r}"
        super().__init__(self.message)


def resource_snapshot(resource: TokenResource) -> dict[str, Any]:
    """A JSON-safe copy of a resource, for audit rows and join-attempt snapshots."""
    return json.loads(json.dumps(resource.to_dict(), default=str))


@dataclass(frozen=True)
class ImportPlan:
    """What an import would do, shown in the console before it is applied."""

    resources: list[TokenResource]
    creates: list[str]
    replaces: list[str]


def plan_import(data: str | bytes) -> ImportPlan:
    """Parse and validate every document and tell which names exist. Writes nothing.

    Raises ResourceError with every field error of every document, and for a name repeated
    across documents (an import is a set of tokens, not a sequence of edits).
    """
    resources = parse_tokens(data)
    seen: dict[str, int] = {}
    for index, resource in enumerate(resources):
        if resource.name in seen:
            raise ResourceError(
                [
                    FieldError(
                        index,
                        "metadata.name",
                        f"token {resource.name!r} already appears in document "
                        f"{seen[resource.name]}; each name may appear once per upload",
                    )
                ]
            )
        seen[resource.name] = index
    existing = set(Token.objects.filter(name__in=seen).values_list("name", flat=True))
    return ImportPlan(
        resources=resources,
        creates=[r.name for r in resources if r.name not in existing],
        replaces=[r.name for r in resources if r.name in existing],
    )


def import_tokens(
    data: str | bytes,
    *,
    actor: Any,
    force: bool = False,
    via: str = "console",
    remote_addr: str = "",
) -> ImportPlan:
    """Create (or with `force`, replace) every token in `data`, all or nothing.

    Raises ResourceError for invalid input and TokenExistsError when a name exists and `force` is
    false; in both cases nothing is written.
    """
    plan = plan_import(data)
    if plan.replaces and not force:
        raise TokenExistsError(plan.replaces)
    with transaction.atomic():
        for resource in plan.resources:
            save_token(
                resource,
                actor=actor,
                force=force,
                via=via,
                remote_addr=remote_addr,
                action="token.import",
            )
    return plan


def save_token(
    resource: TokenResource,
    *,
    actor: Any,
    force: bool = False,
    expected_name: str | None = None,
    via: str = "console",
    remote_addr: str = "",
    action: str | None = None,
) -> tuple[Token, bool]:
    """Create or replace one token from a validated resource; returns (token, created).

    `expected_name` is the name being edited (a rename is a replace of another name and is
    refused). Raises TokenExistsError when the name exists and `force` is false.
    """
    if expected_name is not None and resource.name != expected_name:
        raise ResourceError(
            [
                FieldError(
                    0,
                    "metadata.name",
                    f"the name must stay {expected_name!r}; create a new token to use another name",
                )
            ]
        )
    with transaction.atomic():
        token = Token.objects.select_for_update().filter(name=resource.name).first()
        created = token is None
        if not created and not force:
            raise TokenExistsError([resource.name])
        before = None if created else resource_snapshot(token.to_resource())
        if created:
            token = Token(created_by=_user(actor))
        token.apply_resource(resource)
        token.updated_by = _user(actor)
        try:
            with transaction.atomic():
                token.save()
        except IntegrityError as exc:  # a concurrent create of the same name won the race
            raise TokenExistsError([resource.name]) from exc
        record_action(
            actor=actor,
            action=action or ("token.create" if created else "token.update"),
            object_type="token",
            object_id=token.name,
            before=before,
            after=resource_snapshot(resource),
            via=via,
            remote_addr=remote_addr,
        )
    return token, created


def delete_token(name: str, *, actor: Any, via: str = "console", remote_addr: str = "") -> None:
    """Delete a token. Hosts that joined with it stay registered; history keeps its snapshot."""
    with transaction.atomic():
        token = Token.objects.select_for_update().filter(name=name).first()
        if token is None:
            raise TokenNotFoundError(name)
        before = resource_snapshot(token.to_resource())
        token.delete()
        record_action(
            actor=actor,
            action="token.delete",
            object_type="token",
            object_id=name,
            before=before,
            via=via,
            remote_addr=remote_addr,
        )


def _user(actor: Any) -> Any:
    return actor if actor is not None and getattr(actor, "is_authenticated", False) else None
