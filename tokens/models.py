"""The stored EC2 join token.

The row mirrors the Teleport `kind: token` resource field for field, so that an export of a row is
the resource that was imported. Validation lives in the pure `tokens.resource` module; the row is
only ever written from a validated `TokenResource` (see `tokens.services`).
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from tokens.resource import AllowRule, Labels, TokenResource


class TokenQuerySet(models.QuerySet["Token"]):
    """Named lookups used by the console, the API and the join service."""

    def active(self, now: datetime | None = None) -> TokenQuerySet:
        now = now or timezone.now()
        return self.filter(Q(expires__isnull=True) | Q(expires__gt=now))

    def expired(self, now: datetime | None = None) -> TokenQuerySet:
        return self.filter(expires__lte=now or timezone.now())

    def search(self, text: str) -> TokenQuerySet:
        text = text.strip()
        if not text:
            return self
        return self.filter(Q(name__icontains=text) | Q(description__icontains=text))


class Token(models.Model):
    """An EC2 join token: which roles an instance may take and which accounts/regions may join."""

    name = models.CharField(max_length=128, unique=True)
    join_method = models.CharField(max_length=16, default="ec2")
    roles = models.JSONField(default=list)
    aws_iid_ttl = models.CharField(max_length=32, default="5m")
    allow = models.JSONField(default=list)
    # `spec.allow_rejoin` (docs/extensions.md, "Re-join"); off for every token written before it.
    allow_rejoin = models.BooleanField(default=False)
    labels = models.JSONField(default=dict, blank=True)
    description = models.TextField(blank=True, default="")
    expires = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = TokenQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        permissions = [("export_token", "Can download tokens")]

    def __str__(self) -> str:
        return self.name

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires is not None and self.expires <= (now or timezone.now())

    @property
    def status(self) -> str:
        return "expired" if self.is_expired() else "active"

    def to_resource(self) -> TokenResource:
        """The validated resource this row was written from."""
        return TokenResource(
            name=self.name,
            roles=tuple(self.roles),
            allow=tuple(AllowRule.from_dict(rule) for rule in self.allow),
            join_method=self.join_method,
            aws_iid_ttl=self.aws_iid_ttl,
            expires=self.expires,
            labels=Labels(self.labels or {}),
            description=self.description,
            allow_rejoin=self.allow_rejoin,
        )

    def apply_resource(self, resource: TokenResource) -> None:
        """Copy a validated resource onto this row (the caller saves)."""
        self.name = resource.name
        self.roles = list(resource.roles)
        self.join_method = resource.join_method
        self.aws_iid_ttl = resource.aws_iid_ttl
        self.allow = [rule.to_dict() for rule in resource.allow]
        self.labels = dict(resource.labels)
        self.description = resource.description
        self.expires = resource.expires
        self.allow_rejoin = resource.allow_rejoin
