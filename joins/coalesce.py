"""Coalesced DescribeInstances lookups: many concurrent joins, few AWS calls. No Django import.

Why: AWS allows an account about 50 DescribeInstances calls at once and 10 a second after that,
per region. When an Auto Scaling group launches a thousand instances they all join within a
minute; one call per join is throttled, and throttled joins are refused although the instances
are healthy. One call may ask about many instance ids, so the joins of a burst share calls:

* lookups for the same (region, role) gather in one open batch (the account is implied by the
  role, or by the server's own credentials when there is no role). A batch is sent as soon as it
  holds `max_batch` ids, otherwise once `window` has passed without another lookup joining it
  and the process may send a partial call for that region and role: each process keeps a token
  bucket per region and role of `burst` calls, refilled one per `interval`. A lone join (a token
  is there) waits only `window`. Under load, while lookups keep arriving, partial calls leave at
  most once per `interval`, so the batches of a burst fill instead of spending AWS's request
  tokens (with the default 2 s, ten busy worker processes use half of the 10 calls a second AWS
  refills for an account and region). A window alone would not do that: joins reach the lookup
  at the pace the server's CPU and database get through their other checks, a hundred or so a
  second here, so a 50 ms window catches a few ids (bench/RESULTS.md). A batch waiting for a
  token still goes once no lookup has joined it for `stall`: then all the process's threads
  that could join it are likely in it already, and holding it longer would only hold them (with
  few threads, pacing alone would cap a process at threads / `interval` joins a second);
* a small pool of call threads sends each batch as one call and hands every waiter its answer,
  so that no join thread is held past its own deadline by someone else's call;
* a lookup of an id that is already in an open or running batch shares that batch's answer;
* AWS fails a whole call when one id is unknown (or, right after launch, not visible yet): the
  ids the error names are answered "not found" and the others asked again; when it names none
  the batch is split in halves until every unknown id stands alone, so one unknown id never
  refuses the others;
* an `AwsError` of a call reaches every waiter of the ids that call covered;
* a waiter gives up with `aws_unavailable` when its deadline passes, and a batch whose waiters
  have all given up is not sent;
* `running` confirmations are kept for a few seconds in a cache that several app servers may
  share, so that they do not repeat lookups. Nothing else is cached: a refusal must always come
  from a fresh answer, and "not found" is often only AWS's eventual consistency at boot.

`DirectLookup` is the same interface with one call per lookup in the caller's thread: the
behaviour with coalescing switched off, kept for comparison and as an emergency switch.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from joins.aws import AwsError, InstanceInfo, InstancesNotFound, regroup_not_found

log = logging.getLogger(__name__)

# (region, role_arn, instance_ids, deadline) -> the instances AWS described, by id. Raises
# `InstancesNotFound` when AWS refused the call over unknown ids, `AwsError` for anything else.
DescribeBatch = Callable[[str, str, list[str], float], Mapping[str, InstanceInfo]]

RUNNING = "running"
# AWS's own limit is 1,000 ids per call; 100 keeps each answer small and each failed call cheap.
MAX_BATCH = 100
# Waiting without a deadline is never right for a request thread; this bounds a caller that
# passed none.
DEFAULT_BUDGET_SECONDS = 30.0
_CACHE_WARNING_INTERVAL = 60.0


class StateCache(Protocol):
    """The part of a cache the lookups use (Django's cache API has exactly these methods)."""

    def get(self, key: str) -> Any: ...

    def set_many(self, data: Mapping[str, str], timeout: int) -> Any: ...


def state_cache_key(region: str, role_arn: str, instance_id: str) -> str:
    """Where a `running` confirmation of `instance_id` is kept.

    The key names who asked (the role, whose ARN holds the account; or the server's own
    credentials), so a confirmation obtained through one rule's role never answers a lookup
    through another. The role is hashed to keep keys short and free of odd characters.
    """
    who = hashlib.sha256(role_arn.encode()).hexdigest()[:32] if role_arn else "default"
    return f"aws-running:v1:{who}:{region}:{instance_id}"


def _budget_spent(region: str) -> AwsError:
    return AwsError(
        "aws_unavailable",
        f"ec2:DescribeInstances in {region}: the time budget for AWS calls ran out",
    )


@dataclass
class LookupStats:
    """Counters for tests and benchmarks (read them with `stats()`)."""

    lookups: int = 0
    cache_hits: int = 0
    shared: int = 0
    calls: int = 0
    ids_asked: int = 0
    gave_up: int = 0


class _RecentStates:
    """`running` confirmations in the optional shared cache; any cache failure is a miss.

    A cache outage must neither refuse a join nor admit one: a miss only costs a real lookup.
    """

    def __init__(self, cache: StateCache | None, seconds: int) -> None:
        self._cache = cache if seconds > 0 else None
        self._seconds = int(seconds)
        self._warned_at = -_CACHE_WARNING_INTERVAL

    def get(self, region: str, role_arn: str, instance_id: str) -> InstanceInfo | None:
        if self._cache is None:
            return None
        try:
            value = self._cache.get(state_cache_key(region, role_arn, instance_id))
        except Exception as exc:  # a broken cache is a miss, never an answer
            self._warn("read", exc)
            return None
        if value != RUNNING:
            return None
        return InstanceInfo(instance_id=instance_id, state=RUNNING, cached=True)

    def remember(self, region: str, role_arn: str, infos: list[InstanceInfo]) -> None:
        if self._cache is None:
            return
        running = {
            state_cache_key(region, role_arn, info.instance_id): RUNNING
            for info in infos
            if info.state == RUNNING
        }
        if not running:
            return
        try:
            self._cache.set_many(running, self._seconds)
        except Exception as exc:  # losing a confirmation only costs a later lookup
            self._warn("write", exc)

    def _warn(self, what: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _CACHE_WARNING_INTERVAL:
            self._warned_at = now
            log.warning(
                "instance state cache %s failed (%s: %s); asking AWS instead",
                what,
                type(exc).__name__,
                exc,
            )


def _deadline_or_default(deadline: float | None) -> float:
    return deadline if deadline is not None else time.monotonic() + DEFAULT_BUDGET_SECONDS


def _own_copy(exc: AwsError) -> AwsError:
    """A fresh exception per waiter: one instance raised in many threads would share (and
    keep rewriting) a single traceback."""
    return AwsError(exc.code, exc.message, exc.retry_after)


@dataclass(eq=False)
class _Batch:
    region: str
    role_arn: str
    opened: float
    due: float
    deadline: float
    futures: dict[str, Future[InstanceInfo | None]] = field(default_factory=dict)


class CoalescingLookup:
    """Process-wide instance lookups that share DescribeInstances calls (see the module doc).

    Thread-safe. `window`, `interval` and `stall` are in seconds; `max_calls_in_flight` bounds
    the call threads, so that a slow AWS holds a handful of threads rather than every join
    thread.
    """

    def __init__(
        self,
        describe: DescribeBatch,
        *,
        window: float = 0.05,
        interval: float = 2.0,
        burst: int = 2,
        stall: float = 0.25,
        max_batch: int = MAX_BATCH,
        max_calls_in_flight: int = 8,
        cache: StateCache | None = None,
        cache_seconds: int = 5,
    ) -> None:
        if not 1 <= max_batch <= 1000:
            raise ValueError("max_batch must be between 1 and 1000 (AWS's limit per call)")
        self._describe = describe
        self._window = max(0.0, window)
        self._interval = max(0.0, interval)
        self._burst = max(1, burst)
        self._stall = max(self._window, stall)
        self._max_batch = max_batch
        self._states = _RecentStates(cache, cache_seconds)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._open: dict[tuple[str, str], _Batch] = {}
        self._in_flight: dict[tuple[str, str, str], tuple[_Batch, Future[InstanceInfo | None]]] = {}
        self._stats = LookupStats()
        # Partial-call tokens per (region, role): (tokens, when counted); absent means full.
        self._tokens: dict[tuple[str, str], tuple[float, float]] = {}
        self._closed = False
        self._calls = ThreadPoolExecutor(
            max_workers=max_calls_in_flight, thread_name_prefix="aws-lookup"
        )
        self._timer = threading.Thread(
            target=self._send_due_batches, name="aws-lookup-window", daemon=True
        )
        self._timer.start()

    def describe_one(
        self, *, region: str, instance_id: str, role_arn: str = "", deadline: float | None = None
    ) -> InstanceInfo | None:
        """The instance as AWS describes it, None when AWS does not know it.

        Raises `AwsError`; `aws_unavailable` also when `deadline` (a `time.monotonic()` value)
        passes before the answer arrives.
        """
        deadline = _deadline_or_default(deadline)
        if time.monotonic() >= deadline:
            raise _budget_spent(region)
        with self._lock:
            self._stats.lookups += 1
        cached = self._states.get(region, role_arn, instance_id)
        if cached is not None:
            with self._lock:
                self._stats.cache_hits += 1
            return cached
        future = self._enlist(region, role_arn, instance_id, deadline)
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            with self._lock:
                self._stats.gave_up += 1
            raise _budget_spent(region) from None
        except AwsError as exc:
            raise _own_copy(exc) from None

    def stats(self) -> LookupStats:
        with self._lock:
            return LookupStats(**vars(self._stats))

    def close(self) -> None:
        """Stop gathering: open batches are failed, calls already sent finish in background."""
        with self._lock:
            self._closed = True
            batches = list(self._open.values())
            self._open.clear()
            self._changed.notify_all()
        for batch in batches:
            self._settle(batch, {}, AwsError("aws_unavailable", "the AWS lookup was shut down"))
        self._calls.shutdown(wait=False)

    # --- gathering ----------------------------------------------------------------------------

    def _enlist(
        self, region: str, role_arn: str, instance_id: str, deadline: float
    ) -> Future[InstanceInfo | None]:
        """The future answering `instance_id`: a shared one if it is already asked about."""
        with self._lock:
            if self._closed:
                raise AwsError("aws_unavailable", "the AWS lookup was shut down")
            existing = self._in_flight.get((region, role_arn, instance_id))
            if existing is not None:
                batch, future = existing
                batch.deadline = max(batch.deadline, deadline)
                self._stats.shared += 1
                return future
            batch = self._open.get((region, role_arn))
            if batch is None:
                now = time.monotonic()
                batch = _Batch(region, role_arn, opened=now, due=now, deadline=deadline)
                self._open[(region, role_arn)] = batch
                self._changed.notify_all()
            batch.due = self._due(batch, time.monotonic())
            future: Future[InstanceInfo | None] = Future()
            batch.futures[instance_id] = future
            batch.deadline = max(batch.deadline, deadline)
            self._in_flight[(region, role_arn, instance_id)] = (batch, future)
            if len(batch.futures) >= self._max_batch:
                del self._open[(region, role_arn)]
                self._submit(batch)
            return future

    def _tokens_now(self, key: tuple[str, str], now: float) -> float:
        """Partial-call tokens of `key` at `now` (with the lock held)."""
        if key not in self._tokens or self._interval <= 0:
            return float(self._burst)
        tokens, counted = self._tokens[key]
        return min(float(self._burst), tokens + (now - counted) / self._interval)

    def _due(self, batch: _Batch, now: float) -> float:
        """When `batch` goes unless it fills first, `now` being its latest lookup: `window`
        later, or, without a partial-call token by then, when a token is back but at the
        latest `stall` later (see the module doc)."""
        key = (batch.region, batch.role_arn)
        idle = now + self._window
        missing = 1.0 - self._tokens_now(key, now)
        if missing <= 0:
            return idle
        return min(max(idle, now + missing * self._interval), now + self._stall)

    def _submit(self, batch: _Batch) -> None:
        """Hand a closed batch to a call thread (with the lock held); it spends a token (a full
        batch only if one is there: full batches are what the pacing is for)."""
        now = time.monotonic()
        key = (batch.region, batch.role_arn)
        if self._interval > 0:
            self._tokens[key] = (max(0.0, self._tokens_now(key, now) - 1.0), now)
            for other in [k for k in self._tokens if self._tokens_now(k, now) >= self._burst]:
                del self._tokens[other]  # full again: forget it
        self._calls.submit(self._perform, batch)

    def _send_due_batches(self) -> None:
        """The window timer: sends each open batch when it is due (due times only move later,
        so waking early merely means waiting again)."""
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                for key, batch in list(self._open.items()):
                    if batch.due <= now:
                        del self._open[key]
                        self._submit(batch)
                next_due = min((batch.due for batch in self._open.values()), default=None)
                self._changed.wait(timeout=None if next_due is None else max(0.0, next_due - now))

    # --- asking -------------------------------------------------------------------------------

    def _perform(self, batch: _Batch) -> None:
        """Runs on a call thread: ask AWS about the batch and answer every waiter."""
        answers: dict[str, InstanceInfo | None] = {}
        error: AwsError | None = None
        try:
            if time.monotonic() >= batch.deadline:
                error = _budget_spent(batch.region)  # every waiter has given up already
            else:
                answers, error = self._resolve(batch, list(batch.futures))
        except Exception as exc:  # fail closed: an unexpected fault is an unavailable AWS
            log.exception("DescribeInstances batch failed unexpectedly")
            error = AwsError(
                "aws_unavailable",
                f"ec2:DescribeInstances in {batch.region}: {type(exc).__name__}: {exc}",
            )
        self._settle(batch, answers, error)

    def _resolve(
        self, batch: _Batch, ids: list[str]
    ) -> tuple[dict[str, InstanceInfo | None], AwsError | None]:
        """Answers for `ids`, asking again without the unknown ones when AWS refuses the call.

        Returns the answers obtained and the error that prevented the others (if any). Each
        round answers at least one id or halves a group, so it ends after at most 2n-1 calls.
        """
        answers: dict[str, InstanceInfo | None] = {}
        groups = [ids]
        while groups:
            group = groups.pop()
            if time.monotonic() >= batch.deadline:
                return answers, _budget_spent(batch.region)
            with self._lock:
                self._stats.calls += 1
                self._stats.ids_asked += len(group)
            try:
                found = self._describe(batch.region, batch.role_arn, group, batch.deadline)
            except InstancesNotFound as exc:
                groups.extend(regroup_not_found(group, exc, answers))
                continue
            except AwsError as exc:
                return answers, exc
            # AWS leaves out instances of other accounts: for us they do not exist.
            answers.update({i: found.get(i) for i in group})
        return answers, None

    def _settle(
        self, batch: _Batch, answers: Mapping[str, InstanceInfo | None], error: AwsError | None
    ) -> None:
        """Remember confirmations, release the ids, then wake the waiters.

        The cache is written before the ids leave the in-flight map, so a lookup arriving in
        between finds one or the other and never starts a second call.
        """
        self._states.remember(
            batch.region, batch.role_arn, [info for info in answers.values() if info is not None]
        )
        with self._lock:
            for instance_id, future in batch.futures.items():
                key = (batch.region, batch.role_arn, instance_id)
                if self._in_flight.get(key, (None, None))[1] is future:
                    del self._in_flight[key]
        for instance_id, future in batch.futures.items():
            if instance_id in answers:
                future.set_result(answers[instance_id])
            else:
                future.set_exception(
                    error
                    or AwsError(
                        "aws_unavailable", f"ec2:DescribeInstances in {batch.region}: no answer"
                    )
                )


class DirectLookup:
    """One DescribeInstances call per lookup, in the caller's thread (coalescing switched off).

    It keeps the recent-state cache, so that several app servers still share confirmations.
    """

    def __init__(
        self, describe: DescribeBatch, *, cache: StateCache | None = None, cache_seconds: int = 5
    ) -> None:
        self._describe = describe
        self._states = _RecentStates(cache, cache_seconds)
        self._lock = threading.Lock()
        self._stats = LookupStats()

    def describe_one(
        self, *, region: str, instance_id: str, role_arn: str = "", deadline: float | None = None
    ) -> InstanceInfo | None:
        """As `CoalescingLookup.describe_one`, with a call of its own."""
        deadline = _deadline_or_default(deadline)
        if time.monotonic() >= deadline:
            raise _budget_spent(region)
        with self._lock:
            self._stats.lookups += 1
        cached = self._states.get(region, role_arn, instance_id)
        if cached is not None:
            with self._lock:
                self._stats.cache_hits += 1
            return cached
        with self._lock:
            self._stats.calls += 1
            self._stats.ids_asked += 1
        try:
            info = self._describe(region, role_arn, [instance_id], deadline).get(instance_id)
        except InstancesNotFound:
            return None
        if info is not None:
            self._states.remember(region, role_arn, [info])
        return info

    def stats(self) -> LookupStats:
        with self._lock:
            return LookupStats(**vars(self._stats))

    def close(self) -> None:
        """Nothing to stop; present so that both lookups can be swapped."""


InstanceLookup = CoalescingLookup | DirectLookup
