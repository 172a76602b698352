"""Process-wide singletons the join needs: AWS's certificates and the EC2 lookup client."""

from __future__ import annotations

import threading

from django.conf import settings

from joins.aws import Ec2Lookup
from joins.iid import CertificateStore

_lock = threading.Lock()
_store: tuple[str | None, CertificateStore] | None = None
_lookup: Ec2Lookup | None = None


def certificate_store() -> CertificateStore:
    """AWS's regional certificates: built-in ones plus `JOINADMIN_IID_CERTS_DIR`."""
    global _store
    wanted = settings.IID_CERTS_DIR
    with _lock:
        if _store is None or _store[0] != wanted:
            _store = (wanted, CertificateStore.load(wanted))
        return _store[1]


def ec2_lookup() -> Ec2Lookup:
    global _lookup
    with _lock:
        if _lookup is None:
            _lookup = Ec2Lookup()
        return _lookup


def reset() -> None:
    """Drop the cached store and AWS clients (tests; after changing certificates)."""
    global _store, _lookup
    with _lock:
        _store = None
        _lookup = None
