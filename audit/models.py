"""The admin action log: who changed what, with the state before and after."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AdminAction(models.Model):
    """One administrative change. Rows are only ever inserted; sealing makes edits detectable."""

    time = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True, default="")
    action = models.CharField(max_length=40, db_index=True)
    object_type = models.CharField(max_length=40)
    object_id = models.CharField(max_length=200, db_index=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True, default="")
    remote_addr = models.CharField(max_length=64, blank=True, default="")
    via = models.CharField(max_length=16, default="console")  # console, api, cli

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["action", "-id"], name="adminaction_action_id")]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.object_id}"
