"""The CA material a join signs with (joins/authority.py): one small read per join, and a new or
retired CA is seen by the next join."""

from __future__ import annotations

import pytest

from joins import authority
from joins.models import CertificateAuthority

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh() -> None:
    authority.reset_cache()


def test_a_loaded_ca_costs_one_query_per_join(django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    ca, material = authority.signing_material()
    with django_assert_num_queries(1):
        again, same = authority.signing_material()
    assert again is ca and same == material
    assert material["tls_ca_certs"] == [ca.tls_cert_pem]


def test_a_new_active_ca_is_used_by_the_next_join() -> None:
    old, _ = authority.signing_material()
    # Another server rotates: the old CA stays trusted, a new one signs.
    CertificateAuthority.objects.filter(active=True).update(active=False)
    new_row = authority._create_active_ca()
    new, material = authority.signing_material()
    assert new is not old
    assert new.tls_cert_pem == new_row.tls_cert_pem
    assert material["tls_ca_certs"] == [new.tls_cert_pem, old.tls_cert_pem]
    assert len(material["ssh_ca_keys"]) == 2


def test_a_ca_no_longer_trusted_leaves_the_material_at_once() -> None:
    authority.signing_material()
    CertificateAuthority.objects.filter(active=True).update(active=False)
    authority._create_active_ca()
    new, material = authority.signing_material()
    assert len(material["tls_ca_certs"]) == 2
    CertificateAuthority.objects.filter(active=False).delete()
    again, material = authority.signing_material()
    assert again is new
    assert material["tls_ca_certs"] == [new.tls_cert_pem]
