"""`manage.py verify_iid FILE|- [--at RFC3339] [--token NAME]`: an offline decision trace.

Paste the document of a refused join here to see which check fails, without registering
anything and without calling AWS. Prints JSON; exits 0 only if the checks pass.

With `--token` and `--aws` or `--attempt ID` (instead of FILE) it is the console's policy tester
(`joins.policy`): every check of a join including "already registered", every allow rule's
verdict, and with `--aws` the instance's state from DescribeInstances and the matched rule's
instance conditions (`--source-ip` for `require_source_ip_match`). Still registers nothing;
exits 0 only if no check failed (`complete` in the output says whether the AWS checks ran).
"""

import json
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from joinadmin.cli import read_input
from joins.dry_run import dry_run
from joins.models import JoinAttempt
from joins.policy import evaluate_policy
from tokens.models import Token


def parse_at(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(
            f"--at {text!r} is not an RFC 3339 time such as 2021-09-03T21:26:00Z"
        ) from None
    if value.tzinfo is None:
        raise CommandError("--at needs a time zone, e.g. a trailing Z for UTC")
    return value


class Command(BaseCommand):
    help = "Check an instance identity document offline: signature, TTL, token rules."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument(
            "file",
            nargs="?",
            default=None,
            help="the rsa2048 document (base64, PEM optional), - for stdin",
        )
        parser.add_argument("--at", default="", help="check the TTL at this RFC 3339 time")
        parser.add_argument("--token", default="", help="also check this token's expiry and rules")
        parser.add_argument(
            "--attempt",
            type=int,
            default=None,
            help="re-check the document recorded with this join attempt "
            "(instead of FILE; needs --token; --at defaults to its time)",
        )
        parser.add_argument(
            "--aws",
            action="store_true",
            help="also ask AWS (DescribeInstances) and check the rule's instance "
            "conditions (needs --token)",
        )
        parser.add_argument(
            "--source-ip", default="", help="the agent's address, for require_source_ip_match"
        )

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        if options["attempt"] is not None or options["aws"]:
            return self._policy(options)
        if options["file"] is None:
            raise CommandError("give the document FILE (or - for stdin), or --attempt ID")
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

    def _policy(self, options):  # type: ignore[no-untyped-def]
        """The policy tester's report (see the module doc)."""
        if not options["token"]:
            raise CommandError("--aws and --attempt need --token NAME")
        row = Token.objects.filter(name=options["token"]).first()
        if row is None:
            raise CommandError(f"no token named {options['token']!r}")
        attempt = None
        text = None
        if options["attempt"] is not None:
            if options["file"] is not None:
                raise CommandError("give either FILE or --attempt, not both")
            attempt = JoinAttempt.objects.filter(pk=options["attempt"]).first()
            if attempt is None:
                raise CommandError(f"no join attempt #{options['attempt']}")
        elif options["file"] is None:
            raise CommandError("give the document FILE (or - for stdin), or --attempt ID")
        else:
            text = read_input(options["file"], limit=64 * 1024)
        if options["at"]:
            at = parse_at(options["at"])
        else:
            at = attempt.time if attempt is not None else timezone.now()
        source_ip = options["source_ip"] or (attempt.remote_addr if attempt else "")
        report = evaluate_policy(
            token=row.to_resource(),
            at=at,
            document_text=text,
            attempt=attempt,
            ask_aws=options["aws"],
            source_addr=source_ip,
        )
        self.stdout.write(json.dumps(report.as_dict(), indent=2))
        if not report.ok:
            raise SystemExit(1)
