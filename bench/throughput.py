"""Throughput: joins per second with AWS answering at once, against a no-op DRF endpoint.

Run: `.venv/bin/python bench/throughput.py [--seconds 5] [--rounds 5] [--connections 256]`
Profile: `.venv/bin/python bench/throughput.py --profile 300` (no server: the joins run one after
another in this process under cProfile, against the same stand-in, to show what a join spends
its time on; the figures of a profiled run are slower than real ones, and one at a time each
join waits alone for its AWS call and for the join writer, whose own work runs in its thread,
outside the profile).

Method: one server in the production setup (`gunicorn -c gunicorn.conf.py joinadmin.wsgi`, its
default workers and threads, coalescing on, SQLite in a fresh data dir) with
`JOINADMIN_BENCH_NOOP=true`, so that it also serves `POST /api/v1/noop` (DRF, parses the body,
answers `{"ok": true}`; no authentication, no database). AWS is `bench/ec2_standin.py` without
throttling and without delay. Every join is a distinct instance, its document signed before the
clock starts, its body the one joinadmin's agent sends (the host id it claims, a node name, its
private address as a principal); the no-op gets the same bodies. Peak rate: `--connections`
keep-alive clients, each posting its next request as soon as the last is answered, for
`--seconds`. The rate is the steady one: the answers 200 complete between the end of the round's
first second and the end of the round, over that span. The requests still in flight at the end
are answered and count in the latencies, outcomes and CPU, not in the rate (as wrk does: how
long the last of them take is the end of the loop, and a join's last lookups wait for their
batch to go); the first second is left out because every client starts at once (a join's first
answers wait for the first batch to fill, a no-op's for nothing), so counting it would make the
rate depend on the round's length. Rounds alternate, no-op first and last (`--rounds` join
rounds between `--rounds` + 1 no-op rounds), and each join round is set against the mean of the
no-op rounds just before and just after it: this machine's speed moves by half within seconds
(the same pure-Python loop takes 0.25 to 0.45 s from one moment to the next), and a ratio of
neighbouring rounds cancels what moves slower than a round. The result is the median of those
ratios; the best rounds of each are shown too. Latency: joins sent at a fixed rate of half the
best join rate for twice `--seconds`, timed from when each was due (a queue cannot hide), p50
and p99. Each round also reports the CPU time of the server's worker processes per answered
request and the share of the machine's CPU left idle (`/proc`): client, stand-in and server
share the CPUs, so these say whether a round was bound by the server's CPU per request.

Target: the join reaches at least 40% of the no-op rate. The run exits 1 when it does not.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Documents,
    Round,
    ServerMeter,
    closed_loop,
    cpu_seconds,
    instance_ids,
    machine,
    open_loop,
    percentile,
    running,
    summarise,
)

TARGET_RATIO = 0.40
RAMP_SECONDS = 1.0  # the start of a peak round, left out of its rate (see the module doc)
WARM_UP = 64  # joins before the timed rounds
# What the profile reports the cumulative time of: the join's checks (joins/checks.py) and the
# parts of `_register`.
PROFILED = (
    ("joins/api.py", "post", "the join view (everything below)"),
    ("joins/services.py", "perform_join", "perform_join"),
    ("joins/checks.py", "check_request", "  parse the request and its keys"),
    ("joins/reads.py", "read_for_join", "  token, host and CAs read in one statement"),
    ("joins/checks.py", "check_token", "  token: resource kept per process"),
    ("joins/checks.py", "check_document", "  verify the identity document"),
    ("joins/checks.py", "check_not_joined", "  host already joined? (read with the token)"),
    ("joins/checks.py", "check_instance", "  instance check (coalesced lookup)"),
    ("joins/authority.py", "signing_material", "  the cluster CA (read with the token)"),
    ("joins/services.py", "_register", "  register: certificates, then host and attempt"),
    ("joins/ca.py", "issue_host_credentials", "    issue X.509 and SSH certificates"),
    ("joins/writer.py", "insert", "    hand the rows to the join writer, wait for the commit"),
)


def profile(count: int) -> int:
    """Run `count` joins and no-ops in this process under cProfile and print where a join's time
    goes (see the module doc)."""
    import cProfile
    import io
    import pstats
    import tempfile

    from bench.common import TOKEN_YAML, StandIn

    documents = Documents()
    ids = instance_ids(2 * count + 1)
    bodies = documents.bodies(ids)
    aws = StandIn(burst=0, rate=0, latency_ms=0)
    data_dir = Path(tempfile.mkdtemp(prefix="joinadmin-profile-"))
    documents.write_certs(data_dir / "iid-certs")
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "joinadmin.settings",
            "JOINADMIN_DATA_DIR": str(data_dir),
            "JOINADMIN_IID_CERTS_DIR": str(data_dir / "iid-certs"),
            "JOINADMIN_JOIN_RATE_LIMIT": "off",
            "JOINADMIN_BENCH_NOOP": "true",
            "JOINADMIN_LOG_LEVEL": "WARNING",
            # One join at a time: no one to wait for, so no window and no pacing.
            "JOINADMIN_AWS_COALESCE_WINDOW_MS": "0",
            "JOINADMIN_AWS_COALESCE_INTERVAL_MS": "0",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-west-2",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL_EC2": aws.url,
        }
    )
    os.environ.pop("DATABASE_URL", None)
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.test import Client

        call_command("migrate", verbosity=0)
        sys.stdin = io.StringIO(TOKEN_YAML)
        call_command("tokens", "create", "-", stdout=io.StringIO())
        aws.add_running(ids)
        client = Client(HTTP_HOST="127.0.0.1")

        def post(path: str, body: bytes) -> None:
            response = client.post(path, data=body, content_type="application/json")
            if response.status_code != 200:
                raise RuntimeError(f"{path} answered {response.status_code}: {response.content!r}")

        post("/api/v1/join", bodies[-1])  # creates the CA, loads boto3
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for body in bodies[:count]:
            post("/api/v1/join", body)
        profiler.disable()
        profiled_ms = (time.perf_counter() - started) / count * 1000
        started = time.perf_counter()
        for body in bodies[count : 2 * count]:
            post("/api/v1/join", body)
        join_ms = (time.perf_counter() - started) / count * 1000
        started = time.perf_counter()
        for body in bodies[:count]:
            post("/api/v1/noop", body)
        noop_ms = (time.perf_counter() - started) / count * 1000
    finally:
        aws.stop()
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)

    stats = pstats.Stats(profiler)
    cumulative: dict[str, float] = {}
    for (filename, _line, function), row in stats.stats.items():  # type: ignore[attr-defined]
        for suffix, name, label in PROFILED:
            if filename.endswith(suffix) and function == name:
                cumulative[label] = cumulative.get(label, 0.0) + row[3]
    print(f"Machine: {machine()}; load average (1 min) {os.getloadavg()[0]:.2f}")
    print(
        f"Joins one after another: {join_ms:.2f} ms each ({profiled_ms:.2f} ms under cProfile); "
        f"the no-op: {noop_ms:.2f} ms each. Cumulative time per join under cProfile:"
    )
    print("| part | ms per join |")
    print("|---|---|")
    for _suffix, _name, label in PROFILED:
        print(
            f"| {label.strip() if not label.startswith(' ') else label} | "
            f"{cumulative.get(label, 0.0) / count * 1000:.2f} |"
        )
    print()
    print("Top functions by own time:")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
    print(os.linesep.join(out.getvalue().splitlines()[6:]))
    return 0


def bracketed_ratios(noop_rates: list[float], join_rates: list[float]) -> list[float]:
    """Each join round's rate over the mean of the no-op rounds either side of it (rounds
    alternate no-op, join, ..., no-op: one more no-op rate than join rates)."""
    if len(noop_rates) != len(join_rates) + 1:
        raise ValueError("a no-op round must come before and after every join round")
    return [
        join / ((noop_rates[number] + noop_rates[number + 1]) / 2)
        for number, join in enumerate(join_rates)
    ]


def line(name: str, loop: Round, cpu: float, server: tuple[float, float]) -> str:
    """A row of the table: the answers 200 within the loop's window, and the steady rate
    (without the round's first second)."""
    latencies = [reply.seconds * 1000 for reply in loop.replies]
    ok = sum(1 for reply in loop.replies if reply.status == 200)
    server_cpu, idle = server
    return (
        f"| {name} | {len(loop.replies)} | {ok} | {loop.ok_in_window()} in {loop.window:.2f} s | "
        f"{loop.rate(RAMP_SECONDS):.1f}/s | {loop.elapsed:.2f} s | "
        f"{percentile(latencies, 0.5):.1f} ms | {percentile(latencies, 0.99):.1f} ms | "
        f"{cpu:.2f} s | {server_cpu / max(ok, 1) * 1000:.3f} ms | {idle:.0%} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of a peak round")
    parser.add_argument("--rounds", type=int, default=5, help="join rounds (no-op: one more)")
    parser.add_argument("--connections", type=int, default=256, help="clients in peak rounds")
    parser.add_argument("--profile", type=int, default=0, help="profile this many joins instead")
    parser.add_argument("--documents", type=int, default=40000, help="signed join bodies")
    parser.add_argument(
        "--database-url",
        default="",
        help="a PostgreSQL server (postgres://user@host:port/) to run on a fresh database of; "
        "default: SQLite in the server's data dir",
    )
    args = parser.parse_args(argv)
    if args.profile:
        return profile(args.profile)

    print(__doc__.split("\n\n", 2)[2].split("\n\nTarget")[0].replace("\n", " "))
    print(f"Machine: {machine()}")
    documents = Documents()
    signing = time.perf_counter()
    ids = instance_ids(args.documents)
    bodies = documents.bodies(ids)
    print(f"Signed {len(bodies)} documents in {time.perf_counter() - signing:.1f} s.\n")

    standin = {"burst": 0, "rate": 0, "latency_ms": 0}
    env = {"JOINADMIN_BENCH_NOOP": "true", "JOINADMIN_AWS_COALESCE": "true"}
    rows: list[str] = []
    noop_rates: list[float] = []
    join_rates: list[float] = []
    outcomes: dict[str, int] = {}
    with running(documents=documents, standin=standin, env=env, database_url=args.database_url) as (
        server,
        aws,
    ):
        aws.add_running(ids)
        port = server.port
        # Warm-up: enough connections that every worker gets some (each is hashed to a worker's
        # socket), so that no worker builds its AWS client or CA material during a timed round.
        warm = asyncio.run(
            closed_loop(port, "/api/v1/join", bodies[:WARM_UP], connections=32, seconds=30)
        )
        asyncio.run(closed_loop(port, "/api/v1/noop", bodies[:200], connections=8, seconds=30))
        if any(reply.status != 200 for reply in warm.replies):
            raise RuntimeError(f"warm-up joins failed: {summarise(warm.replies)}")
        next_body = WARM_UP
        meter = ServerMeter(server.worker_pids())

        def measured(name: str, run: Coroutine[Any, Any, Round], *, joins: bool) -> Round:
            """Run a loop, add its row to the table and, for `joins`, its outcomes to the
            count."""
            cpu = cpu_seconds()
            meter.start()
            loop = asyncio.run(run)
            rows.append(line(name, loop, cpu_seconds() - cpu, meter.stop()))
            if joins:
                for key, value in summarise(loop.replies).items():
                    outcomes[key] = outcomes.get(key, 0) + value
            return loop

        for round_number in range(1, args.rounds + 2):
            loop = measured(
                f"no-op, round {round_number}",
                closed_loop(
                    port,
                    "/api/v1/noop",
                    itertools.cycle(bodies),
                    connections=args.connections,
                    seconds=args.seconds,
                ),
                joins=False,
            )
            noop_rates.append(loop.rate(RAMP_SECONDS))
            if round_number > args.rounds:
                break
            loop = measured(
                f"join, round {round_number}",
                closed_loop(
                    port,
                    "/api/v1/join",
                    bodies[next_body:],
                    connections=args.connections,
                    seconds=args.seconds,
                ),
                joins=True,
            )
            next_body += len(loop.replies)
            join_rates.append(loop.rate(RAMP_SECONDS))
        half = max(join_rates) / 2
        measured(
            f"join at {half:.0f}/s (half the peak)",
            open_loop(
                port, "/api/v1/join", bodies[next_body:], rate=half, seconds=2 * args.seconds
            ),
            joins=True,
        )
        stats = aws.stats()
        shape = server.describe()

    print(
        f"Server: {shape}; {args.connections} client connections in peak rounds; load "
        f"average (1 min) at the end {os.getloadavg()[0]:.2f}."
    )
    print(
        "| round | requests | answered 200 | 200 within the round | steady rate | last answer "
        "| p50 | p99 | client CPU | server CPU per answer | idle |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    ratios = bracketed_ratios(noop_rates, join_rates)
    ratio = statistics.median(ratios)
    print("\n| join round | no-op before | join | no-op after | join / mean of the no-ops |")
    print("|---|---|---|---|---|")
    for number, value in enumerate(ratios):
        print(
            f"| {number + 1} | {noop_rates[number]:.1f}/s | {join_rates[number]:.1f}/s | "
            f"{noop_rates[number + 1]:.1f}/s | {value:.1%} |"
        )
    print(
        f"\nThe join reaches {ratio:.1%} of the no-op rate (median of {len(ratios)} rounds, "
        f"{min(ratios):.1%} to {max(ratios):.1%}; target {TARGET_RATIO:.0%}). Best rounds: "
        f"no-op {max(noop_rates):.1f}/s, join {max(join_rates):.1f}/s "
        f"({max(join_rates) / max(noop_rates):.1%})."
    )
    print(
        f"Join outcomes: {outcomes}. DescribeInstances calls: {stats['describe_calls']} for "
        f"{stats['ids_asked']} ids (most in one call: {stats['max_ids_per_call']})."
    )
    met = ratio >= TARGET_RATIO and set(outcomes) == {"ok"}
    print("Target: " + ("MET" if met else "MISSED"))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
