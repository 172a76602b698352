"""Fixtures of the agent's command-line tests: a fake IMDS the agent reads, and its backoff
sleeps recorded instead of slept."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from joinadmin_agent import client as client_module
from tests.support.fake_imds import FakeIMDS


@pytest.fixture
def imds(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIMDS]:
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    with FakeIMDS() as fake:
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", fake.endpoint)
        yield fake


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr(client_module, "_sleep", waits.append)
    return waits
