"""Token resources for the join, rebuilt only when their row changes.

Why: every join reads its token. Through the ORM, reading the row and turning it into a
validated `TokenResource` (and the snapshot the attempt row keeps) costs more than all the
join's other database reads together. Each process keeps the resources it built, keyed by the
row's stored content: a join still reads the row, with one plain indexed query
(`joinadmin.rawsql`), and uses the kept resource only when every column holds exactly what it
was built from. So a token replaced, edited in any way, deleted or recreated under the same name
is seen by the very next join: nothing is served that the database no longer holds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from joinadmin.rawsql import select
from tokens.models import Token
from tokens.resource import TokenResource
from tokens.services import resource_snapshot

# Tokens are few; a process that sees more names than this starts again from empty.
MAX_ENTRIES = 4096


@dataclass(frozen=True)
class CachedToken:
    version: tuple[Any, ...]
    resource: TokenResource
    snapshot: dict[str, Any]


# The columns read: the row's version. joins/reads.py reads them with the join's other reads.
COLUMNS = tuple(field.name for field in Token._meta.concrete_fields)
_ID = COLUMNS.index(Token._meta.pk.name)
_entries: dict[str, CachedToken] = {}
_lock = threading.Lock()


def read_row(name: str) -> tuple[Any, ...] | None:
    """The row named `name` (`COLUMNS`) as the database driver returns it: all that the resource
    is built from, its version. A join reads it with its other reads (joins/reads.py)."""
    rows = select(Token, COLUMNS, where="name", value=name)
    return rows[0] if rows else None


def token_of_row(name: str, version: tuple[Any, ...] | None) -> CachedToken | None:
    """The token named `name` given its row (`COLUMNS`) as just read, or None when it had
    none."""
    if version is None:
        return None
    entry = _entries.get(name)
    if entry is not None and entry.version == version:
        return entry
    row = Token.objects.filter(pk=version[_ID]).first()
    if row is None or row.name != name:  # deleted or renamed since the version was read
        return None
    resource = row.to_resource()
    entry = CachedToken(version=version, resource=resource, snapshot=resource_snapshot(resource))
    # Keep it only if the row did not change while it was read: then it is what `version` names.
    if read_row(name) == version:
        with _lock:
            if len(_entries) >= MAX_ENTRIES:
                _entries.clear()
            _entries[name] = entry
    return entry


def clear() -> None:
    with _lock:
        _entries.clear()
