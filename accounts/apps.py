from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Users, the two console groups and API keys."""

    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"
