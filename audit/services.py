"""Recording administrative actions, the seal signing key, and what the console shows of seals.

The seal workflows themselves (seal, verify, prune) are in `audit.sealing`; this module holds the
small reads the console needs and the key that both sides use, so that neither imports the other.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.db.models import Max, Min, Q
from django.utils import timezone

from audit.digests import derive_signing_key, fingerprint, public_key_text, signature_valid
from audit.models import AdminAction, Seal, SealVerification

_key_lock = threading.Lock()
_key_cache: dict[str, Ed25519PrivateKey] = {}


def record_action(
    *,
    actor: Any,
    action: str,
    object_type: str,
    object_id: str,
    before: Any = None,
    after: Any = None,
    reason: str = "",
    remote_addr: str = "",
    via: str = "console",
) -> AdminAction:
    """Append one row to the admin action log. Call inside the transaction of the change itself,
    so that a change and its record commit or roll back together."""
    is_user = actor is not None and getattr(actor, "is_authenticated", False)
    return AdminAction.objects.create(
        time=timezone.now(),
        actor=actor if is_user else None,
        actor_name=actor.get_username() if is_user else (str(actor) if actor else "system"),
        action=action,
        object_type=object_type,
        object_id=object_id,
        before=before,
        after=after,
        reason=reason,
        remote_addr=remote_addr,
        via=via,
    )


def seal_secret() -> str:
    """The secret the seal key derives from: a dedicated variable if set, else the Django key.

    A dedicated secret lets the seal key outlive a rotation of the Django secret key (which would
    otherwise make every earlier seal look signed by a stranger).
    """
    return os.environ.get("JOINADMIN_SEAL_KEY_SECRET") or settings.SECRET_KEY


def signing_key() -> Ed25519PrivateKey:
    """The Ed25519 key that signs seals, derived from `seal_secret()` (same on every server).

    Raises audit.digests.SealFormatError when the secret is too short to be trusted.
    """
    secret = seal_secret()
    with _key_lock:
        key = _key_cache.get(secret)
        if key is None:
            key = derive_signing_key(secret)
            _key_cache.clear()
            _key_cache[secret] = key
        return key


def seal_public_key() -> str:
    """This server's seal public key (raw, base64): what seals it writes carry."""
    return public_key_text(signing_key())


def seal_key_fingerprint() -> str:
    """`SHA256:...` of the seal public key, for the console and for auditors to write down."""
    return fingerprint(seal_public_key())


def trusted_seal_keys(extra: Iterable[str] = ()) -> set[str]:
    """The public keys whose signatures verification accepts: ours, and any given explicitly
    (e.g. the key of a secret that was rotated away). Keys stored in seal rows are never trusted
    on their own word: anyone able to edit the rows could put their own key there."""
    return {seal_public_key(), *(key.strip() for key in extra if key.strip())}


def latest_seal(stream: str | None = None) -> Seal | None:
    """The newest seal (of one stream, or of any), without its per-row hashes."""
    seals = Seal.objects.light()
    if stream is not None:
        return seals.filter(stream=stream).order_by("-seq").first()
    return seals.order_by("-created_at", "-id").first()


def latest_verification() -> SealVerification | None:
    """The newest recorded `audit verify` run, if any."""
    return SealVerification.objects.order_by("-finished_at", "-id").first()


def verification_is_authentic(verification: SealVerification) -> bool:
    """Whether a verification row was written by a holder of the seal key and not edited since.

    The console should show a result whose row fails this as untrustworthy, not as "ok".
    """
    return verification.public_key in trusted_seal_keys() and signature_valid(
        verification.public_key, verification.statement(), verification.signature
    )


def sealed_id_floor(stream: str, since: datetime, *, using: str = "default") -> int | None:
    """The lowest id at which a row of `stream` with `time >= since` can be, as seals tell.

    Each seal states the earliest and latest row time of its id range (signed, and checked by
    `audit verify`), so a sealed range whose latest row is older than `since` holds no such row.
    That makes the seals an exact time-to-id map for the history's time filters: a filter on a
    time column alone cannot use the id order the history pages by. Rows after the last seal
    are not summarised, so the floor never passes them. A sealed row whose time was altered
    afterwards may fall outside the bound; `audit verify` reports that row. None when nothing
    is sealed.
    """
    found = (
        Seal.objects.using(using)
        .filter(stream=stream)
        .aggregate(head=Max("last_id"), floor=Min("first_id", filter=Q(last_time__gte=since)))
    )
    if found["head"] is None:
        return None
    return found["floor"] if found["floor"] is not None else found["head"] + 1


def sealed_id_ceiling(
    stream: str, until: datetime, *, using: str = "default"
) -> tuple[int | None, int] | None:
    """(the highest sealed id that can hold a row with `time < until`, the last sealed id).

    The first is None when no sealed range holds such a row. Rows after the last sealed id are
    not covered: the caller checks them (see `sealed_id_floor` for why this is exact). None when
    nothing is sealed.
    """
    found = (
        Seal.objects.using(using)
        .filter(stream=stream)
        .aggregate(head=Max("last_id"), ceiling=Max("last_id", filter=Q(first_time__lt=until)))
    )
    if found["head"] is None:
        return None
    return found["ceiling"], found["head"]
