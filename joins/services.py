"""The join workflow: `perform_join`.

`perform_join` runs the checks (`joins.checks`) in the contract's order, each failing with its
code; no AWS call happens before the document's signature is good. Every call writes exactly one
JoinAttempt row, through the process's join writer (joins/writer.py, which commits concurrent
joins together):
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
from joins.authority import signing_material
from joins.ca import HostCA, IssuedCredentials, issue_host_credentials
from joins.checks import (
    already_joined,
    check_conditions,
    check_document,
    check_host_id,
    check_instance,
    check_not_joined,
    check_pending_time,
    check_rate,
    check_request,
    check_roles,
    check_rules,
    check_token,
)
from joins.constants import ERROR_CODES, ERROR_OUTCOME, OUTCOME_ALLOWED
from joins.iid import IdentityDocument
from joins.models import Host, JoinAttempt
from joins.outcomes import JoinRejected, JoinResult, Trace
from joins.reads import read_for_join
from joins.rejoin import epoch_us, public_pem
from joins.rejoin_service import RejoinGrant, check_rejoin, claim_rejoin
from joins.request import NOT_JSON, JoinRequest, decode
from joins.rows import Factory
from joins.writer import writer
from tokens.resource import TokenResource

log = logging.getLogger(__name__)

# The join's two rows, made the quick way (joins/rows.py).
_new_attempt = Factory(JoinAttempt)
_new_host = Factory(Host)


def perform_join(
    body: bytes, *, remote_addr: str, user_agent: str = "", too_large: bool = False
) -> JoinResult:
    """Decide a join request, issue credentials when it passes, and record the attempt."""
    started = time.monotonic()
    now = timezone.now()
    trace = Trace()
    attempt = _new_attempt(time=now, remote_addr=remote_addr[:64], user_agent=user_agent[:300])
    data = decode(body) if not too_large else NOT_JSON
    _prefill(attempt, data if isinstance(data, dict) else {})
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
        check_rate(trace, "source", remote_addr, settings.JOIN_RATE_LIMIT)
        request = check_request(trace, body, data)
        check_rate(trace, "token", request.token, settings.JOIN_TOKEN_RATE_LIMIT)
        # The token, the claimed host and the CAs in one statement (joins/reads.py).
        reads = read_for_join(request.token, request.host_id)
        token = check_token(trace, request, now, attempt, reads)
        roles = check_roles(trace, request, token)
        attempt.roles = list(roles)
        document = check_document(trace, request, attempt)
        check_host_id(trace, request, document)
        # A registered host's proof of its key (joins/rejoin.py) replaces the TTL and not_joined.
        rejoin = check_rejoin(trace, request, token, document, now) if request.rejoin else None
        check_pending_time(trace, document, token, now, rejoin=rejoin)
        rule_index, rule = check_rules(trace, token, document)
        attempt.matched_rule = rule_index
        if rejoin is None:
            check_not_joined(trace, document, reads.registered(document.host_id))
        # The request thread's last read; from here on it only waits (for AWS, then for the join
        # writer, which has its own connection), so a pooled connection goes back now.
        signer = signing_material(reads.ca_version)
        dbpool.release()
        info = check_instance(trace, document, rule)
        check_conditions(trace, rule, info, remote_addr)
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
        crl_url=f"{settings.PUBLIC_URL}/api/v1/ca/crl" if settings.PUBLIC_URL else None,
    )

    def credit(host: Host) -> None:
        host.tls_cert_serial = issued.tls_serial
        host.ssh_cert_serial = str(issued.ssh_serial or "")
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
            host = _new_host(
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
        if trace.checks and trace.checks[-1]["name"] == "issue":
            trace.checks.pop()
        raise trace.fail("not_joined", already_joined(document)) from None
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
    # The serials its host holds from now on.
    attempt.tls_cert_serial = host.tls_cert_serial
    attempt.ssh_cert_serial = host.ssh_cert_serial


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
