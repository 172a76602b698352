"""The join's reads in one statement (joins/reads.py): the same values as the reads they
replace, on both databases, in one query."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from joins import authority
from joins.models import CertificateAuthority, Host
from joins.reads import read_for_join
from tokens import cache
from tokens.models import Token

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
HOST_ID = "123456789012-i-0123456789abcdef0"


@pytest.fixture(autouse=True)
def _fresh() -> None:
    authority.reset_cache()
    cache.clear()


def _token(name: str = "ec2-token") -> Token:
    return Token.objects.create(
        name=name,
        roles=["Node"],
        allow=[{"aws_account": "123456789012", "aws_regions": ["us-west-2"]}],
        description="kept",
        expires=NOW,
    )


def _host(host_id: str = HOST_ID) -> Host:
    account, _, instance = host_id.partition("-")
    return Host.objects.create(
        host_id=host_id,
        account_id=account,
        region="us-west-2",
        instance_id=instance,
        node_name="node",
        roles=["Node"],
        token="ec2-token",
        first_joined_at=NOW,
        last_joined_at=NOW,
    )


def test_one_query_reads_what_three_did(django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    _token()
    _token("other")
    _host()
    authority.signing_material()  # creates the CA
    with django_assert_num_queries(1):
        reads = read_for_join("ec2-token", HOST_ID)
    assert reads.token == cache.read_row("ec2-token")
    assert reads.token is not None and "kept" in reads.token
    assert reads.registered(HOST_ID) is True
    assert reads.ca_version == authority.ca_version()
    active = CertificateAuthority.objects.get(active=True).pk
    assert reads.ca_version == (active, 1, active)


def test_what_is_not_there_reads_as_absent() -> None:
    reads = read_for_join("no-such-token", HOST_ID)
    assert reads.token is None
    assert reads.registered(HOST_ID) is False
    assert reads.ca_version == (None, 0, None)


def test_the_host_read_answers_only_for_the_id_it_read() -> None:
    _host()
    reads = read_for_join("ec2-token", HOST_ID)
    assert reads.registered("123456789012-i-0000000000000000f") is None
    assert read_for_join("ec2-token", "").registered("") is None


def test_a_token_row_read_here_serves_the_kept_resource(django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    _token()
    first = cache.token_of_row("ec2-token", cache.read_row("ec2-token"))
    reads = read_for_join("ec2-token", HOST_ID)
    with django_assert_num_queries(0):
        assert cache.token_of_row("ec2-token", reads.token) is first
    Token.objects.filter(name="ec2-token").update(description="edited")
    edited = cache.token_of_row("ec2-token", read_for_join("ec2-token", HOST_ID).token)
    assert edited is not None and edited is not first
    assert edited.resource.description == "edited"


def test_a_new_or_deleted_ca_changes_the_version() -> None:
    authority.signing_material()
    first = authority.ca_version()
    CertificateAuthority.objects.filter(active=True).update(active=False)
    retired = authority.ca_version()
    assert retired[0] is None and retired[1:] == first[1:]
    authority._create_active_ca()
    rotated = authority.ca_version()
    assert rotated[0] != first[0] and rotated[1] == 2
    CertificateAuthority.objects.filter(active=False).delete()
    assert authority.ca_version()[1] == 1
    assert authority.ca_version() != rotated
