"""End-to-end tests: the real agent as a subprocess against a live server.

Helpers shared by the tests here; the fixtures (moto's HTTP server, a launched instance) are in
`conftest.py`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.fake_imds import FakeIMDS

ACCOUNT = "123456789012"


def agent(*args: str, imds: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `python -m joinadmin_agent ARGS` reading the fake IMDS at `imds`."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds,
        "NO_PROXY": "*",
    }
    return subprocess.run(
        [sys.executable, "-m", "joinadmin_agent", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def agent_join(
    server: str, data_dir: Path, imds: FakeIMDS, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """`joinadmin_agent join` with token ec2-token and node name web-1."""
    return agent(
        "join",
        "--server",
        server,
        "--token",
        "ec2-token",
        "--data-dir",
        str(data_dir),
        "--node-name",
        "web-1",
        imds=imds.endpoint,
        cwd=cwd,
    )
