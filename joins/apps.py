from django.apps import AppConfig


class JoinsConfig(AppConfig):
    """The EC2 join endpoint: document verification, AWS checks, host credentials, history."""

    name = "joins"
    default_auto_field = "django.db.models.BigAutoField"
