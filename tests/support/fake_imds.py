"""A fake EC2 instance metadata service (IMDSv2 only) on 127.0.0.1 for tests.

It serves ``/latest/dynamic/instance-identity/rsa2048`` and ``.../document`` only to callers
holding a session token from ``PUT /latest/api/token``, like the real service with IMDSv2
required. It can be told to refuse tokens or to hang, to exercise the agent's error paths::

    with FakeIMDS(rsa2048=body, document={"accountId": ...}) as imds:
        client = ImdsClient(imds.endpoint)
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN_PATH = "/latest/api/token"
RSA2048_PATH = "/latest/dynamic/instance-identity/rsa2048"
DOCUMENT_PATH = "/latest/dynamic/instance-identity/document"
MAX_TOKEN_TTL = 21600

# Stand-ins for an instance's identity: the agent never verifies the signature, so the
# rsa2048 body only has to look like IMDS output (base64 in 76-character lines).
SAMPLE_DOCUMENT: dict[str, Any] = {
    "accountId": "123456789012",
    "architecture": "x86_64",
    "availabilityZone": "us-west-2a",
    "imageId": "ami-0fa9e1f64142cde17",
    "instanceId": "i-0a1b2c3d4e5f67890",
    "instanceType": "t3.small",
    "pendingTime": "2025-01-01T00:00:00Z",
    "privateIp": "10.0.0.12",
    "region": "us-west-2",
    "version": "2017-09-30",
}
SAMPLE_HOST_ID = "123456789012-i-0a1b2c3d4e5f67890"
_SAMPLE_B64 = base64.b64encode(b"stand-in for a PKCS#7 SignedData structure " * 12).decode()
SAMPLE_RSA2048 = "\n".join(_SAMPLE_B64[i : i + 76] for i in range(0, len(_SAMPLE_B64), 76))


class FakeIMDS:
    """Threaded fake IMDSv2; every request is recorded in ``requests``.

    Knobs, settable at any time: ``token_status`` (answer the token PUT with this status
    instead of a token, e.g. 403 for "IMDS disabled", 405 for an IMDSv1-only service),
    ``hang`` (hold every request without answering until the fake stops), ``fail_statuses``
    (statuses to answer the next GETs with, e.g. ``[500]``).
    """

    def __init__(
        self,
        *,
        rsa2048: str = SAMPLE_RSA2048,
        document: dict[str, Any] | str = SAMPLE_DOCUMENT,
    ) -> None:
        self.rsa2048 = rsa2048
        self.document = document if isinstance(document, str) else dict(document)
        self.token_status: int | None = None
        self.hang = False
        self.fail_statuses: list[int] = []
        self.requests: list[dict[str, Any]] = []
        self.tokens: set[str] = set()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def endpoint(self) -> str:
        """Base URL to use as AWS_EC2_METADATA_SERVICE_ENDPOINT."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeIMDS:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _record(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append({"method": method, "path": path, "headers": headers})

    def _next_failure(self) -> int | None:
        with self._lock:
            return self.fail_statuses.pop(0) if self.fail_statuses else None


def _handler_for(fake: FakeIMDS) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_PUT(self) -> None:
            if self._held("PUT"):
                return
            if self.path != TOKEN_PATH:
                self._send(404, "Not Found")
                return
            if fake.token_status is not None:
                self._send(fake.token_status, "refused")
                return
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= MAX_TOKEN_TTL:
                self._send(400, "Bad Request")
                return
            token = secrets.token_urlsafe(32)
            fake.tokens.add(token)
            self._send(200, token)

        def do_GET(self) -> None:
            if self._held("GET"):
                return
            failure = fake._next_failure()
            if failure is not None:
                self._send(failure, "failure")
                return
            if self.headers.get("X-aws-ec2-metadata-token") not in fake.tokens:
                self._send(401, "Unauthorized")
                return
            if self.path == RSA2048_PATH:
                self._send(200, fake.rsa2048)
            elif self.path == DOCUMENT_PATH:
                document = fake.document
                self._send(200, document if isinstance(document, str) else json.dumps(document))
            else:
                self._send(404, "Not Found")

        def _held(self, method: str) -> bool:
            fake._record(method, self.path, dict(self.headers.items()))
            if fake.hang:
                fake._stopping.wait(timeout=30)
                return True
            return False

        def _send(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
