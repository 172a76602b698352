"""Join attempts (the audit trail), registered hosts and the cluster's certificate authority."""

from __future__ import annotations

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
    last_attempt = models.ForeignKey(
        JoinAttempt, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-last_joined_at", "-id"]

    def __str__(self) -> str:
        return self.host_id


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
