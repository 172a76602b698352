"""`joinadmin.dbpool.release` without a pool: the connection stays (the pooled case runs against
a live server in tests/faults/test_db_pool.py)."""

from __future__ import annotations

import pytest
from django.db import connection

from joinadmin.dbpool import release


@pytest.mark.django_db(transaction=True)
def test_a_connection_of_its_own_is_kept():
    connection.ensure_connection()
    kept = connection.connection
    release()
    assert connection.connection is kept
