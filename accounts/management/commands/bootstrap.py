"""`manage.py bootstrap`: the groups and a first admin; prints the admin password once."""

from django.core.management.base import BaseCommand

from accounts.services import ensure_admin


class Command(BaseCommand):
    help = "Create the console groups and, if no superuser exists, an 'admin' account."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--username", default="admin")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        result = ensure_admin(options["username"])
        if result.password:
            self.stdout.write(
                self.style.WARNING(
                    f"\nCreated the administrator account.\n"
                    f"  username: {result.username}\n  password: {result.password}\n"
                    "This password is shown only now; change it after signing in.\n"
                )
            )
