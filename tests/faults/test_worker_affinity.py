"""Workers pinned to CPUs (`JOINADMIN_PIN_WORKERS`: gunicorn.conf.py, joinadmin/affinity.py),
checked on a real gunicorn through the kernel's own view of each worker's CPUs."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from joinadmin.affinity import least_used_cpu
from tests.support.live import Gunicorn, running, wait_for

ALLOWED = frozenset(os.sched_getaffinity(0))


def test_a_new_worker_takes_the_least_used_cpu() -> None:
    assert least_used_cpu({0, 1, 2}, [0, 1]) == 2
    assert least_used_cpu({0, 1}, [0, 0, 1]) == 1
    assert least_used_cpu({1, 3}, []) == 1  # a tie: the lowest
    assert least_used_cpu({0, 1}, [None, 0]) == 1  # an unpinned worker holds no CPU
    assert least_used_cpu({0, 1}, [5, 5, 0]) == 1  # a CPU no longer allowed does not count


def test_no_allowed_cpu_is_an_error() -> None:
    with pytest.raises(ValueError, match="no CPU"):
        least_used_cpu(set(), [])


def _affinities(server: Gunicorn, count: int) -> dict[int, frozenset[int]] | None:
    """Each worker's CPUs once `count` workers run (None while they are starting)."""
    try:
        found = {pid: frozenset(os.sched_getaffinity(pid)) for pid in server.workers()}
    except OSError:  # a worker that just exited
        return None
    return found if len(found) == count else None


def _pinned(server: Gunicorn, count: int) -> dict[int, frozenset[int]] | None:
    """Each worker's CPUs once `count` workers run pinned to one CPU each, on as many distinct
    CPUs as there are workers or CPUs (None until then)."""
    found = _affinities(server, count)
    if found is None:
        return None
    singles = [cpu for cpus in found.values() if len(cpus) == 1 for cpu in cpus]
    spread = len(singles) == count and len(set(singles)) == min(count, len(ALLOWED))
    return found if spread else None


def test_pinned_workers_each_hold_a_cpu_and_a_replacement_takes_the_freed_one(
    tmp_path: Path,
) -> None:
    server = Gunicorn(
        {"JOINADMIN_DATA_DIR": str(tmp_path), "JOINADMIN_PIN_WORKERS": "true"},
        workers=2,
        threads=2,
    )
    with running(server):
        first = wait_for(lambda: _pinned(server, 2), "two pinned workers")
        assert isinstance(first, dict)
        assert all(cpus <= ALLOWED for cpus in first.values())

        killed = min(first)
        os.kill(killed, signal.SIGKILL)
        second = wait_for(
            lambda: (found := _pinned(server, 2)) and killed not in found and found,
            "the killed worker's replacement, pinned",
        )
        assert isinstance(second, dict)
        # The survivor kept its CPU; the replacement took the one the killed worker left.
        survivor = next(pid for pid in first if pid != killed)
        assert second[survivor] == first[survivor]
        replacement = next(pid for pid in second if pid != survivor)
        assert second[replacement] == first[killed]
        assert server.get("/healthz")[0] == 200
        log = (tmp_path / "gunicorn.log").read_text()
        assert f"worker {replacement} pinned to CPU {min(first[killed])}" in log


def test_workers_are_not_pinned_by_default(tmp_path: Path) -> None:
    server = Gunicorn({"JOINADMIN_DATA_DIR": str(tmp_path)}, workers=2, threads=2)
    with running(server):
        found = wait_for(lambda: _affinities(server, 2), "two workers")
        assert isinstance(found, dict)
        assert all(cpus == ALLOWED for cpus in found.values())
        assert "pinned to CPU" not in (tmp_path / "gunicorn.log").read_text()
