"""Helpers shared by the management commands."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

from django.core.management.base import CommandError


def cli_actor() -> str:
    """Who ran a command, as the admin log records it."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def read_input(source: str, limit: int = 4 * 1024 * 1024) -> str:
    """The text of FILE, or of standard input for '-', with a size cap and a clear error."""
    try:
        if source == "-":
            data = sys.stdin.read(limit + 1)
        else:
            with Path(source).open(encoding="utf-8") as handle:
                data = handle.read(limit + 1)
    except OSError as exc:
        raise CommandError(f"cannot read {source}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CommandError(f"{source} is not UTF-8 text") from None
    if len(data) > limit:
        raise CommandError(f"{source} is larger than {limit} bytes")
    return data
