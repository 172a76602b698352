"""The re-join workflow: checking a registered host's proof of its key, claiming its row for the
new credentials, and issuing challenges (joins/rejoin.py holds the pure proof logic and its
threat model)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from joins import ratelimit
from joins.iid import IdentityDocument
from joins.models import Host
from joins.outcomes import JoinRejected, JoinResult, Trace
from joins.rejoin import (
    REJOIN_PROOF_INVALID,
    Challenge,
    RejoinError,
    challenge_key,
    describe_key,
    is_host_id,
    issue_challenge,
    load_registered_key,
    open_challenge,
    public_pem,
    rejoin_message,
    verify_signature,
)
from joins.request import JoinRequest, peek
from tokens.resource import TokenResource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RejoinGrant:
    """A re-join whose proof passed `check_rejoin`; `claim_rejoin` re-checks it under lock."""

    host_pk: int
    challenge: Challenge
    registered_key_pem: str


def check_rejoin(
    trace: Trace,
    request: JoinRequest,
    token: TokenResource,
    document: IdentityDocument,
    now: datetime,
) -> RejoinGrant | None:
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
    return RejoinGrant(host_pk=host.pk, challenge=challenge, registered_key_pem=host.tls_public_key)


def _replayed(document: IdentityDocument, recorded: datetime) -> JoinRejected:
    return JoinRejected(
        "iid_replayed",
        "the identity document is older than the one this host last joined with; send the "
        "instance's current document",
        f"pendingTime {document.pending_time.isoformat()} is older than the "
        f"{recorded.isoformat()} recorded at the host's last join: an old document replayed",
    )


def claim_rejoin(
    trace: Trace,
    rejoin: RejoinGrant,
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
