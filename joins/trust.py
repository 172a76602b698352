"""Process-wide singletons the join needs: AWS's certificates and the EC2 lookups.

`certificate_store()` is AWS's regional certificates (`joins.trusted_certs`: built-in, the
directory, the database). Certificates added in the console are shared through the database, so
the store is keyed on the database layer's version, which each process re-reads at most every
`JOINADMIN_IID_CERTS_REFRESH_SECONDS`: a change made on one server reaches every other within
that time, without a restart and without a query per join.

`ec2_lookup()` is the boto3 client holder (clients and assumed-role sessions, one per process);
`instance_lookup()` is what a join asks: the coalescing lookup in front of it (or the direct one
when `JOINADMIN_AWS_COALESCE=false`), with Django's cache as the shared store of recent
`running` confirmations. Both are rebuilt in a forked child, whose copies of the parent's
threads do not run.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping

from django.conf import settings
from django.core.cache import caches

from joins.aws import Ec2Lookup, InstanceInfo
from joins.coalesce import CoalescingLookup, DirectLookup, InstanceLookup
from joins.iid import CertificateStore
from joins.trusted_certs import database_version, load_store

_lock = threading.Lock()
_store: tuple[tuple[str | None, object], CertificateStore] | None = None
# (monotonic time of the last check, the database layer's version then)
_db_version: tuple[float, object] | None = None
_lookup: Ec2Lookup | None = None
_instances: tuple[int, InstanceLookup] | None = None


def _database_version() -> object:
    """The database layer's version, re-read when the last read is older than the refresh."""
    global _db_version
    checked = _db_version
    now = time.monotonic()
    if checked is not None and now - checked[0] < settings.IID_CERTS_REFRESH_SECONDS:
        return checked[1]
    version = database_version()
    _db_version = (now, version)
    return version


def certificate_store() -> CertificateStore:
    """AWS's regional certificates: the database's over `JOINADMIN_IID_CERTS_DIR`'s over the
    built-in ones (see the module doc for how changes are picked up)."""
    global _store
    wanted = (settings.IID_CERTS_DIR, _database_version())
    with _lock:
        if _store is None or _store[0] != wanted:
            _store = (wanted, load_store(wanted[0]))
        return _store[1]


def invalidate_certificates() -> None:
    """Re-read the database layer on the next verification (after a change on this server)."""
    global _db_version
    _db_version = None


def ec2_lookup() -> Ec2Lookup:
    """The process's boto3 clients and cached assumed-role sessions."""
    global _lookup
    with _lock:
        if _lookup is None:
            _lookup = Ec2Lookup()
        return _lookup


def _describe_batch(
    region: str, role_arn: str, instance_ids: list[str], deadline: float
) -> Mapping[str, InstanceInfo]:
    """One DescribeInstances call for the lookups, through the current `ec2_lookup()`."""
    return ec2_lookup().describe(
        region=region,
        instance_ids=instance_ids,
        role_arn=role_arn,
        deadline=deadline,
        report_not_found=True,
    )


class _StateCache:
    """Django's default cache (Redis when `JOINADMIN_CACHE_URL` is set) as the lookups'
    `StateCache`, looked up on each use because Django keeps one cache client per thread."""

    def get(self, key: str) -> object:
        return caches["default"].get(key)

    def set_many(self, data: Mapping[str, str], timeout: int) -> object:
        return caches["default"].set_many(dict(data), timeout)


def _build_instance_lookup() -> InstanceLookup:
    cache = _StateCache()
    seconds = settings.AWS_STATE_CACHE_SECONDS
    if settings.AWS_COALESCE:
        return CoalescingLookup(
            _describe_batch,
            window=settings.AWS_COALESCE_WINDOW_MS / 1000,
            interval=settings.AWS_COALESCE_INTERVAL_MS / 1000,
            burst=settings.AWS_COALESCE_BURST,
            stall=settings.AWS_COALESCE_STALL_MS / 1000,
            max_calls_in_flight=settings.AWS_MAX_CALLS_IN_FLIGHT,
            cache=cache,
            cache_seconds=seconds,
        )
    return DirectLookup(_describe_batch, cache=cache, cache_seconds=seconds)


def instance_lookup() -> InstanceLookup:
    """The lookup a join asks whether its instance runs (see the module doc)."""
    global _instances
    with _lock:
        if _instances is None or _instances[0] != os.getpid():
            _instances = (os.getpid(), _build_instance_lookup())
        return _instances[1]


def reset() -> None:
    """Drop the cached store and AWS clients (tests; after changing certificates)."""
    global _store, _lookup, _instances, _db_version
    with _lock:
        old = _instances
        _store = None
        _db_version = None
        _lookup = None
        _instances = None
    if old is not None and old[0] == os.getpid():
        old[1].close()
