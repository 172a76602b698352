"""What a refused token resource says: the error types and the helpers that word the messages.

Pure Python, no Django. Every validator of a token (`tokens.resource`, `tokens.allow_rules`,
`tokens.rule_conditions`, `tokens.durations`, `tokens.aws_names`) reports through these, so a
problem reads the same whichever part of the resource it is in, and a hostile value is always
quoted short (`_show`) before it reaches a message, a terminal or a log. The underscore names are
shared by those sibling modules only; callers outside `tokens` use `FieldError`, `ResourceError`
and `field_name`, which `tokens.resource` re-exports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

__all__ = ["FieldError", "ResourceError", "field_name"]

# --------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class FieldError:
    """One problem in one field of one document; `field` is a path like `spec.allow[1].aws_role`.

    `document` counts the resources of an input from 0 (see `tokens.codecs.load_documents`);
    an empty `field` means the document as a whole.
    """

    document: int
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ResourceError(Exception):
    """A token resource (or a batch of them) was refused; `details` lists every problem found.

    The API answers it as 400 `invalid_token_resource` with `details`; commands print `message`
    and each detail. Raised only after all fields were checked, so one round trip shows the user
    everything to fix.
    """

    code = "invalid_token_resource"
    #: A hostile input can hold a million mistakes; the first ones are enough to act on.
    max_details = 100

    def __init__(self, details: Sequence[FieldError], message: str | None = None) -> None:
        self.details: list[FieldError] = list(details[: self.max_details])
        if len(details) > self.max_details:
            hidden = len(details) - self.max_details
            self.details.append(
                FieldError(
                    details[self.max_details].document,
                    "",
                    f"{hidden} more problems are not listed; fix the ones above first",
                )
            )
        self.message = message or _summarise(self.details)
        super().__init__(self.message)

    def as_dict(self) -> dict[str, Any]:
        """The API error body of the contract (section 5)."""
        return {
            "error": self.code,
            "message": self.message,
            "details": [detail.as_dict() for detail in self.details],
        }


def _summarise(details: Sequence[FieldError]) -> str:
    if not details:
        return "the token resource is invalid"
    first = details[0]
    where = f"document {first.document}" + (f", {first.field}" if first.field else "")
    if len(details) == 1:
        return f"invalid token resource: {where}: {first.message}"
    return f"invalid token resource ({len(details)} problems); first: {where}: {first.message}"


class _Errors:
    """Collects the problems of one document so that all of them are reported together."""

    def __init__(self, document: int) -> None:
        self.document = document
        self.items: list[FieldError] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(FieldError(self.document, path, message))

    def __bool__(self) -> bool:
        return bool(self.items)


# --------------------------------------------------------------------------------------------
# Structural checks shared by the validators


def _check_keys(
    errors: _Errors,
    path: str,
    obj: Mapping[Any, Any],
    allowed: Sequence[str],
    ignored: Sequence[str] = (),
    explain: Mapping[str, str] | None = None,
) -> None:
    for key in obj:
        if key in allowed or key in ignored:
            continue
        where = _join(path, field_name(key))
        if isinstance(key, str) and explain and key in explain:
            errors.add(where, explain[key])
        else:
            errors.add(
                where,
                f"unknown field {_show(key)}; {path or 'a token'} takes only "
                f"{', '.join(allowed)}: remove it or fix its spelling",
            )


def _mapping(
    errors: _Errors, path: str, value: object, required: bool = False
) -> Mapping[Any, Any] | None:
    if value is None:
        if required:
            errors.add(path, f"required; add a {path} mapping")
        return None
    if not isinstance(value, Mapping):
        errors.add(path, f"must be a mapping, not {_kind(value)}")
        return None
    return value


# --------------------------------------------------------------------------------------------
# Helpers


def field_name(key: object) -> str:
    """A mapping key as it appears in a field path, made safe and short for messages."""
    if isinstance(key, str) and len(key) <= 80:
        return key
    return _show(key)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_unsafe_char(char: str) -> bool:
    code = ord(char)
    return (code < 0x20 and char not in "\n\t") or 0x7F <= code < 0xA0 or 0xD800 <= code <= 0xDFFF


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {_number_text(value)}"
    if isinstance(value, str):
        return f"the string {_show(value)}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, datetime):
        return "a timestamp"
    if isinstance(value, date):
        return "a date"
    return f"a value of type {type(value).__name__}"


def _show(value: object, limit: int = 80) -> str:
    """A value quoted for a message, cut short so that a hostile input cannot flood logs."""
    if isinstance(value, str):
        text = value if len(value) <= limit else value[:limit] + "..."
        return json.dumps(text, ensure_ascii=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number_text(value)
    return _kind(value)


def _number_text(value: int | float) -> str:
    # Python refuses to print integers of more than 4300 digits, and nobody wants to read one.
    if isinstance(value, int) and abs(value) >= 10**30:
        return "with more than 30 digits"
    return str(value)
