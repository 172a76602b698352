"""`manage.py apikeys create --user NAME | revoke PREFIX | ls`."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import ApiKey
from accounts.services import ApiKeyError, create_api_key, revoke_api_key
from audit.services import record_action
from joinadmin.cli import cli_actor


class Command(BaseCommand):
    help = "Create, list and revoke API keys. A key is printed once, at creation."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a key acting as USER")
        create.add_argument("--user", required=True)
        create.add_argument("--name", default="")
        revoke = sub.add_parser("revoke", help="revoke the key with this prefix")
        revoke.add_argument("prefix")
        sub.add_parser("ls", help="list keys (prefixes only)")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        action = options["action"]
        if action == "create":
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"no user named {options['user']!r}")
            with transaction.atomic():
                new = create_api_key(user, options["name"])
                record_action(
                    actor=cli_actor(),
                    action="apikey.create",
                    object_type="apikey",
                    object_id=new.key.prefix,
                    after={"user": user.get_username(), "name": new.key.name},
                    via="cli",
                )
            self.stdout.write(new.secret)
            self.stderr.write(
                f"Key {new.key.prefix} for {user.get_username()}: store it now, "
                "it is not shown again."
            )
        elif action == "revoke":
            try:
                with transaction.atomic():
                    key = revoke_api_key(options["prefix"])
                    record_action(
                        actor=cli_actor(),
                        action="apikey.revoke",
                        object_type="apikey",
                        object_id=key.prefix,
                        before={"user": key.user.get_username()},
                        via="cli",
                    )
            except ApiKeyError as exc:
                raise CommandError(exc.message) from None
            self.stdout.write(f"revoked {key.prefix}")
        else:
            for key in ApiKey.objects.select_related("user"):
                state = "revoked" if key.is_revoked else "active"
                self.stdout.write(f"{key.prefix}\t{key.user.get_username()}\t{state}\t{key.name}")
