"""The join writer (joins/writer.py): concurrent joins' rows committed together, each write
atomic on its own, nothing reported before its commit, nothing committed behind a caller that
gave up. These tests run outside a test transaction, where the writer thread is used."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import IntegrityError, OperationalError, connection, transaction

from joins import writer as writer_module
from joins.models import Host, JoinAttempt
from joins.writer import JoinWriter

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
def writer() -> Iterator[JoinWriter]:
    made = JoinWriter()
    yield made
    made.stop()


def attempt(host_id: str, outcome: str = "allowed") -> JoinAttempt:
    return JoinAttempt(time=NOW, remote_addr="192.0.2.1", host_id=host_id, outcome=outcome)


def host(host_id: str) -> Host:
    return Host(
        host_id=host_id,
        account_id="123456789012",
        region="us-west-2",
        instance_id=host_id.split("-", 1)[1],
        node_name=host_id,
        roles=["Node"],
        token="t",
        first_joined_at=NOW,
        last_joined_at=NOW,
    )


class Blocked:
    """Hold the writer thread in a write until `release()`, so that others queue behind it."""

    def __init__(self, writer: JoinWriter) -> None:
        self.started = threading.Event()
        self.go = threading.Event()
        self.thread = threading.Thread(target=writer.write, args=(self._hold,))
        self.thread.start()
        assert self.started.wait(10), "the writer did not start the blocking write"

    def _hold(self) -> None:
        self.started.set()
        assert self.go.wait(10)

    def release(self) -> None:
        self.go.set()
        self.thread.join(10)


def in_threads(calls: list[Callable[[], Any]]) -> tuple[list[threading.Thread], list[Any]]:
    """Run each call in a thread of its own; each result is its return value or exception."""
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except Exception as exc:  # the test inspects it
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    return threads, results


def wait_queued(writer: JoinWriter, count: int) -> None:
    deadline = time.monotonic() + 10
    while writer.queued() < count:
        assert time.monotonic() < deadline, f"only {writer.queued()} of {count} writes queued"
        time.sleep(0.005)


def in_one_batch(
    writer: JoinWriter, host_ids: list[str]
) -> tuple[list[tuple[JoinAttempt, Host]], list[Any]]:
    """Insert an attempt and a host per id, all queued behind a blocked write so that they go
    in one batch; the rows, and each insert's result (None or its exception)."""
    blocked = Blocked(writer)
    rows = [(attempt(host_id), host(host_id)) for host_id in host_ids]
    threads, results = in_threads([lambda a=a, h=h: writer.insert(a, h) for a, h in rows])
    wait_queued(writer, len(rows))
    blocked.release()
    for thread in threads:
        thread.join(10)
    return rows, results


def test_concurrent_writes_share_one_transaction(writer: JoinWriter) -> None:
    blocked = Blocked(writer)
    rows = [
        (attempt(f"123456789012-i-{n:017x}"), host(f"123456789012-i-{n:017x}")) for n in range(20)
    ]
    threads, results = in_threads([lambda a=a, h=h: writer.insert(a, h) for a, h in rows])
    wait_queued(writer, 20)
    batches = writer.stats()["batches"]
    blocked.release()
    for thread in threads:
        thread.join(10)
    assert results == [None] * 20
    assert writer.stats()["batches"] == batches + 1, "the 20 queued writes went in one batch"
    assert writer.stats()["largest_batch"] == 20
    for made_attempt, made_host in rows:
        stored = Host.objects.get(host_id=made_host.host_id)
        assert stored.last_attempt_id == made_attempt.pk
        assert JoinAttempt.objects.get(pk=made_attempt.pk).host_id == made_host.host_id


def test_a_host_id_taken_in_the_same_batch_fails_that_write_alone(writer: JoinWriter) -> None:
    host("123456789012-i-0000000000000000a").save()
    ids = [
        "123456789012-i-0000000000000000a",  # registered before the batch
        "123456789012-i-0000000000000000b",
        "123456789012-i-0000000000000000b",  # the same instance twice in one batch
        "123456789012-i-0000000000000000c",
    ]
    _, results = in_one_batch(writer, ids)
    failed = [i for i, result in enumerate(results) if isinstance(result, IntegrityError)]
    assert 0 in failed and len(failed) == 2 and set(failed) & {1, 2}, results
    # Nothing half-done: every allowed attempt row has its host, and the failed writes left none.
    assert JoinAttempt.objects.count() == 2
    for row in JoinAttempt.objects.all():
        assert Host.objects.get(host_id=row.host_id).last_attempt_id == row.pk
    assert sorted(Host.objects.values_list("host_id", flat=True)) == sorted(set(ids))


def test_a_batch_gets_new_keys_never_given_before_even_after_deletes(writer: JoinWriter) -> None:
    first, results = in_one_batch(writer, [f"123456789012-i-{n:017x}" for n in range(1, 4)])
    assert results == [None] * 3
    keys = [made.pk for made, _ in first]
    assert keys == sorted(keys) and len(set(keys)) == 3
    # The newest rows deleted: their keys must not come back (AUTOINCREMENT on SQLite).
    Host.objects.filter(host_id__in=[h.host_id for _, h in first[1:]]).delete()
    JoinAttempt.objects.filter(pk__in=keys[1:]).delete()
    second, results = in_one_batch(writer, [f"123456789012-i-{n:017x}" for n in range(4, 6)])
    assert results == [None] * 2
    assert all(made.pk > keys[-1] for made, _ in second)
    for made_attempt, made_host in second:
        stored = Host.objects.get(host_id=made_host.host_id)
        assert stored.pk == made_host.pk and stored.last_attempt_id == made_attempt.pk
        assert JoinAttempt.objects.get(pk=made_attempt.pk).host_id == made_host.host_id
    # A row saved the ordinary way afterwards continues after the batch's keys.
    later = attempt("", outcome="denied")
    later.save()
    assert later.pk > max(made.pk for made, _ in second)


def test_the_bulk_insert_falls_back_to_one_write_at_a_time(
    writer: JoinWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another server registers a host id between the batch's check and its INSERT (possible on
    PostgreSQL): that write fails alone, the others commit."""
    host("123456789012-i-0000000000000000d").save()
    monkeypatch.setattr(writer_module, "_registered", lambda host_ids: set())
    blocked = Blocked(writer)
    ids = ["123456789012-i-0000000000000000d", "123456789012-i-0000000000000000e"]
    rows = [(attempt(host_id), host(host_id)) for host_id in ids]
    threads, results = in_threads([lambda a=a, h=h: writer.insert(a, h) for a, h in rows])
    wait_queued(writer, 2)
    blocked.release()
    for thread in threads:
        thread.join(10)
    assert isinstance(results[0], IntegrityError) and results[1] is None
    assert list(JoinAttempt.objects.values_list("host_id", flat=True)) == [ids[1]]
    assert Host.objects.get(host_id=ids[1]).last_attempt_id == rows[1][0].pk


def test_a_failing_write_rolls_back_alone(writer: JoinWriter) -> None:
    class Refused(Exception):
        pass

    def refused() -> None:
        JoinAttempt.objects.create(time=NOW, remote_addr="192.0.2.9", host_id="refused")
        raise Refused

    blocked = Blocked(writer)
    threads, results = in_threads(
        [lambda: writer.write(refused), lambda: writer.insert(attempt("kept"))]
    )
    wait_queued(writer, 2)
    blocked.release()
    for thread in threads:
        thread.join(10)
    assert isinstance(results[0], Refused) and results[1] is None
    assert not JoinAttempt.objects.filter(host_id="refused").exists()
    assert JoinAttempt.objects.filter(host_id="kept").exists()


def test_a_database_error_fails_the_whole_batch_and_commits_nothing(writer: JoinWriter) -> None:
    def broken() -> None:
        raise OperationalError("the database went away")

    blocked = Blocked(writer)
    threads, results = in_threads(
        [lambda: writer.insert(attempt("lost-1")), lambda: writer.write(broken)]
    )
    wait_queued(writer, 2)
    blocked.release()
    for thread in threads:
        thread.join(10)
    assert all(isinstance(result, OperationalError) for result in results), results
    assert not JoinAttempt.objects.filter(host_id="lost-1").exists()
    # The writer carries on with the next batch.
    writer.insert(attempt("after"))
    assert JoinAttempt.objects.filter(host_id="after").exists()


def test_a_caller_that_gives_up_is_never_committed_behind_its_back(writer: JoinWriter) -> None:
    blocked = Blocked(writer)
    with pytest.raises(OperationalError, match="did not take the join's write"):
        writer.write(lambda: JoinAttempt.objects.create(time=NOW, host_id="late"), wait=0.05)
    blocked.release()
    writer.insert(attempt("next"))  # the writer has moved past the cancelled write
    assert not JoinAttempt.objects.filter(host_id="late").exists()
    assert JoinAttempt.objects.filter(host_id="next").exists()


def test_a_caller_in_a_transaction_writes_in_its_own_thread(writer: JoinWriter) -> None:
    seen: list[int] = []
    with transaction.atomic():
        writer.write(lambda: seen.append(threading.get_ident()))
        writer.insert(attempt("inline"))
        assert JoinAttempt.objects.filter(host_id="inline").exists()
    assert seen == [threading.get_ident()]
    assert writer.stats()["batches"] == 0


def test_an_inline_insert_that_fails_leaves_its_rows_without_keys(writer: JoinWriter) -> None:
    with transaction.atomic():
        writer.insert(attempt("taken"), host("123456789012-i-taken"))
        again = attempt("taken")
        with pytest.raises(IntegrityError):
            writer.insert(again, host("123456789012-i-taken"))
        assert again.pk is None and again._state.adding
    assert JoinAttempt.objects.filter(host_id="taken").count() == 1


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the lock file is SQLite's")
def test_sqlite_writers_take_turns_through_a_lock_file(writer: JoinWriter) -> None:
    writer.insert(attempt("turn"))
    name = connection.settings_dict["NAME"]
    path = f"{name}.writer-lock"
    assert os.path.exists(path)
    # While another process holds the lock, this writer waits for it (no busy-handler sleep).
    handle = os.open(path, os.O_RDWR)
    fcntl.flock(handle, fcntl.LOCK_EX)
    threads, results = in_threads([lambda: writer.insert(attempt("waited"))])
    time.sleep(0.2)
    assert not JoinAttempt.objects.filter(host_id="waited").exists()
    fcntl.flock(handle, fcntl.LOCK_UN)
    os.close(handle)
    threads[0].join(10)
    assert results == [None]
    assert JoinAttempt.objects.filter(host_id="waited").exists()


def _full_attempt() -> JoinAttempt:
    row = attempt("123456789012-i-0123456789abcdef0")
    row.pending_time = NOW
    row.roles = ["Node", "Db"]
    row.checks = [{"name": "token", "ok": True, "detail": "ünïcode <b>"}]
    row.duration_ms = 12.5
    row.token_snapshot = {"kind": "token", "spec": {"roles": ["Node"]}}
    row.document = {"accountId": "123456789012"}
    row.matched_rule = 0
    return row


@pytest.mark.parametrize(
    "make",
    [_full_attempt, lambda: attempt("a-1", "denied"), lambda: host("123456789012-i-0abc")],
    ids=["attempt, every field set", "attempt, defaults", "host"],
)
def test_prepared_values_are_what_django_would_send(make: Callable[[], Any]) -> None:
    from joins.rows import Insert

    row = make()
    fields = [f for f in type(row)._meta.concrete_fields if not f.primary_key]
    expected = [f.get_db_prep_save(f.pre_save(row, True), connection) for f in fields]
    assert [_comparable(v) for v in Insert(type(row)).values(row)] == [
        _comparable(v) for v in expected
    ]


@pytest.mark.parametrize(
    ("make", "attname", "value"),
    [
        (_full_attempt, "duration_ms", 3.25),
        (_full_attempt, "duration_ms", 7),  # an int in a float column: the field converts it
        (lambda: host("123456789012-i-0abc"), "last_attempt_id", 41),
        (lambda: host("123456789012-i-0abc"), "last_attempt_id", None),
    ],
)
def test_a_value_set_again_is_what_django_would_send(
    make: Callable[[], Any], attname: str, value: Any
) -> None:
    from joins.rows import Insert

    row = make()
    insert = Insert(type(row))
    values = insert.values(row)
    setattr(row, attname, value)
    insert.set(values, row, attname)
    fields = [f for f in type(row)._meta.concrete_fields if not f.primary_key]
    field = next(f for f in fields if f.attname == attname)
    expected = field.get_db_prep_save(value, connection)
    assert _comparable(values[fields.index(field)]) == _comparable(expected)


def _comparable(value: Any) -> Any:
    """`value`, or for psycopg's JSON wrapper (which has no equality) the object it wraps."""
    if type(value).__name__ == "Jsonb":
        return ("jsonb", value.obj)
    return (type(value), value)


def test_rows_read_back_as_written(writer: JoinWriter) -> None:
    row, registered = _full_attempt(), host("123456789012-i-0123456789abcdef0")
    registered.cert_expires = NOW
    writer.insert(row, registered, started=time.monotonic())
    stored = JoinAttempt.objects.get(pk=row.pk)
    for name in ("time", "pending_time", "roles", "checks", "token_snapshot", "document"):
        assert getattr(stored, name) == getattr(row, name), name
    assert stored.matched_rule == 0 and stored.duration_ms > 0
    again = Host.objects.get(pk=registered.pk)
    assert again.last_attempt_id == row.pk
    assert (again.roles, again.cert_expires, again.join_count) == (["Node"], NOW, 1)
