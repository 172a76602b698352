"""The admin action log: who changed what, with the state before and after."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from audit.digests import SealPayload, StoredSeal, time_text, verification_statement


class AdminAction(models.Model):
    """One administrative change. Rows are only ever inserted; sealing makes edits detectable."""

    time = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True, default="")
    action = models.CharField(max_length=40, db_index=True)
    object_type = models.CharField(max_length=40)
    object_id = models.CharField(max_length=200, db_index=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True, default="")
    remote_addr = models.CharField(max_length=64, blank=True, default="")
    via = models.CharField(max_length=16, default="console")  # console, api, cli

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["action", "-id"], name="adminaction_action_id")]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.object_id}"


class SealQuerySet(models.QuerySet["Seal"]):
    """Named lookups of seals; the leaf blobs stay in the database unless asked for."""

    def light(self) -> SealQuerySet:
        return self.defer("leaves")

    def chain(self, stream: str) -> SealQuerySet:
        return self.filter(stream=stream).order_by("seq")


class Seal(models.Model):
    """A signed digest over one id range of an audit table, chained to the stream's previous seal.

    The range is the id interval [first_id, last_id], gaps included: a row that appears later
    with an id inside it was inserted into sealed history. The fields that the signature covers
    are listed in `audit.digests.SealPayload`; `leaves` (per-row hashes, to name rows) and the
    prune mark are outside it, and each is checked by its own signed digest or statement.
    The unique (stream, seq) and (stream, previous_digest) pairs make a fork impossible: two
    seal runs racing for the same link cannot both commit.
    """

    STREAMS = [("joinattempt", "join attempts"), ("adminaction", "admin actions")]

    stream = models.CharField(max_length=16, choices=STREAMS)
    seq = models.PositiveBigIntegerField()
    first_id = models.BigIntegerField()
    last_id = models.BigIntegerField()
    row_count = models.PositiveIntegerField()
    first_time = models.DateTimeField(null=True, blank=True)
    last_time = models.DateTimeField(null=True, blank=True)
    columns = models.TextField()  # comma-separated, in the order rows were serialised
    range_digest = models.CharField(max_length=64)
    leaves_digest = models.CharField(max_length=64)
    previous_digest = models.CharField(max_length=64)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField()
    public_key = models.CharField(max_length=64)
    signature = models.CharField(max_length=128)
    leaves = models.BinaryField(blank=True, default=b"")
    pruned_at = models.DateTimeField(null=True, blank=True)
    prune_signature = models.CharField(max_length=128, blank=True, default="")

    objects = SealQuerySet.as_manager()

    class Meta:
        ordering = ["stream", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["stream", "seq"], name="seal_stream_seq"),
            models.UniqueConstraint(fields=["stream", "previous_digest"], name="seal_no_fork"),
            models.CheckConstraint(
                condition=models.Q(last_id__gte=models.F("first_id")), name="seal_range_order"
            ),
        ]
        indexes = [models.Index(fields=["created_at"], name="seal_created_at")]

    def __str__(self) -> str:
        return f"{self.stream} seal #{self.seq} (ids {self.first_id}-{self.last_id})"

    @property
    def is_pruned(self) -> bool:
        return self.pruned_at is not None

    @property
    def column_list(self) -> tuple[str, ...]:
        return tuple(name for name in self.columns.split(",") if name)

    def payload(self) -> SealPayload:
        """What this row states, rebuilt from its fields (the bytes the signature covers)."""
        return SealPayload(
            stream=self.stream,
            seq=self.seq,
            first_id=self.first_id,
            last_id=self.last_id,
            row_count=self.row_count,
            first_time=time_text(self.first_time),
            last_time=time_text(self.last_time),
            columns=self.column_list,
            range_digest=self.range_digest,
            leaves_digest=self.leaves_digest,
            previous_digest=self.previous_digest,
            created_at=time_text(self.created_at),
            public_key=self.public_key,
        )

    def stored(self) -> StoredSeal:
        return StoredSeal(
            payload=self.payload(),
            digest=self.digest,
            signature=self.signature,
            pruned_at=time_text(self.pruned_at),
            prune_signature=self.prune_signature,
        )


class SealVerification(models.Model):
    """One run of `audit verify`: when, whether everything held, and what did not.

    Signed like the seals, so that an "all good" row written by someone without the key is
    recognisable. `heads` keeps the last seal of each stream seen, so the next run notices seals
    that disappeared since.
    """

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(db_index=True)
    ok = models.BooleanField()
    seals_checked = models.PositiveIntegerField(default=0)
    rows_checked = models.PositiveBigIntegerField(default=0)
    problem_count = models.PositiveIntegerField(default=0)
    problems = models.TextField(blank=True, default="")
    heads = models.JSONField(default=dict, blank=True)
    public_key = models.CharField(max_length=64)
    signature = models.CharField(max_length=128)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        state = "ok" if self.ok else f"{self.problem_count} problems"
        return f"verification {self.finished_at:%Y-%m-%d %H:%M:%S}: {state}"

    def statement(self) -> bytes:
        """The bytes the signature covers: every field but the id and the signature itself."""
        return verification_statement(
            {
                "started_at": time_text(self.started_at),
                "finished_at": time_text(self.finished_at),
                "ok": self.ok,
                "seals_checked": self.seals_checked,
                "rows_checked": self.rows_checked,
                "problem_count": self.problem_count,
                "problems": self.problems,
                "heads": self.heads,
                "public_key": self.public_key,
            }
        )
