"""The join's rows, written by one thread per process in shared transactions (group commit).

Why: a gthread worker keeps a hundred joins in flight, and each ends in a short write (the
attempt row, and for an allowed join the host). Written by each request thread on its own, those
writes meet the database's write lock one by one: SQLite has one lock for the whole file, and a
thread that finds it taken sleeps in SQLite's busy handler (1, 2, 5 ... 100 ms) instead of
queueing, so the lock sits idle while the herd sleeps; every commit is also a WAL sync. One
writer thread per process instead takes whatever writes are waiting, runs each in its own
savepoint of one transaction, and commits once: the lock is taken once per batch, and a batch
grows by itself while the previous one is being written (no window, so an idle server writes at
once). bench/RESULTS.md (throughput) has the figures.

What it keeps:

* each write is atomic on its own and fails alone: a new host whose id is registered already
  (or by an earlier write of the batch) fails with `IntegrityError` without touching the
  others; the new rows of a batch go in one multi-row INSERT per table (most of what a write
  costs is Django preparing a statement), on SQLite with their keys numbered by the writer
  (`_number_rows`) rather than read back row by row; any other write runs in a savepoint of
  its own, so one that fails (a re-join's claim is refused) rolls back alone and its exception
  goes to its caller;
* nothing is reported before it is committed: callers get their results after the commit, and a
  failed commit (or a lost connection) fails every write of the batch with the database's error,
  which the endpoint answers with 503;
* a caller that gives up waiting (the database hangs) cancels its write if it has not started;
  once started it waits for the commit, so a join is never committed behind its caller's back;
* on SQLite the writers of the server's processes take turns through a lock file beside the
  database (the kernel wakes the next one at once, where SQLite's busy handler would sleep);
  PostgreSQL locks rows, and needs nothing more.

A caller already inside a transaction (a test, a management command in `transaction.atomic`)
writes in its own thread: its transaction may hold the very lock the writer would wait for.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction

from joinadmin import metrics, rawsql
from joins.models import Host, JoinAttempt
from joins.rows import Insert

log = logging.getLogger(__name__)

T = TypeVar("T")

# Writes per transaction: enough to amortise the lock and the commit, few enough that one batch
# does not hold the database for long.
MAX_BATCH = 200
# How long a caller waits for its write before answering 503 (the database is stuck).
WAIT_SECONDS = 20.0
# An idle writer closes its connection after this long, so that it holds none while idle.
IDLE_SECONDS = 5.0

_ATTEMPTS = Insert(JoinAttempt)
_HOSTS = Insert(Host)


class _Write:
    """One caller's write: new rows (`attempt`, and `host` whose last attempt it is), or `func`."""

    __slots__ = ("attempt", "attempt_values", "func", "future", "host", "host_values", "started")

    def __init__(
        self,
        func: Callable[[], Any] | None = None,
        attempt: JoinAttempt | None = None,
        host: Host | None = None,
        started: float | None = None,
    ) -> None:
        self.func = func
        self.attempt = attempt
        self.host = host
        self.started = started
        self.future: Future[Any] = Future()
        # The rows' database values (joins/rows.py), converted by the caller before queueing.
        self.attempt_values: list[Any] = []
        self.host_values: list[Any] = []

    def prepare(self) -> None:
        """Convert the rows to database values now, in the caller's thread, so that the writer
        does not during its turn at the write lock."""
        assert self.attempt is not None
        self.attempt_values = _ATTEMPTS.values(self.attempt)
        if self.host is not None:
            self.host_values = _HOSTS.values(self.host)

    def insert_alone(self) -> None:
        """The rows of an insert, one statement each (in the caller's savepoint)."""
        assert self.attempt is not None
        self.attempt.save(force_insert=True)
        if self.host is not None:
            self.host.last_attempt = self.attempt
            self.host.save(force_insert=True)

    def forget_keys(self) -> None:
        """Undo what a rolled-back insert set on the rows, so that they can be inserted again."""
        for row in (self.attempt, self.host):
            if row is not None:
                row.pk = None
                row._state.adding = True


class JoinWriter:
    """One writer thread of this process, started on first use (and again after a fork)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._start_lock = threading.Lock()
        self._lock_file: int | None = None
        self._stats = {"batches": 0, "writes": 0, "largest_batch": 0}

    def stats(self) -> dict[str, int]:
        """Transactions committed or rolled back, writes in them, the largest batch."""
        return dict(self._stats)

    def queued(self) -> int:
        """Writes waiting for the next batch."""
        return self._queue.qsize()

    def insert(
        self, attempt: JoinAttempt, host: Host | None = None, *, started: float | None = None
    ) -> None:
        """Insert `attempt`, and `host` with it as its last attempt, atomically; return once
        committed. `IntegrityError` when the host id is already registered, the rows then
        without primary keys as before. `started` (a `time.monotonic()`) sets the attempt's
        duration when it is written."""
        item = _Write(attempt=attempt, host=host, started=started)
        if connection.in_atomic_block:
            _set_duration(item)
            try:
                with transaction.atomic():
                    item.insert_alone()
            except IntegrityError:
                item.forget_keys()  # rolled back: as after a failed write of a batch
                raise
            return
        item.prepare()
        self._submit(item, WAIT_SECONDS)

    def write(self, func: Callable[[], T], *, wait: float = WAIT_SECONDS) -> T:
        """Run `func` (ORM writes) in a savepoint of the writer's next transaction and return its
        result once committed; raise what `func` raised, or the database's error."""
        if connection.in_atomic_block:
            with transaction.atomic():
                return func()
        return self._submit(_Write(func), wait)

    def _submit(self, item: _Write, wait: float) -> Any:
        self._ensure_started()
        self._queue.put(item)
        try:
            return item.future.result(timeout=wait)
        except FutureTimeout:
            if item.future.cancel():
                raise OperationalError(
                    f"the database did not take the join's write within {wait:.0f}s"
                ) from None
            return item.future.result()  # started: its transaction ends one way or the other

    def stop(self) -> None:
        """Let the thread finish what is queued and end (tests; process exit needs nothing)."""
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            self._queue.put(None)
            thread.join(timeout=WAIT_SECONDS)
        self._thread = None

    def _ensure_started(self) -> None:
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
                return
            if self._pid != os.getpid():  # forked: the parent's queue and lock are not ours
                self._queue = queue.SimpleQueue()
                self._lock_file = None
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="join-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                try:
                    first = self._queue.get(timeout=IDLE_SECONDS)
                except queue.Empty:
                    connection.close()
                    continue
                if first is None:
                    return
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        self._queue.put(None)
                        break
                    batch.append(item)
                self._write_batch(batch)
        finally:
            connection.close()

    def _write_batch(self, batch: list[_Write]) -> None:
        batch = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if not batch:
            return
        self._stats["batches"] += 1
        self._stats["writes"] += len(batch)
        self._stats["largest_batch"] = max(self._stats["largest_batch"], len(batch))
        metrics.record_write_batch(len(batch))
        results: list[tuple[_Write, bool, Any]] = []
        try:
            if connection.connection is not None and not connection.is_usable():
                connection.close()
            with self._turn(), transaction.atomic():
                results += _insert_rows([item for item in batch if item.func is None])
                for item in batch:
                    if item.func is None:
                        continue
                    try:
                        with transaction.atomic():
                            results.append((item, True, item.func()))
                    except Exception as exc:  # it is the caller's to handle
                        if connection.needs_rollback or _connection_lost(exc):
                            raise
                        results.append((item, False, exc))
        except BaseException as exc:  # the whole batch is rolled back: every caller learns why
            log.warning("join writes rolled back (%d): %s", len(batch), exc)
            with contextlib.suppress(Exception):
                connection.close()
            for item in batch:
                item.forget_keys()
                item.future.set_exception(_own_copy(exc))
            if not isinstance(exc, Exception):
                raise
            return
        for item, ok, value in results:
            if ok:
                item.future.set_result(value)
            else:
                item.future.set_exception(value)

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """On SQLite, this process's turn at the database's write lock (see the module doc)."""
        if connection.vendor != "sqlite":
            yield
            return
        name = str(connection.settings_dict["NAME"])
        if name == ":memory:" or "mode=memory" in name:  # one connection: nothing to share
            yield
            return
        if self._lock_file is None:
            self._lock_file = os.open(f"{name}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)


def _set_duration(item: _Write) -> None:
    if item.started is not None and item.attempt is not None:
        item.attempt.duration_ms = round((time.monotonic() - item.started) * 1000, 2)


def _insert_rows(items: list[_Write]) -> list[tuple[_Write, bool, Any]]:
    """The new rows of a batch, in two multi-row INSERTs (attempts, then hosts).

    A host id that is registered already, or that an earlier write of the same batch registers,
    fails that write alone with `IntegrityError`, as its own INSERT would have. Should the
    INSERT still fail (another server registered the id in between: PostgreSQL does not lock the
    table) the rows go again one write at a time, each in its own savepoint.
    """
    if not items:
        return []
    results: list[tuple[_Write, bool, Any]] = []
    taken = _registered([item.host.host_id for item in items if item.host is not None])
    ready: list[_Write] = []
    for item in items:
        _set_duration(item)
        if item.host is not None:
            if item.host.host_id in taken:
                results.append(
                    (item, False, IntegrityError(f"host {item.host.host_id} is already registered"))
                )
                continue
            taken.add(item.host.host_id)
        ready.append(item)
    if ready and connection.features.can_return_rows_from_bulk_insert:
        try:
            with transaction.atomic():
                attempts = [item.attempt for item in ready]
                _number_rows(JoinAttempt, attempts)
                _ATTEMPTS.run([(item.attempt, _attempt_values(item)) for item in ready])
                hosts = [item for item in ready if item.host is not None]
                for item in hosts:
                    item.host.last_attempt = item.attempt
                    _HOSTS.set(item.host_values, item.host, "last_attempt_id")
                _number_rows(Host, [item.host for item in hosts])
                _HOSTS.run([(item.host, item.host_values) for item in hosts])
            return results + [(item, True, None) for item in ready]
        except IntegrityError:
            for item in ready:
                item.forget_keys()
    for item in ready:
        try:
            with transaction.atomic():
                item.insert_alone()
            results.append((item, True, None))
        except IntegrityError as exc:
            item.forget_keys()
            results.append((item, False, exc))
    return results


def _attempt_values(item: _Write) -> list[Any]:
    """The attempt's database values (prepared by `insert`), its duration, set at the write,
    converted again."""
    _ATTEMPTS.set(item.attempt_values, item.attempt, "duration_ms")
    return item.attempt_values


def _number_rows(model: type[Host] | type[JoinAttempt], rows: list[Any]) -> None:
    """On SQLite, give `rows` the next primary keys of `model`'s table before they are inserted.

    Why: a multi-row INSERT learns its keys through `RETURNING`, and Python's sqlite3 module
    fetches each returned row with its own step, handing the GIL to another thread every time;
    the writer then waits for it back once per row, among a hundred busy request threads.
    Numbered here, a batch is one step per INSERT. Safe because the writer's transaction is
    IMMEDIATE (no other connection writes until it commits); the numbers continue from the
    table's AUTOINCREMENT counter as well as from its largest key, so that a key is never
    given twice, even after the newest rows were deleted. PostgreSQL returns all keys of an
    INSERT at once and keeps its own sequence: nothing to do there.
    """
    if connection.vendor != "sqlite" or not rows:
        return
    quote = connection.ops.quote_name
    table, column = model._meta.db_table, model._meta.pk.column
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = %s), 0), "  # noqa: S608
            f"coalesce((SELECT max({quote(column)}) FROM {quote(table)}), 0))",
            [table],
        )
        (last,) = cursor.fetchone()
    for offset, row in enumerate(rows, start=1):
        row.pk = last + offset


def _own_copy(exc: BaseException) -> BaseException:
    """A copy of `exc` for one caller: each raises it in its own thread with its own traceback."""
    try:
        return copy.copy(exc).with_traceback(None)
    except Exception:  # an exception that cannot be copied is shared as it is
        return exc


def _registered(host_ids: list[str]) -> set[str]:
    """Which of `host_ids` are registered already (read in the batch's transaction)."""
    if not host_ids:
        return set()
    return {
        host_id
        for (host_id,) in rawsql.select(Host, ("host_id",), where="host_id", values=host_ids)
    }


def _connection_lost(exc: BaseException) -> bool:
    return isinstance(exc, (OperationalError, InterfaceError))


writer = JoinWriter()
