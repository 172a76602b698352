"""The join client: what it retries, what it never retries, and how it talks TLS.

Also home of the fake join server and issuing CA that the other agent tests use.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from joinadmin_agent.client import (
    JoinError,
    JoinRefused,
    JoinResult,
    RetryPolicy,
    ServerUrlError,
    join_url,
    parse_retry_after,
    post_join,
)
from tests.support.fake_imds import SAMPLE_HOST_ID

ISSUE = "issue"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class IssuingCA:
    """A throwaway cluster CA: signs TLS and SSH host certificates for the keys it is sent."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake join CA")])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=1))
            .not_valid_after(_now() + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.ssh_key = ed25519.Ed25519PrivateKey.generate()

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def ssh_ca_line(self) -> str:
        return (
            self.ssh_key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )

    def issue_tls(self, public_key: Any, common_name: str, ips: tuple[str, ...] = ()) -> str:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=1))
            .not_valid_after(_now() + dt.timedelta(hours=8))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if ips:
            names = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return (
            builder.sign(self.key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
            .decode()
        )

    def issue_ssh(self, public_ssh_line: str, host_id: str) -> str:
        cert = (
            serialization.SSHCertificateBuilder()
            .public_key(serialization.load_ssh_public_key(public_ssh_line.encode()))
            .serial(1)
            .type(serialization.SSHCertificateType.HOST)
            .key_id(host_id.encode())
            .valid_principals([host_id.encode()])
            .valid_after(int(_now().timestamp()) - 60)
            .valid_before(int(_now().timestamp()) + 8 * 3600)
            .sign(self.ssh_key)
        )
        return cert.public_bytes().decode()

    def success_body(
        self, request: dict[str, Any], host_id: str = SAMPLE_HOST_ID
    ) -> dict[str, Any]:
        """The 200 answer of CONTRACT §4 for ``request``, as a real server would issue it."""
        public_key = serialization.load_pem_public_key(request["public_tls_key"].encode())
        return {
            "host_id": host_id,
            "roles": request.get("roles") or ["Node"],
            "node_name": request.get("node_name"),
            "tls_cert": self.issue_tls(public_key, host_id),
            "tls_ca_certs": [self.cert_pem],
            "ssh_cert": self.issue_ssh(request["public_ssh_key"], host_id),
            "ssh_ca_keys": [self.ssh_ca_line],
            "expires": (_now() + dt.timedelta(hours=8)).replace(microsecond=0).isoformat(),
            "join_attempt_id": "ja_success",
        }


@dataclass
class Answer:
    """One canned answer of the fake join server."""

    status: int
    body: dict[str, Any] | str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def refusal(
    status: int, code: str, message: str = "refused", retry_after: str | None = None
) -> Answer:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {"error": code, "message": message, "join_attempt_id": f"ja_{code}"}
    return Answer(status, body, headers)


class FakeJoinServer:
    """``POST /api/v1/join`` on 127.0.0.1, answering from a script.

    ``answers`` are used in order and the last one repeats; ``ISSUE`` answers 200 with real
    certificates for the keys in the request. With ``tls_dir`` it serves HTTPS with a
    certificate for 127.0.0.1 signed by ``ca``; ``ca_file`` then names that CA's PEM.
    """

    def __init__(self, answers: list[Answer | str], *, tls_dir: Path | None = None) -> None:
        self.answers = list(answers)
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.ca = IssuingCA()
        self.ca_file: Path | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _join_handler(self))
        self._server.daemon_threads = True
        self._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.scheme = "http"
        if tls_dir is not None:
            self._serve_tls(tls_dir)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    def __enter__(self) -> FakeJoinServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def next_answer(self, request: dict[str, Any]) -> Answer:
        with self._lock:
            answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer == ISSUE:
            return Answer(200, self.ca.success_body(request))
        assert isinstance(answer, Answer)
        return answer

    def _serve_tls(self, tls_dir: Path) -> None:
        server_key = ec.generate_private_key(ec.SECP256R1())
        cert_pem = self.ca.issue_tls(server_key.public_key(), "127.0.0.1", ips=("127.0.0.1",))
        cert_file, key_file = tls_dir / "server.crt", tls_dir / "server.key"
        cert_file.write_text(cert_pem)
        key_file.write_bytes(
            server_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.ca_file = tls_dir / "ca.pem"
        self.ca_file.write_text(self.ca.cert_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.scheme = "https"


def _join_handler(fake: FakeJoinServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            with fake._lock:
                fake.paths.append(self.path)
            self.send_error(404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            if self.path != "/api/v1/join":
                # Like a server without that endpoint, e.g. one that predates re-joins.
                self.send_error(404)
                return
            request = json.loads(raw or b"null")
            with fake._lock:
                fake.requests.append(request)
                fake.paths.append(self.path)
            answer = fake.next_answer(request)
            body = answer.body
            data = (
                b""
                if body is None
                else (body if isinstance(body, str) else json.dumps(body)).encode()
            )
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def join_payload() -> dict[str, Any]:
    """A request body with real keys, enough for the fake to issue certificates."""
    tls_key = ec.generate_private_key(ec.SECP256R1())
    ssh_key = ed25519.Ed25519PrivateKey.generate()
    return {
        "token": "ec2-token",
        "join_method": "ec2",
        "host_id": SAMPLE_HOST_ID,
        "ec2_identity_document": "MIAGCSqGSIb3DQEHAqCAMIACAQEx",
        "public_tls_key": tls_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
        "public_ssh_key": ssh_key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode(),
    }


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def post(server: str, slept: list[float], **kwargs: Any) -> JoinResult:
    return post_join(server, join_payload(), sleep=slept.append, rng=lambda: 0.5, **kwargs)


def test_a_503_with_retry_after_is_retried_after_at_least_that_long_and_then_succeeds() -> None:
    slept: list[float] = []
    answers = [refusal(503, "aws_unavailable", retry_after="7"), ISSUE]
    with FakeJoinServer(answers) as server:
        result = post(server.url, slept)

    assert result.host_id == SAMPLE_HOST_ID
    assert len(server.requests) == 2
    assert server.paths == ["/api/v1/join", "/api/v1/join"]
    assert slept == [7.0]


def test_a_429_rate_limit_is_retried() -> None:
    slept: list[float] = []
    with FakeJoinServer([refusal(429, "rate_limited", retry_after="1"), ISSUE]) as server:
        result = post(server.url, slept)

    assert result.join_attempt_id == "ja_success"
    assert len(server.requests) == 2
    assert len(slept) == 1


def test_a_403_is_final_not_retried_and_carries_the_servers_error() -> None:
    slept: list[float] = []
    with (
        FakeJoinServer([refusal(403, "iid_expired", "document too old")]) as server,
        pytest.raises(JoinRefused) as refused,
    ):
        post(server.url, slept)

    error = refused.value.server_error
    assert error is not None
    assert (error.status, error.code, error.message, error.join_attempt_id) == (
        403,
        "iid_expired",
        "document too old",
        "ja_iid_expired",
    )
    assert len(server.requests) == 1
    assert slept == []


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "invalid_request"), (413, "request_too_large"), (502, "aws_denied"), (500, "oops")],
)
def test_other_failures_are_final_too(status: int, code: str) -> None:
    slept: list[float] = []
    with FakeJoinServer([refusal(status, code)]) as server, pytest.raises(JoinRefused):
        post(server.url, slept)

    assert len(server.requests) == 1
    assert slept == []


def test_attempts_are_bounded() -> None:
    slept: list[float] = []
    policy = RetryPolicy(max_attempts=4)
    with (
        FakeJoinServer([refusal(503, "aws_unavailable", "AWS is slow")]) as server,
        pytest.raises(JoinError) as failed,
    ):
        post(server.url, slept, policy=policy)

    assert not isinstance(failed.value, JoinRefused)
    assert "giving up after 4 attempts" in str(failed.value)
    assert failed.value.server_error is not None
    assert failed.value.server_error.code == "aws_unavailable"
    assert len(server.requests) == 4
    assert len(slept) == 3


def test_total_time_is_bounded_even_when_retry_after_asks_for_more() -> None:
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    policy = RetryPolicy(max_attempts=50, max_total_seconds=100.0, max_retry_after=60.0)
    with (
        FakeJoinServer([refusal(429, "rate_limited", retry_after="45")]) as server,
        pytest.raises(JoinError, match="giving up after 3 attempts"),
    ):
        post_join(
            server.url,
            join_payload(),
            policy=policy,
            sleep=sleep,
            clock=lambda: clock[0],
            rng=lambda: 0.0,
        )

    assert slept == [45.0, 45.0]
    assert len(server.requests) == 3


def test_connection_errors_are_retried_until_the_attempts_run_out() -> None:
    slept: list[float] = []
    with pytest.raises(JoinError, match=r"no answer from http://127\.0\.0\.1") as failed:
        post(closed_port_url(), slept, policy=RetryPolicy(max_attempts=3))

    assert "giving up after 3 attempts" in str(failed.value)
    assert len(slept) == 2


def test_backoff_is_exponential_with_full_jitter_and_a_capped_retry_after() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0, max_retry_after=60.0)

    ceilings = [policy.delay(retry, None, lambda: 1.0) for retry in range(1, 7)]
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert policy.delay(5, None, lambda: 0.0) == 0.0
    assert policy.delay(1, 3.0, lambda: 1.0) == 3.0
    assert policy.delay(1, 3600.0, lambda: 1.0) == 60.0


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    now = dt.datetime(2025, 1, 1, 12, 0, 0, tzinfo=dt.UTC)

    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed(status: int) -> None:
    slept: list[float] = []
    server = FakeJoinServer([])
    server.answers = [Answer(status, None, {"Location": f"{server.url}/elsewhere"})]
    with server, pytest.raises(JoinRefused) as refused:
        post(server.url, slept)

    assert refused.value.server_error is not None
    assert refused.value.server_error.status == status
    assert server.paths == ["/api/v1/join"]


def test_a_loopback_server_is_reached_directly_even_when_a_proxy_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, closed_port_url())
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    slept: list[float] = []
    with FakeJoinServer([ISSUE]) as server:
        result = post(server.url, slept, policy=RetryPolicy(max_attempts=1))

    assert result.host_id == SAMPLE_HOST_ID


def test_plain_http_is_refused_for_a_server_that_is_not_loopback() -> None:
    with pytest.raises(ServerUrlError, match="https"):
        join_url("http://joinadmin.example.com")


def test_a_server_without_a_scheme_means_https_and_keeps_its_path_prefix() -> None:
    assert join_url("joinadmin.example.com:443") == "https://joinadmin.example.com:443/api/v1/join"
    assert join_url("https://example.com/prefix/") == "https://example.com/prefix/api/v1/join"
    assert join_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/api/v1/join"


@pytest.mark.parametrize(
    "server", ["ftp://example.com", "https://user:pw@example.com", "https://example.com/?x=1"]
)
def test_unusable_server_urls_are_refused(server: str) -> None:
    with pytest.raises(ServerUrlError):
        join_url(server)


def test_an_https_server_is_verified_against_the_ca_file(tmp_path: Path) -> None:
    slept: list[float] = []
    with FakeJoinServer([ISSUE], tls_dir=tmp_path) as server:
        result = post(server.url, slept, ca_file=str(server.ca_file))

    assert server.url.startswith("https://")
    assert result.tls_ca_certs == [server.ca.cert_pem]


def test_an_https_server_the_trust_store_does_not_know_is_refused_without_retry(
    tmp_path: Path,
) -> None:
    slept: list[float] = []
    with (
        FakeJoinServer([ISSUE], tls_dir=tmp_path) as server,
        pytest.raises(JoinRefused, match="TLS verification"),
    ):
        post(server.url, slept)

    assert server.requests == []
    assert slept == []


def test_a_success_answer_with_a_certificate_that_does_not_parse_is_refused() -> None:
    slept: list[float] = []
    server = FakeJoinServer([ISSUE])
    request = join_payload()
    broken = server.ca.success_body(request)
    broken["tls_cert"] = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    server.answers = [Answer(200, broken)]
    with server, pytest.raises(JoinError, match="tls_cert"):
        post(server.url, slept)


def test_a_success_answer_missing_a_field_is_refused() -> None:
    body = IssuingCA().success_body(join_payload())
    del body["join_attempt_id"]

    with pytest.raises(JoinError, match="join_attempt_id"):
        JoinResult.from_json(body)
