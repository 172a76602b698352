"""`manage.py verify_iid FILE|- [--at RFC3339] [--token NAME]`: an offline decision trace.

Paste the document of a refused join here to see which check fails, without registering
anything and without calling AWS. Prints JSON; exits 0 only if the checks pass.
"""

import json
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from joinadmin.cli import read_input
from joins.services import dry_run
from tokens.models import Token


def parse_at(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"--at {text!r} is not an RFC 3339 time such as "
                           "2021-09-03T21:26:00Z") from None
    if value.tzinfo is None:
        raise CommandError("--at needs a time zone, e.g. a trailing Z for UTC")
    return value


class Command(BaseCommand):
    help = "Check an instance identity document offline: signature, TTL, token rules."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("file", help="the rsa2048 document (base64, PEM optional), - for stdin")
        parser.add_argument("--at", default="", help="check the TTL at this RFC 3339 time")
        parser.add_argument("--token", default="", help="also check this token's expiry and rules")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        text = read_input(options["file"], limit=64 * 1024)
        at = parse_at(options["at"]) if options["at"] else timezone.now()
        token = None
        if options["token"]:
            row = Token.objects.filter(name=options["token"]).first()
            if row is None:
                raise CommandError(f"no token named {options['token']!r}")
            token = row.to_resource()
        result = dry_run(text, token=token, at=at)
        payload = {"at": at.isoformat(), "token": options["token"] or None, **result.as_dict()}
        self.stdout.write(json.dumps(payload, indent=2))
        if not result.ok:
            raise SystemExit(1)
