"""`manage.py audit seal | verify | prune --before DATE | key` (tamper evidence, see audit.sealing).

Exit codes: 0 all good; 1 `verify` found sealed records changed, deleted or inserted (each named
on standard output), or `prune` refused a range that does not verify; 2 the command could not run
(bad arguments, an unusable key secret).
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from audit.digests import SealFormatError
from audit.sealing import (
    DEFAULT_CHUNK,
    DEFAULT_LAG,
    STREAMS,
    SealError,
    prune_sealed,
    seal_pending,
    verify_seals,
)
from audit.services import latest_seal, seal_key_fingerprint, seal_public_key
from joinadmin.cli import cli_actor

EXIT_FOUND = 1
EXIT_CANNOT_RUN = 2


def parse_moment(text: str) -> datetime:
    """`2026-01-31` (midnight UTC) or an ISO 8601 time; a time without a zone is UTC."""
    text = text.strip()
    moment = parse_datetime(text)
    if moment is None:
        day = parse_date(text)
        if day is None:
            raise CommandError(
                f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time",
                returncode=EXIT_CANNOT_RUN,
            )
        moment = datetime.combine(day, time.min)
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    return moment


class Command(BaseCommand):
    help = (
        "Seal the audit records (join attempts, admin actions) with signed, chained digests; "
        "verify the seals; prune old sealed ranges; show the seal key."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        streams = {"choices": sorted(STREAMS), "action": "append", "dest": "streams"}

        seal = sub.add_parser("seal", help="seal the records written since the last seal")
        seal.add_argument(
            "--lag",
            type=float,
            default=DEFAULT_LAG.total_seconds(),
            help="seconds a row must be old before it is sealed; longer than the longest join "
            f"(default {DEFAULT_LAG.total_seconds():.0f})",
        )
        seal.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="rows per seal at most")
        seal.add_argument("--stream", help="only this stream (repeatable)", **streams)

        verify = sub.add_parser("verify", help="check every seal and recompute sealed ranges")
        verify.add_argument("--stream", help="only this stream (repeatable)", **streams)
        verify.add_argument(
            "--trust-key",
            action="append",
            default=[],
            metavar="PUBLIC_KEY",
            help="also accept seals signed by this public key (base64, from `audit key`), "
            "e.g. the key of a secret that was rotated",
        )

        prune = sub.add_parser("prune", help="delete the rows of sealed ranges older than DATE")
        prune.add_argument(
            "--before", required=True, help="YYYY-MM-DD (midnight UTC) or an ISO 8601 time"
        )
        prune.add_argument("--stream", help="only this stream (repeatable)", **streams)
        prune.add_argument(
            "--dry-run", action="store_true", help="say what would go; delete nothing"
        )

        sub.add_parser("key", help="print the public key that signs seals, and its fingerprint")

    def handle(self, *args: object, **options: object) -> None:
        try:
            getattr(self, f"_{options['action']}")(options)
        except SealFormatError as exc:
            raise CommandError(str(exc), returncode=EXIT_CANNOT_RUN) from None

    def _seal(self, options: dict) -> None:
        lag = timedelta(seconds=float(options["lag"]))
        if lag < timedelta(0):
            raise CommandError("--lag cannot be negative", returncode=EXIT_CANNOT_RUN)
        try:
            made = seal_pending(lag=lag, chunk=int(options["chunk"]), streams=options["streams"])
        except SealError as exc:
            raise CommandError(exc.message, returncode=EXIT_CANNOT_RUN) from None
        for seal in made:
            self.stdout.write(
                f"sealed {seal.stream} #{seal.seq}: ids {seal.first_id}-{seal.last_id}, "
                f"{seal.row_count} rows, {seal.first_time:%Y-%m-%d %H:%M:%S} to "
                f"{seal.last_time:%Y-%m-%d %H:%M:%S} UTC, digest {seal.digest}"
            )
        if not made:
            wait = f"{lag.total_seconds():.0f}s"
            self.stdout.write(f"nothing to seal (rows younger than {wait} wait for the next run)")
        # The heads go to the journal on every run: a copy of the chain's end outside the
        # database, against which a rewritten chain would not match.
        for name in options["streams"] or sorted(STREAMS):
            head = latest_seal(name)
            if head is not None:
                self.stdout.write(f"head {name} #{head.seq} {head.digest}")
        self.stdout.write(f"key {seal_key_fingerprint()}")

    def _verify(self, options: dict) -> None:
        try:
            report = verify_seals(streams=options["streams"], extra_keys=options["trust_key"])
        except SealError as exc:
            raise CommandError(exc.message, returncode=EXIT_CANNOT_RUN) from None
        for summary in report.streams:
            self.stdout.write(summary.line())
        for problem in report.problems:
            self.stdout.write(f"PROBLEM {problem.kind}: {problem.line()}")
        self.stdout.write(f"key {seal_key_fingerprint()}")
        if not report.ok:
            raise CommandError(
                f"audit verify found {len(report.problems)} problems in the sealed records "
                "(listed above)",
                returncode=EXIT_FOUND,
            )
        self.stdout.write(
            f"ok: {report.seals_checked} seals and {report.rows_checked} rows verified"
        )

    def _prune(self, options: dict) -> None:
        before = parse_moment(str(options["before"]))
        dry_run = bool(options["dry_run"])
        try:
            pruned = prune_sealed(
                before, actor=cli_actor(), streams=options["streams"], dry_run=dry_run
            )
        except SealError as exc:
            raise CommandError(exc.message, returncode=EXIT_FOUND) from None
        verb = "would prune" if dry_run else "pruned"
        for item in pruned:
            self.stdout.write(f"{verb} {item.line()}")
        rows = sum(item.rows for item in pruned)
        self.stdout.write(
            f"{verb} {len(pruned)} sealed ranges, {rows} rows older than {before.isoformat()}"
        )

    def _key(self, options: dict) -> None:
        self.stdout.write(f"public key  {seal_public_key()}")
        self.stdout.write(f"fingerprint {seal_key_fingerprint()}")
