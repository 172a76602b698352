"""Fixtures of the fault tests against the production server setup."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.iid_signer import IIDSigner


@pytest.fixture
def signer(tmp_path: Path) -> IIDSigner:
    """A signing authority for us-west-2 whose certificates are in `tmp_path / "certs"`."""
    signer = IIDSigner(regions=("us-west-2",))
    signer.write_certs(tmp_path / "certs")
    return signer
