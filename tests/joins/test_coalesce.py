"""Coalesced DescribeInstances lookups (joins/coalesce.py), with a fake AWS and through moto.

The fake answers like AWS: every id it knows with its state, and a whole-call
`InvalidInstanceID.NotFound` as soon as one asked id is unknown. Batches are made deterministic
by a long window and a `max_batch` equal to the number of lookups, so no test depends on timing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

import pytest
from botocore.awsrequest import AWSResponse

from joins import trust
from joins.aws import AwsError, Ec2Lookup, InstanceInfo, InstancesNotFound
from joins.coalesce import CoalescingLookup, DirectLookup, state_cache_key
from joins.models import JoinAttempt
from tests.joins.conftest import make_token, post_join

REGION = "us-west-2"
LONG_WINDOW = 30.0  # batches in these tests are sent when full, never by the timer
BUDGET = 20.0


class FakeEc2:
    """DescribeInstances over a dict of id -> state, recording every call."""

    def __init__(self, states: Mapping[str, str], *, name_unknown: bool = True) -> None:
        self.states = dict(states)
        self.name_unknown = name_unknown
        self.calls: list[list[str]] = []
        self.error: AwsError | None = None
        self.release = threading.Event()
        self.release.set()
        self._lock = threading.Lock()

    def __call__(
        self, region: str, role_arn: str, ids: list[str], deadline: float
    ) -> dict[str, InstanceInfo]:
        with self._lock:
            self.calls.append(list(ids))
        self.release.wait(timeout=30)
        if self.error is not None:
            raise self.error
        unknown = [i for i in ids if i not in self.states]
        if unknown:
            named = tuple(unknown) if self.name_unknown else ()
            raise InstancesNotFound(f"The instance IDs '{', '.join(named)}' do not exist", named)
        return {i: InstanceInfo(instance_id=i, state=self.states[i]) for i in ids}


class DictCache:
    """A cache with the two methods the lookups use; `broken` makes both fail."""

    def __init__(self, broken: bool = False) -> None:
        self.values: dict[str, str] = {}
        self.broken = broken

    def get(self, key: str) -> str | None:
        if self.broken:
            raise ConnectionError("cache is down")
        return self.values.get(key)

    def set_many(self, data: Mapping[str, str], timeout: int) -> None:
        if self.broken:
            raise ConnectionError("cache is down")
        self.values.update(data)


def ids(count: int, start: int = 0) -> list[str]:
    return [f"i-{n:017x}" for n in range(start, start + count)]


def look_up_together(
    lookup: CoalescingLookup | DirectLookup, instance_ids: list[str]
) -> dict[int, object]:
    """Look up every id on its own thread at once; the answer or exception per position."""
    outcomes: dict[int, object] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(len(instance_ids))

    def one(position: int, instance_id: str) -> None:
        barrier.wait(timeout=30)
        try:
            outcome: object = lookup.describe_one(
                region=REGION, instance_id=instance_id, deadline=time.monotonic() + BUDGET
            )
        except AwsError as exc:
            outcome = exc
        with lock:
            outcomes[position] = outcome

    threads = [threading.Thread(target=one, args=(n, i)) for n, i in enumerate(instance_ids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


@pytest.fixture
def coalescer() -> Callable[..., CoalescingLookup]:
    made: list[CoalescingLookup] = []

    def make(describe: FakeEc2, **options: object) -> CoalescingLookup:
        options.setdefault("window", LONG_WINDOW)
        options.setdefault("interval", 0)  # no pacing unless a test asks for it
        lookup = CoalescingLookup(describe, **options)  # type: ignore[arg-type]
        made.append(lookup)
        return lookup

    yield make
    for lookup in made:
        lookup.close()


def wait_until(condition: Callable[[], bool]) -> None:
    for _ in range(3000):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached within 30 seconds")


def test_concurrent_lookups_of_one_region_share_one_call(coalescer):
    wanted = ids(40)
    fake = FakeEc2(dict.fromkeys(wanted, "running"))
    lookup = coalescer(fake, max_batch=40)
    outcomes = look_up_together(lookup, wanted)
    assert len(fake.calls) == 1
    assert sorted(fake.calls[0]) == sorted(wanted)
    assert all(isinstance(o, InstanceInfo) and o.state == "running" for o in outcomes.values())
    assert [outcomes[n].instance_id for n in range(40)] == wanted  # type: ignore[attr-defined]


def test_more_than_a_hundred_ids_are_split_into_calls_of_at_most_a_hundred(coalescer):
    wanted = ids(250)
    fake = FakeEc2(dict.fromkeys(wanted, "running"))
    lookup = coalescer(fake, window=0.05)
    outcomes = look_up_together(lookup, wanted)
    assert all(len(call) <= 100 for call in fake.calls)
    assert sorted(i for call in fake.calls for i in call) == sorted(wanted)
    assert len(fake.calls) >= 3
    assert all(isinstance(o, InstanceInfo) for o in outcomes.values())


def test_under_load_a_partial_batch_waits_for_the_pace_but_a_full_one_goes_at_once(coalescer):
    fake = FakeEc2(dict.fromkeys(["i-0aaa", "i-0bbb", "i-0ccc"], "running"))
    lookup = coalescer(
        fake, window=0, interval=LONG_WINDOW, burst=1, stall=LONG_WINDOW, max_batch=2
    )
    assert lookup.describe_one(region=REGION, instance_id="i-0aaa").state == "running"  # type: ignore[union-attr]
    later = threading.Thread(
        target=lambda: lookup.describe_one(region=REGION, instance_id="i-0bbb")
    )
    later.start()
    wait_until(lambda: lookup.stats().lookups == 2)
    time.sleep(0.2)
    assert fake.calls == [["i-0aaa"]]  # no token left: the partial batch waits and gathers
    assert lookup.describe_one(region=REGION, instance_id="i-0ccc").state == "running"  # type: ignore[union-attr]
    later.join(timeout=30)
    assert fake.calls == [["i-0aaa"], ["i-0bbb", "i-0ccc"]]


def test_a_partial_batch_waiting_for_the_pace_goes_once_nobody_else_joins_it(coalescer):
    fake = FakeEc2(dict.fromkeys(["i-0aaa", "i-0bbb"], "running"))
    lookup = coalescer(fake, window=0, interval=LONG_WINDOW, burst=1, stall=0.05)
    assert lookup.describe_one(region=REGION, instance_id="i-0aaa").state == "running"  # type: ignore[union-attr]
    # No token for LONG_WINDOW, but no other lookup comes: the batch goes after the stall.
    assert lookup.describe_one(region=REGION, instance_id="i-0bbb").state == "running"  # type: ignore[union-attr]
    assert fake.calls == [["i-0aaa"], ["i-0bbb"]]


def test_a_lookup_already_in_flight_is_shared_not_asked_again(coalescer):
    fake = FakeEc2({"i-0aaa": "running"})
    fake.release.clear()
    lookup = coalescer(fake, window=0)
    answers: list[object] = []
    first = threading.Thread(
        target=lambda: answers.append(lookup.describe_one(region=REGION, instance_id="i-0aaa"))
    )
    first.start()
    wait_until(lambda: len(fake.calls) == 1)
    second = threading.Thread(
        target=lambda: answers.append(lookup.describe_one(region=REGION, instance_id="i-0aaa"))
    )
    second.start()
    wait_until(lambda: lookup.stats().shared == 1)
    fake.release.set()
    first.join(timeout=30)
    second.join(timeout=30)
    assert fake.calls == [["i-0aaa"]]
    assert [a.state for a in answers] == ["running", "running"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("name_unknown", [True, False], ids=["named", "unnamed"])
def test_one_unknown_id_does_not_refuse_the_others_in_its_batch(coalescer, name_unknown):
    known = ids(9)
    fake = FakeEc2(dict.fromkeys(known, "running"), name_unknown=name_unknown)
    lookup = coalescer(fake, max_batch=10)
    wanted = [*known[:4], "i-0unknown", *known[4:]]
    outcomes = look_up_together(lookup, wanted)
    assert outcomes[4] is None
    assert [outcomes[n].state for n in range(10) if n != 4] == ["running"] * 9  # type: ignore[attr-defined]
    assert sorted(fake.calls[0]) == sorted(wanted)
    if name_unknown:  # the others are asked again together, without the unknown id
        assert [sorted(call) for call in fake.calls[1:]] == [sorted(known)]
    else:  # halves until the unknown id stands alone
        assert [call for call in fake.calls if "i-0unknown" in call][-1] == ["i-0unknown"]
        assert len(fake.calls) <= 2 * len(wanted) - 1


def test_an_instance_aws_describes_as_stopped_is_answered_as_stopped(coalescer):
    fake = FakeEc2({"i-0aaa": "running", "i-0bbb": "stopped"})
    lookup = coalescer(fake, max_batch=2)
    outcomes = look_up_together(lookup, ["i-0aaa", "i-0bbb"])
    assert outcomes[0].state == "running"  # type: ignore[attr-defined]
    assert outcomes[1].state == "stopped"  # type: ignore[attr-defined]


@pytest.mark.parametrize("code", ["aws_denied", "aws_unavailable"])
def test_an_aws_error_of_a_batch_reaches_every_waiter(coalescer, code):
    wanted = ids(12)
    fake = FakeEc2(dict.fromkeys(wanted, "running"))
    fake.error = AwsError(code, f"ec2:DescribeInstances in {REGION}: injected")
    lookup = coalescer(fake, max_batch=12)
    outcomes = look_up_together(lookup, wanted)
    assert len(fake.calls) == 1
    assert len(outcomes) == 12
    assert all(isinstance(o, AwsError) and o.code == code for o in outcomes.values())
    assert all("injected" in o.message for o in outcomes.values())  # type: ignore[attr-defined]


def test_a_waiter_gives_up_with_aws_unavailable_when_its_deadline_passes(coalescer):
    fake = FakeEc2({"i-0aaa": "running"})
    fake.release.clear()
    lookup = coalescer(fake, window=0)
    try:
        with pytest.raises(AwsError) as raised:
            lookup.describe_one(
                region=REGION, instance_id="i-0aaa", deadline=time.monotonic() + 0.2
            )
    finally:
        fake.release.set()
    assert raised.value.code == "aws_unavailable"
    assert "time budget" in raised.value.message
    assert lookup.stats().gave_up == 1


def test_a_lookup_whose_deadline_has_passed_asks_nothing(coalescer):
    fake = FakeEc2({"i-0aaa": "running"})
    lookup = coalescer(fake, window=0)
    with pytest.raises(AwsError) as raised:
        lookup.describe_one(region=REGION, instance_id="i-0aaa", deadline=time.monotonic() - 1)
    assert raised.value.code == "aws_unavailable"
    assert fake.calls == []


def test_a_recent_running_confirmation_in_the_cache_avoids_a_call(coalescer):
    fake = FakeEc2({"i-0aaa": "running"})
    cache = DictCache()
    lookup = coalescer(fake, window=0, cache=cache, cache_seconds=5)
    first = lookup.describe_one(region=REGION, instance_id="i-0aaa")
    second = lookup.describe_one(region=REGION, instance_id="i-0aaa")
    assert len(fake.calls) == 1
    assert first is not None and not first.cached
    assert second is not None and second.cached and second.state == "running"
    assert cache.values == {state_cache_key(REGION, "", "i-0aaa"): "running"}


def test_a_confirmation_through_one_role_does_not_answer_for_another(coalescer):
    fake = FakeEc2({"i-0aaa": "running"})
    lookup = coalescer(fake, window=0, cache=DictCache(), cache_seconds=5)
    lookup.describe_one(
        region=REGION, instance_id="i-0aaa", role_arn="arn:aws:iam::111111111111:role/a"
    )
    lookup.describe_one(
        region=REGION, instance_id="i-0aaa", role_arn="arn:aws:iam::222222222222:role/b"
    )
    assert len(fake.calls) == 2


@pytest.mark.parametrize("lookup_kind", ["coalescing", "direct"])
def test_negative_answers_are_never_cached(coalescer, lookup_kind):
    fake = FakeEc2({"i-0stopped": "stopped"})
    cache = DictCache()
    lookup = (
        coalescer(fake, window=0, cache=cache, cache_seconds=5)
        if lookup_kind == "coalescing"
        else DirectLookup(fake, cache=cache, cache_seconds=5)
    )
    for _ in range(2):
        assert lookup.describe_one(region=REGION, instance_id="i-0stopped").state == "stopped"  # type: ignore[union-attr]
        assert lookup.describe_one(region=REGION, instance_id="i-0gone") is None
    fake.error = AwsError("aws_unavailable", "injected")
    with pytest.raises(AwsError):
        lookup.describe_one(region=REGION, instance_id="i-0stopped")
    assert cache.values == {}
    assert len(fake.calls) == 5


def test_a_broken_cache_is_a_miss_and_the_lookup_still_asks_aws(coalescer):
    fake = FakeEc2({"i-0aaa": "running"})
    lookup = coalescer(fake, window=0, cache=DictCache(broken=True), cache_seconds=5)
    assert lookup.describe_one(region=REGION, instance_id="i-0aaa").state == "running"  # type: ignore[union-attr]
    assert lookup.describe_one(region=REGION, instance_id="i-0aaa").state == "running"  # type: ignore[union-attr]
    assert len(fake.calls) == 2


def test_the_direct_lookup_makes_one_call_per_lookup():
    wanted = ids(5)
    fake = FakeEc2(dict.fromkeys(wanted, "running"))
    outcomes = look_up_together(DirectLookup(fake), [*wanted, "i-0unknown"])
    assert sorted(len(call) for call in fake.calls) == [1] * 6
    assert outcomes[5] is None
    assert all(outcomes[n].state == "running" for n in range(5))  # type: ignore[attr-defined]


# --- through moto ---------------------------------------------------------------------------


def test_a_real_join_works_with_coalescing_on(client, world, at_launch, settings):
    settings.AWS_COALESCE = True
    trust.reset()
    instance = world.launch()
    make_token()
    response = post_join(client, world.body("ec2-token", world.document(instance)))
    assert response.status_code == 200, response.content
    assert isinstance(trust.instance_lookup(), CoalescingLookup)
    assert trust.instance_lookup().stats().calls == 1
    check = next(c for c in JoinAttempt.objects.get().checks if c["name"] == "instance")
    assert check["ok"] and "is running" in check["detail"]


def test_a_real_batch_with_an_unknown_id_answers_the_known_instances(world):
    known = [world.launch().instance_id for _ in range(3)]
    lookup = CoalescingLookup(trust._describe_batch, window=LONG_WINDOW, max_batch=4)
    try:
        outcomes = look_up_together(lookup, [*known[:2], "i-0123456789abcdef0", known[2]])
    finally:
        lookup.close()
    assert outcomes[2] is None
    assert [outcomes[n].state for n in (0, 1, 3)] == ["running"] * 3  # type: ignore[attr-defined]
    assert lookup.stats().calls == 2


def test_moto_names_the_unknown_ids_of_a_refused_batch(world):
    known = world.launch().instance_id
    with pytest.raises(InstancesNotFound) as raised:
        Ec2Lookup().describe(
            region=REGION, instance_ids=[known, "i-0123456789abcdef0"], report_not_found=True
        )
    assert raised.value.instance_ids == ("i-0123456789abcdef0",)
    assert Ec2Lookup().describe(region=REGION, instance_ids=[known, "i-0123456789abcdef0"]) == {}


def test_a_client_for_another_region_does_not_read_ec2s_description_again(world, monkeypatch):
    from botocore.loaders import JSONFileLoader

    read: list[str] = []
    real = JSONFileLoader.load_file

    def spy(self, file_path):  # type: ignore[no-untyped-def]
        read.append(str(file_path))
        return real(self, file_path)

    monkeypatch.setattr(JSONFileLoader, "load_file", spy)
    lookup = Ec2Lookup()
    lookup._client(REGION, "")
    assert any("/ec2/" in path for path in read)  # the first client reads it
    read.clear()
    other = lookup._client("eu-west-1", "")
    assert other is not lookup._client(REGION, "")
    assert not [path for path in read if "/ec2/" in path]


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: object):  # type: ignore[no-untyped-def]
        yield self._body


def test_botocore_retries_stop_when_the_time_budget_is_spent(world):
    attempts: list[float] = []
    body = (
        b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>slow down"
        b"</Message></Error></Errors><RequestID>t</RequestID></Response>"
    )

    def throttle(request, **_):  # type: ignore[no-untyped-def]
        return AWSResponse(request.url, 503, {"Content-Type": "text/xml"}, _Raw(body))

    def record(**_):  # type: ignore[no-untyped-def]
        attempts.append(time.monotonic())
        time.sleep(0.1)  # longer than the whole budget: the deadline passes in attempt one

    lookup = Ec2Lookup(max_attempts=5)
    client = lookup._client(REGION, "")
    client.meta.events.register_first("before-send.ec2.DescribeInstances", throttle)
    client.meta.events.register("before-send.ec2.DescribeInstances", record)
    with pytest.raises(AwsError) as raised:
        lookup.describe(region=REGION, instance_ids=["i-0aaa"], deadline=time.monotonic() + 0.05)
    assert raised.value.code == "aws_unavailable"
    assert "time budget" in raised.value.message
    assert len(attempts) == 1


# --- the benchmark's no-op endpoint -----------------------------------------------------------


@pytest.mark.django_db
def test_the_benchmark_noop_endpoint_is_not_found_unless_switched_on(client, settings):
    settings.BENCH_NOOP = False
    assert (
        client.post("/api/v1/noop", data="{}", content_type="application/json").status_code == 404
    )
    settings.BENCH_NOOP = True
    response = client.post("/api/v1/noop", data="{}", content_type="application/json")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


def test_a_next_token_in_an_answer_is_followed(world):
    """EC2 answers a request by instance ids at once; should an answer carry a NextToken all
    the same, the rest is asked for, until there is none or one comes again."""
    first, second = world.launch().instance_id, world.launch().instance_id
    lookup = Ec2Lookup()
    client = lookup._client(REGION, "")
    asked: list[object] = []
    token: list[str] = []

    def record(params, **_):  # type: ignore[no-untyped-def]
        asked.append(params.get("NextToken"))

    def add_token(parsed, **_):  # type: ignore[no-untyped-def]
        if not token:  # moto pages by reservation id: the rest comes after the first one
            token.append(parsed["Reservations"][0]["ReservationId"])
        parsed["NextToken"] = token[0]  # on the second answer: a token seen before

    client.meta.events.register("provide-client-params.ec2.DescribeInstances", record)
    client.meta.events.register("after-call.ec2.DescribeInstances", add_token)
    found = lookup.describe(region=REGION, instance_ids=[first, second])
    assert set(found) == {first, second}
    assert asked == [None, token[0]]
