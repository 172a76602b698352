"""``install systemd``: a hardened unit that joins this instance at boot.

The unit is a oneshot: joining happens once per instance, and ``join.json`` (written last by a
successful join) makes systemd skip it on later boots. Transient failures (network not up yet,
IMDS throttling, the server busy) are retried by the agent itself and then by
``Restart=on-failure``, within a start limit so that a final refusal does not loop forever.

The sandbox leaves the agent what it needs and nothing more: network, read access to the
system, write access to its data dir only, no privileges to gain, no capabilities.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from joinadmin_agent.files import atomic_write
from joinadmin_agent.identity import DEFAULT_DATA_DIR, JOIN_FILE

DEFAULT_CONFIG = "/etc/joinadmin-agent.yaml"
UNIT_NAME = "joinadmin-agent.service"
STATE_ROOT = "/var/lib/"

# Whitespace, quotes and backslashes change how systemd splits ExecStart, '$' expands
# variables; refusing them is simpler and safer than quoting.
_UNSAFE_PATH_RE = re.compile(r"[\s\"'\\$;\x00-\x1f\x7f]")


class UnitError(ValueError):
    """A path cannot be put into a unit file safely."""


def default_command() -> list[str]:
    """How the unit starts the agent: this interpreter, isolated from the environment.

    ``-I`` keeps PYTHON* variables, the user site and the working directory out of a process
    that runs as root.
    """
    return [os.path.abspath(sys.executable), "-I", "-m", "joinadmin_agent"]


def render_unit(
    *,
    data_dir: str = str(DEFAULT_DATA_DIR),
    config: str = DEFAULT_CONFIG,
    command: list[str] | None = None,
) -> str:
    """Return the unit file text; raises UnitError for a path systemd would misread."""
    data_dir = _unit_path(data_dir, "data dir")
    config = _unit_path(config, "config file")
    argv = [
        _unit_path(part, "agent command") if i == 0 else part
        for i, part in enumerate(command or default_command())
    ]
    for part in argv[1:]:
        if not part or _UNSAFE_PATH_RE.search(part):
            raise UnitError(f"agent command argument {part!r} cannot be put into a unit file")
    exec_start = " ".join([*argv, "join", "--config", config, "--data-dir", data_dir])
    state = ""
    if data_dir.startswith(STATE_ROOT) and len(data_dir) > len(STATE_ROOT):
        # systemd creates a StateDirectory (mode below) before the sandbox is set up;
        # ProtectSystem=strict would otherwise leave no way to create the data dir.
        state = f"StateDirectory={data_dir[len(STATE_ROOT) :]}\nStateDirectoryMode=0700\n"
    return f"""\
# {UNIT_NAME}: written by `joinadmin-agent install systemd`.
[Unit]
Description=joinadmin agent: join this EC2 instance to the cluster
Wants=network-online.target
After=network-online.target
# A complete join leaves {JOIN_FILE}; joining again would only be refused.
ConditionPathExists=!{data_dir}/{JOIN_FILE}
StartLimitIntervalSec=30min
StartLimitBurst=5

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={exec_start}
Restart=on-failure
RestartSec=30s
TimeoutStartSec=10min
UMask=0077
{state}ReadWritePaths={data_dir}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
ProtectProc=invisible
ProcSubset=pid
PrivateIPC=yes
CapabilityBoundingSet=

[Install]
WantedBy=multi-user.target
"""


def write_unit(path: Path, text: str) -> None:
    """Write the unit atomically, mode 0644 as systemd expects."""
    atomic_write(path, text.encode(), 0o644)


def _unit_path(value: str, what: str) -> str:
    if not os.path.isabs(value) or os.path.normpath(value) != value:
        raise UnitError(f"the {what} {value!r} must be an absolute, normalised path")
    if _UNSAFE_PATH_RE.search(value):
        raise UnitError(
            f"the {what} {value!r} contains whitespace, quotes or other characters that "
            "cannot be put into a unit file safely"
        )
    # '%' starts a systemd specifier; doubling it keeps the path literal.
    return value.replace("%", "%%")
