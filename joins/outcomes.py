"""What a join answers and how its checks are traced: shared by the join, the re-join and the
dry runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from joins.models import JoinAttempt


class JoinRejected(Exception):
    """A join refused with a contract `code`.

    `message` is what the agent is told; `reason` is the exact cause kept for the auditor
    (they differ where telling the agent would leak, e.g. whether a token exists).
    """

    def __init__(self, code: str, message: str, reason: str = "", retry_after: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or message
        self.retry_after = retry_after


@dataclass
class JoinResult:
    """What the endpoint answers: HTTP status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    attempt: JoinAttempt | None = None


class Trace:
    """The ordered check trace stored on the attempt."""

    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []

    def ok(self, name: str, detail: str) -> None:
        self.checks.append({"name": name, "ok": True, "detail": detail})

    def fail(self, name: str, exc: JoinRejected) -> JoinRejected:
        self.checks.append({"name": name, "ok": False, "detail": exc.reason})
        return exc
