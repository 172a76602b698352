"""A worker's preparation before it serves (joinadmin/worker.py, gunicorn.conf.py's
`post_worker_init`): what the first joins would load is loaded, then frozen out of the garbage
collector's sight; checked in this process and on a real gunicorn."""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import override_settings

from joinadmin.worker import prepare
from joins.trust import ec2_lookup
from tests.support.live import Gunicorn, running, wait_for


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Leave the collector as the other tests expect it."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def _loaded_services() -> set[str]:
    """The services whose descriptions the process's botocore session has loaded."""
    loader = ec2_lookup()._session._session.get_component("data_loader")
    return {
        key[1]
        for key in loader._cache  # botocore's Loader memoises each load by its arguments
        if key[0] == "load_service_model"
    }


def test_preparing_loads_the_aws_descriptions_and_freezes_what_exists(unfrozen: None) -> None:
    frozen = prepare()
    assert frozen > 10_000  # Django, DRF, botocore's descriptions: far more than a request
    # Frozen objects still die by reference counting, so the count may have moved a little.
    assert gc.get_freeze_count() > frozen - 1_000
    assert {"ec2", "sts"} <= _loaded_services()


@override_settings(GC_FREEZE=False)
def test_switched_off_it_loads_but_freezes_nothing(unfrozen: None) -> None:
    assert prepare() == 0
    assert gc.get_freeze_count() == 0
    assert {"ec2", "sts"} <= _loaded_services()


def test_every_gunicorn_worker_prepares_before_serving(tmp_path: Path) -> None:
    server = Gunicorn({"JOINADMIN_DATA_DIR": str(tmp_path)}, workers=2, threads=2)
    log = tmp_path / "gunicorn.log"
    pattern = re.compile(r"joinadmin\.worker (\d+) objects set aside from garbage collection")
    with running(server):
        found = wait_for(
            lambda: len(counts := pattern.findall(log.read_text())) == 2 and counts,
            "both workers' preparation in the log",
        )
        assert isinstance(found, list) and all(int(count) > 10_000 for count in found)
        assert server.get("/healthz")[0] == 200
