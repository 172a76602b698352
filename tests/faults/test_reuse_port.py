"""A listening socket per worker (`JOINADMIN_REUSE_PORT`: gunicorn.conf.py), checked on a real
gunicorn through the kernel's own tables of sockets (/proc/net/tcp and each process's fds)."""

from __future__ import annotations

import http.client
import os
from pathlib import Path

from tests.support.live import Gunicorn, running, wait_for

LISTEN, ESTABLISHED = "0A", "01"


def _sockets(port: int, state: str) -> set[str]:
    """Inodes of the IPv4 TCP sockets on local port `port` in `state`."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == state:
            found.add(fields[9])
    return found


def _held_by(pid: int, inodes: set[str]) -> set[str]:
    """Which of `inodes` process `pid` holds an fd of."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            held.add(target[8:-1])
    return held


def _two_workers(server: Gunicorn) -> list[int]:
    workers = wait_for(lambda: len(found := server.workers()) == 2 and found, "two workers")
    assert isinstance(workers, list)
    return workers


def test_each_worker_listens_on_a_socket_of_its_own_and_connections_spread(
    tmp_path: Path,
) -> None:
    server = Gunicorn({"JOINADMIN_DATA_DIR": str(tmp_path), "JOINADMIN_REUSE_PORT": "true"})
    with running(server):
        workers = _two_workers(server)
        listening = _sockets(server.port, LISTEN)
        assert len(listening) == 2
        held = [_held_by(pid, listening) for pid in workers]
        assert all(len(sockets) == 1 for sockets in held)
        assert held[0] != held[1]
        assert server.process is not None
        assert not _held_by(server.process.pid, listening)  # the arbiter accepts nothing

        # Kept-alive connections: the kernel hashes each new one to a worker's socket, so 64 of
        # them cannot all land on one worker (a chance of 2 in 2**64).
        connections = [http.client.HTTPConnection("127.0.0.1", server.port) for _ in range(64)]
        try:
            for connection in connections:
                connection.request("GET", "/healthz")
                response = connection.getresponse()
                response.read()
                assert response.status == 200
            established = _sockets(server.port, ESTABLISHED)
            per_worker = [len(_held_by(pid, established)) for pid in workers]
            assert sum(per_worker) == 64
            assert min(per_worker) > 0, per_worker
        finally:
            for connection in connections:
                connection.close()


def test_by_default_the_workers_share_the_arbiters_socket(tmp_path: Path) -> None:
    server = Gunicorn({"JOINADMIN_DATA_DIR": str(tmp_path)})
    with running(server):
        workers = _two_workers(server)
        listening = _sockets(server.port, LISTEN)
        assert len(listening) == 1
        assert server.process is not None
        assert _held_by(server.process.pid, listening) == listening
        assert all(_held_by(pid, listening) == listening for pid in workers)
