"""PostgreSQL with a small connection pool per process (`JOINADMIN_DB_POOL_SIZE`).

Sixteen threads share two connections: a join gives its connection back once it has read what
it needs (joinadmin/dbpool.py), so joins waiting for their DescribeInstances answer hold none.
The AWS window is stretched here to 1.5 s and the pool's wait cut to 1 s: a join that kept its
connection through the AWS wait would leave the others without one for longer than they may
wait, and they would answer 503.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg

from tests.faults.test_server_faults import TOKEN, assert_registry_consistent, join_body
from tests.support.live import (
    PG_ADMIN_URL,
    Gunicorn,
    fresh_postgres_database,
    launch_instances,
    moto_http_server,
    running,
)

POOL = 2


def connections_to(name: str) -> int:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
        ).fetchone()
        return int(row[0]) if row else 0


def test_joins_share_a_small_pool_and_hold_no_connection_while_they_wait(tmp_path, signer):  # type: ignore[no-untyped-def]
    name = "joinadmin_fault_pool"
    database_url = fresh_postgres_database(name)
    with moto_http_server() as aws:
        instances = launch_instances(aws, 24)
        server = Gunicorn(
            {
                **aws,
                "JOINADMIN_DATA_DIR": str(tmp_path / "data"),
                "JOINADMIN_IID_CERTS_DIR": str(tmp_path / "certs"),
                "JOINADMIN_SECRET_KEY": "p" * 64,
                "DATABASE_URL": database_url,
                "JOINADMIN_DB_POOL_SIZE": str(POOL),
                "JOINADMIN_DB_POOL_TIMEOUT": "1",
                "JOINADMIN_AWS_COALESCE_WINDOW_MS": "1500",
                "JOINADMIN_AWS_COALESCE_INTERVAL_MS": "0",
            },
            workers=1,
            threads=16,
        )
        with running(server):
            server.manage("tokens", "create", "-", stdin=TOKEN)
            bodies = [join_body(signer, instance) for instance in instances]
            with ThreadPoolExecutor(max_workers=len(bodies)) as clients:
                answers = list(
                    clients.map(lambda b: server.request("POST", "/api/v1/join", b), bodies)
                )
            assert [status for status, _ in answers] == [200] * len(bodies), answers
            # The process never opened more than its pool, though 16 threads served joins.
            assert connections_to(name) <= POOL
    assert assert_registry_consistent(database_url, tmp_path) == len(instances)
