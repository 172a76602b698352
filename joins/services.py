"""The join workflow: `perform_join`.

`perform_join` runs the checks in the contract's order, each failing with its code; no AWS call
happens before the document's signature is good. Every call writes exactly one JoinAttempt row,
through the process's join writer (joins/writer.py, which commits concurrent joins together):
an allowed one in the same transaction as the host and its certificate serials (so neither exists
without the other), a refused one on its own (nothing of the refused join is written with it).

A registered host re-joins through the same `perform_join` with a proof of its key; the proof is
checked by `check_rejoin` (joins/rejoin.py explains it) and its challenge comes from
`issue_rejoin_challenge`.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError
from django.utils import timezone

from joinadmin import dbpool, metrics
from joinadmin.rawsql import select
from joins import ratelimit
from joins.authority import signing_material
from joins.aws import AwsError, InstanceInfo
from joins.ca import HostCA, IssuedCredentials, issue_host_credentials
from joins.conditions import ConditionFailed, check_name, evaluate
from joins.constants import ERROR_CODES, ERROR_OUTCOME, OUTCOME_ALLOWED, PENDING_TIME_SKEW_SECONDS
from joins.iid import IdentityDocument, IIDError, verify_document
from joins.models import Host, JoinAttempt
from joins.outcomes import JoinRejected, JoinResult, Trace
from joins.rejoin import (
    epoch_us,
    public_pem,
)
from joins.rejoin_service import RejoinGrant, check_rejoin, claim_rejoin
from joins.request import JoinRequest, RequestInvalid, parse_join_request, peek
from joins.rules import rule_matches
from joins.trust import certificate_store, instance_lookup
from joins.writer import writer
from tokens.cache import token_for_join
from tokens.resource import AllowRule, TokenResource
from tokens.services import resource_snapshot

log = logging.getLogger(__name__)


def perform_join(
    body: bytes, *, remote_addr: str, user_agent: str = "", too_large: bool = False
) -> JoinResult:
    """Decide a join request, issue credentials when it passes, and record the attempt."""
    started = time.monotonic()
    now = timezone.now()
    trace = Trace()
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
        rejoin = check_rejoin(trace, request, token, document, now) if request.rejoin else None
        _check_pending_time(trace, document, token, now, rejoin=rejoin)
        rule_index, rule = _check_rules(trace, token, document)
        attempt.matched_rule = rule_index
        if rejoin is None:
            _check_not_joined(trace, document)
        # The request thread's last read; from here on it only waits (for AWS, then for the join
        # writer, which has its own connection), so a pooled connection goes back now.
        signer = signing_material()
        dbpool.release()
        info = _check_instance(trace, document, rule)
        _check_conditions(trace, rule, info, remote_addr)
        return _register(
            trace, attempt, request, token, document, roles, now, started, signer, rejoin
        )
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


def _check_rate(trace: Trace, scope: str, key: str, rate_text: str) -> None:
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


def _check_request(trace: Trace, body: bytes) -> JoinRequest:
    try:
        request = parse_join_request(body)
    except RequestInvalid as exc:
        raise trace.fail("request", JoinRejected("invalid_request", exc.message)) from None
    trace.ok("request", "the request is well formed and its public keys are acceptable")
    return request


def _check_token(
    trace: Trace, request: JoinRequest, now: datetime, attempt: JoinAttempt
) -> TokenResource:
    cached = token_for_join(request.token)
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


def _check_roles(trace: Trace, request: JoinRequest, token: TokenResource) -> tuple[str, ...]:
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


def _check_document(trace: Trace, request: JoinRequest, attempt: JoinAttempt) -> IdentityDocument:
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


def _check_host_id(trace: Trace, request: JoinRequest, document: IdentityDocument) -> None:
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
    trace: Trace,
    document: IdentityDocument,
    token: TokenResource,
    now: datetime,
    rejoin: RejoinGrant | None = None,
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


def _check_rules(
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


def _already_joined(document: IdentityDocument) -> JoinRejected:
    return JoinRejected(
        "instance_already_joined",
        f"a host with ID {document.host_id} already joined; an admin must forget it before "
        "this instance can join again",
        f"host {document.host_id} is already registered",
    )


def _check_not_joined(trace: Trace, document: IdentityDocument) -> None:
    if select(Host, ("id",), where="host_id", value=document.host_id):
        raise trace.fail("not_joined", _already_joined(document))
    trace.ok("not_joined", f"host {document.host_id} has not joined before")


def _check_instance(trace: Trace, document: IdentityDocument, rule: AllowRule) -> InstanceInfo:
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


def _check_conditions(trace: Trace, rule: AllowRule, info: InstanceInfo, remote_addr: str) -> None:
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


def _register(
    trace: Trace,
    attempt: JoinAttempt,
    request: JoinRequest,
    token: TokenResource,
    document: IdentityDocument,
    roles: tuple[str, ...],
    now: datetime,
    started: float,
    signer: tuple[HostCA, dict[str, list[str]]],
    rejoin: RejoinGrant | None = None,
) -> JoinResult:
    """Issue the host's credentials with `signer` (the active CA and the public material of
    every CA), then record the host (inserted, or updated for a re-join) and the allowed attempt
    atomically, through the process's join writer (joins/writer.py).

    The certificates are signed before the write, outside any transaction: if the write fails
    they are simply never handed out.
    """
    node_name = request.node_name or document.host_id
    ca, material = signer
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
    ssh_serial = str(issued.ssh_serial or "")

    def credit(host: Host) -> None:
        host.tls_cert_serial = issued.tls_serial
        host.ssh_cert_serial = ssh_serial
        host.cert_expires = issued.not_after
        _allowed_attempt(trace, attempt, document, roles, node_name, issued, host, rejoin)
        host.last_attempt = attempt

    def record_rejoin() -> None:
        assert rejoin is not None
        host = claim_rejoin(trace, rejoin, request, document, roles, node_name, now)
        credit(host)
        attempt.duration_ms = round((time.monotonic() - started) * 1000, 2)
        attempt.save(force_insert=True)
        host.save(
            update_fields=["tls_cert_serial", "ssh_cert_serial", "cert_expires", "last_attempt"]
        )

    try:
        if rejoin is not None:
            writer.write(record_rejoin)
        else:
            host = Host(
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
            credit(host)
            writer.insert(attempt, host, started=started)
    except IntegrityError:
        # Another join of the same instance committed first: the unique host_id decided.
        attempt.pk = None
        if trace.checks and trace.checks[-1]["name"] == "issue":
            trace.checks.pop()
        raise trace.fail("not_joined", _already_joined(document)) from None
    metrics.record_join(OUTCOME_ALLOWED, metrics.OK, time.monotonic() - started)
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


def _allowed_attempt(
    trace: Trace,
    attempt: JoinAttempt,
    document: IdentityDocument,
    roles: tuple[str, ...],
    node_name: str,
    issued: IssuedCredentials,
    host: Host,
    rejoin: RejoinGrant | None,
) -> None:
    """Fill in the allowed attempt row (written with its host, in one transaction)."""
    trace.ok(
        "issue",
        f"issued X.509 serial {issued.tls_serial}"
        + (f" and SSH serial {issued.ssh_serial}" if issued.ssh_cert else "")
        + (f" (re-join; join {host.join_count} of this host)" if rejoin is not None else ""),
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
    attempt.checks = list(trace.checks)
    attempt.tls_cert_serial = issued.tls_serial
    attempt.ssh_cert_serial = str(issued.ssh_serial or "")


def _refuse(attempt: JoinAttempt, trace: Trace, exc: JoinRejected, started: float) -> JoinResult:
    status = ERROR_CODES.get(exc.code, (500, ""))[0]
    attempt.pk = None
    attempt.outcome = ERROR_OUTCOME.get(exc.code, "error")
    attempt.error = exc.code
    attempt.message = exc.message
    attempt.reason = exc.reason
    attempt.checks = trace.checks
    writer.insert(attempt, started=started)
    metrics.record_join(attempt.outcome, exc.code, time.monotonic() - started)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
    return JoinResult(
        status=status,
        body={"error": exc.code, "message": exc.message, "join_attempt_id": str(attempt.pk)},
        headers=headers,
        attempt=attempt,
    )


# A challenge request is one short JSON object; anything larger is not one.
