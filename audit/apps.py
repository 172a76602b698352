from django.apps import AppConfig


class AuditConfig(AppConfig):
    """The admin action log and the tamper-evident seals over the audit records."""

    name = "audit"
    default_auto_field = "django.db.models.BigAutoField"
