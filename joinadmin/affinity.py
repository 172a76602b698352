"""Which CPU a gunicorn worker process is pinned to (`JOINADMIN_PIN_WORKERS`). No Django import.

Why: a worker runs its joins on many threads, but only the thread holding Python's GIL runs
Python code, so a process uses about one CPU whatever the number of threads. Left to the kernel,
those threads are spread over every CPU, and each time the GIL changes hands (every database
step, every signature, every wait) the next thread is woken on another CPU: an inter-processor
interrupt, caches filled again, and, on a virtual machine, an exit to the hypervisor. Pinned to
one CPU, the hand-over stays on that CPU. Measured (bench/RESULTS.md, "Workers pinned to
CPUs"): a quarter of the voluntary context switches per join, about a quarter less CPU per join,
and half again as many no-op requests a second.

It is for a machine that serves joinadmin and little else: a pinned worker cannot move away
from a CPU that another busy program (a database on the same machine) also wants.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


def least_used_cpu(allowed: Iterable[int], taken: Iterable[int | None]) -> int:
    """The CPU among `allowed` with the fewest live workers pinned to it (`taken`, one entry
    per live worker, None for one that is not pinned); the lowest such CPU on a tie.

    A worker that dies is replaced by one pinned to the CPU it left, so that a restarted worker
    never doubles up on one CPU while another stands empty.
    """
    cpus = sorted(set(allowed))
    if not cpus:
        raise ValueError("no CPU is allowed to this process")
    load = Counter(cpu for cpu in taken if cpu is not None)
    return min(cpus, key=lambda cpu: (load[cpu], cpu))
