"""Join attempts (the audit trail), registered hosts and the cluster's certificate authority."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from joins.constants import OUTCOMES


class JoinAttempt(models.Model):
    """One row per request to the join endpoint, whatever happened to it.

    Written outside the join's transaction so that a refusal is recorded even when the
    registration rolled back. `message` is what the agent was told; `reason` is the exact cause
    for the auditor (e.g. which expiry date, which rule).
    """

    time = models.DateTimeField()
    token = models.CharField(max_length=200, blank=True, default="")
    join_method = models.CharField(max_length=32, blank=True, default="")
    remote_addr = models.CharField(max_length=64, blank=True, default="")
    user_agent = models.CharField(max_length=300, blank=True, default="")
    requested_host_id = models.CharField(max_length=200, blank=True, default="")
    host_id = models.CharField(max_length=64, blank=True, default="")
    account_id = models.CharField(max_length=12, blank=True, default="")
    region = models.CharField(max_length=32, blank=True, default="")
    instance_id = models.CharField(max_length=32, blank=True, default="")
    pending_time = models.DateTimeField(null=True, blank=True)
    roles = models.JSONField(default=list, blank=True)
    node_name = models.CharField(max_length=253, blank=True, default="")
    outcome = models.CharField(max_length=8, choices=[(o, o) for o in OUTCOMES])
    error = models.CharField(max_length=40, blank=True, default="")
    message = models.TextField(blank=True, default="")
    reason = models.TextField(blank=True, default="")
    checks = models.JSONField(default=list, blank=True)
    duration_ms = models.FloatField(default=0)
    token_snapshot = models.JSONField(null=True, blank=True)
    document = models.JSONField(null=True, blank=True)
    matched_rule = models.IntegerField(null=True, blank=True)
    tls_cert_serial = models.CharField(max_length=64, blank=True, default="")
    ssh_cert_serial = models.CharField(max_length=32, blank=True, default="")

    class Meta:
        ordering = ["-id"]
        # Every list filter is "<column> = ?, newest first": an index on (column, id) serves it
        # with a range scan and keyset pagination, without counting or sorting the table.
        indexes = [
            models.Index(fields=["time", "id"], name="attempt_time_id"),
            models.Index(fields=["token", "id"], name="attempt_token_id"),
            models.Index(fields=["outcome", "id"], name="attempt_outcome_id"),
            models.Index(fields=["error", "id"], name="attempt_error_id"),
            models.Index(fields=["account_id", "id"], name="attempt_account_id"),
            models.Index(fields=["region", "id"], name="attempt_region_id"),
            models.Index(fields=["host_id", "id"], name="attempt_host_id"),
            models.Index(fields=["instance_id", "id"], name="attempt_instance_id"),
            models.Index(fields=["remote_addr", "id"], name="attempt_remote_addr_id"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.outcome} {self.error or ''} {self.host_id or self.token}".strip()


class Host(models.Model):
    """A registered host: an instance that joined and holds credentials.

    The unique `host_id` is what makes registration atomic: of many concurrent joins of one
    instance, exactly one insert wins, on SQLite and PostgreSQL alike.
    """

    host_id = models.CharField(max_length=64, unique=True)
    account_id = models.CharField(max_length=12, db_index=True)
    region = models.CharField(max_length=32, db_index=True)
    instance_id = models.CharField(max_length=32, db_index=True)
    node_name = models.CharField(max_length=253, blank=True, default="")
    roles = models.JSONField(default=list)
    token = models.CharField(max_length=200, db_index=True)
    first_joined_at = models.DateTimeField()
    last_joined_at = models.DateTimeField()
    join_count = models.PositiveIntegerField(default=1)
    tls_cert_serial = models.CharField(max_length=64, blank=True, default="")
    ssh_cert_serial = models.CharField(max_length=32, blank=True, default="")
    cert_expires = models.DateTimeField(null=True, blank=True)
    # Re-join (joins/rejoin.py): the TLS key the last certificate was issued for, whose holder
    # may re-join; the pendingTime of the document of the last (re-)join, below which a document
    # is a replay; and the issue time (microseconds since the epoch) of the challenge that allowed
    # the last re-join, which only a later challenge passes (each challenge is single use).
    tls_public_key = models.TextField(blank=True, default="")
    pending_time = models.DateTimeField(null=True, blank=True)
    rejoin_challenge_us = models.BigIntegerField(default=0)
    last_attempt = models.ForeignKey(
        JoinAttempt, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # What `hosts reconcile` last learnt from DescribeInstances (`running`, `stopped`,
    # `terminated`, ... or `not-found`); empty until the first reconcile (joins/lifecycle.py).
    aws_state = models.CharField(max_length=32, blank=True, default="")
    aws_state_checked_at = models.DateTimeField(null=True, blank=True)
    # A retired host's instance is gone (terminated or unknown to AWS). The row stays: it keeps
    # the instance from joining again (AWS never reuses an instance id) and keeps the record.
    retired_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revocation_reason = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["-last_joined_at", "-id"]
        indexes = [
            # reconcile walks the hosts still in service, by region.
            models.Index(fields=["retired_at", "region", "id"], name="host_retired_region_id"),
        ]

    def __str__(self) -> str:
        return self.host_id

    @property
    def is_retired(self) -> bool:
        return self.retired_at is not None


class CertificateAuthority(models.Model):
    """The cluster's host CAs, shared by every app server through the database.

    Private keys are stored encrypted with a key derived from the settings' secret; the row
    with `active=True` signs new credentials.
    """

    cluster_name = models.CharField(max_length=100)
    tls_cert_pem = models.TextField()
    tls_key_encrypted = models.TextField()
    ssh_public_key = models.TextField()
    ssh_key_encrypted = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["active"], condition=models.Q(active=True), name="one_active_ca"
            )
        ]

    def __str__(self) -> str:
        return f"{self.cluster_name} CA #{self.pk}"


class RevokedCertificate(models.Model):
    """An X.509 host certificate the CA no longer vouches for; the CRL lists these.

    Kept apart from `Host` so that forgetting a host never takes its certificate off the CRL.
    `serial` is the lower-case hex the join records (`Host.tls_cert_serial`); `not_after` lets
    the CRL leave out entries whose certificate has expired anyway (RFC 5280, 3.3).
    """

    serial = models.CharField(max_length=64, unique=True)
    host_id = models.CharField(max_length=64, db_index=True)
    ssh_serial = models.CharField(max_length=32, blank=True, default="")
    revoked_at = models.DateTimeField()
    reason = models.CharField(max_length=200)
    not_after = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-revoked_at", "-id"]

    def __str__(self) -> str:
        return f"{self.serial} ({self.host_id})"


class RevocationList(models.Model):
    """A signed CRL as issued, so that every server serves the same bytes and the CRL number
    only grows: the unique `number` makes two servers that issue at once agree on a winner."""

    number = models.PositiveBigIntegerField(unique=True)
    ca = models.ForeignKey(CertificateAuthority, on_delete=models.CASCADE, related_name="+")
    this_update = models.DateTimeField()
    next_update = models.DateTimeField()
    # The newest RevokedCertificate id and the number of such rows when the list was signed:
    # a change of either (a new row, or one committed late with a lower id) means a new list.
    last_revocation_id = models.BigIntegerField(default=0)
    revocation_count = models.BigIntegerField(default=0)
    entries = models.PositiveIntegerField(default=0)
    der = models.BinaryField()

    class Meta:
        ordering = ["-number"]

    def __str__(self) -> str:
        return f"CRL #{self.number}"


class TrustedCertificate(models.Model):
    """AWS's signing certificate for one region, added by an admin in the console.

    It takes precedence over `JOINADMIN_IID_CERTS_DIR` and the built-in certificates, and every
    server reads it from here (joins/trust.py), so one change reaches all of them. `replaced`
    says what the region trusted before this row was written (source and SHA-256 fingerprint).
    """

    region = models.CharField(max_length=40, unique=True)
    pem = models.TextField()
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    added_by_name = models.CharField(max_length=150, blank=True, default="")
    added_at = models.DateTimeField()
    replaced = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        ordering = ["region"]

    def __str__(self) -> str:
        return f"{self.region} (added by {self.added_by_name or 'unknown'})"
