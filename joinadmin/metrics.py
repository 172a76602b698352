"""Prometheus metrics: join attempts, join latency, AWS calls and throttling; the /metrics page.

What is counted, and where from (each in one place):

- `joinadmin_join_attempts_total{outcome,code}`: every join attempt, as recorded in the join
  history (`outcome` allowed/denied/error, `code` the contract's error code or `ok`), counted
  by `record_join` at the end of `joins.services.perform_join`.
- `joinadmin_join_duration_seconds{outcome}`: how long deciding a join took, same place.
- `joinadmin_aws_calls_total{operation,result}`: every DescribeInstances and AssumeRole call
  (a call is what botocore makes of one API request, retries included) by final `result`:
  ok, not_found, denied, throttled, unavailable (AWS 5xx, timeouts, network) or error.
- `joinadmin_aws_throttles_total{operation}`: every throttling answer AWS gave, including those
  botocore retried successfully: the early sign that the account's API rate is being spent.

The AWS numbers come from botocore's own event hooks, registered by `watch_aws_client` on each
client `joins.aws` builds, so that no call path can forget to count.

Several gunicorn workers: with `PROMETHEUS_MULTIPROC_DIR` set (gunicorn.conf.py sets it under
the data dir and clears it when the server starts), every worker writes its numbers to files
there and /metrics adds them up, so one scrape sees the whole server, not one worker. Without it
(tests, `manage.py` commands, the development server) the numbers live in the process.

This module imports no Django at the top: `joins.aws`, which has no Django import, uses it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

from joins.constants import ERROR_CODES, ERROR_OUTCOME, OUTCOME_ALLOWED, OUTCOMES

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

log = logging.getLogger(__name__)

OK = "ok"
OTHER = "other"
# Seconds. Most joins finish in tens of milliseconds without AWS, a few hundred with it; the
# AWS time budget (8 s by default) bounds the slowest.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# AWS error codes meaning "you are calling too fast" (EC2 answers RequestLimitExceeded with 503).
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
    }
)
NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "AuthFailure",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "OptInRequired",
        "RegionDisabledException",
    }
)
AWS_OPERATIONS = ("DescribeInstances", "AssumeRole")
AWS_RESULTS = (OK, "not_found", "denied", "throttled", "unavailable", "error")

JOIN_ATTEMPTS = Counter(
    "joinadmin_join_attempts",
    "Join attempts recorded in the join history, by outcome and error code (ok when allowed).",
    ["outcome", "code"],
)
JOIN_DURATION = Histogram(
    "joinadmin_join_duration_seconds",
    "Time to decide a join request, from its arrival to its answer, by outcome.",
    ["outcome"],
    buckets=DURATION_BUCKETS,
)
AWS_CALLS = Counter(
    "joinadmin_aws_calls",
    "AWS API calls (retries included in one call), by operation and final result.",
    ["operation", "result"],
)
AWS_THROTTLES = Counter(
    "joinadmin_aws_throttles",
    "Throttling answers from AWS, each attempt counted, retried ones included.",
    ["operation"],
)
JOIN_WRITE_BATCH = Histogram(
    "joinadmin_join_write_batch_size",
    "Join writes committed together in one transaction by a process's join writer.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200),
)

# Every series exists from the start at 0, so that rate() and absent-series alerts work before
# the first refusal of a kind.
JOIN_ATTEMPTS.labels(OUTCOME_ALLOWED, OK)
for _outcome in OUTCOMES:
    JOIN_DURATION.labels(_outcome)
for _code, _outcome in ERROR_OUTCOME.items():
    JOIN_ATTEMPTS.labels(_outcome, _code)
for _operation in AWS_OPERATIONS:
    AWS_THROTTLES.labels(_operation)
    for _result in AWS_RESULTS:
        AWS_CALLS.labels(_operation, _result)


# The series of each (outcome, code) pair met so far: `labels()` looks them up under a lock.
_join_series: dict[tuple[str, str], tuple[Any, Any]] = {}


def record_join(outcome: str, code: str, seconds: float) -> None:
    """Count one recorded join attempt and its duration.

    `code` is bounded to the contract's codes so that a label can never grow without limit.
    Never raises: a metrics problem must not turn into a failed join.
    """
    try:
        label = code if code == OK or code in ERROR_CODES else OTHER
        series = _join_series.get((outcome, label))
        if series is None:  # a label pair is only ever one pair of series: keep them
            series = (JOIN_ATTEMPTS.labels(outcome, label), JOIN_DURATION.labels(outcome))
            _join_series[(outcome, label)] = series
        series[0].inc()
        series[1].observe(max(seconds, 0.0))
    except Exception:  # see docstring
        log.exception("could not record join metrics")


def record_write_batch(size: int) -> None:
    """Observe one transaction of the join writer (joins/writer.py). Never raises."""
    try:
        JOIN_WRITE_BATCH.observe(size)
    except Exception:  # a metrics problem must not fail the batch's writes
        log.exception("could not record join writer metrics")


def classify_aws_answer(parsed: dict[str, Any] | None) -> str:
    """The `result` label of a call AWS answered (`parsed` is botocore's parsed response)."""
    parsed = parsed or {}
    error = parsed.get("Error") or {}
    status = int((parsed.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
    code = str(error.get("Code") or "")
    if not code and status < 400:
        return OK
    if code in THROTTLING_CODES or status == 429:
        return "throttled"
    if code in NOT_FOUND_CODES:
        return "not_found"
    if code in DENIED_CODES or status in (401, 403):
        return "denied"
    if status >= 500:
        return "unavailable"
    return "error"


def _operation(event_name: str) -> str:
    return event_name.rsplit(".", 1)[-1]


def _after_call(event_name: str = "", parsed: dict[str, Any] | None = None, **_: Any) -> None:
    try:
        AWS_CALLS.labels(_operation(event_name), classify_aws_answer(parsed)).inc()
    except Exception:  # a botocore hook must never break the call it observes
        log.exception("could not record AWS call metrics")


def _after_call_error(event_name: str = "", **_: Any) -> None:
    """No answer at all (timeout, connection refused, time budget spent): unavailable."""
    try:
        AWS_CALLS.labels(_operation(event_name), "unavailable").inc()
    except Exception:  # see _after_call
        log.exception("could not record AWS call metrics")


def _needs_retry(event_name: str = "", response: Any = None, **_: Any) -> None:
    """Runs after every attempt; counts the throttled ones. Returns None: it never decides
    about retrying (botocore's retry handler does)."""
    try:
        parsed = response[1] if isinstance(response, tuple) and len(response) > 1 else None
        if parsed is not None and classify_aws_answer(parsed) == "throttled":
            AWS_THROTTLES.labels(_operation(event_name)).inc()
    except Exception:  # see _after_call
        log.exception("could not record AWS throttling metrics")


def watch_aws_client(client: Any) -> None:
    """Count the calls of a boto3 client. Safe to call more than once for one client."""
    events = client.meta.events
    events.register("after-call", _after_call, unique_id="joinadmin-metrics-after-call")
    events.register(
        "after-call-error", _after_call_error, unique_id="joinadmin-metrics-after-call-error"
    )
    events.register("needs-retry", _needs_retry, unique_id="joinadmin-metrics-needs-retry")


def multiprocess_dir() -> str:
    """The folder the gunicorn workers share their numbers through, or "" when not set."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def exposition() -> bytes:
    """The metrics in Prometheus text format: all workers' when in multiprocess mode."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


# --- The /metrics page ------------------------------------------------------------------------
# Django is imported inside these functions, not at the top (see the module docstring).

# Headers a reverse proxy adds. Seen from a peer that is not a trusted proxy, they mean the
# request came through a proxy we cannot see behind, so its peer address says nothing about
# the client (nginx on loopback would make every visitor look like 127.0.0.1).
PROXY_HEADERS = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_FORWARDED",
    "HTTP_X_REAL_IP",
)
REFUSED_MESSAGE = (
    "The metrics are served only to the addresses in JOINADMIN_METRICS_ALLOW (default: this "
    "machine) and to admins signed in or presenting an API key.\n"
)


def address_may_read(request: HttpRequest) -> bool:
    """True when the request's source address is in `METRICS_ALLOW` and can be believed."""
    from django.conf import settings

    from joins.net import client_address

    trusted = settings.TRUSTED_PROXIES
    try:
        peer = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    peer_trusted = any(peer in net for net in trusted)
    if not peer_trusted and any(header in request.META for header in PROXY_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(client_address(request, trusted))
    except ValueError:
        return False
    return any(address in net for net in settings.METRICS_ALLOW)


def admin_may_read(request: HttpRequest) -> bool:
    """True for an admin signed in to the console or presenting an admin's API key."""
    from accounts.roles import can_manage
    from accounts.services import authenticate_api_key

    if can_manage(getattr(request, "user", None)):
        return True
    scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        key = authenticate_api_key(value)
        return key is not None and can_manage(key.user)
    return False


def metrics_view(request: HttpRequest) -> HttpResponse:
    """`GET /metrics`: the Prometheus text exposition, for allowed addresses and admins."""
    from django.http import HttpResponse, HttpResponseNotAllowed

    from joins.net import client_address

    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    if not (address_may_read(request) or admin_may_read(request)):
        from django.conf import settings

        log.warning(
            "refused /metrics to %s (peer %s)",
            client_address(request, settings.TRUSTED_PROXIES),
            request.META.get("REMOTE_ADDR", ""),
        )
        return HttpResponse(REFUSED_MESSAGE, status=403, content_type="text/plain; charset=utf-8")
    response = HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
