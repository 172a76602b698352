"""The policy tester: what a token would decide about an identity document, without a join.

`evaluate_policy` runs the join's own checks (the functions of `joins.services` and
`joins.conditions`, so the tester and the join cannot drift apart) on a pasted document or on
the document recorded with a join attempt, at a chosen time, and reports every check's result
and every allow rule's verdict. Unlike a join it does not stop at the first failure: an admin
asking "why" wants to see, say, that a document is too old *and* that no rule would match it.
The verdict is still the join's: the code of the first check that failed, in the join's order.

It registers nothing, issues nothing and records no join attempt. With `ask_aws`, it calls
DescribeInstances (a fresh call, never the join's short-lived cache) with the matched rule's
role, and checks the rule's instance conditions on the answer.

A recorded attempt keeps the document's signed fields, not the signed blob: the blob is a
bearer credential (valid for the token's TTL here, and without limit at services that accept
documents of any age), so it is deliberately never stored. The tester re-checks the recorded
fields and says that the signature was verified when the attempt was received.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings

from joins.aws import AwsError, InstanceInfo, describe_one
from joins.checks import check_pending_time
from joins.conditions import ConditionFailed, ConditionResult, check_name, evaluate
from joins.constants import ERROR_CODES
from joins.iid import (
    IdentityDocument,
    IIDError,
    document_summary,
    recorded_document,
    verify_document,
)
from joins.models import Host, JoinAttempt
from joins.outcomes import JoinRejected, Trace
from joins.rules import rule_account
from joins.trust import certificate_store, ec2_lookup
from tokens.resource import AllowRule, TokenResource

PASS = "pass"  # noqa: S105 - a check state, not a secret
FAIL = "fail"
SKIPPED = "skipped"

SOURCE_CONDITION = "require_source_ip_match"


@dataclass
class Check:
    """One check's result: `state` is pass, fail or skipped (not run, and why in `detail`)."""

    name: str
    state: str
    detail: str
    code: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.state == PASS if self.state != SKIPPED else None,
            "state": self.state,
            "detail": self.detail,
            "code": self.code or None,
        }


@dataclass
class RuleVerdict:
    """How one allow rule compares with the document (and, when asked, the instance)."""

    index: int
    rule: dict[str, Any]
    account: str
    account_ok: bool
    region_ok: bool
    conditions: list[str]
    chosen: bool = False
    condition_checks: list[Check] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return self.account_ok and self.region_ok

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "rule": self.rule,
            "account_ok": self.account_ok,
            "region_ok": self.region_ok,
            "matches": self.matches,
            "chosen": self.chosen,
            "conditions": self.conditions,
            "condition_checks": [check.as_dict() for check in self.condition_checks],
        }


@dataclass
class PolicyReport:
    """Everything the tester found. `ok`: no check failed (as `verify_iid` has always meant);
    `complete`: every check ran (the AWS ones are skipped unless asked)."""

    token: str
    at: datetime
    source: str
    ask_aws: bool
    checks: list[Check] = field(default_factory=list)
    rules: list[RuleVerdict] = field(default_factory=list)
    document: IdentityDocument | None = None
    matched_rule: int | None = None
    instance_state: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def first_failure(self) -> Check | None:
        return next((check for check in self.checks if check.state == FAIL), None)

    @property
    def ok(self) -> bool:
        return self.first_failure is None

    @property
    def complete(self) -> bool:
        return all(check.state != SKIPPED for check in self.checks)

    @property
    def verdict(self) -> str:
        """One sentence: what a join at `at` would be told, as far as the tester can know."""
        failed = self.first_failure
        if failed is not None:
            label = ERROR_CODES.get(failed.code, (0, failed.code))[1]
            return f"A join would be refused: {label} ({failed.code})."
        if self.complete:
            return "A join would be allowed: every check passes."
        return (
            'Every check that ran passes; the AWS checks did not run (tick "Ask AWS"), so '
            "a join could still be refused for the instance's state or conditions."
        )

    def as_dict(self) -> dict[str, Any]:
        failed = self.first_failure
        return {
            "ok": self.ok,
            "complete": self.complete,
            "verdict": self.verdict,
            "error": failed.code if failed else None,
            "message": failed.detail if failed else None,
            "token": self.token,
            "at": self.at.isoformat(),
            "source": self.source,
            "ask_aws": self.ask_aws,
            **document_summary(self.document),
            "matched_rule": self.matched_rule,
            "instance_state": self.instance_state,
            "checks": [check.as_dict() for check in self.checks],
            "rules": [rule.as_dict() for rule in self.rules],
            "notes": self.notes,
        }


def _run(report: PolicyReport, name: str, step: Any) -> bool:
    """Run one of the join's check functions, recording its pass or failure; True if passed."""
    trace = Trace()
    try:
        step(trace)
    except JoinRejected as exc:
        report.checks.append(Check(name, FAIL, exc.reason, exc.code))
        return False
    for item in trace.checks:
        report.checks.append(Check(item["name"], PASS, item["detail"]))
    return True


def _skip(report: PolicyReport, name: str, why: str) -> None:
    report.checks.append(Check(name, SKIPPED, why))


def _read_document(
    report: PolicyReport, document_text: str | None, attempt: JoinAttempt | None
) -> IdentityDocument | None:
    if attempt is not None:
        if not isinstance(attempt.document, dict):
            reached = f" (it was refused with {attempt.error})" if attempt.error else ""
            report.checks.append(
                Check(
                    "document",
                    FAIL,
                    f"join attempt #{attempt.pk} has no verified document: it stopped before or at "
                    f"the signature check{reached}",
                    attempt.error or "iid_malformed",
                )
            )
            return None
        try:
            document = recorded_document(attempt.document)
        except IIDError as exc:
            report.checks.append(Check("document", FAIL, exc.message, exc.code))
            return None
        report.checks.append(
            Check(
                "document",
                PASS,
                f"AWS's signature was verified when attempt #{attempt.pk} was received "
                f"({attempt.time:%Y-%m-%d %H:%M:%S} UTC); its recorded fields are re-checked here: "
                f"account {document.account_id}, instance {document.instance_id} in "
                f"{document.region}",
            )
        )
        return document
    try:
        document = verify_document(document_text or "", certificate_store())
    except IIDError as exc:
        report.checks.append(Check("document", FAIL, exc.message, exc.code))
        return None
    report.checks.append(
        Check(
            "document",
            PASS,
            f"signed by AWS for {document.region}: account {document.account_id}, "
            f"instance {document.instance_id}",
        )
    )
    return document


def _rule_verdicts(token: TokenResource, document: IdentityDocument) -> list[RuleVerdict]:
    verdicts = []
    for index, rule in enumerate(token.allow):
        account = rule_account(rule)
        verdicts.append(
            RuleVerdict(
                index=index,
                rule=rule.to_dict(),
                account=account,
                account_ok=not account or account == document.account_id,
                region_ok=not rule.aws_regions or document.region in rule.aws_regions,
                conditions=list(rule.conditions),
            )
        )
    return verdicts


def _check_rule(
    report: PolicyReport, token: TokenResource, document: IdentityDocument
) -> AllowRule | None:
    """The join's choice: the first rule whose account and region match."""
    report.rules = _rule_verdicts(token, document)
    for verdict in report.rules:
        if verdict.matches:
            verdict.chosen = True
            report.matched_rule = verdict.index
            report.checks.append(
                Check(
                    "allow_rule",
                    PASS,
                    f"rule {verdict.index} matches account "
                    f"{document.account_id} in {document.region}",
                )
            )
            return token.allow[verdict.index]
    report.checks.append(
        Check(
            "allow_rule",
            FAIL,
            f"no allow rule of token {token.name!r} matches account {document.account_id} "
            f"in region {document.region}",
            "no_matching_rule",
        )
    )
    return None


def _check_registered(
    report: PolicyReport, document: IdentityDocument, token: TokenResource
) -> None:
    host = (
        Host.objects.filter(host_id=document.host_id)
        .only("host_id", "retired_at", "aws_state")
        .first()
    )
    if host is None:
        report.checks.append(
            Check("not_joined", PASS, f"host {document.host_id} has not joined before")
        )
        return
    retired = (
        f"; it was retired on {host.retired_at:%Y-%m-%d} (instance {host.aws_state}), and an "
        "instance id is never reused, so this document can only be an old one"
        if host.retired_at
        else (
            "; its agent may re-join with a proof of its key (the token allows re-joins; the "
            "proof is not tested here), otherwise an admin must forget it first"
            if token.allow_rejoin
            else "; an admin must forget it before this instance can join again"
        )
    )
    report.checks.append(
        Check(
            "not_joined",
            FAIL,
            f"host {document.host_id} is already registered{retired}",
            "instance_already_joined",
        )
    )


def _ask_aws(
    report: PolicyReport, document: IdentityDocument, rule: AllowRule
) -> InstanceInfo | None:
    via = f" through {rule.aws_role}" if rule.aws_role else " with the server's own credentials"
    try:
        info = describe_one(
            ec2_lookup(),
            region=document.region,
            instance_id=document.instance_id,
            role_arn=rule.aws_role,
            deadline=time.monotonic() + settings.AWS_TIME_BUDGET_SECONDS,
        )
    except AwsError as exc:
        report.checks.append(Check("instance", FAIL, exc.message, exc.code))
        return None
    if info is None:
        report.instance_state = "not-found"
        report.checks.append(
            Check(
                "instance",
                FAIL,
                f"DescribeInstances in {document.region}{via} does not know {document.instance_id}",
                "instance_not_found",
            )
        )
        return None
    report.instance_state = info.state
    if info.state != "running":
        report.checks.append(
            Check(
                "instance",
                FAIL,
                f"DescribeInstances in {document.region}{via}: "
                f"{document.instance_id} is {info.state or 'in an unknown state'}",
                "instance_not_running",
            )
        )
        return info
    report.checks.append(
        Check(
            "instance",
            PASS,
            f"DescribeInstances in {document.region}{via}: {document.instance_id} is running",
        )
    )
    return info


def _only(rule: AllowRule, name: str) -> AllowRule:
    """The rule with condition `name` alone (every other condition back at its default)."""
    changes = {}
    for item in dataclasses.fields(AllowRule):
        if item.name in rule.conditions and item.name != name:
            changes[item.name] = (
                item.default_factory()
                if item.default_factory is not dataclasses.MISSING
                else item.default
            )
    return dataclasses.replace(rule, **changes)


def instance_condition_checks(
    rule: AllowRule, instance_raw: dict[str, Any], source_addr: str
) -> list[Check]:
    """Every condition of `rule` against a DescribeInstances answer, each with its result.

    `joins.conditions.evaluate` stops at the first condition not met, as a join must; here
    each condition is evaluated on its own, so that all of them are reported. Without a source
    address the source-address condition is reported as not checked rather than failed.
    """
    checks: list[Check] = []
    for name in rule.conditions:
        if name == SOURCE_CONDITION and not source_addr:
            checks.append(
                Check(
                    check_name(name),
                    SKIPPED,
                    "not checked: give the agent's source address to test it",
                )
            )
            continue
        try:
            results: list[ConditionResult] = evaluate(_only(rule, name), instance_raw, source_addr)
        except ConditionFailed as exc:
            checks.append(Check(exc.name, FAIL, exc.reason, exc.code))
            continue
        checks.extend(Check(result.name, PASS, result.detail) for result in results)
    return checks


def evaluate_policy(
    *,
    token: TokenResource,
    at: datetime,
    document_text: str | None = None,
    attempt: JoinAttempt | None = None,
    ask_aws: bool = False,
    source_addr: str = "",
) -> PolicyReport:
    """What `token` would decide at `at` about a pasted document or a recorded attempt's.

    Exactly one of `document_text` and `attempt` is given (ValueError otherwise). Reads only;
    with `ask_aws`, one DescribeInstances call. See the module doc.
    """
    if (document_text is None) == (attempt is None):
        raise ValueError("give either a document or a join attempt")
    source = f"join attempt #{attempt.pk}" if attempt is not None else "pasted document"
    report = PolicyReport(token=token.name, at=at, source=source, ask_aws=ask_aws)
    if token.is_expired(at):
        report.checks.append(
            Check(
                "token",
                FAIL,
                f"token {token.name!r} expired at {token.expires.isoformat()}"
                if token.expires
                else f"token {token.name!r} has expired",
                "token_invalid",
            )
        )
    else:
        report.checks.append(
            Check("token", PASS, f"token {token.name!r} exists and is not expired")
        )
    report.checks.append(Check("join_method", PASS, f"join method {token.join_method}"))

    document = _read_document(report, document_text, attempt)
    report.document = document
    if document is None:
        for name in ("pending_time", "allow_rule", "not_joined", "instance"):
            _skip(report, name, "needs a verified document")
        return report
    _run(report, "pending_time", lambda trace: check_pending_time(trace, document, token, at))
    rule = _check_rule(report, token, document)
    _check_registered(report, document, token)
    if rule is None:
        _skip(report, "instance", "no rule matched, so there is no role to ask AWS with")
        return report
    conditions = list(rule.conditions)
    if not ask_aws:
        _skip(report, "instance", "AWS was not asked")
        for name in conditions:
            _skip(report, check_name(name), "needs the DescribeInstances answer: ask AWS")
        return report
    info = _ask_aws(report, document, rule)
    if not conditions:
        return report
    if info is None or info.state != "running" or not info.raw:
        for name in conditions:
            _skip(report, check_name(name), "needs a running instance described by AWS")
        return report
    checks = instance_condition_checks(rule, info.raw, source_addr)
    report.checks.extend(checks)
    chosen = report.rules[report.matched_rule] if report.matched_rule is not None else None
    if chosen is not None:
        chosen.condition_checks = checks
    return report
