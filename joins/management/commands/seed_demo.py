"""`manage.py seed_demo --attempts N --hosts M [--days D] [--batch B] [--seed S]`.

Fills the database with realistic demo and benchmark data (see `joins.demo`), showing a plain
text progress bar on standard error.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from django.core.management.base import BaseCommand, CommandError, CommandParser

from joins.demo import seed_demo

BAR_WIDTH = 30


class ProgressBar:
    """`attempts [#########.....]  45%  450000/1000000  12s` redrawn in place on a terminal; on
    a pipe or a log, one line per tenth, so that logs stay readable."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self.last_tenth = -1

    def __call__(self, label: str, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        tenth = int(fraction * 10)
        if not self.tty and tenth == self.last_tenth and done < total:
            return
        self.last_tenth = tenth
        filled = int(fraction * BAR_WIDTH)
        line = (
            f"{label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%} "
            f"{done}/{total} {time.monotonic() - self.started:.0f}s"
        )
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and done >= total:
            self.stream.write("\n")
        self.stream.flush()


class Command(BaseCommand):
    help = "Fill the database with realistic demo data: tokens, hosts and join attempts."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--attempts", type=int, required=True, help="join attempts to write")
        parser.add_argument("--hosts", type=int, required=True, help="registered hosts to write")
        parser.add_argument("--days", type=float, default=30, help="spread over this many days")
        parser.add_argument("--batch", type=int, default=5000, help="rows per bulk insert")
        parser.add_argument("--seed", type=int, default=None, help="repeat an earlier run")

    def handle(self, *args: object, **options: object) -> None:
        try:
            result = seed_demo(
                attempts=int(options["attempts"]),  # type: ignore[call-overload]
                hosts=int(options["hosts"]),  # type: ignore[call-overload]
                days=float(options["days"]),  # type: ignore[arg-type]
                batch=int(options["batch"]),  # type: ignore[call-overload]
                seed=options["seed"],  # type: ignore[arg-type]
                progress=ProgressBar(sys.stderr),
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        mix = ", ".join(f"{count} {name}" for name, count in sorted(result.by_outcome.items()))
        self.stdout.write(
            f"wrote {result.attempts} join attempts ({mix or 'none'}), {result.hosts} hosts, "
            f"{result.tokens} tokens and {result.actions} admin actions in "
            f"{result.seconds:.1f}s (seed {result.seed})"
        )
