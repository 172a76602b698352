"""The benchmarks' meter of server CPU and idle share (bench/common.py), read from /proc."""

from __future__ import annotations

import os
import time

from bench.common import ServerMeter


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_the_meter_counts_the_cpu_its_processes_spend() -> None:
    meter = ServerMeter([os.getpid()])
    meter.start()
    _burn(0.3)
    cpu, idle = meter.stop()
    assert 0.25 <= cpu < 5  # the 0.3 s burnt, give or take a clock tick and this test's own work
    assert 0.0 <= idle <= 1.0


def test_processes_that_are_gone_count_nothing() -> None:
    meter = ServerMeter([2**22 + 12345])  # above the kernel's largest pid: never a process
    meter.start()
    _burn(0.05)
    assert meter.stop()[0] == 0.0
