"""The pure seal format: canonical rows, range digests, leaves, keys and chain links."""

from __future__ import annotations

import zlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from audit.digests import (
    GENESIS_DIGEST,
    RangeHasher,
    SealFormatError,
    SealPayload,
    StoredSeal,
    canonical_row,
    check_link,
    derive_signing_key,
    diff_leaves,
    fingerprint,
    id_ranges,
    leaves_digest,
    public_key_text,
    read_leaves,
    row_hash,
    sign,
    split_leaves,
)

SECRET = "a test secret that is long enough"
MOMENT = datetime(2026, 11, 20, 12, 0, 0, 123456, tzinfo=UTC)


def test_equal_rows_serialise_to_the_same_bytes_whatever_the_key_order_or_zone():
    paris = timezone(timedelta(hours=1))
    first = canonical_row([1, MOMENT, {"b": 1, "a": [1.5, None]}])
    second = canonical_row([1, MOMENT.astimezone(paris), {"a": [1.5, None], "b": 1}])
    assert first == second
    assert b"2026-11-20T12:00:00.123456+00:00" in first


def test_a_one_character_change_changes_the_row_hash():
    assert row_hash("joinattempt", [1, "denied"]) != row_hash("joinattempt", [1, "Denied"])


def test_the_same_row_hashes_differently_in_another_stream():
    assert row_hash("joinattempt", [1, "x"]) != row_hash("adminaction", [1, "x"])


def test_a_naive_datetime_is_refused_rather_than_guessed():
    with pytest.raises(SealFormatError):
        canonical_row([datetime(2026, 1, 1, 12, 0)])


def test_an_unknown_value_type_is_refused():
    with pytest.raises(SealFormatError):
        canonical_row([object()])


def test_non_finite_floats_have_one_fixed_text():
    assert canonical_row([float("nan"), float("inf")]) == b"[NaN,Infinity]"


def test_the_range_digest_depends_on_every_row_and_on_order():
    def digest(rows: list[tuple[int, str]]) -> str:
        hasher = RangeHasher("joinattempt")
        for row_id, text in rows:
            hasher.add(row_id, [row_id, text])
        return hasher.range_digest()

    base = digest([(1, "a"), (2, "b"), (3, "c")])
    assert base == digest([(1, "a"), (2, "b"), (3, "c")])
    assert base != digest([(1, "a"), (2, "B"), (3, "c")])
    assert base != digest([(1, "a"), (3, "c")])
    assert base != digest([(1, "a"), (2, "b"), (3, "c"), (4, "d")])


def test_rows_must_be_added_in_increasing_id_order():
    hasher = RangeHasher("joinattempt")
    hasher.add(5, [5])
    with pytest.raises(SealFormatError):
        hasher.add(5, [5])


def test_stored_leaves_round_trip_and_match_their_digest():
    hasher = RangeHasher("adminaction")
    for row_id in (3, 4, 9):
        hasher.add(row_id, [row_id, "x"])
    raw = read_leaves(hasher.leaves_blob(), 3)
    assert split_leaves(raw) == hasher.leaves()
    assert leaves_digest(raw) == leaves_digest(hasher.leaves_raw())
    assert [row_id for row_id, _ in split_leaves(raw)] == [3, 4, 9]


def test_leaves_that_inflate_beyond_the_row_count_are_refused():
    bomb = b"\x01" + zlib.compress(b"\x00" * 10_000_000)
    with pytest.raises(SealFormatError):
        read_leaves(bomb, 3)


def test_leaves_with_an_unknown_version_are_refused():
    with pytest.raises(SealFormatError):
        read_leaves(b"\x02" + zlib.compress(b""), 0)


def test_the_leaf_diff_names_changed_deleted_and_inserted_rows():
    sealed = [(1, b"a"), (2, b"b"), (3, b"c"), (5, b"e")]
    live = [(1, b"a"), (2, b"B"), (4, b"d"), (5, b"e"), (6, b"f")]
    diff = diff_leaves(sealed, live)
    assert diff.changed == [2]
    assert diff.deleted == [3]
    assert diff.inserted == [4, 6]


def test_identical_leaves_give_an_empty_diff():
    assert not diff_leaves([(1, b"a")], [(1, b"a")])


def test_id_lists_are_folded_into_runs():
    assert id_ranges([9, 3, 4, 5, 12, 7]) == "3-5, 7, 9, 12"
    assert id_ranges([]) == ""


def test_every_server_derives_the_same_key_from_the_same_secret():
    one = public_key_text(derive_signing_key(SECRET))
    two = public_key_text(derive_signing_key(SECRET))
    other = public_key_text(derive_signing_key(SECRET + "!"))
    assert one == two
    assert one != other
    assert fingerprint(one).startswith("SHA256:")


def test_a_short_secret_is_refused_for_signing():
    with pytest.raises(SealFormatError):
        derive_signing_key("short")


def _chain(count: int, secret: str = SECRET) -> list[StoredSeal]:
    key = derive_signing_key(secret)
    seals: list[StoredSeal] = []
    previous = GENESIS_DIGEST
    for seq in range(1, count + 1):
        payload = SealPayload(
            stream="joinattempt",
            seq=seq,
            first_id=(seq - 1) * 10 + 1,
            last_id=seq * 10,
            row_count=10,
            first_time="2026-11-20T12:00:00.000000+00:00",
            last_time="2026-11-20T12:00:01.000000+00:00",
            columns=("id", "time"),
            range_digest="ab" * 32,
            leaves_digest="cd" * 32,
            previous_digest=previous,
            created_at="2026-11-20T12:05:00.000000+00:00",
            public_key=public_key_text(key),
        )
        seals.append(StoredSeal(payload, payload.digest(), sign(key, payload.to_bytes())))
        previous = payload.digest()
    return seals


def _kinds(seals: list[StoredSeal], trusted: set[str]) -> list[str]:
    kinds = []
    previous = None
    for seal in seals:
        kinds.extend(problem.kind for problem in check_link(seal, previous, trusted))
        previous = seal
    return kinds


TRUSTED = {public_key_text(derive_signing_key(SECRET))}


def test_a_well_formed_chain_has_no_problems():
    assert _kinds(_chain(3), TRUSTED) == []


def test_an_edited_seal_field_fails_its_digest_and_signature():
    seals = _chain(3)
    edited = replace(seals[1].payload, row_count=9)
    seals[1] = replace(seals[1], payload=edited)
    kinds = _kinds(seals, TRUSTED)
    assert "seal_altered" in kinds and "signature_invalid" in kinds


def test_a_seal_resigned_by_someone_else_is_not_trusted():
    seals = _chain(2)
    stranger = _chain(2, secret="another secret, also long enough")
    assert "untrusted_key" in _kinds([seals[0], stranger[1]], TRUSTED)


def test_a_missing_seal_breaks_the_chain():
    seals = _chain(3)
    kinds = _kinds([seals[0], seals[2]], TRUSTED)
    assert "seal_missing" in kinds and "chain_broken" in kinds


def test_a_validly_signed_seal_that_names_the_wrong_predecessor_breaks_the_chain():
    key = derive_signing_key(SECRET)
    seals = _chain(2)
    forked = replace(seals[1].payload, previous_digest=GENESIS_DIGEST)
    seals[1] = StoredSeal(forked, forked.digest(), sign(key, forked.to_bytes()))
    assert _kinds(seals, TRUSTED) == ["chain_broken"]


def test_a_chain_that_does_not_start_at_one_is_reported():
    assert "seal_missing" in _kinds(_chain(3)[1:], TRUSTED)


def test_a_prune_mark_without_a_signed_statement_is_reported():
    seals = _chain(1)
    seals[0] = replace(seals[0], pruned_at="2026-11-21T00:00:00.000000+00:00")
    assert _kinds(seals, TRUSTED) == ["prune_mark_invalid"]
