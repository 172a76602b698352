"""gunicorn settings for joinadmin.

gthread workers: a join spends most of its time waiting on AWS (DescribeInstances, AssumeRole),
so each process keeps many joins in flight on threads while the GIL is free; processes add CPU
parallelism for signature checks and certificate signing. Two processes per core and eight threads
each is a sound start; tune with the variables below.
"""

import multiprocessing
import os

bind = os.environ.get("JOINADMIN_BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("JOINADMIN_WORKERS", str(max(2, multiprocessing.cpu_count()))))
worker_class = "gthread"
threads = int(os.environ.get("JOINADMIN_THREADS", "8"))
timeout = int(os.environ.get("JOINADMIN_WORKER_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
max_requests = int(os.environ.get("JOINADMIN_MAX_REQUESTS", "0"))
max_requests_jitter = 100
accesslog = os.environ.get("JOINADMIN_ACCESS_LOG", "-") or None  # empty: no access log
errorlog = "-"
# Only the TLS proxy in front may set X-Forwarded-*; gunicorn itself trusts loopback only.
forwarded_allow_ips = os.environ.get("JOINADMIN_FORWARDED_ALLOW_IPS", "127.0.0.1")
