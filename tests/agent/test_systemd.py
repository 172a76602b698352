"""The systemd unit printed or written by ``install systemd``."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from joinadmin_agent.cli import main
from joinadmin_agent.systemd import UnitError, render_unit


def directives(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_the_unit_is_sandboxed_and_restarts_on_failure_after_the_network_is_up() -> None:
    unit = directives(render_unit(data_dir="/var/lib/joinadmin-agent"))

    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["ReadWritePaths"] == ["/var/lib/joinadmin-agent"]
    assert unit["PrivateTmp"] == ["yes"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["After"] == ["network-online.target"]
    assert unit["Wants"] == ["network-online.target"]
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit["WantedBy"] == ["multi-user.target"]


def test_the_unit_joins_once_and_is_skipped_once_joined() -> None:
    unit = directives(render_unit(data_dir="/var/lib/joinadmin-agent"))

    assert unit["Type"] == ["oneshot"]
    assert unit["ConditionPathExists"] == ["!/var/lib/joinadmin-agent/join.json"]
    assert "StartLimitBurst" in unit


def test_the_unit_runs_this_agent_with_the_config_and_data_dir() -> None:
    unit = directives(render_unit(data_dir="/srv/agent", config="/etc/agent.yaml"))

    assert unit["ExecStart"] == [
        f"{os.path.abspath(sys.executable)} -I -m joinadmin_agent join "
        "--config /etc/agent.yaml --data-dir /srv/agent"
    ]
    assert unit["ReadWritePaths"] == ["/srv/agent"]
    assert "StateDirectory" not in unit


def test_a_data_dir_under_var_lib_becomes_a_state_directory_created_0700() -> None:
    unit = directives(render_unit(data_dir="/var/lib/joinadmin-agent"))

    assert unit["StateDirectory"] == ["joinadmin-agent"]
    assert unit["StateDirectoryMode"] == ["0700"]


@pytest.mark.parametrize(
    "data_dir",
    [
        "relative/dir",
        "/var/lib/a b",
        "/var/lib/$HOME",
        "/var/lib/x\nExecStartPre=/bin/sh",
        "/a/../b",
    ],
)
def test_a_path_systemd_would_misread_is_refused(data_dir: str) -> None:
    with pytest.raises(UnitError):
        render_unit(data_dir=data_dir)


def test_a_percent_sign_is_escaped_so_it_stays_literal() -> None:
    unit = directives(render_unit(data_dir="/srv/100%agent"))

    assert unit["ReadWritePaths"] == ["/srv/100%%agent"]


def test_install_systemd_prints_the_unit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["install", "systemd"]) == 0

    out = capsys.readouterr().out
    assert out == render_unit()
    assert "[Service]" in out


def test_install_systemd_writes_the_unit_with_mode_0644(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "joinadmin-agent.service"

    assert main(["install", "systemd", "-o", str(target), "--data-dir", "/srv/agent"]) == 0

    assert target.read_text() == render_unit(data_dir="/srv/agent")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert "systemctl enable --now joinadmin-agent.service" in capsys.readouterr().out


def test_install_systemd_with_an_unsafe_path_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["install", "systemd", "--data-dir", "var/lib/x"]) == 2

    assert "absolute" in capsys.readouterr().err
