"""The cluster CA as stored in the database, loaded once per process.

Every app server signs with the same CA: the first server to need one creates it, the unique
"one active CA" constraint settles a race between servers, and the losers read the winner's row.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.x509 import load_pem_x509_certificate
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from joinadmin.rawsql import column, execute, table
from joins.ca import HostCA, decrypt_private_key, encrypt_private_key, generate_host_ca
from joins.models import CertificateAuthority

_lock = threading.Lock()
_cached: tuple[int, HostCA] | None = None
# The public material of every CA, with the `ca_version()` it was read for.
_material: tuple[tuple[Any, ...], dict[str, list[str]]] | None = None

TLS_PURPOSE = "joinadmin host CA / tls"
SSH_PURPOSE = "joinadmin host CA / ssh"


def _secret() -> str:
    """The key-encryption secret: a dedicated variable if set, else the Django secret key."""
    return os.environ.get("JOINADMIN_CA_KEY_SECRET") or settings.SECRET_KEY


def get_host_ca() -> HostCA:
    """The active CA, created on first use; cached for the life of the process."""
    global _cached
    row = CertificateAuthority.objects.filter(active=True).only("id").first()
    if row is not None and _cached is not None and _cached[0] == row.pk:
        return _cached[1]
    with _lock:
        row = _create_active_ca() if row is None else CertificateAuthority.objects.get(pk=row.pk)
        ca = HostCA(
            tls_key=decrypt_private_key(row.tls_key_encrypted, _secret(), TLS_PURPOSE),
            tls_cert=load_pem_x509_certificate(row.tls_cert_pem.encode()),
            ssh_key=decrypt_private_key(row.ssh_key_encrypted, _secret(), SSH_PURPOSE),
        )
        _cached = (row.pk, ca)
        return ca


def _create_active_ca() -> CertificateAuthority:
    ca = generate_host_ca(settings.CLUSTER_NAME, timezone.now())
    try:
        with transaction.atomic():
            return CertificateAuthority.objects.create(
                cluster_name=settings.CLUSTER_NAME,
                tls_cert_pem=ca.tls_cert_pem,
                tls_key_encrypted=encrypt_private_key(ca.tls_key, _secret(), TLS_PURPOSE),
                ssh_public_key=ca.ssh_public_key,
                ssh_key_encrypted=encrypt_private_key(ca.ssh_key, _secret(), SSH_PURPOSE),
                active=True,
            )
    except IntegrityError:
        # Another server created it between our read and our insert: use theirs.
        return CertificateAuthority.objects.get(active=True)


def signing_material(
    version: tuple[Any, ...] | None = None,
) -> tuple[HostCA, dict[str, list[str]]]:
    """The active CA and the public material of every CA (the join's hot path).

    A CA row never changes but for its `active` flag, and CA ids only grow (they are never
    given twice), so `ca_version()` names exactly what the material is: the process's copies of
    the keys and of the public material serve as long as it returns the same. `version`, when
    given, is `ca_version()` as the caller read it (joins/reads.py reads it with the join's
    other reads).
    """
    global _material
    if version is None:
        version = ca_version()
    active_id = version[0]
    cached = _cached
    if active_id is None or cached is None or cached[0] != active_id:
        get_host_ca()  # creates the CA on first use, or loads the new active one
        version = ca_version()
        cached = _cached
        assert cached is not None
    material = _material
    if material is None or material[0] != version:
        material = (version, public_ca_material())
        _material = material
    return cached[1], material[1]


def ca_version_sql() -> str:
    """Three scalar subqueries, the parts of `ca_version()`: the active CA's id, how many CAs
    there are and the newest one's id. As ids only grow, the count and the newest id change
    whenever a CA is added or deleted."""
    ca, key = table(CertificateAuthority), column(CertificateAuthority, "id")
    active = column(CertificateAuthority, "active")
    # Identifiers come from the model's meta and are quoted; there are no values.
    return (
        f"(SELECT max({key}) FROM {ca} WHERE {active}), "  # noqa: S608
        f"(SELECT count(*) FROM {ca}), (SELECT max({key}) FROM {ca})"
    )


def ca_version() -> tuple[Any, ...]:
    """(active CA id or None, number of CAs, newest CA id or None): see `signing_material`."""
    (row,) = execute(f"SELECT {ca_version_sql()}", [], fetch=True)
    return tuple(row)


def public_ca_material() -> dict[str, list[str]]:
    """The public halves of every CA that signed host credentials, newest first."""
    get_host_ca()
    rows = CertificateAuthority.objects.order_by("-id")
    return {
        "tls_ca_certs": [row.tls_cert_pem for row in rows],
        "ssh_ca_keys": [row.ssh_public_key.strip() for row in rows],
    }


def ssh_public_key_of(ca: HostCA) -> str:
    return (
        ca.ssh_key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def reset_cache() -> None:
    global _cached, _material
    with _lock:
        _cached = None
        _material = None
