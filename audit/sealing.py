"""Tamper evidence for the audit tables: seal, verify and prune (`manage.py audit ...`).

What it protects
    The join attempts (`joins.JoinAttempt`) and the admin action log (`audit.AdminAction`) are
    append-only. Each is a *stream*. `seal_pending` cuts the rows recorded since the stream's last
    seal into ranges of at most `DEFAULT_CHUNK` rows and writes one `Seal` per range: the id
    interval, the row count, the earliest and latest row time, a digest over every sealed column
    of every row in id order, per-row hashes (to name rows later), the previous seal's digest,
    the creation time and the signer's public key, all signed with Ed25519. The byte formats are
    in `audit.digests`.

What verification proves
    `verify_seals` checks every seal's digest and signature against the trusted key, the chain
    link to its predecessor, and recomputes every range from the rows now stored. A row whose
    content changed, a row that disappeared, and a row that appeared with an id inside a sealed
    interval (gaps included) are each reported by id. Someone who can write to the database but
    does not hold the server secret can neither re-sign a range nor forge a new chain. Someone
    who holds the secret could rewrite everything; the heads printed by each `audit seal` run (kept
    by the journal) and the heads each verification records make that visible from outside.

Sealed columns
    Every concrete column, except `AdminAction.actor_id`: deleting a user account legitimately
    sets it to NULL (`on_delete=SET_NULL`), which would look like tampering; `actor_name`,
    sealed, keeps who acted. The column list is stored in (and signed with) each seal, so a later
    migration that adds a column does not break older seals; one that rewrites sealed values
    (a changed type, a data migration) does, and verification reports those rows as changed.

Joins are never slowed or serialised
    Sealing only reads the audit tables (no lock, no transaction around the hashing) and writes
    only its own `Seal` rows, each in a short transaction. On PostgreSQL an id can be allocated
    by a transaction that has not committed yet, so sealing "up to the newest id" could skip a
    row that commits a moment later, which the next verification would then flag as inserted.
    Therefore a run walks the rows in id order and stops before the first row whose `time` is
    not older than `lag` (default 60 s). A join's `time` is taken when the request starts and its
    row is inserted and committed within the join's AWS time budget (8 s by default), so every id
    below a row older than the lag belongs to a transaction that has finished. Keep `lag` above
    the longest join.

Concurrent runs do not fork the chain
    The unique (stream, seq) and (stream, previous_digest) constraints let exactly one run
    commit each link; the loser re-reads the head and seals what is left.

Pruning
    `prune_sealed(before)` deletes, oldest first, the rows of whole seals whose latest row is
    older than `before`, after re-verifying each such range (an altered range is kept as
    evidence and stops the prune). The seal stays, marked pruned with a signed prune statement
    and without its per-row hashes, so the chain still verifies; verification then only checks
    that nothing reappeared in a pruned interval. Unsealed rows are never touched. Each pruned
    range is recorded in the admin action log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from audit.digests import (
    GENESIS_DIGEST,
    Problem,
    RangeHasher,
    SealFormatError,
    SealPayload,
    StoredSeal,
    check_link,
    diff_leaves,
    id_ranges,
    leaves_digest,
    prune_statement,
    read_leaves,
    sign,
    signature_valid,
    split_leaves,
    time_text,
    valid_prune,
)
from audit.models import Seal, SealVerification
from audit.services import record_action, seal_public_key, signing_key, trusted_seal_keys

log = logging.getLogger(__name__)

DEFAULT_LAG = timedelta(seconds=60)
DEFAULT_CHUNK = 10_000
READ_BATCH = 2_000
LINK_RETRIES = 5
#: How many lines of problems a verification row keeps (the command prints them all).
STORED_PROBLEM_LINES = 200
#: Link problems after which nothing a seal states can be relied on.
UNAUTHENTIC = frozenset({"seal_altered", "signature_invalid", "untrusted_key"})


class SealError(Exception):
    """Sealing or pruning cannot go on; `message` says why in plain words."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Stream:
    """An append-only table under seal."""

    name: str
    model_label: str
    excluded: frozenset[str] = frozenset()
    time_column: str = "time"

    @property
    def model(self) -> type[models.Model]:
        return apps.get_model(self.model_label)

    def existing_columns(self) -> set[str]:
        return {f.attname for f in self.model._meta.concrete_fields}

    def columns(self) -> tuple[str, ...]:
        """The columns a new seal covers: every concrete column, id first, minus `excluded`."""
        names = [f.attname for f in self.model._meta.concrete_fields]
        names.sort(key=lambda name: name != "id")
        return tuple(name for name in names if name not in self.excluded)


STREAMS: dict[str, Stream] = {
    "joinattempt": Stream("joinattempt", "joins.JoinAttempt"),
    "adminaction": Stream("adminaction", "audit.AdminAction", excluded=frozenset({"actor_id"})),
}


def _streams(names: Iterable[str] | None) -> list[Stream]:
    if not names:
        return list(STREAMS.values())
    unknown = sorted(set(names) - set(STREAMS))
    if unknown:
        raise SealError(f"unknown stream {', '.join(unknown)}; streams: {', '.join(STREAMS)}")
    return [STREAMS[name] for name in STREAMS if name in set(names)]


def _rows(
    stream: Stream,
    columns: Sequence[str],
    *,
    above: int | None,
    upto: int | None = None,
    limit: int | None = None,
) -> Iterator[tuple[Any, ...]]:
    """Rows (as value tuples in `columns` order) with above < id <= upto, in id order, streamed."""
    rows = stream.model._default_manager.order_by("id")
    if above is not None:
        rows = rows.filter(id__gt=above)
    if upto is not None:
        rows = rows.filter(id__lte=upto)
    values = rows.values_list(*columns)
    if limit is not None:
        values = values[:limit]
    return values.iterator(chunk_size=READ_BATCH)


def _chain(stream: str) -> list[Seal]:
    """A stream's seals in order, without their per-row hashes (read one seal at a time).

    Read as a list before anything is checked or written, because SQLite gives no isolation
    between an open cursor and writes on the same connection.
    """
    return list(Seal.objects.light().chain(stream))


def _head(stream: str) -> Seal | None:
    return Seal.objects.light().filter(stream=stream).order_by("-seq").first()


# --- Sealing ---------------------------------------------------------------------------------


def seal_pending(
    *,
    lag: timedelta = DEFAULT_LAG,
    chunk: int = DEFAULT_CHUNK,
    streams: Iterable[str] | None = None,
    now: datetime | None = None,
) -> list[Seal]:
    """Seal every row older than `lag` that follows each stream's last seal; return the new seals.

    Raises SealError when the key secret is unusable, a value cannot be serialised, or other runs
    keep winning the race for the next link.
    """
    if chunk < 1:
        raise SealError("the chunk size must be at least 1")
    cutoff = (now or timezone.now()) - lag
    try:
        signing_key()
    except SealFormatError as exc:
        raise SealError(str(exc)) from None
    made: list[Seal] = []
    for stream in _streams(streams):
        while True:
            seal = _seal_next(stream, cutoff, chunk)
            if seal is None:
                break
            made.append(seal)
    return made


def _seal_next(stream: Stream, cutoff: datetime, chunk: int) -> Seal | None:
    """Write the stream's next seal over up to `chunk` rows older than `cutoff`, or None."""
    columns = stream.columns()
    time_at = columns.index(stream.time_column)
    for _ in range(LINK_RETRIES):
        head = _head(stream.name)
        above = head.last_id if head is not None else None
        hasher = RangeHasher(stream.name)
        first_time = last_time = None
        for values in _rows(stream, columns, above=above, limit=chunk):
            moment = values[time_at]
            if moment >= cutoff:
                break  # this row may still have uncommitted neighbours below its id
            try:
                hasher.add(values[0], values)
            except SealFormatError as exc:
                raise SealError(f"{stream.name} row {values[0]} cannot be sealed: {exc}") from None
            first_time = moment if first_time is None else min(first_time, moment)
            last_time = moment if last_time is None else max(last_time, moment)
        if hasher.count == 0 or hasher.last_id is None:
            return None
        # The range starts right after the previous seal, so that its gaps are sealed too.
        first_id = above + 1 if above is not None else 1
        first_id = min(first_id, hasher.leaves()[0][0])
        raw = hasher.leaves_raw()
        payload = SealPayload(
            stream=stream.name,
            seq=head.seq + 1 if head is not None else 1,
            first_id=first_id,
            last_id=hasher.last_id,
            row_count=hasher.count,
            first_time=time_text(first_time),
            last_time=time_text(last_time),
            columns=columns,
            range_digest=hasher.range_digest(),
            leaves_digest=leaves_digest(raw),
            previous_digest=head.digest if head is not None else GENESIS_DIGEST,
            created_at=time_text(timezone.now()),
            public_key=seal_public_key(),
        )
        message = payload.to_bytes()
        row = Seal(
            stream=stream.name,
            seq=payload.seq,
            first_id=payload.first_id,
            last_id=payload.last_id,
            row_count=payload.row_count,
            first_time=first_time,
            last_time=last_time,
            columns=",".join(columns),
            range_digest=payload.range_digest,
            leaves_digest=payload.leaves_digest,
            previous_digest=payload.previous_digest,
            digest=payload.digest(),
            created_at=datetime.fromisoformat(payload.created_at),
            public_key=payload.public_key,
            signature=sign(signing_key(), message),
            leaves=hasher.leaves_blob(),
        )
        try:
            with transaction.atomic():
                row.save(force_insert=True)
        except IntegrityError:
            log.info("another seal run extended the %s chain first; retrying", stream.name)
            continue
        return row
    raise SealError(
        f"could not extend the {stream.name} chain after {LINK_RETRIES} tries: other seal runs "
        "keep writing the same link; run one `audit seal` at a time"
    )


# --- Verification ----------------------------------------------------------------------------


@dataclass
class StreamSummary:
    """What one stream's chain looked like to a verification."""

    stream: str
    seals: int = 0
    pruned: int = 0
    rows: int = 0
    head_seq: int | None = None
    head_digest: str = ""
    last_id: int | None = None

    def line(self) -> str:
        if not self.seals:
            return f"{self.stream}: nothing sealed yet"
        return (
            f"{self.stream}: {self.seals} seals (#1-#{self.head_seq}, {self.pruned} pruned), "
            f"ids up to {self.last_id}, {self.rows} rows recomputed; head {self.head_digest}"
        )


@dataclass
class VerificationReport:
    """The outcome of `verify_seals`; `record` is the stored SealVerification, if written."""

    problems: list[Problem] = field(default_factory=list)
    streams: list[StreamSummary] = field(default_factory=list)
    record: SealVerification | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def seals_checked(self) -> int:
        return sum(summary.seals for summary in self.streams)

    @property
    def rows_checked(self) -> int:
        return sum(summary.rows for summary in self.streams)


def verify_seals(
    *,
    streams: Iterable[str] | None = None,
    extra_keys: Iterable[str] = (),
    record: bool = True,
) -> VerificationReport:
    """Check every seal and recompute every sealed range; record the run unless `record=False`.

    Never raises for what it finds: every finding is a Problem in the report. Raises SealError
    only when it cannot run at all (an unusable key secret).
    """
    started = timezone.now()
    try:
        trusted = trusted_seal_keys(extra_keys)
    except SealFormatError as exc:
        raise SealError(str(exc)) from None
    report = VerificationReport()
    chosen = _streams(streams)
    for stream in chosen:
        summary = StreamSummary(stream.name)
        report.streams.append(summary)
        previous: StoredSeal | None = None
        for seal in _chain(stream.name):
            stored = seal.stored()
            link_problems = check_link(stored, previous, trusted)
            report.problems.extend(link_problems)
            summary.seals += 1
            if any(problem.kind in UNAUTHENTIC for problem in link_problems):
                report.problems.append(
                    Problem(
                        stream.name,
                        seal.seq,
                        "range_unchecked",
                        f"ids {seal.first_id}-{seal.last_id}: rows not compared, because what "
                        "this seal states is not authentic",
                    )
                )
            elif valid_prune(stored, trusted):
                summary.pruned += 1
                report.problems.extend(_check_pruned_range(stream, seal))
            else:
                found, count = _check_range(stream, seal, genesis=previous is None)
                report.problems.extend(found)
                summary.rows += count
            summary.head_seq, summary.head_digest = seal.seq, seal.digest
            summary.last_id = seal.last_id
            previous = stored
    report.problems.extend(_check_heads_kept(chosen, trusted))
    if record:
        report.record = _record_verification(report, started)
    return report


def _check_range(stream: Stream, seal: Seal, *, genesis: bool) -> tuple[list[Problem], int]:
    """Recompute one sealed range from the stored rows; name the rows that differ."""
    columns = seal.column_list
    existing = stream.existing_columns()
    missing = [name for name in columns if name not in existing]
    if missing or not columns or columns[0] != "id":
        return [
            Problem(
                stream.name,
                seal.seq,
                "columns_missing",
                f"cannot recompute ids {seal.first_id}-{seal.last_id}: sealed columns "
                f"{', '.join(missing) or '(none)'} no longer exist",
            )
        ], 0
    hasher = RangeHasher(stream.name)
    # The first seal has no lower bound, so rows slipped in below the first id are caught too.
    above = None if genesis else seal.first_id - 1
    for values in _rows(stream, columns, above=above, upto=seal.last_id):
        hasher.add(values[0], values)
    problems: list[Problem] = []
    where = f"ids {seal.first_id}-{seal.last_id}"

    def add(kind: str, detail: str, ids: Sequence[int] = ()) -> None:
        problems.append(Problem(stream.name, seal.seq, kind, f"{where}: {detail}", tuple(ids)))

    sealed_leaves: list[tuple[int, bytes]] | None = None
    blob = Seal.objects.filter(pk=seal.pk).values_list("leaves", flat=True).first()
    try:
        raw = read_leaves(bytes(blob or b""), seal.row_count)
        if leaves_digest(raw) == seal.leaves_digest:
            sealed_leaves = split_leaves(raw)
        else:
            add("leaves_altered", "the stored per-row hashes were altered")
    except SealFormatError as exc:
        add("leaves_altered", f"the stored per-row hashes are unreadable ({exc})")
    if hasher.range_digest() == seal.range_digest and hasher.count == seal.row_count:
        return problems, hasher.count
    if sealed_leaves is None:
        add("range_changed", "rows differ from the seal; they cannot be named (see above)")
        return problems, hasher.count
    diff = diff_leaves(sealed_leaves, hasher.leaves())
    for kind, ids, words in (
        ("row_changed", diff.changed, "changed"),
        ("row_deleted", diff.deleted, "deleted"),
        ("row_inserted", diff.inserted, "inserted into the sealed range"),
    ):
        if ids:
            noun = "row" if len(ids) == 1 else "rows"
            add(kind, f"{len(ids)} {noun} {words}: {id_ranges(ids)}", ids)
    if not diff:
        add("range_changed", "the range differs from its seal in a way the row hashes miss")
    return problems, hasher.count


def _check_pruned_range(stream: Stream, seal: Seal) -> list[Problem]:
    """A pruned range must stay empty: anything in it now was put there afterwards."""
    rows = stream.model._default_manager.filter(id__gte=seal.first_id, id__lte=seal.last_id)
    if seal.seq == 1:
        rows = stream.model._default_manager.filter(id__lte=seal.last_id)
    ids = list(rows.order_by("id").values_list("id", flat=True))
    if not ids:
        return []
    noun = "row" if len(ids) == 1 else "rows"
    return [
        Problem(
            stream.name,
            seal.seq,
            "row_inserted",
            f"ids {seal.first_id}-{seal.last_id} (pruned): {len(ids)} {noun} inserted into the "
            f"pruned range: {id_ranges(ids)}",
            tuple(ids),
        )
    ]


def _check_heads_kept(chosen: Sequence[Stream], trusted: set[str]) -> list[Problem]:
    """Seals seen by the previous verification must still be there, unchanged.

    Truncating a chain (deleting its newest seals together with their rows) leaves a chain that
    is valid on its own; this comparison is what notices it.
    """
    problems: list[Problem] = []
    reported: set[int] = set()
    for stream in chosen:
        last = (
            SealVerification.objects.filter(heads__has_key=stream.name)
            .order_by("-finished_at", "-id")
            .first()
        )
        if last is None:
            continue
        if not _verification_signed(last, trusted):
            if last.pk not in reported:
                reported.add(last.pk)
                problems.append(
                    Problem(
                        "verification",
                        None,
                        "verification_altered",
                        f"the record of the verification finished at "
                        f"{time_text(last.finished_at)} was altered or not written by a holder "
                        "of the seal key",
                    )
                )
            continue
        name, head = stream.name, last.heads.get(stream.name)
        if not isinstance(head, dict):
            continue
        seq, digest = head.get("seq"), head.get("digest")
        kept = Seal.objects.light().filter(stream=name, seq=seq).first()
        if kept is None:
            problems.append(
                Problem(name, seq, "seal_vanished", "seen by the previous verification, now gone")
            )
        elif kept.digest != digest:
            problems.append(
                Problem(name, seq, "seal_replaced", "not the seal the last verification saw")
            )
    return problems


def _verification_signed(row: SealVerification, trusted: set[str]) -> bool:
    return row.public_key in trusted and signature_valid(
        row.public_key, row.statement(), row.signature
    )


def _record_verification(report: VerificationReport, started: datetime) -> SealVerification:
    lines = [problem.line() for problem in report.problems]
    kept = lines[:STORED_PROBLEM_LINES]
    if len(lines) > len(kept):
        kept.append(f"... and {len(lines) - len(kept)} more (see the command's output)")
    row = SealVerification(
        started_at=started,
        finished_at=timezone.now(),
        ok=report.ok,
        seals_checked=report.seals_checked,
        rows_checked=report.rows_checked,
        problem_count=len(report.problems),
        problems="\n".join(kept),
        heads={
            s.stream: {"seq": s.head_seq, "digest": s.head_digest}
            for s in report.streams
            if s.head_seq is not None
        },
        public_key=seal_public_key(),
    )
    row.signature = sign(signing_key(), row.statement())
    row.save(force_insert=True)
    return row


# --- Pruning ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrunedRange:
    stream: str
    seq: int
    first_id: int
    last_id: int
    rows: int
    last_time: datetime | None

    def line(self) -> str:
        newest = self.last_time.isoformat() if self.last_time else "?"
        return (
            f"{self.stream} seal #{self.seq}: ids {self.first_id}-{self.last_id}, "
            f"{self.rows} rows (newest {newest})"
        )


def prune_sealed(
    before: datetime,
    *,
    actor: Any,
    streams: Iterable[str] | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[PrunedRange]:
    """Delete the rows of whole sealed ranges whose rows are all older than `before`.

    Walks each chain from its first seal and stops at the first seal that is too recent, so what
    remains is always a suffix of history. Raises SealError, having deleted nothing more, when a
    range or link to be pruned does not verify (the evidence is kept) or `before` is in the
    future.
    """
    now = now or timezone.now()
    if before > now:
        raise SealError("the prune date is in the future; only the past can be pruned")
    try:
        trusted = trusted_seal_keys()
    except SealFormatError as exc:
        raise SealError(str(exc)) from None
    done: list[PrunedRange] = []
    for stream in _streams(streams):
        previous: StoredSeal | None = None
        for seal in _chain(stream.name):
            stored = seal.stored()
            problems = check_link(stored, previous, trusted)
            if problems:
                raise SealError(_refusal(seal, problems))
            previous = stored
            if valid_prune(stored, trusted):
                continue
            if seal.last_time is None or seal.last_time >= before:
                break
            problems, _ = _check_range(stream, seal, genesis=seal.seq == 1)
            if problems:
                raise SealError(_refusal(seal, problems))
            pruned = PrunedRange(
                stream.name, seal.seq, seal.first_id, seal.last_id, seal.row_count, seal.last_time
            )
            if not dry_run:
                _prune_one(stream, seal, before=before, actor=actor)
            done.append(pruned)
    return done


def _refusal(seal: Seal, problems: Sequence[Problem]) -> str:
    found = "; ".join(problem.line() for problem in problems[:5])
    return (
        f"not pruning {seal} or anything after it: it does not verify ({found}). "
        "Its rows are kept as evidence; run `audit verify` for the full report."
    )


def _prune_one(stream: Stream, seal: Seal, *, before: datetime, actor: Any) -> None:
    """Delete one range's rows and mark its seal pruned, in one transaction."""
    with transaction.atomic():
        locked = Seal.objects.light().select_for_update().get(pk=seal.pk)
        if locked.pruned_at is not None:
            return  # another prune run got here first
        above = None if seal.seq == 1 else seal.first_id - 1
        rows = stream.model._default_manager.filter(id__lte=seal.last_id)
        if above is not None:
            rows = rows.filter(id__gt=above)
        if rows.count() != seal.row_count:
            raise SealError(f"{seal}: rows changed while pruning; nothing of it was deleted")
        rows.delete()
        pruned_at = timezone.now()
        statement = prune_statement(stream.name, seal.seq, seal.digest, time_text(pruned_at))
        Seal.objects.filter(pk=seal.pk).update(
            pruned_at=pruned_at, prune_signature=sign(signing_key(), statement), leaves=b""
        )
        record_action(
            actor=actor,
            action="audit.prune",
            object_type="seal",
            object_id=f"{stream.name}#{seal.seq}",
            before={
                "stream": stream.name,
                "seq": seal.seq,
                "first_id": seal.first_id,
                "last_id": seal.last_id,
                "row_count": seal.row_count,
                "last_time": time_text(seal.last_time),
                "digest": seal.digest,
            },
            reason=f"pruned sealed rows older than {time_text(before)}",
            via="cli",
        )
