"""Offline decisions: the checks of a join that need neither AWS nor a registration, for
`verify_iid` and the policy tester."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from joins.checks import check_pending_time, check_rules
from joins.iid import IdentityDocument, IIDError, document_summary, verify_document
from joins.outcomes import JoinRejected, Trace
from joins.trust import certificate_store
from tokens.resource import TokenResource


@dataclass
class DryRun:
    """The decision trace of a document checked offline (verify_iid, the policy tester)."""

    ok: bool
    checks: list[dict[str, Any]]
    error: str = ""
    message: str = ""
    document: IdentityDocument | None = None
    matched_rule: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "error": self.error or None,
            "message": self.message or None,
            **document_summary(self.document),
            "matched_rule": self.matched_rule,
            "checks": self.checks,
        }


def dry_run(document_text: str, *, token: TokenResource | None, at: datetime) -> DryRun:
    """Run the offline checks of a join (signature, pendingTime against the TTL at `at`, the
    token's expiry and allow rules) without registering anything or calling AWS."""
    trace = Trace()
    result = DryRun(ok=False, checks=trace.checks)
    try:
        try:
            document = verify_document(document_text, certificate_store())
        except IIDError as exc:
            raise trace.fail("document", JoinRejected(exc.code, exc.message)) from None
        result.document = document
        trace.ok(
            "document",
            f"signed by AWS for {document.region}: account "
            f"{document.account_id}, instance {document.instance_id}",
        )
        ttl_token = token or TokenResource(name="(none)", roles=("Node",), allow=())
        if token is not None and token.is_expired(at):
            raise trace.fail(
                "token",
                JoinRejected(
                    "token_invalid",
                    "the token has expired",
                    f"token {token.name!r} expired at {token.expires.isoformat()}",
                ),
            )
        check_pending_time(trace, document, ttl_token, at)
        if token is not None:
            result.matched_rule, _ = check_rules(trace, token, document)
    except JoinRejected as exc:
        result.error, result.message = exc.code, exc.reason
        return result
    result.ok = True
    return result
