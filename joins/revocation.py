"""Revoking host certificates and issuing the CRL that relying parties fetch.

`revoke_host` writes a `RevokedCertificate` for each X.509 certificate issued to a host that may
still be valid (noting its SSH serial), in the caller's transaction. `current_crl` returns the
signed list every server serves: the stored one while it is fresh, else a new one with the next
CRL number. A list is re-signed when a revocation was added, when the active CA changed, or once
it is an hour old, so that its nextUpdate (a day ahead) never comes close; relying parties that
cache it for the day still learn of a revocation within the hour they choose to re-fetch.

`current_krl` is the same list for SSH clients: the SSH serials of those certificates, in
OpenSSH's KRL format (`joins.krl`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Q, QuerySet
from django.utils import timezone

from joins.authority import get_host_ca
from joins.constants import OUTCOME_ALLOWED
from joins.crl import REASON_CESSATION, Revocation, build_crl, parse_serial
from joins.krl import MAX_SERIAL, build_krl, ca_key_blob
from joins.models import (
    CertificateAuthority,
    Host,
    JoinAttempt,
    RevocationList,
    RevokedCertificate,
)

log = logging.getLogger(__name__)

#: How long a CRL claims to be current (its nextUpdate).
CRL_VALIDITY = timedelta(days=1)
#: A stored list older than this is re-signed on the next request.
CRL_REISSUE_AFTER = timedelta(hours=1)
#: Issued lists kept in the database; older ones are deleted when a new one is written.
CRL_HISTORY = 100
#: Slack on certificate lifetimes estimated from attempt times (clock skew, slow issuance).
CLOCK_MARGIN = timedelta(hours=1)


def _serials_issued(host: Host, now: datetime) -> dict[str, tuple[datetime | None, str]]:
    """Every X.509 serial issued to the host that may still be valid: its current one and
    those of its allowed join attempts (re-joins issue new certificates) within a certificate
    lifetime, each with an upper bound of its expiry and its SSH serial."""
    lifetime = timedelta(hours=settings.HOST_CERT_TTL_HOURS)
    serials: dict[str, tuple[datetime | None, str]] = {}
    for serial, ssh_serial, issued_at in (
        JoinAttempt.objects.filter(
            host_id=host.host_id, outcome=OUTCOME_ALLOWED, time__gte=now - lifetime - CLOCK_MARGIN
        )
        .exclude(tls_cert_serial="")
        .values_list("tls_cert_serial", "ssh_cert_serial", "time")
    ):
        serials[serial.lower()] = (issued_at + lifetime + CLOCK_MARGIN, ssh_serial)
    if host.tls_cert_serial:
        serials[host.tls_cert_serial.lower()] = (host.cert_expires, host.ssh_cert_serial)
    return serials


def revoke_host(host: Host, *, reason: str, now: datetime) -> int:
    """Revoke every certificate issued to the host that may still be valid; how many were new.

    Call inside the transaction that retires the host. A serial already revoked keeps its first
    revocation date: relying parties may have seen it. The host row is updated in memory
    (`revoked_at`, `revocation_reason`) and saved by the caller.
    """
    created = 0
    for serial, (not_after, ssh_serial) in _serials_issued(host, now).items():
        try:
            parse_serial(serial)
        except ValueError:
            log.error(
                "host %s has an unreadable certificate serial %r; not revocable",
                host.host_id,
                serial,
            )
            continue
        _, new = RevokedCertificate.objects.get_or_create(
            serial=serial,
            defaults={
                "host_id": host.host_id,
                "ssh_serial": ssh_serial or "",
                "revoked_at": now,
                "reason": reason[:200],
                "not_after": not_after,
            },
        )
        created += int(new)
    if created or RevokedCertificate.objects.filter(host_id=host.host_id).exists():
        host.revoked_at = host.revoked_at or now
        host.revocation_reason = host.revocation_reason or reason[:200]
    return created


@dataclass(frozen=True)
class _Covered:
    """What a list must cover: the active CA and the state of the revocation table."""

    ca_id: int
    last_revocation_id: int
    revocation_count: int


def _covered() -> _Covered:
    get_host_ca()  # creates the CA on first use, as the join would
    ca_id = CertificateAuthority.objects.filter(active=True).values_list("id", flat=True).get()
    totals = RevokedCertificate.objects.aggregate(last=Max("id"), count=Count("id"))
    return _Covered(ca_id, totals["last"] or 0, totals["count"] or 0)


def _is_current(crl: RevocationList | None, covered: _Covered, now: datetime) -> bool:
    return (
        crl is not None
        and crl.ca_id == covered.ca_id
        and crl.last_revocation_id == covered.last_revocation_id
        and crl.revocation_count == covered.revocation_count
        and now - crl.this_update < CRL_REISSUE_AFTER
        and crl.this_update <= now
    )


def _unexpired(at: datetime) -> QuerySet[RevokedCertificate]:
    """The revocations whose certificate may still be valid at `at` (the lists leave out the
    others: an expired certificate is refused anyway, RFC 5280 section 3.3)."""
    return RevokedCertificate.objects.filter(Q(not_after__isnull=True) | Q(not_after__gt=at))


def current_crl(now: datetime | None = None) -> RevocationList:
    """The CRL to serve: the stored one if current, else a newly signed one (see module doc).

    Two servers that re-sign at once both try the next number; the unique `number` lets one
    insert win and the other serves the winner's list, so numbers only ever grow.
    """
    now = now or timezone.now()
    covered = _covered()
    latest = RevocationList.objects.order_by("-number").first()
    if _is_current(latest, covered, now):
        assert latest is not None
        return latest
    ca = get_host_ca()
    this_update = now.replace(microsecond=0)
    entries = [
        Revocation(serial=parse_serial(serial), revoked_at=revoked_at, reason=REASON_CESSATION)
        for serial, revoked_at in _unexpired(this_update).values_list("serial", "revoked_at")
    ]
    number = (latest.number + 1) if latest else 1
    crl = build_crl(
        issuer_certificate=ca.tls_cert,
        issuer_key=ca.tls_key,
        revocations=entries,
        number=number,
        this_update=this_update,
        next_update=this_update + CRL_VALIDITY,
    )
    try:
        with transaction.atomic():
            issued = RevocationList.objects.create(
                number=number,
                ca_id=covered.ca_id,
                this_update=this_update,
                next_update=this_update + CRL_VALIDITY,
                last_revocation_id=covered.last_revocation_id,
                revocation_count=covered.revocation_count,
                entries=len(entries),
                der=crl.public_bytes(serialization.Encoding.DER),
            )
            RevocationList.objects.filter(number__lte=number - CRL_HISTORY).delete()
    except IntegrityError:
        # Another server signed list `number` first: serve theirs.
        winner = RevocationList.objects.order_by("-number").first()
        if winner is None:
            raise
        return winner
    return issued


def current_krl(now: datetime | None = None) -> bytes:
    """The OpenSSH KRL of the SSH host certificates revoked with their X.509 certificates.

    Built on request from the revocations, like the CRL without the certificates that expired:
    every server builds the same bytes from the same rows. Its version is the newest
    revocation's id and its date the latest revocation date, over every revocation (expired
    ones included), so they only grow. An SSH serial is listed under every CA's key: the join
    does not record which CA signed a certificate, and serials are 64 random bits, so a serial
    of one CA that another also issued is not a real risk.
    """
    now = now or timezone.now()
    get_host_ca()  # creates the CA on first use, as the join would
    serials: set[int] = set()
    for ssh_serial in _unexpired(now).exclude(ssh_serial="").values_list("ssh_serial", flat=True):
        try:
            serial = int(ssh_serial)
        except ValueError:
            serial = 0
        if not 0 < serial <= MAX_SERIAL:
            log.error("revoked SSH serial %r is not a 64-bit serial; not in the KRL", ssh_serial)
            continue
        serials.add(serial)
    newest = RevokedCertificate.objects.aggregate(id=Max("id"), at=Max("revoked_at"))
    sections = [
        (ca_key_blob(line), serials)
        for line in CertificateAuthority.objects.order_by("id").values_list(
            "ssh_public_key", flat=True
        )
    ]
    return build_krl(
        sections,
        version=newest["id"] or 0,
        generated=newest["at"] or datetime.fromtimestamp(0, tz=now.tzinfo),
        comment=f"joinadmin {settings.CLUSTER_NAME} host CA",
    )
