"""The checks of a join, one function each, in the order the contract gives them.

Each takes the join's `Trace`, records what it found (`trace.ok`) and raises `JoinRejected`
with the contract's error code when the join must be refused (`trace.fail`), so that the audit
row says which checks passed and why the join failed. `joins.services.perform_join` runs them in
order; the offline decisions (`joins.dry_run`, the policy tester) reuse the ones that need
neither AWS nor a registration.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from joinadmin.rawsql import select
from joins import ratelimit
from joins.aws import AwsError, InstanceInfo
from joins.conditions import ConditionFailed, check_name, evaluate
from joins.constants import PENDING_TIME_SKEW_SECONDS
from joins.iid import IdentityDocument, IIDError, verify_document
from joins.models import Host, JoinAttempt
from joins.outcomes import JoinRejected, Trace
from joins.reads import JoinReads
from joins.rejoin_service import RejoinGrant
from joins.request import NOT_JSON, JoinRequest, RequestInvalid, parse_join_request
from joins.rules import rule_matches
from joins.trust import certificate_store, instance_lookup
from tokens.cache import token_of_row
from tokens.resource import AllowRule, TokenResource
from tokens.services import resource_snapshot


def check_rate(trace: Trace, scope: str, key: str, rate_text: str) -> None:
    wait = ratelimit.hit(f"join-{scope}", key, ratelimit.parse_rate(rate_text))
    if wait:
        raise trace.fail(
            "request",
            JoinRejected(
                "rate_limited",
                f"too many join attempts from this {scope}; retry in {wait}s",
                f"rate limit {rate_text} per {scope} exceeded by {key!r}",
                retry_after=wait,
            ),
        )


def check_request(trace: Trace, body: bytes, data: Any = NOT_JSON) -> JoinRequest:
    try:
        request = parse_join_request(body, data)
    except RequestInvalid as exc:
        raise trace.fail("request", JoinRejected("invalid_request", exc.message)) from None
    trace.ok("request", "the request is well formed and its public keys are acceptable")
    return request


def check_token(
    trace: Trace, request: JoinRequest, now: datetime, attempt: JoinAttempt, reads: JoinReads
) -> TokenResource:
    cached = token_of_row(request.token, reads.token)
    if cached is None:
        raise trace.fail(
            "token",
            JoinRejected(
                "token_invalid",
                "the token does not exist or has expired",
                f"no token named {request.token!r}",
            ),
        )
    token = cached.resource
    attempt.token_snapshot = cached.snapshot
    if token.is_expired(now):
        raise trace.fail(
            "token",
            JoinRejected(
                "token_invalid",
                "the token does not exist or has expired",
                f"token {token.name!r} expired at {token.expires.isoformat()}",
            ),
        )
    trace.ok("token", f"token {token.name!r} exists and is not expired")
    attempt.join_method = request.join_method or token.join_method
    if request.join_method and request.join_method != token.join_method:
        raise trace.fail(
            "join_method",
            JoinRejected(
                "join_method_mismatch",
                f"the request names join method {request.join_method!r}, the token allows "
                f"{token.join_method!r}",
            ),
        )
    trace.ok("join_method", f"join method {token.join_method}")
    return token


def _role_key(role: str) -> str:
    return role.replace("_", "").lower()


def check_roles(trace: Trace, request: JoinRequest, token: TokenResource) -> tuple[str, ...]:
    allowed = {_role_key(role): role for role in token.roles}
    if not request.roles:
        trace.ok("roles", f"all of the token's roles: {', '.join(token.roles)}")
        return tuple(token.roles)
    granted: list[str] = []
    for role in request.roles:
        canonical = allowed.get(_role_key(role))
        if canonical is None:
            raise trace.fail(
                "roles",
                JoinRejected(
                    "role_not_allowed",
                    f"the token does not allow role {role!r} (it allows {', '.join(token.roles)})",
                ),
            )
        if canonical not in granted:
            granted.append(canonical)
    trace.ok("roles", f"requested roles allowed: {', '.join(granted)}")
    return tuple(granted)


def check_document(trace: Trace, request: JoinRequest, attempt: JoinAttempt) -> IdentityDocument:
    try:
        document = verify_document(request.document, certificate_store())
    except IIDError as exc:
        raise trace.fail("document", JoinRejected(exc.code, exc.message)) from None
    attempt.host_id = document.host_id
    attempt.account_id = document.account_id
    attempt.region = document.region
    attempt.instance_id = document.instance_id
    attempt.pending_time = document.pending_time
    attempt.document = document.raw
    trace.ok(
        "document",
        f"signed by AWS for {document.region}: account {document.account_id}, "
        f"instance {document.instance_id}",
    )
    return document


def check_host_id(trace: Trace, request: JoinRequest, document: IdentityDocument) -> None:
    if request.host_id and request.host_id != document.host_id:
        raise trace.fail(
            "host_id",
            JoinRejected(
                "host_id_mismatch",
                "the requested host ID does not match the instance identity document",
                f"requested host id {request.host_id!r}, the document says {document.host_id!r}",
            ),
        )
    trace.ok("host_id", f"host id {document.host_id}")


def check_pending_time(
    trace: Trace,
    document: IdentityDocument,
    token: TokenResource,
    now: datetime,
    rejoin: RejoinGrant | None = None,
) -> None:
    age = now - document.pending_time
    if age < -timedelta(seconds=PENDING_TIME_SKEW_SECONDS):
        pending = document.pending_time.isoformat()
        raise trace.fail(
            "pending_time",
            JoinRejected(
                "iid_pending_time_in_future",
                "the document's pendingTime is in the future; check the server's clock",
                f"pendingTime {pending} is {-age.total_seconds():.0f}s ahead of the server clock "
                f"({now.isoformat()}); {PENDING_TIME_SKEW_SECONDS}s of skew are allowed",
            ),
        )
    if rejoin is not None:
        trace.ok(
            "pending_time",
            f"launched {max(age.total_seconds(), 0):.0f}s ago; the token's "
            f"aws_iid_ttl ({token.aws_iid_ttl}) does not apply to a re-join: "
            "the host proved it holds its registered key instead (see "
            "rejoin), and its document is not older than its last one",
        )
        return
    if age > token.iid_ttl:
        pending = document.pending_time.isoformat()
        raise trace.fail(
            "pending_time",
            JoinRejected(
                "iid_expired",
                f"the instance was launched more than {token.aws_iid_ttl} ago "
                "(the token's aws_iid_ttl)",
                f"pendingTime {pending} is {age.total_seconds():.0f}s old at {now.isoformat()}, "
                f"older than the token's aws_iid_ttl of {token.aws_iid_ttl}",
            ),
        )
    trace.ok(
        "pending_time",
        f"launched {max(age.total_seconds(), 0):.0f}s ago, within aws_iid_ttl {token.aws_iid_ttl}",
    )


def check_rules(
    trace: Trace, token: TokenResource, document: IdentityDocument
) -> tuple[int, AllowRule]:
    for index, rule in enumerate(token.allow):
        if rule_matches(rule, document):
            trace.ok(
                "allow_rule",
                f"rule {index} matches account {document.account_id} in {document.region}",
            )
            return index, rule
    raise trace.fail(
        "allow_rule",
        JoinRejected(
            "no_matching_rule",
            f"instance {document.instance_id} did not match any allow rules in token {token.name}",
            f"no allow rule of token {token.name!r} matches account {document.account_id} in "
            f"region {document.region} (rules: {resource_snapshot(token)['spec']['allow']})",
        ),
    )


def already_joined(document: IdentityDocument) -> JoinRejected:
    return JoinRejected(
        "instance_already_joined",
        f"a host with ID {document.host_id} already joined; an admin must forget it before "
        "this instance can join again",
        f"host {document.host_id} is already registered",
    )


def check_not_joined(
    trace: Trace, document: IdentityDocument, registered: bool | None = None
) -> None:
    """`registered`: whether the document's host was registered as the join read it earlier
    (joins/reads.py), or None to read it now."""
    if registered is None:
        registered = bool(select(Host, ("id",), where="host_id", value=document.host_id))
    if registered:
        raise trace.fail("not_joined", already_joined(document))
    trace.ok("not_joined", f"host {document.host_id} has not joined before")


def check_instance(trace: Trace, document: IdentityDocument, rule: AllowRule) -> InstanceInfo:
    deadline = time.monotonic() + settings.AWS_TIME_BUDGET_SECONDS
    via = f" through {rule.aws_role}" if rule.aws_role else ""
    try:
        info = instance_lookup().describe_one(
            region=document.region,
            instance_id=document.instance_id,
            role_arn=rule.aws_role,
            deadline=deadline,
        )
    except AwsError as exc:
        message = (
            "AWS refused the server's DescribeInstances call; ask an admin to check the "
            "server's IAM permissions"
            if exc.code == "aws_denied"
            else "AWS is unavailable or throttling; retry later"
        )
        raise trace.fail(
            "instance",
            JoinRejected(
                exc.code,
                message,
                exc.message,
                retry_after=exc.retry_after if exc.code == "aws_unavailable" else None,
            ),
        ) from None
    if info is None:
        raise trace.fail(
            "instance",
            JoinRejected(
                "instance_not_found",
                "failed to get instance state",
                f"DescribeInstances in {document.region}{via} does not know {document.instance_id}",
            ),
        )
    if info.state != "running":
        raise trace.fail(
            "instance",
            JoinRejected(
                "instance_not_running",
                "instance is not running",
                f"instance {document.instance_id} is {info.state or 'in an unknown state'}, "
                "not running",
            ),
        )
    recent = (
        f" (confirmed by a lookup at most {settings.AWS_STATE_CACHE_SECONDS}s ago)"
        if info.cached
        else ""
    )
    trace.ok(
        "instance",
        f"DescribeInstances in {document.region}{via}: {document.instance_id} is running{recent}",
    )
    return info


def check_conditions(trace: Trace, rule: AllowRule, info: InstanceInfo, remote_addr: str) -> None:
    """The matched rule's optional conditions (`joins.conditions`), one trace entry each.

    They read the DescribeInstances answer `check_instance` already has: no AWS call of their
    own. A recent `running` confirmation from the shared state cache carries no instance
    details, so a rule with conditions cannot be decided on it; that answers like an AWS outage
    (retry once the confirmation has expired), never like a pass.
    """
    if not rule.conditions:
        return
    if not info.raw:
        raise trace.fail(
            check_name(rule.conditions[0]),
            JoinRejected(
                "aws_unavailable",
                "AWS is unavailable or throttling; retry later",
                f"the token's rule has conditions ({', '.join(rule.conditions)}) but the "
                "instance's details are not at hand (the lookup was answered by a recent running "
                "confirmation without them); retry once it expires",
                retry_after=settings.AWS_STATE_CACHE_SECONDS + 1,
            ),
        )
    try:
        results = evaluate(rule, info.raw, remote_addr)
    except ConditionFailed as exc:
        for passed in exc.passed:
            trace.ok(passed.name, passed.detail)
        raise trace.fail(exc.name, JoinRejected(exc.code, exc.message, exc.reason)) from None
    for result in results:
        trace.ok(result.name, result.detail)
