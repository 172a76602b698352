"""The agent re-joins by itself when its data dir holds an identity.

The fake server here verifies re-join proofs with the server's own pure module
(``joins/rejoin.py``), so these tests also pin that the agent's message is byte for byte the one
the server checks.
"""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from joinadmin_agent import rejoin as agent_rejoin
from joinadmin_agent.cli import main
from joins import rejoin as server_rejoin
from tests.agent.test_client import ISSUE, Answer, FakeJoinServer, refusal
from tests.support.fake_imds import SAMPLE_HOST_ID, SAMPLE_RSA2048, FakeIMDS

KEY = server_rejoin.challenge_key("the fake server's secret key, long enough to be one")


class RejoinServer(FakeJoinServer):
    """The fake join server plus challenges and a registry that remembers each host's key.

    A plain join of a registered host is refused ``instance_already_joined``; a join with a
    ``rejoin`` block must carry an unused challenge for the host and a signature that
    ``joins.rejoin.verify_signature`` accepts with the key registered at the last join. As on
    the real server, a challenge is spent only by a join that succeeds.
    ``answers`` script what the join answers when the proof (if any) is good.
    """

    def __init__(self, answers: list[Answer | str]) -> None:
        super().__init__(answers)
        self.registered: dict[str, str] = {}  # host id -> PEM of the last certified TLS key
        self.challenges: list[str] = []
        self.used: set[str] = set()
        self.challenge_answers: list[Answer] = []
        self._server.RequestHandlerClass = _rejoin_handler(self)

    def decide(self, request: dict[str, Any]) -> Answer:
        host_id = request.get("host_id", "")
        proof = request.get("rejoin")
        if proof is None and host_id in self.registered:
            return refusal(403, "instance_already_joined")
        if proof is not None and host_id in self.registered:
            try:
                challenge = server_rejoin.open_challenge(
                    KEY, proof["challenge"], host_id, datetime.now(UTC)
                )
                if challenge.text in self.used:
                    return refusal(403, "rejoin_challenge_invalid")
                message = server_rejoin.rejoin_message(
                    challenge=challenge.text,
                    host_id=host_id,
                    document=request["ec2_identity_document"],
                    tls_public_key=serialization.load_pem_public_key(
                        request["public_tls_key"].encode()
                    ),
                    ssh_public_key=serialization.load_ssh_public_key(
                        request["public_ssh_key"].encode()
                    ),
                )
                server_rejoin.verify_signature(
                    serialization.load_pem_public_key(self.registered[host_id].encode()),
                    message,
                    base64.b64decode(proof["signature"]),
                )
            except server_rejoin.RejoinError as exc:
                return refusal(403, exc.code)
        answer = self.next_answer(request)
        if answer.status == 200:
            # Like the real server: a challenge is spent by the re-join it allows.
            if proof is not None:
                self.used.add(proof["challenge"])
            self.registered[host_id] = request["public_tls_key"]
            if proof is not None and isinstance(answer.body, dict):
                answer.body["rejoined"] = True
        return answer

    def issue_challenge(self, request: dict[str, Any]) -> Answer:
        if self.challenge_answers:
            return self.challenge_answers.pop(0)
        issued = server_rejoin.issue_challenge(KEY, request["host_id"], datetime.now(UTC))
        self.challenges.append(issued.text)
        return Answer(
            200,
            {
                "host_id": issued.host_id,
                "challenge": issued.text,
                "expires": issued.expires.isoformat(),
            },
        )


def _rejoin_handler(fake: RejoinServer) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            request = json.loads(self.rfile.read(length) or b"null")
            with lock:
                fake.requests.append(request)
                fake.paths.append(self.path)
                if self.path == "/api/v1/join/challenge":
                    answer = fake.issue_challenge(request)
                else:
                    answer = fake.decide(request)
            data = json.dumps(answer.body).encode()
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def argv(server: FakeJoinServer, data_dir: Path) -> list[str]:
    return ["join", "--server", server.url, "--token", "ec2-token", "--data-dir", str(data_dir)]


def joins_sent(server: FakeJoinServer) -> list[dict[str, Any]]:
    return [r for r, p in zip(server.requests, server.paths, strict=True) if p == "/api/v1/join"]


def test_a_fresh_data_dir_sends_a_plain_join_without_asking_for_a_challenge(
    imds: FakeIMDS, slept: list[float], tmp_path: Path
) -> None:
    with RejoinServer([ISSUE]) as server:
        assert main(argv(server, tmp_path / "agent")) == 0

    assert server.paths == ["/api/v1/join"]
    assert "rejoin" not in server.requests[0]


def test_an_agent_whose_data_dir_holds_its_identity_rejoins_by_itself(
    imds: FakeIMDS, slept: list[float], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "agent"
    with RejoinServer([ISSUE]) as server:
        assert main(argv(server, data_dir)) == 0
        first_cert = (data_dir / "tls.crt").read_text()
        capsys.readouterr()
        code = main(argv(server, data_dir))

    assert code == 0
    assert server.paths == ["/api/v1/join", "/api/v1/join/challenge", "/api/v1/join"]
    assert server.requests[1] == {"host_id": SAMPLE_HOST_ID}
    first, second = joins_sent(server)
    assert second["rejoin"]["challenge"] == server.challenges[0]
    assert {k: v for k, v in second.items() if k != "rejoin"} == first
    assert (data_dir / "tls.crt").read_text() != first_cert
    assert f"re-joined as {SAMPLE_HOST_ID}" in capsys.readouterr().out


def test_each_retry_of_a_rejoin_signs_a_new_challenge(
    imds: FakeIMDS, slept: list[float], tmp_path: Path
) -> None:
    data_dir = tmp_path / "agent"
    with RejoinServer([ISSUE]) as server:
        assert main(argv(server, data_dir)) == 0
        server.answers = [refusal(503, "aws_unavailable", retry_after="1"), ISSUE]
        assert main(argv(server, data_dir)) == 0

    assert server.paths.count("/api/v1/join/challenge") == 2
    retried, succeeded = joins_sent(server)[1:]
    assert retried["rejoin"]["challenge"] != succeeded["rejoin"]["challenge"]
    assert server.used == {succeeded["rejoin"]["challenge"]}
    assert slept == [1.0]


def test_a_busy_challenge_endpoint_is_retried_and_a_refusing_one_is_final(
    imds: FakeIMDS, slept: list[float], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "agent"
    with RejoinServer([ISSUE]) as server:
        assert main(argv(server, data_dir)) == 0
        server.challenge_answers = [refusal(429, "rate_limited", retry_after="2")]
        assert main(argv(server, data_dir)) == 0
        server.challenge_answers = [refusal(400, "invalid_request", "bad host id")]
        capsys.readouterr()
        assert main(argv(server, data_dir)) == 1

    assert slept == [2.0]
    err = capsys.readouterr().err
    assert "error: invalid_request" in err and "message: bad host id" in err
    assert server.paths[-1] == "/api/v1/join/challenge"


def test_a_refused_proof_exits_1_and_says_what_to_do(
    imds: FakeIMDS, slept: list[float], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "agent"
    with RejoinServer([ISSUE]) as server:
        assert main(argv(server, data_dir)) == 0
        # The server now knows another key for this host (its data dir was replaced elsewhere).
        other = ec.generate_private_key(ec.SECP256R1()).public_key()
        server.registered[SAMPLE_HOST_ID] = other.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        capsys.readouterr()
        code = main(argv(server, data_dir))

    assert code == 1
    err = capsys.readouterr().err
    assert "error: rejoin_proof_invalid" in err
    assert "forget the host" in err
    assert json.loads((data_dir / "join.json").read_text())["join_attempt_id"] == "ja_success"


def test_a_server_without_the_challenge_endpoint_gets_a_plain_join(
    imds: FakeIMDS, slept: list[float], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "agent"
    with FakeJoinServer([ISSUE]) as server:  # answers 404 to anything but /api/v1/join
        assert main(argv(server, data_dir)) == 0
        assert main(argv(server, data_dir)) == 0

    assert "rejoin" not in server.requests[-1]
    assert "does not offer re-joins; sending a plain join" in capsys.readouterr().err


def test_the_agents_message_is_the_one_the_server_verifies() -> None:
    tls = ec.generate_private_key(ec.SECP256R1())
    ssh = ed25519.Ed25519PrivateKey.generate()
    challenge = server_rejoin.issue_challenge(KEY, SAMPLE_HOST_ID, datetime.now(UTC)).text
    fields = {
        "challenge": challenge,
        "host_id": SAMPLE_HOST_ID,
        "document": SAMPLE_RSA2048,
        "tls_public_key": tls.public_key(),
        "ssh_public_key": ssh.public_key(),
    }
    assert agent_rejoin.rejoin_message(**fields) == server_rejoin.rejoin_message(**fields)
    signature = agent_rejoin.proof_signer(
        host_id=SAMPLE_HOST_ID,
        document=SAMPLE_RSA2048,
        signing_key=tls,
        tls_public_key=tls.public_key(),
        ssh_public_key=ssh.public_key(),
    )(challenge)
    server_rejoin.verify_signature(
        tls.public_key(), server_rejoin.rejoin_message(**fields), base64.b64decode(signature)
    )
