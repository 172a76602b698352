"""Faults against the production server setup (gunicorn, gunicorn.conf.py): the database going
away and coming back, and a worker killed with SIGKILL in the middle of a load. After each, the
registry invariant holds: no host without its allowed attempt, no allowed attempt without its host
and certificate serial."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.iid_signer import IIDSigner, make_document
from tests.support.live import (
    Gunicorn,
    TcpProxy,
    fresh_postgres_database,
    launch_instances,
    moto_http_server,
    running,
)

ACCOUNT = "123456789012"
TOKEN = """kind: token
version: v2
metadata: {name: fleet}
spec:
  roles: [Node]
  aws_iid_ttl: 1h
  allow: [{aws_account: "123456789012", aws_regions: [us-west-2]}]
"""
PUBLIC_KEY = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def join_body(signer: IIDSigner, instance_id: str) -> bytes:
    document = make_document(
        account_id=ACCOUNT,
        instance_id=instance_id,
        region="us-west-2",
        pending_time=datetime.now(UTC) - timedelta(seconds=30),
    )
    return json.dumps(
        {
            "token": "fleet",
            "ec2_identity_document": signer.sign(document),
            "public_tls_key": PUBLIC_KEY,
        }
    ).encode()


def rows(query: str, database_url: str, data_dir: Path) -> list[tuple]:
    if database_url.startswith("postgres"):
        import psycopg

        with psycopg.connect(database_url.replace("postgres://", "postgresql://")) as conn:
            return list(conn.execute(query).fetchall())
    with sqlite3.connect(data_dir / "joinadmin.sqlite3") as conn:
        return list(conn.execute(query).fetchall())


def assert_registry_consistent(database_url: str, data_dir: Path) -> int:
    hosts = dict(rows("SELECT host_id, tls_cert_serial FROM joins_host", database_url, data_dir))
    allowed = rows(
        "SELECT host_id, tls_cert_serial FROM joins_joinattempt WHERE outcome = 'allowed'",
        database_url,
        data_dir,
    )
    assert len(allowed) == len({h for h, _ in allowed}), "an instance was registered twice"
    assert dict(allowed) == hosts, "hosts and allowed attempts disagree"
    assert all(serial for serial in hosts.values()), "a host without a certificate serial"
    return len(hosts)


def test_the_database_going_away_gives_503_and_service_resumes_by_itself(tmp_path, signer):
    database_url = fresh_postgres_database("joinadmin_fault_db")
    proxy = TcpProxy(("127.0.0.1", 5432))
    via_proxy = database_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    with moto_http_server() as aws:
        first, second = launch_instances(aws, 2)
        server = Gunicorn(
            {
                **aws,
                "JOINADMIN_DATA_DIR": str(tmp_path / "data"),
                "DATABASE_URL": via_proxy,
                "JOINADMIN_IID_CERTS_DIR": str(tmp_path / "certs"),
                "JOINADMIN_SECRET_KEY": "x" * 64,
            }
        )
        with running(server):
            server.manage("tokens", "create", "-", stdin=TOKEN)
            assert server.request("POST", "/api/v1/join", join_body(signer, first))[0] == 200

            proxy.cut()
            status, body = server.request("POST", "/api/v1/join", join_body(signer, second))
            assert status == 503
            assert json.loads(body)["error"] == "service_unavailable"
            assert server.get("/readyz")[0] == 503
            assert server.get("/healthz")[0] == 200

            proxy.restore()
            deadline = time.monotonic() + 30
            while server.get("/readyz")[0] != 200:
                assert time.monotonic() < deadline, "the server did not reconnect by itself"
                time.sleep(0.5)
            status, body = server.request("POST", "/api/v1/join", join_body(signer, second))
            assert status == 200, body
    assert assert_registry_consistent(database_url, tmp_path) == 2
    proxy.cut()


def test_a_worker_killed_mid_load_leaves_nothing_half_done(tmp_path, signer):
    database_url = os.environ.get("DATABASE_URL", "")
    data_dir = tmp_path / "data"
    env = {
        "JOINADMIN_DATA_DIR": str(data_dir),
        "JOINADMIN_IID_CERTS_DIR": str(tmp_path / "certs"),
        "JOINADMIN_SECRET_KEY": "y" * 64,
    }
    if database_url.startswith("postgres"):
        database_url = fresh_postgres_database("joinadmin_fault_kill")
        env["DATABASE_URL"] = database_url
    else:
        env.pop("DATABASE_URL", None)
        database_url = ""
    with moto_http_server() as aws:
        instances = launch_instances(aws, 80)
        server = Gunicorn({**aws, **env}, workers=2, threads=8)
        if not database_url:
            server.env.pop("DATABASE_URL", None)
        with running(server):
            server.manage("tokens", "create", "-", stdin=TOKEN)
            bodies = [join_body(signer, instance) for instance in instances]
            done: list[int] = []

            def join(body: bytes) -> int:
                status = server.request("POST", "/api/v1/join", body, timeout=60)[0]
                done.append(status)
                return status

            with ThreadPoolExecutor(max_workers=16) as pool:
                futures = [pool.submit(join, body) for body in bodies]
                while len(done) < 15:
                    time.sleep(0.02)
                victim = server.workers()[0]
                os.kill(victim, signal.SIGKILL)
                statuses = [f.result() for f in futures]
            assert victim not in server.workers()
            # The master replaced the worker: the service still answers.
            assert server.get("/healthz")[0] == 200
            # Whatever was cut short may be retried; it joins once or is refused as joined.
            for body, status in zip(bodies, statuses, strict=True):
                if status != 200:
                    retry = server.request("POST", "/api/v1/join", body)[0]
                    assert retry in {200, 403}
    registered = assert_registry_consistent(database_url, data_dir)
    assert registered == len(instances)
