"""Burst: 1,000 distinct instances join at once, against an EC2 throttled like AWS.

Run: `.venv/bin/python bench/burst.py [--instances 1000] [--aws-latency-ms 100] [--modes on,off]`

Method: an Auto Scaling group launching a thousand instances in one account and region. The
server is the production setup (`gunicorn -c gunicorn.conf.py joinadmin.wsgi`, its default
workers and threads, SQLite in a fresh data dir) and reaches AWS through `AWS_ENDPOINT_URL_EC2`
at `bench/ec2_standin.py`, which enforces AWS's DescribeInstances bucket for one account and
region (50 calls at once, 10 a second after that, HTTP 503 `RequestLimitExceeded` beyond),
holds each answer `--aws-latency-ms` and counts every call. All documents are signed before the
clock starts; one warm-up join creates the cluster CA, then the stand-in's counters and bucket
are reset. The client then opens one connection per instance, all at the same moment, and posts
every join; the clock stops at the last answer. Each mode (`JOINADMIN_AWS_COALESCE` on or off)
gets a fresh server and stand-in.

Targets with coalescing on: every join succeeds, at most 20 DescribeInstances calls, all joined
within 10 seconds. The run exits 1 when one is missed. Coalescing off is shown for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Documents,
    all_at_once,
    cpu_seconds,
    instance_ids,
    machine,
    percentile,
    running,
    summarise,
)

MAX_CALLS = 20
MAX_SECONDS = 10.0


def run_mode(
    coalesce: bool,
    documents: Documents,
    bodies: list[bytes],
    warmup: bytes,
    args: argparse.Namespace,
) -> dict[str, object]:
    ids = instance_ids(len(bodies) + 1)
    standin = {"burst": 50, "rate": 10, "latency_ms": args.aws_latency_ms}
    env = {"JOINADMIN_AWS_COALESCE": "true" if coalesce else "false"}
    with running(documents=documents, standin=standin, env=env, database_url=args.database_url) as (
        server,
        aws,
    ):
        aws.add_running(ids)
        warm, _ = asyncio.run(all_at_once(server.port, "/api/v1/join", [warmup]))
        if warm[0].status != 200:
            raise RuntimeError(f"the warm-up join failed: {warm[0]}")
        time.sleep(0.5)
        aws.reset()
        cpu = cpu_seconds()
        replies, wall = asyncio.run(all_at_once(server.port, "/api/v1/join", bodies))
        cpu = cpu_seconds() - cpu
        stats = aws.stats()
        hosts = server.count("SELECT COUNT(*) FROM joins_host") - 1
        shape = server.describe()
    latencies = [reply.seconds for reply in replies]
    return {
        "coalesce": coalesce,
        "outcome": summarise(replies),
        "ok": sum(1 for reply in replies if reply.status == 200),
        "wall": wall,
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies),
        "calls": stats["describe_calls"],
        "answered": stats["answered"],
        "throttled": stats["throttled"],
        "max_ids": stats["max_ids_per_call"],
        "ids_asked": stats["ids_asked"],
        "sizes": stats["ids_per_answered_call"],
        "load": os.getloadavg()[0],
        "hosts": hosts,
        "client_cpu": cpu,
        "shape": shape,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument(
        "--aws-latency-ms", type=float, default=100, help="how long the stand-in takes to answer"
    )
    parser.add_argument("--modes", default="on,off", help="coalescing modes to run, in order")
    parser.add_argument(
        "--database-url",
        default="",
        help="a PostgreSQL server (postgres://user@host:port/) to run on a fresh database of; "
        "default: SQLite in the server's data dir",
    )
    args = parser.parse_args(argv)
    modes = [mode.strip() == "on" for mode in args.modes.split(",") if mode.strip()]

    print(__doc__.split("\n\n", 2)[2].split("\n\nTargets")[0].replace("\n", " "))
    print(f"Machine: {machine()}")
    print(
        f"Stand-in: bucket 50, refill 10/s, answers after {args.aws_latency_ms:g} ms; "
        f"{args.instances} instances, one account, one region."
    )
    documents = Documents()
    signing = time.perf_counter()
    ids = instance_ids(args.instances + 1)
    all_bodies = documents.bodies(ids)
    warmup, bodies = all_bodies[-1], all_bodies[:-1]
    print(f"Signed {len(all_bodies)} documents in {time.perf_counter() - signing:.1f} s.\n")

    results = [run_mode(coalesce, documents, bodies, warmup, args) for coalesce in modes]
    header = (
        "| coalescing | joined | refused | all answered in | p50 | p99 | DescribeInstances calls "
        "(throttled) | most ids in a call | hosts registered |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for r in results:
        refused = {k: v for k, v in r["outcome"].items() if k != "ok"}  # type: ignore[attr-defined]
        print(
            f"| {'on' if r['coalesce'] else 'off'} | {r['ok']}/{args.instances} | "
            f"{', '.join(f'{v} {k}' for k, v in refused.items()) or 'none'} | "
            f"{r['wall']:.2f} s | {r['p50']:.2f} s | {r['p99']:.2f} s | "
            f"{r['calls']} ({r['throttled']}) | {r['max_ids']} | {r['hosts']} |"
        )
    print(f"\nServer: {results[0]['shape']}.")
    for r in results:
        sizes = r["sizes"]
        shown = ", ".join(map(str, sizes[:40])) + (", ..." if len(sizes) > 40 else "")  # type: ignore[arg-type]
        print(
            f"Coalescing {'on' if r['coalesce'] else 'off'}: client CPU {r['client_cpu']:.2f} s; "
            f"load average (1 min) after the run {r['load']:.2f}; ids per answered call: {shown}"
        )

    failed = []
    for r in results:
        if not r["coalesce"]:
            continue
        if r["ok"] != args.instances or r["hosts"] != args.instances:
            failed.append(f"{args.instances - r['ok']} joins refused")  # type: ignore[operator]
        if r["calls"] > MAX_CALLS:  # type: ignore[operator]
            failed.append(f"{r['calls']} DescribeInstances calls > {MAX_CALLS}")
        if r["wall"] > MAX_SECONDS:  # type: ignore[operator]
            failed.append(f"{r['wall']:.2f} s > {MAX_SECONDS:g} s")
    if any(r["coalesce"] for r in results):
        print(
            "\nTargets (coalescing on): every join succeeds, at most 20 calls, within 10 s: "
            + ("MET" if not failed else "MISSED: " + "; ".join(failed))
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
