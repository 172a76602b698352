"""What the join benchmarks share: signed documents, the EC2 stand-in, a gunicorn server of our
own and a small HTTP client.

* Documents are signed with the test signing authority (`tests/support/iid_signer.py`), whose
  certificate the server trusts through `JOINADMIN_IID_CERTS_DIR`, exactly as the join tests do;
  signing is done before any clock starts.
* The server is the production setup: `gunicorn -c gunicorn.conf.py joinadmin.wsgi`, on a free
  loopback port, with a data dir (SQLite file, secret key, CA) of its own that is deleted
  afterwards, migrated and given a token with `manage.py tokens create`. AWS is the stand-in
  (`bench/ec2_standin.py`) through `AWS_ENDPOINT_URL_EC2`. The per-source join rate limit is
  switched off, because every benchmark request comes from 127.0.0.1.
* The client is asyncio over raw HTTP/1.1 sockets, cheap enough per request not to take much of
  the CPU the server needs (each benchmark prints the client's own CPU time).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519  # noqa: E402

from tests.support.iid_signer import IIDSigner, make_document  # noqa: E402

ACCOUNT = "123456789012"
REGION = "us-west-2"
TOKEN = "bench-token"
PRIVATE_IP = "10.0.0.12"  # every document's privateIp (tests/support/iid_signer.py's default)
TOKEN_YAML = f"""kind: token
version: v2
metadata:
  name: {TOKEN}
spec:
  roles: [Node]
  join_method: ec2
  aws_iid_ttl: 1h
  allow:
  - aws_account: "{ACCOUNT}"
    aws_regions: [{REGION}]
"""
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"


def instance_ids(count: int, start: int = 0) -> list[str]:
    """`count` distinct instance ids in AWS's 17-hex-digit form."""
    return [f"i-{n:017x}" for n in range(start, start + count)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which `fraction` of `values` lie (nearest rank); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def machine() -> str:
    """One line naming what the figures were measured on."""
    import django
    import gunicorn

    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}, Django {django.get_version()}, "
        f"gunicorn {gunicorn.__version__}"
    )


# --- documents --------------------------------------------------------------------------------

_signer: IIDSigner | None = None
_bodies_args: tuple[str, str, str] = ("", "", "")


def _sign_one(instance_id: str) -> bytes:
    assert _signer is not None
    pending, tls_pem, ssh_line = _bodies_args
    document = make_document(
        account_id=ACCOUNT,
        instance_id=instance_id,
        region=REGION,
        pending_time=datetime.fromisoformat(pending),
        privateIp=PRIVATE_IP,
    )
    # The body joinadmin's agent sends (joinadmin_agent/cli.py): the host id it claims, its
    # hostname as the node name, and its private address as an extra principal.
    return json.dumps(
        {
            "token": TOKEN,
            "join_method": "ec2",
            "host_id": f"{ACCOUNT}-{instance_id}",
            "node_name": f"ip-{PRIVATE_IP.replace('.', '-')}.{REGION}.compute.internal",
            "ec2_identity_document": _signer.sign(document),
            "public_tls_key": tls_pem,
            "public_ssh_key": ssh_line,
            "dns_names": [],
            "additional_principals": [PRIVATE_IP],
        }
    ).encode()


class Documents:
    """Join request bodies for made-up instances, signed by a test authority."""

    def __init__(self) -> None:
        global _signer
        _signer = IIDSigner(regions=(REGION,), authority="joinadmin bench")
        tls_key = ec.generate_private_key(ec.SECP256R1())
        ssh_key = ed25519.Ed25519PrivateKey.generate()
        self.tls_pem = (
            tls_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        self.ssh_line = (
            ssh_key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        _signer.certificate(REGION)  # make the key before forking, so the workers share it

    def write_certs(self, folder: Path) -> None:
        assert _signer is not None
        _signer.write_certs(folder)

    def bodies(self, ids: Sequence[str]) -> list[bytes]:
        """One request body per id, launched a minute ago; signed on every core (fork shares
        the signing key)."""
        global _bodies_args
        pending = (datetime.now(UTC) - timedelta(minutes=1)).replace(microsecond=0)
        _bodies_args = (pending.isoformat(), self.tls_pem, self.ssh_line)
        with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1) as pool:
            return pool.map(_sign_one, ids, chunksize=64)


# --- the EC2 stand-in -------------------------------------------------------------------------


class StandIn:
    """`bench/ec2_standin.py` in a process of its own, so its work is not the client's."""

    def __init__(self, *, burst: int, rate: float, latency_ms: float) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "ec2_standin.py"),
                "--burst",
                str(burst),
                "--rate",
                str(rate),
                "--latency-ms",
                str(latency_ms),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"the EC2 stand-in did not start: {line!r}")
        self.url = line.removeprefix("listening on ")

    def _post(self, path: str, data: dict[str, Any]) -> None:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(data).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()

    def add_running(self, ids: Sequence[str]) -> None:
        self._post("/_standin/instances", {"running": list(ids)})

    def reset(self) -> None:
        self._post("/_standin/reset", {})

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_standin/stats", timeout=30) as answer:
            return dict(json.loads(answer.read()))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


# --- the server -------------------------------------------------------------------------------


class Server:
    """gunicorn with gunicorn.conf.py, on its own port and data dir."""

    def __init__(
        self,
        *,
        standin_url: str,
        documents: Documents,
        env: dict[str, str],
        database_url: str = "",
    ) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="joinadmin-bench-"))
        self.database = Database(database_url) if database_url else None
        self.port = free_port()
        documents.write_certs(self.data_dir / "iid-certs")
        # Real AWS credentials or another database must never reach a benchmark server; any
        # other JOINADMIN_* variable passes through, so e.g. JOINADMIN_THREADS=32 tunes a run.
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AWS_", "DATABASE_URL", "PROMETHEUS_"))
        }
        self.env.update(
            {
                "JOINADMIN_DATA_DIR": str(self.data_dir),
                "JOINADMIN_IID_CERTS_DIR": str(self.data_dir / "iid-certs"),
                "JOINADMIN_BIND": f"127.0.0.1:{self.port}",
                "JOINADMIN_JOIN_RATE_LIMIT": "off",
                "JOINADMIN_ACCESS_LOG": str(self.data_dir / "access.log"),
                "JOINADMIN_LOG_LEVEL": "WARNING",
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_ENDPOINT_URL_EC2": standin_url,
            }
        )
        # The production profile's workers, each pinned to a CPU and listening on a socket of
        # its own (docs/production.md);
        # JOINADMIN_PIN_WORKERS=false in the environment runs them unpinned, and
        # JOINADMIN_REUSE_PORT=false has them share one listening socket.
        self.env.setdefault("JOINADMIN_PIN_WORKERS", "true")
        self.env.setdefault("JOINADMIN_REUSE_PORT", "true")
        if self.database is not None:
            self.env["DATABASE_URL"] = self.database.url
            # The production profile's pool (docs/production.md); 0 in the environment turns it off.
            self.env.setdefault("JOINADMIN_DB_POOL_SIZE", "16")
        self.env.update(env)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "gunicorn.log"

    def manage(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def start(self) -> None:
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("tokens", "create", "-", stdin=TOKEN_YAML)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(GUNICORN), "-c", "gunicorn.conf.py", "joinadmin.wsgi"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for _ in range(300):
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("gunicorn did not answer /healthz within 30 seconds")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, sql: str) -> int:
        if self.database is not None:
            return self.database.count(sql)
        with sqlite3.connect(self.data_dir / "joinadmin.sqlite3", timeout=30) as db:
            return int(db.execute(sql).fetchone()[0])

    def worker_pids(self) -> list[int]:
        if self.process is None:
            return []
        output = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True
        ).stdout
        return [int(pid) for pid in output.split()]

    def stop(self, keep: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if not keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            if self.database is not None:
                self.database.drop()

    def describe(self) -> str:
        """The database and gunicorn shape, for the benchmark's method line."""
        shape = subprocess.run(
            [
                sys.executable,
                "-c",
                "import runpy; c = runpy.run_path('gunicorn.conf.py'); "
                "print(c['workers'], c['threads'], c['pin_workers'], c['reuse_port'])",
            ],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        database = "PostgreSQL" if self.database is not None else "SQLite (WAL) in the data dir"
        pinned = ", each pinned to a CPU" if shape[2] == "True" else ", not pinned"
        sockets = (
            ", each listening on a socket of its own"
            if shape[3] == "True"
            else ", sharing one listening socket"
        )
        return (
            f"{database}; gunicorn gthread, {shape[0]} workers x {shape[1]} threads{pinned}"
            f"{sockets}"
        )


class Database:
    """A fresh PostgreSQL database for one run, made on the server `server_url` names and
    dropped afterwards, so a run never touches data of its own or anyone else's."""

    def __init__(self, server_url: str) -> None:
        import psycopg

        self._psycopg = psycopg
        parts = urlsplit(server_url)
        self.name = f"joinadmin_bench_{os.getpid()}_{int(time.time())}"
        self.server = parts._replace(path="/postgres").geturl()
        self.url = parts._replace(path=f"/{self.name}").geturl()
        with psycopg.connect(self.server, autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{self.name}"')

    def count(self, sql: str) -> int:
        with self._psycopg.connect(self.url) as db:
            row = db.execute(sql).fetchone()
            return int(row[0]) if row else 0

    def drop(self) -> None:
        with self._psycopg.connect(self.server, autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@contextmanager
def running(
    *, documents: Documents, standin: dict[str, Any], env: dict[str, str], database_url: str = ""
) -> Iterator[tuple[Server, StandIn]]:
    """A stand-in and a server using it, stopped (and the data dir removed) afterwards.

    `database_url` (e.g. `postgres://postgres@127.0.0.1:5432/`) runs the server on a fresh
    PostgreSQL database of that server instead of SQLite in the data dir."""
    aws = StandIn(**standin)
    server = Server(standin_url=aws.url, documents=documents, env=env, database_url=database_url)
    try:
        server.start()
        yield server, aws
    finally:
        server.stop(keep=bool(os.environ.get("JOINADMIN_BENCH_KEEP")))
        aws.stop()


# --- the HTTP client --------------------------------------------------------------------------


@dataclass
class Reply:
    status: int  # 0: no HTTP answer (connection refused or reset)
    error: str  # the join's error code, or the client-side failure
    seconds: float  # from when the request was due to the complete answer
    answered: float = 0.0  # `time.perf_counter()` at the complete answer


class Connection:
    """One keep-alive HTTP/1.1 connection to the server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._used = False

    async def post(self, path: str, body: bytes, *, close: bool = False) -> tuple[int, bytes]:
        """Send one request and read its answer. A kept-alive connection that the server closed
        while it was idle (gunicorn's keep-alive timeout) fails before any byte of an answer:
        then, as HTTP clients do, the request goes again on a new connection."""
        try:
            return await self._exchange(path, body, close=close)
        except _ClosedWhileIdle:
            await self.close()
            return await self._exchange(path, body, close=close)

    async def _exchange(self, path: str, body: bytes, *, close: bool) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
        ).encode()
        reused = self._used
        self._used = True
        try:
            self.writer.write(head + body)
            await self.writer.drain()
            header = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
            nothing = not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial
            if reused and nothing:
                raise _ClosedWhileIdle from exc
            raise
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        payload = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if close or headers.get("connection", "").lower() == "close":
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None
        self._used = False


class _ClosedWhileIdle(Exception):
    """The server had closed a kept-alive connection before a request on it was read."""


def _error_of(status: int, payload: bytes) -> str:
    if status == 200:
        return ""
    try:
        return str(json.loads(payload).get("error", status))
    except ValueError:
        return f"http_{status}"


async def timed_post(
    connection: Connection, path: str, body: bytes, due: float, *, close: bool = False
) -> Reply:
    """POST and time it from `due` (so a request that had to wait for a connection counts
    its wait too)."""
    try:
        status, payload = await connection.post(path, body, close=close)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        await connection.close()
        now = time.perf_counter()
        return Reply(0, type(exc).__name__, now - due, now)
    now = time.perf_counter()
    return Reply(status, _error_of(status, payload), now - due, now)


async def all_at_once(port: int, path: str, bodies: Sequence[bytes]) -> tuple[list[Reply], float]:
    """Every body on its own new connection, all started together; the replies and the wall
    time from the start to the last reply."""
    started = time.perf_counter()
    replies = await asyncio.gather(
        *(timed_post(Connection(port), path, body, started, close=True) for body in bodies)
    )
    return list(replies), time.perf_counter() - started


@dataclass
class Round:
    """What a closed loop got: every reply, and the time from the start to the last one."""

    replies: list[Reply]
    started: float  # `time.perf_counter()` at the start
    seconds: float  # how long requests were sent
    elapsed: float  # from the start to the last answer

    @property
    def window(self) -> float:
        """The sending period: `seconds`, or less when the bodies ran out first."""
        return min(self.seconds, self.elapsed)

    def ok_in_window(self, skip: float = 0.0) -> int:
        """Answers 200 complete within the window, leaving out its first `skip` seconds."""
        start, end = self.started + skip, self.started + self.window
        return sum(
            1 for reply in self.replies if reply.status == 200 and start < reply.answered <= end
        )

    def rate(self, skip: float = 0.0) -> float:
        """Answers 200 a second within the window (see `closed_loop`), leaving out its first
        `skip` seconds: the steady rate, without the start of a loop whose clients all begin at
        once."""
        span = self.window - skip
        return self.ok_in_window(skip) / span if span > 0 else 0.0


async def closed_loop(
    port: int, path: str, bodies: Iterable[bytes], *, connections: int, seconds: float
) -> Round:
    """`connections` clients each sending its next request when the last is answered, for
    `seconds` (or until the bodies run out).

    The rate counts the answers complete within those seconds (as wrk does); the requests still
    in flight when they end are answered and kept (their latencies, outcomes and server CPU
    count) but not in the rate: how long the last of them take (an endpoint that gathers work,
    like the coalesced lookups, holds its last requests until its batches go) is the loop's end,
    not the server's rate, and counting it would make the rate depend on the round's length."""
    queue = iter(bodies)
    replies: list[Reply] = []
    started = time.perf_counter()
    stop_at = started + seconds

    async def client() -> None:
        connection = Connection(port)
        for body in queue:
            if time.perf_counter() >= stop_at:
                break
            replies.append(await timed_post(connection, path, body, time.perf_counter()))
        await connection.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return Round(replies, started, seconds, time.perf_counter() - started)


async def open_loop(
    port: int, path: str, bodies: Sequence[bytes], *, rate: float, seconds: float
) -> Round:
    """Requests due at a fixed `rate` whatever the answers do (latency is measured from when a
    request was due, so a slow server cannot hide its queue); every answer counts, the window
    being the time to the last one."""
    count = min(len(bodies), int(rate * seconds))
    idle: list[Connection] = []
    started = time.perf_counter()

    async def one(body: bytes, due: float) -> Reply:
        connection = idle.pop() if idle else Connection(port)
        reply = await timed_post(connection, path, body, due)
        idle.append(connection)
        return reply

    tasks = []
    for n in range(count):
        due = started + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(bodies[n], due)))
    replies = await asyncio.gather(*tasks)
    for connection in idle:
        await connection.close()
    elapsed = time.perf_counter() - started
    return Round(list(replies), started, elapsed, elapsed)


def summarise(replies: Sequence[Reply]) -> dict[str, int]:
    """Replies counted by outcome: `ok` or the error code."""
    outcome: dict[str, int] = {}
    for reply in replies:
        key = "ok" if reply.status == 200 else f"{reply.status} {reply.error}"
        outcome[key] = outcome.get(key, 0) + 1
    return outcome


def cpu_seconds() -> float:
    """CPU time of this process (the client) so far."""
    return time.process_time()


class ServerMeter:
    """The CPU time the server's worker processes spend, and the share of the machine's CPU time
    left idle, between `start` and `stop` (Linux `/proc`; zeros where it cannot be read).

    Why: with the client, the stand-in and the server on the same CPUs, a rate alone does not
    say whether a round was bound by the server's CPU per request or waited on something: the
    CPU per answered request and the idle share do.
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self._pids = list(pids)
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._cpu = 0.0
        self._idle = (0, 0)

    def _read_cpu(self) -> float:
        total = 0
        for pid in self._pids:
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / self._ticks

    @staticmethod
    def _read_idle() -> tuple[int, int]:
        try:
            with open("/proc/stat") as stat:
                values = [int(v) for v in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return (0, 0)
        return values[3] + values[4], sum(values)  # idle + iowait, all

    def start(self) -> None:
        self._cpu, self._idle = self._read_cpu(), self._read_idle()

    def stop(self) -> tuple[float, float]:
        """(server CPU seconds, idle share of the machine) since `start`."""
        idle, total = self._read_idle()
        spent = total - self._idle[1]
        share = (idle - self._idle[0]) / spent if spent > 0 else 0.0
        return self._read_cpu() - self._cpu, share
