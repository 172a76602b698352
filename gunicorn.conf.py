"""gunicorn settings for joinadmin.

Why gthread workers, and why these numbers (figures in bench/RESULTS.md):

* A join is mostly waiting: for the DescribeInstances answer, which `joins/coalesce.py` holds
  back for up to a window so that concurrent joins share one call, and for SQLite's write lock.
  A waiting thread releases the GIL, so one process keeps many joins in flight on threads.
* Coalescing happens inside one process: every worker process gathers its own batches. Few
  processes with many threads each make large batches (1,000 joins on 2 workers of 128 threads:
  about 11 calls); many small processes would each send their own small calls, and sync workers
  could not coalesce at all. So: one process per core (the CPU parts, document verification and
  certificate signing, need one core each), and `threads` about the number of ids one call
  carries (100), so that a single process can fill a batch.
* `worker_connections` above the threads lets a burst queue in the worker instead of in the
  kernel's accept backlog; `backlog` holds a thousand instances connecting at the same moment.
Tune with the variables below.
"""

import multiprocessing
import os

bind = os.environ.get("JOINADMIN_BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("JOINADMIN_WORKERS", str(multiprocessing.cpu_count())))
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

# --- Prometheus metrics across workers (joinadmin/metrics.py) ------------------------------------
# Each worker writes its counters to files in this folder and /metrics adds them up, so a scrape
# sees the whole server, not whichever worker answered. Set here, before any worker starts, so
# that every worker inherits it; an operator's own PROMETHEUS_MULTIPROC_DIR is kept.
os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR",
    os.path.join(os.path.abspath(os.environ.get("JOINADMIN_DATA_DIR") or "var"), "prometheus"),
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


def child_exit(server, worker):
    """Tell prometheus_client that a worker is gone, so its live-only values stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
