from django.apps import AppConfig


class TokensConfig(AppConfig):
    """EC2 join tokens: the resource, its codecs, the console and the API."""

    name = "tokens"
    default_auto_field = "django.db.models.BigAutoField"
