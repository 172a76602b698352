"""Server time of the join history pages with a large history, on SQLite or PostgreSQL.

Run: `.venv/bin/python bench/history.py --attempts 1000000 [--database-url URL] [--repeat 30]`

Method: the database (by default a SQLite file under `var/bench-history/`, or the PostgreSQL
database of `--database-url`, which must exist) is migrated and filled by `seed_demo` up to N
join attempts, or reused when it already holds them, and sealed as the 5-minute seal timer would
(the time filters read the seals' time summaries); then ANALYZE refreshes the planner's
statistics, as autovacuum (PostgreSQL) or `PRAGMA optimize` (SQLite) would (`--no-analyze`
times without them instead). Each page is then requested through Django's test client, signed
in as an auditor, in this process: the time is the whole server side of a request (middleware,
session and permission lookups, filters, the queries, template rendering), without network or
browser. Every page is requested 3 times to warm up, then `--repeat` times; the table shows the
median and the 95th percentile (nearest rank) of wall time, the median CPU time of this process
per request (SQLite runs inside it, so there this is the server's work without the waits for a
busy CPU; PostgreSQL's own work is not in it), the number of SQL queries of one request, and
whether the p95 is under the 100 ms target. Pages: the history without filter, each single
filter (on a common and, where it differs, a rare value), the second page and a page deep in
the past (`?before=`), the detail page of a recent and an old attempt, and the dashboard for
information. `--api` adds the same filters against `GET /api/v1/join-attempts`. `--explain`
prints the plan of each list query. Exit status 0, or 1 with `--strict` when a page misses
the target.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_MS = 100.0
WARMUP = 3


@dataclass
class Case:
    """One page to time: a label, the URL, and whether it counts against the target."""

    group: str
    label: str
    url: str
    counted: bool = True


@dataclass
class Timing:
    case: Case
    median_ms: float
    p95_ms: float
    cpu_ms: float
    queries: int
    status: int

    @property
    def passed(self) -> bool:
        return self.status == 200 and self.p95_ms < TARGET_MS


def configure(args: argparse.Namespace) -> None:
    """Point Django at the benchmark database before anything imports settings."""
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["JOINADMIN_DATA_DIR"] = str(data_dir)
    if args.database_url:
        os.environ["DATABASE_URL"] = args.database_url
    else:
        os.environ.pop("DATABASE_URL", None)
    os.environ["JOINADMIN_ALLOWED_HOSTS"] = "testserver,localhost"
    os.environ["JOINADMIN_DEBUG"] = "false"
    os.environ.setdefault("JOINADMIN_LOG_LEVEL", "WARNING")
    os.environ["DJANGO_SETTINGS_MODULE"] = "joinadmin.settings"


def nearest_rank(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def prepare(attempts: int, hosts: int, days: float, analyze: bool) -> float:
    """Migrate, seed up to `attempts` rows, seal them, refresh or drop statistics.

    Returns the seconds spent seeding.

    Without `analyze`, SQLite's gathered statistics are dropped too, to time a database as a
    production SQLite file usually is: never analysed.
    """
    from django.core.management import call_command
    from django.db import connection

    from joins.demo import seed_demo
    from joins.models import JoinAttempt

    call_command("migrate", verbosity=0, interactive=False)
    have = JoinAttempt.objects.count()
    seconds = 0.0
    if have < attempts:
        print(f"seeding {attempts - have} join attempts ({have} present) ...", file=sys.stderr)
        started = time.monotonic()

        def progress(label: str, done: int, total: int) -> None:
            if done == total or done % 100_000 < 5_000:
                print(f"  {label} {done}/{total}", file=sys.stderr)

        seed_demo(
            attempts=attempts - have,
            hosts=min(hosts, attempts - have),
            days=days,
            progress=progress,
        )
        seconds = time.monotonic() - started
    # Production seals every 5 minutes (deploy/systemd/joinadmin-seal.timer); the time filters
    # read the seals' time summaries, so catch up as that timer would.
    from audit.sealing import seal_pending

    started = time.monotonic()
    made = seal_pending()
    if made:
        rows = sum(seal.row_count for seal in made)
        print(
            f"sealed {rows} rows in {len(made)} seals in {time.monotonic() - started:.0f}s",
            file=sys.stderr,
        )
    with connection.cursor() as cursor:
        if analyze:
            cursor.execute("ANALYZE")
        elif connection.vendor == "sqlite":
            cursor.execute("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'")
            if cursor.fetchone():
                cursor.execute("DELETE FROM sqlite_stat1")
    if not analyze:
        connection.close()  # SQLite reads its statistics when a connection opens
    return seconds


def auditor_client():  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client

    from accounts.constants import AUDITORS_GROUP
    from accounts.services import ensure_groups

    ensure_groups()
    user, _ = get_user_model().objects.get_or_create(username="bench-auditor")
    user.groups.add(Group.objects.get(name=AUDITORS_GROUP))
    client = Client()
    client.force_login(user)
    return client


def pick_cases(api: bool) -> list[Case]:
    """The pages to time, with filter values read from the data (common and rare ones)."""
    from django.db.models import Count
    from django.utils import timezone

    from joins.models import Host, JoinAttempt

    def most_and_least(column: str) -> tuple[str, str]:
        counted = list(
            JoinAttempt.objects.exclude(**{column: ""})
            .values(column)
            .annotate(n=Count("id"))
            .order_by("-n")
            .values_list(column, flat=True)
        )
        return counted[0], counted[-1]

    newest = JoinAttempt.objects.order_by("-id").values_list("id", "time").first()
    oldest = JoinAttempt.objects.order_by("id").values_list("id", "time").first()
    assert newest and oldest, "the benchmark database is empty"
    host = Host.objects.order_by("id").first()
    sample = (
        JoinAttempt.objects.filter(id__lte=(newest[0] + oldest[0]) // 2)
        .exclude(instance_id="")
        .order_by("-id")
        .values("host_id", "instance_id", "remote_addr", "account_id", "region")
        .first()
    )
    assert sample is not None
    token_common, token_rare = most_and_least("token")
    addr_common, _ = most_and_least("remote_addr")
    account_common, account_rare = most_and_least("account_id")
    region_common, region_rare = most_and_least("region")
    now = timezone.now()
    fmt = "%Y-%m-%dT%H:%M:%S"
    mid = oldest[1] + (newest[1] - oldest[1]) / 2

    filters: list[tuple[str, str]] = [
        ("token (common)", f"token={token_common}"),
        ("token (rare)", f"token={token_rare}"),
        ("outcome=denied", "outcome=denied"),
        ("outcome=allowed", "outcome=allowed"),
        ("outcome=error", "outcome=error"),
        ("error (common)", "error=instance_already_joined"),
        ("error (rare)", "error=internal_error"),
        ("account (common)", f"account={account_common}"),
        ("account (rare)", f"account={account_rare}"),
        ("region (common)", f"region={region_common}"),
        ("region (rare)", f"region={region_rare}"),
        ("host_id", f"host_id={host.host_id if host else sample['host_id']}"),
        ("host_id prefix", f"host_id={sample['host_id'][:17]}*"),
        ("instance_id", f"instance_id={sample['instance_id']}"),
        ("instance_id prefix", f"instance_id={sample['instance_id'][:6]}*"),
        ("remote_addr", f"remote_addr={addr_common}"),
        ("remote_addr (none)", "remote_addr=192.0.2.254"),
        ("since 24 h", f"since={(now - timedelta(days=1)):{fmt}}"),
        ("until (oldest day)", f"until={(oldest[1] + timedelta(days=1)):{fmt}}"),
        ("until (middle)", f"until={mid:{fmt}}"),
        (
            "since+until (a day, middle)",
            f"since={mid:{fmt}}&until={(mid + timedelta(days=1)):{fmt}}",
        ),
        ("since (future: empty)", f"since={(now + timedelta(days=1)):{fmt}}"),
    ]
    cases = [Case("history", "no filter", "/joins/")]
    cases += [Case("history", label, f"/joins/?{query}") for label, query in filters]
    cases += [
        Case("history", "second page", "/joins/?before=__SECOND__"),
        Case("history", "page deep in the past", f"/joins/?before={(newest[0] + oldest[0]) // 2}"),
        Case("history", "oldest page", f"/joins/?after={oldest[0] - 1}"),
        Case(
            "history",
            "second page, token filter",
            f"/joins/?token={token_common}&before=__SECOND_T__",
        ),
        Case("detail", "recent attempt", f"/joins/{newest[0]}/"),
        Case("detail", "old attempt", f"/joins/{oldest[0] + 10}/"),
        Case("info", "dashboard", "/", counted=False),
    ]
    if api:
        cases.append(Case("api", "no filter", "/api/v1/join-attempts"))
        cases += [Case("api", label, f"/api/v1/join-attempts?{query}") for label, query in filters]
        cases.append(Case("api", "detail", f"/api/v1/join-attempts/{oldest[0] + 10}"))
    return cases


def resolve_cursors(client, cases: list[Case]) -> None:  # type: ignore[no-untyped-def]
    """Fill in the `before` cursor of the second pages from the first pages' Older links."""
    for case in cases:
        for marker, first in (
            ("__SECOND_T__", case.url.split("&before")[0]),
            ("__SECOND__", "/joins/"),
        ):
            if marker in case.url:
                html = client.get(first).content.decode()
                found = re.search(r'before=(\d+)"[^>]*rel="next"', html) or re.search(
                    r"before=(\d+)", html
                )
                case.url = case.url.replace(marker, found.group(1) if found else "1")


def time_case(client, case: Case, repeat: int) -> tuple[Timing, list[str]]:  # type: ignore[no-untyped-def]
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    status = 0
    for _ in range(WARMUP):
        status = client.get(case.url).status_code
    samples = []
    cpu = []
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        response = client.get(case.url)
        samples.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - cpu_started) * 1000)
        status = response.status_code
    with CaptureQueriesContext(connection) as captured:
        client.get(case.url)
    sql = [query["sql"] for query in captured.captured_queries]
    timing = Timing(
        case,
        statistics.median(samples),
        nearest_rank(samples, 0.95),
        statistics.median(cpu),
        len(sql),
        status,
    )
    return timing, sql


def explain(sql: str) -> str:
    from django.db import connection

    prefix = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
    with connection.cursor() as cursor:
        cursor.execute(prefix + sql)
        return "\n".join("    " + " ".join(str(c) for c in row) for row in cursor.fetchall())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument("--hosts", type=int, default=None, help="default: attempts / 50")
    parser.add_argument("--days", type=float, default=90, help="history spread over D days")
    parser.add_argument("--database-url", default="", help="default: SQLite in --data-dir")
    parser.add_argument("--data-dir", default=str(ROOT / "var" / "bench-history"))
    parser.add_argument("--repeat", type=int, default=30, help="timed requests per page")
    parser.add_argument("--api", action="store_true", help="also time the API list")
    parser.add_argument("--explain", action="store_true", help="print each list query's plan")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a page misses 100 ms")
    parser.add_argument(
        "--no-analyze",
        action="store_true",
        help="time without planner statistics (on SQLite, drops those of earlier runs)",
    )
    args = parser.parse_args(argv)

    configure(args)
    import django

    django.setup()
    from django.db import connection

    from joins.models import JoinAttempt

    hosts = args.hosts or max(1, args.attempts // 50)
    seeded = prepare(args.attempts, hosts, args.days, analyze=not args.no_analyze)
    rows = JoinAttempt.objects.count()
    client = auditor_client()
    cases = pick_cases(args.api)
    resolve_cursors(client, cases)

    with connection.cursor() as cursor:
        cursor.execute(
            "select sqlite_version()" if connection.vendor == "sqlite" else "show server_version"
        )
        db_version = cursor.fetchone()[0]
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    print(
        f"database   {connection.vendor} {db_version}, {rows} join attempts"
        + (f" (seeded now in {seeded:.0f}s)" if seeded else " (reused)")
    )
    print(
        f"machine    {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} at start"
    )
    print(
        f"method     test client in-process, {WARMUP} warm-up + {args.repeat} timed requests "
        f"per page; target p95 < {TARGET_MS:.0f} ms; planner statistics "
        + ("dropped" if args.no_analyze else "refreshed (ANALYZE)")
    )
    print()
    header = (
        f"{'page':<10} {'case':<30} {'median ms':>9} {'p95 ms':>8} {'p95/target':>10} "
        f"{'cpu ms':>7} {'queries':>7}  result"
    )
    print(header)
    print("-" * len(header))
    failed = 0
    for case in cases:
        timing, sql = time_case(client, case, args.repeat)
        if not case.counted:
            verdict = "info"
        elif timing.passed:
            verdict = "pass"
        else:
            verdict = "FAIL" if timing.status == 200 else f"FAIL ({timing.status})"
            failed += 1
        print(
            f"{case.group:<10} {case.label[:30]:<30} {timing.median_ms:9.1f} "
            f"{timing.p95_ms:8.1f} {timing.p95_ms / TARGET_MS:10.2f} {timing.cpu_ms:7.1f} "
            f"{timing.queries:7d}  "
            f"{verdict}"
        )
        if args.explain or (verdict.startswith("FAIL") and case.group != "info"):
            for query in sql:
                if "joins_joinattempt" in query and ("LIMIT" in query or "EXISTS" in query):
                    print("    " + query[:300])
                    print(explain(query))
    counted = sum(1 for case in cases if case.counted)
    print()
    print(f"{counted - failed}/{counted} pages under {TARGET_MS:.0f} ms at p95")
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
