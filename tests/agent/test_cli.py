"""``joinadmin-agent`` end to end: fake IMDS, fake join server, real files, exit codes."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import joinadmin_agent
from joinadmin_agent import client as client_module
from joinadmin_agent.cli import main
from tests.agent.test_client import ISSUE, FakeJoinServer, refusal
from tests.support.fake_imds import SAMPLE_HOST_ID, SAMPLE_RSA2048, FakeIMDS

OTHER_HOST_ID = "210987654321-i-0fedcba9876543210"


def join_argv(server: FakeJoinServer, data_dir: Path, *extra: str) -> list[str]:
    return [
        "join",
        "--server",
        server.url,
        "--token",
        "ec2-token",
        "--data-dir",
        str(data_dir),
        *extra,
    ]


def test_join_sends_the_contract_fields_and_writes_the_credentials(
    imds: FakeIMDS, slept: list[float], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "agent"
    extra = ["--roles", "Node, App", "--node-name", "web-1"]
    extra += ["--dns-name", "web-1.internal", "--dns-name", "web.internal"]
    with FakeJoinServer([ISSUE]) as server:
        code = main(join_argv(server, data_dir, *extra))

    assert code == 0
    (request,) = server.requests
    assert request == {
        "token": "ec2-token",
        "join_method": "ec2",
        "host_id": SAMPLE_HOST_ID,
        "roles": ["Node", "App"],
        "node_name": "web-1",
        "ec2_identity_document": SAMPLE_RSA2048,
        "public_tls_key": (data_dir / "tls.pub").read_text(),
        "public_ssh_key": (data_dir / "ssh_host_key.pub").read_text().strip(),
        "dns_names": ["web-1.internal", "web.internal"],
        "additional_principals": ["10.0.0.12"],
    }
    assert (data_dir / "tls-ca.crt").read_text() == server.ca.cert_pem
    assert (data_dir / "ssh_ca.pub").read_text() == server.ca.ssh_ca_line + "\n"
    assert (data_dir / "tls.crt").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert (
        (data_dir / "ssh_host_key-cert.pub")
        .read_text()
        .startswith("ssh-ed25519-cert-v01@openssh.com ")
    )
    summary = json.loads((data_dir / "join.json").read_text())
    assert summary.pop("expires")
    assert summary == {
        "host_id": SAMPLE_HOST_ID,
        "roles": ["Node", "App"],
        "join_attempt_id": "ja_success",
        "server": server.url,
    }
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert f"joined as {SAMPLE_HOST_ID}" in out
    assert "ja_success" in out
    assert slept == []


def test_without_options_the_node_name_is_the_hostname_and_no_roles_are_requested(
    imds: FakeIMDS, slept: list[float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "ip-10-0-0-12")
    with FakeJoinServer([ISSUE]) as server:
        assert main(join_argv(server, tmp_path / "agent")) == 0

    (request,) = server.requests
    assert request["node_name"] == "ip-10-0-0-12"
    assert "roles" not in request
    assert request["dns_names"] == []


def test_join_takes_server_and_token_from_a_teleport_yaml(
    imds: FakeIMDS, slept: list[float], tmp_path: Path
) -> None:
    config = tmp_path / "teleport.yaml"
    with FakeJoinServer([ISSUE]) as server:
        config.write_text(
            "version: v3\nteleport:\n  join_params:\n    token_name: from-config\n"
            f"    method: ec2\n  proxy_server: {server.url}\n"
        )
        code = main(["join", "--config", str(config), "--data-dir", str(tmp_path / "agent")])

    assert code == 0
    assert server.requests[0]["token"] == "from-config"


def test_a_refused_join_exits_1_and_prints_the_servers_error_message_and_attempt_id(
    imds: FakeIMDS, slept: list[float], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "agent"
    answer = refusal(403, "token_invalid", "no such token or it expired")
    with FakeJoinServer([answer]) as server:
        code = main(join_argv(server, data_dir))

    assert code == 1
    err = capsys.readouterr().err
    assert "refused the join (HTTP 403)" in err
    assert "error: token_invalid" in err
    assert "message: no such token or it expired" in err
    assert "join_attempt_id: ja_token_invalid" in err
    assert "Traceback" not in err
    assert len(server.requests) == 1
    assert slept == []
    assert not (data_dir / "join.json").exists()
    assert not (data_dir / "tls.crt").exists()


def test_an_already_joined_instance_is_told_how_to_join_again(
    imds: FakeIMDS, slept: list[float], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeJoinServer([refusal(403, "instance_already_joined")]) as server:
        assert main(join_argv(server, tmp_path / "agent")) == 1

    assert "hosts forget" in capsys.readouterr().err


def test_a_busy_server_is_retried_and_the_join_then_succeeds(
    imds: FakeIMDS, slept: list[float], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = [refusal(503, "aws_unavailable", retry_after="2"), ISSUE]
    with FakeJoinServer(answers) as server:
        code = main(join_argv(server, tmp_path / "agent"))

    assert code == 0
    assert len(server.requests) == 2
    assert slept == [2.0]
    assert "aws_unavailable; retrying in 2.0s" in capsys.readouterr().err


def test_a_server_that_stays_busy_makes_the_agent_give_up_with_exit_1(
    imds: FakeIMDS, slept: list[float], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeJoinServer([refusal(429, "rate_limited", retry_after="1")]) as server:
        code = main(join_argv(server, tmp_path / "agent"))

    assert code == 1
    assert len(server.requests) == client_module.RetryPolicy().max_attempts
    err = capsys.readouterr().err
    assert "giving up after" in err
    assert "join_attempt_id: ja_rate_limited" in err


def test_a_data_dir_of_another_host_exits_1_without_contacting_the_server(
    imds: FakeIMDS, slept: list[float], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "agent"
    data_dir.mkdir(mode=0o700)
    (data_dir / "host_id").write_text(f"{OTHER_HOST_ID}\n")
    with FakeJoinServer([ISSUE]) as server:
        code = main(join_argv(server, data_dir))

    assert code == 1
    err = capsys.readouterr().err
    assert "another host" in err
    assert OTHER_HOST_ID in err
    assert server.requests == []
    assert sorted(path.name for path in data_dir.iterdir()) == ["host_id"]


def test_a_second_join_from_the_same_data_dir_reuses_the_keys(
    imds: FakeIMDS, slept: list[float], tmp_path: Path
) -> None:
    data_dir = tmp_path / "agent"
    with FakeJoinServer([ISSUE]) as server:
        assert main(join_argv(server, data_dir)) == 0
        assert main(join_argv(server, data_dir)) == 0

    first, second = server.requests
    assert first["public_tls_key"] == second["public_tls_key"]
    assert first["public_ssh_key"] == second["public_ssh_key"]


def test_an_unreachable_metadata_service_exits_1_with_a_clear_message(
    imds: FakeIMDS, slept: list[float], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    imds.token_status = 403
    with FakeJoinServer([ISSUE]) as server:
        code = main(join_argv(server, tmp_path / "agent"))

    assert code == 1
    assert "IMDS is probably disabled" in capsys.readouterr().err
    assert server.requests == []
    assert not (tmp_path / "agent").exists()


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        ([], "required"),
        (["frobnicate"], "invalid choice"),
        (["join", "--token", "t"], "--server is required"),
        (["join", "--server", "https://example.com"], "--token is required"),
        (["join", "--server", "http://example.com", "--token", "t"], "plain http"),
        (["join", "--server", "https://x", "--token", "t", "--roles", "Node,,App"], "empty role"),
        (
            ["join", "--server", "https://x", "--token", "t", "--ca-file", "/nonexistent.pem"],
            "ca-file",
        ),
        (["install"], "required"),
    ],
)
def test_usage_errors_exit_2_before_anything_is_contacted(
    imds: FakeIMDS, argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2

    err = capsys.readouterr().err
    assert complaint in err
    assert "Traceback" not in err
    assert imds.requests == []


def test_a_config_file_with_another_join_method_is_a_usage_error(
    imds: FakeIMDS, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "teleport.yaml"
    config.write_text("teleport:\n  join_params:\n    token_name: t\n    method: token\n")

    assert main(["join", "--config", str(config), "--server", "https://x"]) == 2

    assert f"{config}:4:" in capsys.readouterr().err
    assert imds.requests == []


def test_server_text_cannot_send_control_sequences_to_the_terminal(
    imds: FakeIMDS, slept: list[float], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = refusal(403, "token_invalid", "bad\x1b[2J\x1b]0;pwned\x07token")
    with FakeJoinServer([answer]) as server:
        assert main(join_argv(server, tmp_path / "agent")) == 1

    err = capsys.readouterr().err
    assert "\x1b" not in err
    assert "\x07" not in err
    assert "message: bad?[2J?]0;pwned?token" in err


def test_python_dash_m_runs_the_agent_with_its_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "joinadmin_agent", "install", "systemd"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    usage = subprocess.run(
        [sys.executable, "-m", "joinadmin_agent", "join"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert ok.returncode == 0
    assert "[Service]" in ok.stdout
    assert usage.returncode == 2
    assert "--server is required" in usage.stderr
    assert "Traceback" not in usage.stderr


def test_the_agent_imports_only_the_standard_library_and_cryptography() -> None:
    package = Path(joinadmin_agent.__file__).parent
    imported: set[str] = set()
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])

    foreign = imported - set(sys.stdlib_module_names) - {"cryptography", "joinadmin_agent"}
    assert foreign == set()
    assert "cryptography" in imported
