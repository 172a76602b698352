"""The join workflow (`perform_join`) and the host workflows (`forget_host`).

`perform_join` runs the checks in the contract's order, each failing with its code; no AWS call
happens before the document's signature is good. Every call writes exactly one JoinAttempt row:
an allowed one in the same transaction as the host and its certificates (so neither exists
without the other), a refused one outside any transaction (so it survives the rollback).

A registered host re-joins through the same `perform_join` with a proof of its key; the proof is
checked by `_check_rejoin` (joins/rejoin.py explains it) and its challenge comes from
`issue_rejoin_challenge`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.utils import timezone

from audit.services import record_action
from joinadmin import metrics
from joins import ratelimit
from joins.authority import get_host_ca, public_ca_material
from joins.aws import AwsError, InstanceInfo
from joins.ca import issue_host_credentials
from joins.conditions import ConditionFailed, check_name, evaluate
from joins.constants import ERROR_CODES, ERROR_OUTCOME, OUTCOME_ALLOWED, PENDING_TIME_SKEW_SECONDS
from joins.iid import IdentityDocument, IIDError, verify_document
from joins.models import Host, JoinAttempt
from joins.rejoin import (
    REJOIN_PROOF_INVALID,
    Challenge,
    RejoinError,
    challenge_key,
    describe_key,
    epoch_us,
    is_host_id,
    issue_challenge,
    load_registered_key,
    open_challenge,
    public_pem,
    rejoin_message,
    verify_signature,
)
from joins.request import JoinRequest, RequestInvalid, parse_join_request, peek
from joins.trust import certificate_store, instance_lookup
from tokens.models import Token
from tokens.resource import AllowRule, TokenResource
from tokens.services import resource_snapshot

log = logging.getLogger(__name__)


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


class _Trace:
    """The ordered check trace stored on the attempt."""

    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []

    def ok(self, name: str, detail: str) -> None:
        self.checks.append({"name": name, "ok": True, "detail": detail})

    def fail(self, name: str, exc: JoinRejected) -> JoinRejected:
        self.checks.append({"name": name, "ok": False, "detail": exc.reason})
        return exc


def perform_join(
    body: bytes, *, remote_addr: str, user_agent: str = "", too_large: bool = False
) -> JoinResult:
    """Decide a join request, issue credentials when it passes, and record the attempt."""
    started = time.monotonic()
    now = timezone.now()
    trace = _Trace()
    attempt = JoinAttempt(time=now, remote_addr=remote_addr[:64], user_agent=user_agent[:300])
    _prefill(attempt, peek(body) if not too_large else {})
    try:
        if too_large:
            limit = settings.JOIN_MAX_BODY_BYTES
            raise trace.fail(
                "request",
                JoinRejected(
                    "request_too_large",
                    f"the request body is larger than {limit} bytes",
                ),
            )
        _check_rate(trace, "source", remote_addr, settings.JOIN_RATE_LIMIT)
        request = _check_request(trace, body)
        _check_rate(trace, "token", request.token, settings.JOIN_TOKEN_RATE_LIMIT)
        token = _check_token(trace, request, now, attempt)
        roles = _check_roles(trace, request, token)
        attempt.roles = list(roles)
        document = _check_document(trace, request, attempt)
        _check_host_id(trace, request, document)
        # A registered host's proof of its key (joins/rejoin.py) replaces the TTL and not_joined.
        rejoin = _check_rejoin(trace, request, token, document, now) if request.rejoin else None
        _check_pending_time(trace, document, token, now, rejoin=rejoin)
        rule_index, rule = _check_rules(trace, token, document)
        attempt.matched_rule = rule_index
        if rejoin is None:
            _check_not_joined(trace, document)
        info = _check_instance(trace, document, rule)
        _check_conditions(trace, rule, info, remote_addr)
        return _register(trace, attempt, request, token, document, roles, now, started, rejoin)
    except JoinRejected as exc:
        return _refuse(attempt, trace, exc, started)
    except (OperationalError, InterfaceError):
        # No row can be written while the database is away: the endpoint answers 503 and the
        # agent retries; the attempt is in the server log.
        log.exception("join attempt from %s lost: database unavailable", remote_addr)
        raise
    except Exception as exc:  # fail closed, and still leave the audit row
        log.exception("join attempt failed unexpectedly")
        rejected = JoinRejected(
            "internal_error",
            "the server could not process the join; try again later",
            f"internal error: {type(exc).__name__}: {exc}",
            retry_after=5,
        )
        trace.checks.append({"name": "internal", "ok": False, "detail": rejected.reason})
        return _refuse(attempt, trace, rejected, started)


def _prefill(attempt: JoinAttempt, data: dict[str, Any]) -> None:
    """Copy what the caller claimed, so that even a malformed attempt says who it claimed to be."""

    def text(name: str, limit: int) -> str:
        value = data.get(name)
        return value[:limit] if isinstance(value, str) else ""

    attempt.token = text("token", 200)
    attempt.join_method = text("join_method", 32)
    attempt.requested_host_id = text("host_id", 200)
    attempt.node_name = text("node_name", 253)
    roles = data.get("roles")
    if isinstance(roles, list):
        attempt.roles = [r[:32] for r in roles[:16] if isinstance(r, str)]


def _check_rate(trace: _Trace, scope: str, key: str, rate_text: str) -> None:
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


def _check_request(trace: _Trace, body: bytes) -> JoinRequest:
    try:
        request = parse_join_request(body)
    except RequestInvalid as exc:
        raise trace.fail("request", JoinRejected("invalid_request", exc.message)) from None
    trace.ok("request", "the request is well formed and its public keys are acceptable")
    return request


def _check_token(
    trace: _Trace, request: JoinRequest, now: datetime, attempt: JoinAttempt
) -> TokenResource:
    row = Token.objects.filter(name=request.token).first()
    if row is None:
        raise trace.fail(
            "token",
            JoinRejected(
                "token_invalid",
                "the token does not exist or has expired",
                f"no token named {request.token!r}",
            ),
        )
    token = row.to_resource()
    attempt.token_snapshot = resource_snapshot(token)
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


def _check_roles(trace: _Trace, request: JoinRequest, token: TokenResource) -> tuple[str, ...]:
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


def _check_document(trace: _Trace, request: JoinRequest, attempt: JoinAttempt) -> IdentityDocument:
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


def _check_host_id(trace: _Trace, request: JoinRequest, document: IdentityDocument) -> None:
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


def _check_pending_time(
    trace: _Trace,
    document: IdentityDocument,
    token: TokenResource,
    now: datetime,
    rejoin: _Rejoin | None = None,
) -> None:
    age = now - document.pending_time
    pending = document.pending_time.isoformat()
    if age < -timedelta(seconds=PENDING_TIME_SKEW_SECONDS):
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


def rule_account(rule: AllowRule) -> str:
    """The account a rule admits: `aws_account`, else the account of its `aws_role` ARN.

    Teleport lets a role-only rule match any account; we read the role's account instead, since
    that role can only describe instances of its own account anyway.
    """
    if rule.aws_account:
        return rule.aws_account
    parts = rule.aws_role.split(":")
    return parts[4] if len(parts) > 4 else ""


def rule_matches(rule: AllowRule, document: IdentityDocument) -> bool:
    """Account equal (see `rule_account`), regions empty or containing the document's region."""
    account = rule_account(rule)
    account_ok = not account or account == document.account_id
    region_ok = not rule.aws_regions or document.region in rule.aws_regions
    return account_ok and region_ok


def _check_rules(
    trace: _Trace, token: TokenResource, document: IdentityDocument
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


def _already_joined(document: IdentityDocument) -> JoinRejected:
    return JoinRejected(
        "instance_already_joined",
        f"a host with ID {document.host_id} already joined; an admin must forget it before "
        "this instance can join again",
        f"host {document.host_id} is already registered",
    )


def _check_not_joined(trace: _Trace, document: IdentityDocument) -> None:
    if Host.objects.filter(host_id=document.host_id).exists():
        raise trace.fail("not_joined", _already_joined(document))
    trace.ok("not_joined", f"host {document.host_id} has not joined before")


def _check_instance(trace: _Trace, document: IdentityDocument, rule: AllowRule) -> InstanceInfo:
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


def _check_conditions(trace: _Trace, rule: AllowRule, info: InstanceInfo, remote_addr: str) -> None:
    """The matched rule's optional conditions (`joins.conditions`), one trace entry each.

    They read the DescribeInstances answer `_check_instance` already has: no AWS call of their
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
                "instance's details are not at hand (the lookup was answered by a recent running confirmation "
                "without them); retry once it expires",
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


@dataclass(frozen=True)
class _Rejoin:
    """A re-join whose proof passed `_check_rejoin`; `_claim_rejoin` re-checks it under lock."""

    host_pk: int
    challenge: Challenge
    registered_key_pem: str


def _check_rejoin(
    trace: _Trace,
    request: JoinRequest,
    token: TokenResource,
    document: IdentityDocument,
    now: datetime,
) -> _Rejoin | None:
    """Check a `rejoin` proof (joins/rejoin.py); None when the host is not registered.

    The challenge must be ours, for this document's host, current and unused; the host must be
    registered through this token, which must allow re-joins, and be neither revoked nor
    retired; the signature must verify with the key its last certificate was issued for; the
    document must not be older than the one of its last join. An unregistered host (never
    joined, or forgotten by an admin) has nothing to re-join: its request is a first join, with
    the TTL and every other check, so that an agent that kept its data dir after its host was
    forgotten joins again as the admin meant.
    """
    proof = request.rejoin
    assert proof is not None
    host_id = document.host_id
    try:
        challenge = open_challenge(_challenge_key(), proof.challenge, host_id, now)
    except RejoinError as exc:
        raise trace.fail("rejoin", JoinRejected(exc.code, exc.message, exc.reason)) from None
    host = Host.objects.filter(host_id=host_id).first()
    if host is None:
        trace.ok(
            "rejoin",
            f"host {host_id} is not registered (it never joined, or was "
            "forgotten), so there is nothing to re-join: the proof is not used "
            "and the request is checked as a first join",
        )
        return None
    if host.revoked_at is not None or host.retired_at is not None:
        when = host.revoked_at or host.retired_at
        raise trace.fail(
            "rejoin",
            JoinRejected(
                "instance_already_joined",
                f"host {host_id} was revoked or retired; an admin must forget it before this "
                "instance can join again",
                f"host {host_id} was {'revoked' if host.revoked_at else 'retired'} at "
                f"{when.isoformat() if when else '?'} ({host.revocation_reason or 'no reason'}); "
                "its key proves nothing any more, so it may not re-join",
            ),
        )
    if not token.allow_rejoin:
        raise trace.fail(
            "rejoin",
            JoinRejected(
                "instance_already_joined",
                f"a host with ID {host_id} already joined and token {token.name} does not allow "
                "re-joins; an admin must forget it before this instance can join again",
                f"host {host_id} is registered and sent a re-join proof, but token {token.name!r} "
                "does not set spec.allow_rejoin",
            ),
        )
    if host.token != token.name:
        raise trace.fail(
            "rejoin",
            JoinRejected(
                "instance_already_joined",
                f"host {host_id} joined with another token; a re-join must name that token",
                f"host {host_id} is registered through token {host.token!r}; a re-join through "
                f"{token.name!r} would move it to another token's roles, which only an admin may "
                "do (by forgetting the host)",
            ),
        )
    if challenge.issued_us <= host.rejoin_challenge_us:
        raise trace.fail(
            "rejoin",
            JoinRejected(
                "rejoin_challenge_invalid",
                "the re-join challenge was already used; ask for a new one",
                f"the challenge issued at {challenge.issued_at.isoformat()} is not later than the "
                "one that allowed this host's last (re-)join: it was used, or it predates that "
                "join",
            ),
        )
    try:
        registered = load_registered_key(host.tls_public_key)
    except ValueError as exc:
        raise trace.fail(
            "rejoin",
            JoinRejected(
                REJOIN_PROOF_INVALID,
                "the server has no key on record for this host, so it cannot re-join; an admin "
                "must forget it before this instance can join again",
                f"host {host_id} has no usable recorded TLS key ({exc}); it was probably "
                "registered before re-joins existed",
            ),
        ) from None
    message = rejoin_message(
        challenge=challenge.text,
        host_id=host_id,
        document=request.document,
        tls_public_key=request.public_tls_key,
        ssh_public_key=request.public_ssh_key,
    )
    try:
        verify_signature(registered, message, proof.signature)
    except RejoinError as exc:
        raise trace.fail("rejoin", JoinRejected(exc.code, exc.message, exc.reason)) from None
    recorded = host.pending_time
    if recorded is not None and document.pending_time < recorded:
        raise trace.fail("rejoin", _replayed(document, recorded))
    if recorded is None or document.pending_time == recorded:
        launch = "the same launch as at its last join (a reboot, or the same boot)"
    else:
        launch = (
            f"newer than the {recorded.isoformat()} of its last join (the instance was "
            "started again)"
        )
    new_key = public_pem(request.public_tls_key)
    rotated = (
        ""
        if new_key == public_pem(registered)
        else "; the new certificate is for a new TLS key, "
        f"{describe_key(request.public_tls_key)}, which replaces the registered one"
    )
    age = (now - challenge.issued_at).total_seconds()
    trace.ok(
        "rejoin",
        f"host {host_id} is registered through token {token.name} (joined "
        f"{host.join_count} time(s), last at {host.last_joined_at.isoformat()}); "
        f"the challenge was issued {max(age, 0):.0f}s ago for this host and not "
        f"used before; the signature verifies with its registered "
        f"{describe_key(registered)} over the challenge, the host id, the "
        f"document's SHA-256 and the new public keys{rotated}; the document's "
        f"pendingTime {document.pending_time.isoformat()} is {launch}",
    )
    return _Rejoin(host_pk=host.pk, challenge=challenge, registered_key_pem=host.tls_public_key)


def _replayed(document: IdentityDocument, recorded: datetime) -> JoinRejected:
    return JoinRejected(
        "iid_replayed",
        "the identity document is older than the one this host last joined with; send the "
        "instance's current document",
        f"pendingTime {document.pending_time.isoformat()} is older than the "
        f"{recorded.isoformat()} recorded at the host's last join: an old document replayed",
    )


def _claim_rejoin(
    trace: _Trace,
    rejoin: _Rejoin,
    request: JoinRequest,
    document: IdentityDocument,
    roles: tuple[str, ...],
    node_name: str,
    now: datetime,
) -> Host:
    """Lock the host row, re-check what a concurrent join may have changed, and update it.

    Runs in the issuing transaction: recording the challenge's issue time here is what makes
    the challenge single use, and the row lock orders two re-joins of one host.
    """
    host = Host.objects.select_for_update().filter(pk=rejoin.host_pk).first()
    if host is None or host.host_id != document.host_id:
        raise trace.fail(
            "issue",
            JoinRejected(
                REJOIN_PROOF_INVALID,
                "the host was forgotten while its re-join was checked; join again",
                f"host {document.host_id} was forgotten by an admin during this re-join",
            ),
        )
    if host.revoked_at is not None or host.retired_at is not None:
        raise trace.fail(
            "issue",
            JoinRejected(
                "instance_already_joined",
                f"host {document.host_id} was revoked or retired",
                f"host {document.host_id} was revoked or retired during this re-join",
            ),
        )
    if host.tls_public_key != rejoin.registered_key_pem:
        raise trace.fail(
            "issue",
            JoinRejected(
                REJOIN_PROOF_INVALID,
                "the host's registered key changed during this re-join; ask "
                "for a new challenge and sign it with the current key",
                f"a concurrent re-join of {document.host_id} replaced the registered key",
            ),
        )
    if rejoin.challenge.issued_us <= host.rejoin_challenge_us:
        raise trace.fail(
            "issue",
            JoinRejected(
                "rejoin_challenge_invalid",
                "the re-join challenge was already used; ask for a new one",
                f"a concurrent re-join of {document.host_id} used this challenge or a later one",
            ),
        )
    if host.pending_time is not None and document.pending_time < host.pending_time:
        raise trace.fail("issue", _replayed(document, host.pending_time))
    host.last_joined_at = now
    host.join_count += 1
    host.roles = list(roles)
    host.node_name = node_name
    host.tls_public_key = public_pem(request.public_tls_key)
    host.pending_time = document.pending_time
    host.rejoin_challenge_us = rejoin.challenge.issued_us
    host.save(
        update_fields=[
            "last_joined_at",
            "join_count",
            "roles",
            "node_name",
            "tls_public_key",
            "pending_time",
            "rejoin_challenge_us",
        ]
    )
    return host


def _register(
    trace: _Trace,
    attempt: JoinAttempt,
    request: JoinRequest,
    token: TokenResource,
    document: IdentityDocument,
    roles: tuple[str, ...],
    now: datetime,
    started: float,
    rejoin: _Rejoin | None = None,
) -> JoinResult:
    """Insert the host (or update it for a re-join), issue its credentials and record the
    allowed attempt, atomically."""
    node_name = request.node_name or document.host_id
    ca = get_host_ca()
    try:
        with transaction.atomic():
            if rejoin is not None:
                host = _claim_rejoin(trace, rejoin, request, document, roles, node_name, now)
            else:
                host = Host.objects.create(
                    host_id=document.host_id,
                    account_id=document.account_id,
                    region=document.region,
                    instance_id=document.instance_id,
                    node_name=node_name,
                    roles=list(roles),
                    token=token.name,
                    first_joined_at=now,
                    last_joined_at=now,
                    # What a later re-join is checked against (joins/rejoin.py): the key, the
                    # launch, and "only challenges issued after this join".
                    tls_public_key=public_pem(request.public_tls_key),
                    pending_time=document.pending_time,
                    rejoin_challenge_us=epoch_us(now),
                )
            issued = issue_host_credentials(
                ca,
                host_id=document.host_id,
                node_name=node_name,
                roles=roles,
                tls_public_key=request.public_tls_key,
                ssh_public_key=request.public_ssh_key,
                dns_names=request.dns_names,
                additional_principals=request.additional_principals,
                cluster_name=settings.CLUSTER_NAME,
                now=now,
                ttl=timedelta(hours=settings.HOST_CERT_TTL_HOURS),
            )
            trace.ok(
                "issue",
                f"issued X.509 serial {issued.tls_serial}"
                + (f" and SSH serial {issued.ssh_serial}" if issued.ssh_cert else "")
                + (
                    f" (re-join; join {host.join_count} of this host)" if rejoin is not None else ""
                ),
            )
            attempt.outcome = OUTCOME_ALLOWED
            attempt.node_name = node_name
            attempt.message = "joined" if rejoin is None else "re-joined"
            attempt.reason = f"joined as {document.host_id} with roles {', '.join(roles)}"
            if rejoin is not None:
                attempt.reason = (
                    f"re-joined as {document.host_id} with roles "
                    f"{', '.join(roles)}, proven by its registered key "
                    f"(join {host.join_count} of this host)"
                )
            attempt.checks = trace.checks
            attempt.tls_cert_serial = issued.tls_serial
            attempt.ssh_cert_serial = str(issued.ssh_serial or "")
            attempt.duration_ms = round((time.monotonic() - started) * 1000, 2)
            attempt.save()
            host.tls_cert_serial = issued.tls_serial
            host.ssh_cert_serial = str(issued.ssh_serial or "")
            host.cert_expires = issued.not_after
            host.last_attempt = attempt
            host.save(
                update_fields=["tls_cert_serial", "ssh_cert_serial", "cert_expires", "last_attempt"]
            )
    except IntegrityError:
        # Another join of the same instance committed first: the unique host_id decided.
        attempt.pk = None
        raise trace.fail("not_joined", _already_joined(document)) from None
    metrics.record_join(OUTCOME_ALLOWED, metrics.OK, time.monotonic() - started)
    material = public_ca_material()
    return JoinResult(
        status=200,
        body={
            "host_id": document.host_id,
            "roles": list(roles),
            "node_name": node_name,
            "tls_cert": issued.tls_cert_pem,
            "tls_ca_certs": material["tls_ca_certs"],
            "ssh_cert": issued.ssh_cert,
            "ssh_ca_keys": material["ssh_ca_keys"],
            "expires": issued.not_after.isoformat().replace("+00:00", "Z"),
            "join_attempt_id": str(attempt.pk),
        }
        | ({"rejoined": True} if rejoin is not None else {}),
        attempt=attempt,
    )


def _refuse(attempt: JoinAttempt, trace: _Trace, exc: JoinRejected, started: float) -> JoinResult:
    status = ERROR_CODES.get(exc.code, (500, ""))[0]
    attempt.pk = None
    attempt.outcome = ERROR_OUTCOME.get(exc.code, "error")
    attempt.error = exc.code
    attempt.message = exc.message
    attempt.reason = exc.reason
    attempt.checks = trace.checks
    attempt.duration_ms = round((time.monotonic() - started) * 1000, 2)
    attempt.save()
    metrics.record_join(attempt.outcome, exc.code, time.monotonic() - started)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
    return JoinResult(
        status=status,
        body={"error": exc.code, "message": exc.message, "join_attempt_id": str(attempt.pk)},
        headers=headers,
        attempt=attempt,
    )


# A challenge request is one short JSON object; anything larger is not one.
CHALLENGE_MAX_BODY_BYTES = 1024


def _challenge_key() -> bytes:
    return challenge_key(settings.SECRET_KEY)


def issue_rejoin_challenge(body: bytes, *, remote_addr: str, too_large: bool = False) -> JoinResult:
    """Answer `POST /api/v1/join/challenge` `{"host_id": ...}` with a fresh re-join challenge.

    Any well-formed host id gets one, registered or not, so that the answer says nothing about
    which hosts exist; nothing is stored (joins/rejoin.py says why), and the source address is
    rate limited like joins. No JoinAttempt row: a challenge grants nothing by itself, and the
    join that uses it is recorded with the challenge's issue time in its trace.
    """

    def refuse(status: int, code: str, message: str, retry_after: int | None = None) -> JoinResult:
        headers = {"Retry-After": str(retry_after)} if retry_after else {}
        return JoinResult(status=status, body={"error": code, "message": message}, headers=headers)

    if too_large:
        return refuse(
            413,
            "request_too_large",
            f"the request body is larger than {CHALLENGE_MAX_BODY_BYTES} bytes",
        )
    wait = ratelimit.hit(
        "challenge-source", remote_addr, ratelimit.parse_rate(settings.JOIN_RATE_LIMIT)
    )
    if wait:
        return refuse(
            429,
            "rate_limited",
            f"too many challenge requests from this source; retry in {wait}s",
            wait,
        )
    data = peek(body)
    host_id = data.get("host_id")
    if not is_host_id(host_id):
        return refuse(
            400,
            "invalid_request",
            'the body must be {"host_id": "<12-digit account>-<instance id>"}',
        )
    issued = issue_challenge(_challenge_key(), host_id, timezone.now())
    log.info("re-join challenge issued for %s to %s", host_id, remote_addr)
    return JoinResult(
        status=200,
        body={
            "host_id": issued.host_id,
            "challenge": issued.text,
            "expires": issued.expires.isoformat().replace("+00:00", "Z"),
        },
    )


class HostNotFoundError(Exception):
    code = "not_found"


def forget_host(
    host_id: str, *, actor: Any, reason: str, via: str = "console", remote_addr: str = ""
) -> None:
    """Remove a host from the registry so that its instance may join again; recorded.

    A reason is required: forgetting a host re-opens the door for a document of that instance.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("a reason is required to forget a host")
    with transaction.atomic():
        host = Host.objects.select_for_update().filter(host_id=host_id).first()
        if host is None:
            raise HostNotFoundError(f"no host {host_id!r}")
        before = {
            "host_id": host.host_id,
            "account_id": host.account_id,
            "region": host.region,
            "instance_id": host.instance_id,
            "roles": host.roles,
            "token": host.token,
            "first_joined_at": host.first_joined_at.isoformat(),
            "tls_cert_serial": host.tls_cert_serial,
        }
        host.delete()
        record_action(
            actor=actor,
            action="host.forget",
            object_type="host",
            object_id=host_id,
            before=before,
            reason=reason,
            via=via,
            remote_addr=remote_addr,
        )


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
        doc = self.document
        return {
            "ok": self.ok,
            "error": self.error or None,
            "message": self.message or None,
            "host_id": doc.host_id if doc else None,
            "account_id": doc.account_id if doc else None,
            "region": doc.region if doc else None,
            "instance_id": doc.instance_id if doc else None,
            "pending_time": doc.pending_time.isoformat() if doc else None,
            "matched_rule": self.matched_rule,
            "checks": self.checks,
        }


def dry_run(document_text: str, *, token: TokenResource | None, at: datetime) -> DryRun:
    """Run the offline checks of a join (signature, pendingTime against the TTL at `at`, the
    token's expiry and allow rules) without registering anything or calling AWS."""
    trace = _Trace()
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
        _check_pending_time(trace, document, ttl_token, at)
        if token is not None:
            result.matched_rule, _ = _check_rules(trace, token, document)
    except JoinRejected as exc:
        result.error, result.message = exc.code, exc.reason
        return result
    result.ok = True
    return result
