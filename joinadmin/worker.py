"""What each gunicorn worker does once, before it serves: load what the first joins would
load, then take everything loaded so far out of the garbage collector's sight.

Why: Python's cyclic garbage collector periodically walks the objects that survived earlier
collections, and a full collection walks all of them: Django's and DRF's machinery, the
URL patterns, botocore's service descriptions (EC2's alone is about 50 ms of CPU to load), some
200,000 objects that live as long as the process. Joins keep many of their own objects alive
while they wait for their AWS batch and their commit, so under load the collector promotes them
and runs full collections often: `perf` put 11 to 13% of the workers' CPU in the collector,
and each full collection took 150 to 200 ms of CPU, four or five times in a 5 s round
(bench/RESULTS.md, throughput). `gc.freeze()` moves every object that exists at that moment to
a generation the collector never visits; collections then walk only what requests made since.

Loading first matters: frozen is only what exists when `gc.freeze()` runs, and a worker loads
its views at its first request and botocore's descriptions at its first AWS call. Nothing here
reaches the network or the database (credentials are not resolved, no client is made), so a
worker starts the same way when AWS or the database is away. `JOINADMIN_GC_FREEZE=false` skips
the freeze (the loading still happens: it only moves work from the first joins to start-up).
"""

from __future__ import annotations

import gc
import logging

from django.conf import settings
from django.urls import get_resolver

log = logging.getLogger(__name__)


def prepare() -> int:
    """Load the views and botocore's descriptions, then freeze (unless switched off); returns
    the number of objects frozen (0 when switched off)."""
    from joins.trust import ec2_lookup

    get_resolver().url_patterns  # imports every view and what it imports  # noqa: B018
    ec2_lookup().preload()
    if not settings.GC_FREEZE:
        return 0
    gc.collect()  # what is garbage already is freed, not frozen
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("%d objects set aside from garbage collection", frozen)
    return frozen
