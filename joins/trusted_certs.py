"""AWS's regional certificates in three layers, and the admin workflow that changes the top one.

A region's certificate comes from, in order of precedence:
1. the database (`TrustedCertificate`, added in the console, shared by every server);
2. `JOINADMIN_IID_CERTS_DIR/<region>.pem` (per server, from its configuration);
3. the built-in copies of AWS's published certificates shipped with the package.

`load_store` builds the verifier's `CertificateStore` from all three; `joins.trust` caches it and
re-reads the database layer when `database_version()` changes. A database row that no longer
loads (edited by hand) takes its region out of the store rather than letting a lower layer
speak for it: the admin replaced that certificate on purpose, so falling back could trust one
that was replaced because it must no longer be trusted. Every change is recorded in the admin
log with the fingerprints before and after, in the transaction of the change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max
from django.utils import timezone

from audit.services import record_action
from joins.cert_inspect import (
    EXPIRY_WARNING_DAYS,
    STATUS_OK,
    CertificateFacts,
    CertificateRejected,
    describe,
    expiry_status,
    parse_region_certificate,
    pem_of,
)
from joins.iid import BUILT_IN, CertificateStore
from joins.models import TrustedCertificate

log = logging.getLogger(__name__)

SOURCE_DATABASE = "database"
SOURCE_DIRECTORY = "directory"
SOURCE_BUILT_IN = BUILT_IN
SOURCE_LABELS = {
    SOURCE_DATABASE: "Added in the console",
    SOURCE_DIRECTORY: "JOINADMIN_IID_CERTS_DIR",
    SOURCE_BUILT_IN: "Built in",
}
#: Layers from the highest precedence down.
PRECEDENCE = (SOURCE_DATABASE, SOURCE_DIRECTORY, SOURCE_BUILT_IN)


@dataclass(frozen=True)
class CertificateEntry:
    """One certificate of one layer for one region, with its facts."""

    region: str
    source: str
    origin: str
    certificate: x509.Certificate | None
    facts: CertificateFacts | None
    problem: str = ""

    @property
    def source_label(self) -> str:
        return SOURCE_LABELS.get(self.source, self.source)

    def status(self, now: datetime) -> str:
        if self.facts is None:
            return "invalid"
        return self.facts.expiry_status(now)

    @property
    def pem(self) -> str:
        return pem_of(self.certificate) if self.certificate is not None else ""


@dataclass
class RegionCertificates:
    """A region's layers, highest precedence first; `effective` is what joins verify with."""

    region: str
    layers: list[CertificateEntry] = field(default_factory=list)

    @property
    def effective(self) -> CertificateEntry | None:
        """The top layer, or None when that layer is an unusable database row (fail closed)."""
        if not self.layers:
            return None
        top = self.layers[0]
        return top if top.certificate is not None else None

    @property
    def top(self) -> CertificateEntry:
        return self.layers[0]

    @property
    def shadowed(self) -> list[CertificateEntry]:
        return self.layers[1:]


def database_version() -> tuple[int, int, str]:
    """A value that changes whenever a database certificate is added, replaced or removed."""
    totals = TrustedCertificate.objects.aggregate(
        count=Count("id"), last=Max("id"), changed=Max("added_at")
    )
    changed = totals["changed"]
    return (totals["count"] or 0, totals["last"] or 0, changed.isoformat() if changed else "")


def _database_rows() -> list[tuple[str, x509.Certificate | None, str, str]]:
    """(region, certificate or None, origin, problem) of every database row."""
    rows = []
    for row in TrustedCertificate.objects.order_by("region"):
        origin = f"added by {row.added_by_name or 'unknown'} at {row.added_at:%Y-%m-%d %H:%M} UTC"
        try:
            # No expiry check: a row that expired since it was added stays as it was (the
            # verifier itself refuses documents signed outside the certificate's validity).
            certificate = parse_region_certificate(row.region, row.pem, None)
        except CertificateRejected as exc:
            log.error("trusted certificate for %s in the database is unusable: %s", row.region, exc)
            rows.append((row.region, None, origin, str(exc)))
            continue
        rows.append((row.region, certificate, origin, ""))
    return rows


def load_store(directory: str | None) -> CertificateStore:
    """The verifier's store: built-in, then the directory, then the database on top.

    Raises ValueError when the directory holds an unreadable file (as `CertificateStore.load`).
    """
    base = CertificateStore.load(directory)
    entries = list(base.items())
    broken: set[str] = set()
    for region, certificate, _, _ in _database_rows():
        if certificate is None:
            broken.add(region)
            continue
        entries.append((region, certificate, SOURCE_DATABASE))
    return CertificateStore(entry for entry in entries if entry[0] not in broken)


def regions(directory: str | None) -> list[RegionCertificates]:
    """Every region of any layer, sorted, with its layers (highest precedence first).

    Raises ValueError for an unreadable directory file, as the verifier would.
    """
    found: dict[str, RegionCertificates] = {}

    def add(region: str, entry: CertificateEntry) -> None:
        found.setdefault(region, RegionCertificates(region)).layers.append(entry)

    for region, certificate, origin, problem in _database_rows():
        add(
            region,
            CertificateEntry(
                region,
                SOURCE_DATABASE,
                origin,
                certificate,
                describe(certificate) if certificate else None,
                problem,
            ),
        )
    directory_store = CertificateStore.load(directory)
    for region, certificate, source in directory_store.items():
        if source != BUILT_IN:
            add(
                region,
                CertificateEntry(
                    region, SOURCE_DIRECTORY, source, certificate, describe(certificate)
                ),
            )
    for region, certificate, _ in CertificateStore.load(None).items():
        add(
            region,
            CertificateEntry(
                region,
                SOURCE_BUILT_IN,
                "shipped with joinadmin",
                certificate,
                describe(certificate),
            ),
        )
    return [found[name] for name in sorted(found)]


def region_certificates(region: str) -> RegionCertificates | None:
    """The layers of one region, or None when no layer has it."""
    for item in regions(settings.IID_CERTS_DIR):
        if item.region == region:
            return item
    return None


def attention_needed(
    store: CertificateStore, now: datetime, warn_days: int = EXPIRY_WARNING_DAYS
) -> list[tuple[str, str, datetime]]:
    """(region, status, not_after) of every certificate joins use that has expired or expires
    within `warn_days`, soonest first: what the dashboard banner lists."""
    out = []
    for region in store.regions():
        trusted = store.trusted(region)
        if trusted is None:
            continue
        status = expiry_status(trusted.not_after, now, warn_days)
        if status != STATUS_OK:
            out.append((region, status, trusted.not_after))
    return sorted(out, key=lambda item: item[2])


# --- changes ----------------------------------------------------------------------------------


class CertificateChangeRefused(Exception):
    """A change that must not be applied as asked; `message` says why in plain words."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class CertificateChange:
    """A validated certificate for a region and what it would replace (shown for confirmation)."""

    region: str
    certificate: x509.Certificate
    facts: CertificateFacts
    current: CertificateEntry | None

    @property
    def replaces(self) -> bool:
        return self.current is not None


def _summary(entry: CertificateEntry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    facts = entry.facts
    return {
        "source": entry.source,
        "origin": entry.origin,
        "fingerprint_sha256": facts.fingerprint if facts else None,
        "serial": facts.serial if facts else None,
        "not_after": facts.not_after.isoformat() if facts else None,
        "problem": entry.problem or None,
    }


def plan_change(region: str, pem: str | bytes, now: datetime | None = None) -> CertificateChange:
    """Validate a certificate offered for `region` and find what it would replace.

    Raises CertificateRejected (the certificate itself) or CertificateChangeRefused (it is
    already the one trusted for the region). Writes nothing.
    """
    now = now or timezone.now()
    region = (region or "").strip()
    certificate = parse_region_certificate(region, pem, now)
    facts = describe(certificate)
    layers = region_certificates(region)
    current = layers.top if layers else None
    if (
        current is not None
        and current.facts is not None
        and (current.facts.fingerprint == facts.fingerprint)
    ):
        raise CertificateChangeRefused(
            f"This certificate ({facts.fingerprint[:23]}...) is already the one trusted for "
            f"{region} ({current.source_label.lower()}); nothing to change."
        )
    return CertificateChange(region, certificate, facts, current)


def invalidate() -> None:
    """Make this process re-read the database layer on its next verification."""
    from joins import trust

    trust.invalidate_certificates()


def apply_change(
    change: CertificateChange,
    *,
    actor: Any,
    reason: str,
    via: str = "console",
    remote_addr: str = "",
) -> TrustedCertificate:
    """Store the certificate as the region's database layer, recorded in the admin log.

    `reason` is required: trusting a certificate decides which documents prove an instance.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("a reason is required to change a trusted certificate")
    now = timezone.now()
    is_user = actor is not None and getattr(actor, "is_authenticated", False)
    with transaction.atomic():
        row = TrustedCertificate.objects.select_for_update().filter(region=change.region).first()
        # Re-read what is trusted inside the transaction: the confirmation page may be stale.
        layers = region_certificates(change.region)
        current = layers.top if layers else None
        replaced = (
            f"{current.source} {current.facts.fingerprint}"
            if current and current.facts
            else (f"{current.source} (unusable)" if current else "")
        )
        if row is None:
            row = TrustedCertificate(region=change.region)
        row.pem = pem_of(change.certificate)
        row.added_by = actor if is_user else None
        row.added_by_name = actor.get_username() if is_user else str(actor or "system")
        row.added_at = now
        row.replaced = replaced[:300]
        row.save()
        record_action(
            actor=actor,
            action="iid_cert.replace" if current else "iid_cert.add",
            object_type="trusted_certificate",
            object_id=change.region,
            before=_summary(current),
            after={
                "source": SOURCE_DATABASE,
                "fingerprint_sha256": change.facts.fingerprint,
                "serial": change.facts.serial,
                "subject": change.facts.subject,
                "not_after": change.facts.not_after.isoformat(),
            },
            reason=reason,
            via=via,
            remote_addr=remote_addr,
        )
    invalidate()
    return row


def remove_certificate(
    region: str, *, actor: Any, reason: str, via: str = "console", remote_addr: str = ""
) -> CertificateEntry | None:
    """Delete the region's database certificate; the directory or built-in one (returned, or
    None when there is none and the region can no longer join) takes over. Recorded.

    Raises CertificateChangeRefused when the region has no database certificate.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("a reason is required to remove a trusted certificate")
    with transaction.atomic():
        row = TrustedCertificate.objects.select_for_update().filter(region=region).first()
        if row is None:
            raise CertificateChangeRefused(f"No certificate for {region} was added in the console.")
        layers = region_certificates(region)
        current = layers.top if layers else None
        following = layers.shadowed[0] if layers and layers.shadowed else None
        row.delete()
        record_action(
            actor=actor,
            action="iid_cert.remove",
            object_type="trusted_certificate",
            object_id=region,
            before=_summary(current),
            after=_summary(following),
            reason=reason,
            via=via,
            remote_addr=remote_addr,
        )
    invalidate()
    return following
