"""gunicorn settings for joinadmin.

Why gthread workers, and why these numbers (measurements in bench/RESULTS.md):

* A join mostly waits: for DescribeInstances, which `joins/coalesce.py` holds back for up to its
  window so that concurrent joins share one call, and for the database. A waiting thread
  releases the GIL, so one process keeps many joins in flight on threads. Sync workers would
  hold one join per process and could never share a call.
* Coalescing happens inside a process: each worker process gathers its own batches, and a
  batch can only hold as many joins as the process has threads waiting. So: few processes (one
  per core, for the CPU parts: document verification, certificate signing, Django), each with
  more threads than the ids one call carries (100). With 2 workers of 128 threads, 1,000
  instances joining at once cost about a dozen DescribeInstances calls; with 8 threads per
  worker they would cost a hundred or more.
* On PostgreSQL, set `JOINADMIN_DB_POOL_SIZE` (16): the threads of a process then share a
  pool of that many connections, and a join gives its connection back while it waits
  (joinadmin/dbpool.py). Without it every thread that touched the database keeps a connection,
  and max_connections must exceed servers x workers x threads; SQLite needs nothing.
* Each process runs Python on one CPU at a time (the GIL). `JOINADMIN_PIN_WORKERS=true` pins
  every worker to a CPU of its own, so that the GIL's hand-overs between its threads stay on
  that CPU (joinadmin/affinity.py says why; bench/RESULTS.md measures it). Off by default: it
  suits a machine that serves joinadmin and little else.
* `JOINADMIN_REUSE_PORT=true` gives every worker a listening socket of its own (SO_REUSEPORT),
  and the kernel spreads new connections evenly between them. With the one shared socket,
  whichever worker wakes first takes a connection: kept-alive connections (nginx's upstream
  pool, agents behind a NAT) pile up on one worker while another idles, and a worker's threads
  and batches can only serve the connections it holds. Off by default: with it, a second server
  started by the same user on the same port shares the port instead of failing to start.
* `worker_connections` above the threads lets a burst queue inside the worker rather than in
  the kernel's accept backlog, and `backlog` holds a thousand instances connecting at once.
Tune with the variables below.
"""

import multiprocessing
import os

from joinadmin.env import env_bool

bind = os.environ.get("JOINADMIN_BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("JOINADMIN_WORKERS", str(max(2, multiprocessing.cpu_count()))))
worker_class = "gthread"
threads = int(os.environ.get("JOINADMIN_THREADS", "128"))
worker_connections = int(os.environ.get("JOINADMIN_WORKER_CONNECTIONS", "2000"))
backlog = 2048
timeout = int(os.environ.get("JOINADMIN_WORKER_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
max_requests = int(os.environ.get("JOINADMIN_MAX_REQUESTS", "0"))
max_requests_jitter = 100
accesslog = os.environ.get("JOINADMIN_ACCESS_LOG", "-") or None  # empty: no access log
errorlog = "-"
# Only the TLS proxy in front may set X-Forwarded-*; gunicorn itself trusts loopback only.
forwarded_allow_ips = os.environ.get("JOINADMIN_FORWARDED_ALLOW_IPS", "127.0.0.1")

# A listening socket per worker, connections spread by the kernel (see the docstring).
reuse_port = env_bool("JOINADMIN_REUSE_PORT")

# One CPU per worker process (see `pre_fork` and `post_fork` below).
pin_workers = env_bool("JOINADMIN_PIN_WORKERS")

# --- Prometheus metrics across workers (joinadmin/metrics.py) ------------------------------------
# Each worker writes its counters to files in this folder and /metrics adds them up, so a scrape
# sees the whole server, not whichever worker answered. Set here, before any worker starts, so
# that every worker inherits it; an operator's own PROMETHEUS_MULTIPROC_DIR is kept.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(
        os.path.abspath(os.environ.get("JOINADMIN_DATA_DIR") or "var"), "prometheus"
    )


def on_starting(server):
    """Empty the metrics folder once, when the server starts.

    Files left by a previous run would add its workers' counts to this one's; Prometheus
    understands counters that start again from zero, not counters that jump.
    """
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(path, mode=0o700, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))


def post_worker_init(worker):
    """Load what the first joins would load and set it aside from garbage collection
    (joinadmin/worker.py says why)."""
    from joinadmin.worker import prepare

    prepare()


def child_exit(server, worker):
    """Tell prometheus_client that a worker is gone, so its live-only values stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def pre_fork(server, worker):
    """With `JOINADMIN_PIN_WORKERS`, choose the new worker's CPU (in the arbiter, which knows
    which CPUs the live workers hold): the least used one."""
    if not pin_workers:
        return
    from joinadmin.affinity import least_used_cpu

    worker.joinadmin_cpu = least_used_cpu(
        os.sched_getaffinity(0),
        (getattr(other, "joinadmin_cpu", None) for other in server.WORKERS.values()),
    )


def post_fork(server, worker):
    """Pin the new worker to the CPU `pre_fork` chose, before it starts any thread (threads
    inherit it). A refusal (a container that forbids it) leaves the worker unpinned."""
    cpu = getattr(worker, "joinadmin_cpu", None)
    if cpu is None:
        return
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        server.log.warning("worker %s not pinned to CPU %s: %s", worker.pid, cpu, exc)
    else:
        server.log.info("worker %s pinned to CPU %s", worker.pid, cpu)
