"""IMDSv2 client: reads this instance's AWS-signed identity document.

Only the instance metadata service can hand out a document that AWS signed for this very
instance, so everything the agent proves starts here. The client speaks IMDSv2 only (a session
token from ``PUT /latest/api/token`` first) and never falls back to IMDSv1: every real EC2
metadata service speaks IMDSv2, so an endpoint that does not is misconfigured or is not IMDS,
and the agent fails closed rather than guess.

``http.client`` is used instead of urllib on purpose: urllib would follow redirects and honour
``http_proxy`` variables, and neither must ever apply to a link-local metadata address.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "http://169.254.169.254"
ENDPOINT_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
DISABLED_ENV = "AWS_EC2_METADATA_DISABLED"

TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a URL path, not a secret
RSA2048_PATH = "/latest/dynamic/instance-identity/rsa2048"
DOCUMENT_PATH = "/latest/dynamic/instance-identity/document"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"  # noqa: S105 - a header name
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 - a header name

# The token is needed for a few seconds only; a short lifetime limits what a leak is worth.
TOKEN_TTL_SECONDS = 60
MAX_TOKEN_BYTES = 1024
# Real answers are a few KiB; anything far larger is not an identity document.
MAX_BODY_BYTES = 64 * 1024

ACCOUNT_ID_RE = re.compile(r"[0-9]{12}")
INSTANCE_ID_RE = re.compile(r"i-[0-9a-f]{8,}")
HOST_ID_RE = re.compile(r"[0-9]{12}-i-[0-9a-f]{8,}")
_TOKEN_RE = re.compile(r"[A-Za-z0-9+/=_.\-]+")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/=\s]+")
_PEM_LINE_RE = re.compile(r"-----(BEGIN|END) [A-Z0-9 ]+-----")

_UNREACHABLE_HINT = (
    "is this an EC2 instance? is IMDS enabled on it (instance metadata options, "
    "http-endpoint=enabled)? in a container the IMDSv2 hop limit must be at least 2 "
    "(http-put-response-hop-limit)"
)


class ImdsError(Exception):
    """The identity document could not be read; the message tells the operator why."""


class _Transient(ImdsError):
    """A failure worth retrying: nothing answered, or the service said "try later"."""


@dataclass(frozen=True)
class InstanceIdentity:
    """What IMDS says about this instance.

    ``rsa2048`` is kept exactly as IMDS served it: it is the credential the server verifies,
    so the agent must not reformat it. ``document`` is the unsigned JSON copy, used only to
    name the host locally; the server derives the host id from the signed copy itself.
    """

    rsa2048: str
    document: dict[str, Any]
    account_id: str
    instance_id: str
    region: str
    private_ip: str | None

    @property
    def host_id(self) -> str:
        """``<accountId>-<instanceId>``, the host id the server will assign."""
        return f"{self.account_id}-{self.instance_id}"


@dataclass(frozen=True)
class _Endpoint:
    url: str
    scheme: str
    host: str
    port: int


class ImdsClient:
    """Reads the instance identity through IMDSv2.

    Timeouts are short because on a machine that is not EC2 the link-local address simply
    does not answer, and the operator should learn that in seconds, not minutes.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        connect_timeout: float = 1.0,
        request_timeout: float = 3.0,
        attempts: int = 3,
        backoff: float = 0.25,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = _parse_endpoint(
            endpoint or os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT
        )
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self._sleep = sleep
        self._token: str | None = None

    def fetch_identity(self) -> InstanceIdentity:
        """Return the rsa2048 identity document and the parsed plain document.

        Raises ImdsError when IMDS is unreachable, refuses, or answers something that is not
        an identity document.
        """
        if os.environ.get(DISABLED_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
            raise ImdsError(
                f"{DISABLED_ENV} is set: the instance metadata service may not be used, but the "
                "EC2 join method needs it to read the instance identity document"
            )
        rsa2048 = _check_rsa2048(self.get(RSA2048_PATH), self.endpoint.url)
        return _parse_document(self.get(DOCUMENT_PATH), self.endpoint.url, rsa2048)

    def get(self, path: str) -> str:
        """GET a metadata path with the session token; retried on transient failures."""
        last_error: ImdsError | None = None
        for attempt in range(self.attempts):
            if attempt:
                self._sleep(self.backoff * 2 ** (attempt - 1))
            try:
                token = self._token or self._fetch_token()
                self._token = token
                status, body = self._request("GET", path, {TOKEN_HEADER: token})
            except _Transient as exc:
                last_error = ImdsError(str(exc))
                continue
            if status == 200:
                return _decode(body, self.endpoint.url, path)
            if status == 401:
                # The session token expired or was rejected: get a fresh one on the next try.
                self._token = None
                last_error = ImdsError(
                    f"the instance metadata service at {self.endpoint.url} rejected the IMDSv2 "
                    f"session token for {path} (HTTP 401)"
                )
                continue
            if status == 429 or status >= 500:
                last_error = ImdsError(
                    f"the instance metadata service at {self.endpoint.url} answered HTTP {status} "
                    f"for {path}"
                )
                continue
            if status == 404:
                raise ImdsError(
                    f"the instance metadata service at {self.endpoint.url} has no {path} "
                    "(HTTP 404): this does not look like an EC2 instance metadata service"
                )
            raise ImdsError(
                f"the instance metadata service at {self.endpoint.url} answered HTTP {status} "
                f"for {path}"
            )
        assert last_error is not None
        raise last_error

    def _fetch_token(self) -> str:
        status, body = self._request("PUT", TOKEN_PATH, {TOKEN_TTL_HEADER: str(TOKEN_TTL_SECONDS)})
        if status == 200:
            token = body.decode("ascii", errors="replace").strip()
            # The token goes back into a request header: anything but a plain token is refused.
            if not token or len(token) > MAX_TOKEN_BYTES or not _TOKEN_RE.fullmatch(token):
                raise ImdsError(
                    f"the instance metadata service at {self.endpoint.url} returned a malformed "
                    "IMDSv2 session token"
                )
            return token
        if status == 429 or status >= 500:
            raise _Transient(
                f"the instance metadata service at {self.endpoint.url} answered HTTP {status} "
                "to the IMDSv2 token request"
            )
        if status == 403:
            raise ImdsError(
                f"the instance metadata service at {self.endpoint.url} refused an IMDSv2 session "
                "token (HTTP 403): IMDS is probably disabled for this instance; enable it with "
                "http-endpoint=enabled in the instance metadata options"
            )
        raise ImdsError(
            f"the instance metadata service at {self.endpoint.url} does not issue IMDSv2 session "
            f"tokens (HTTP {status} to PUT {TOKEN_PATH}); this agent does not fall back to IMDSv1 "
            "(fail closed): every EC2 metadata service supports IMDSv2, so this endpoint is "
            "misconfigured or is not the instance metadata service"
        )

    def _request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        """One HTTP exchange with a connect timeout and an overall deadline.

        The deadline is enforced across the whole body read, so a service that drips bytes
        slowly cannot hold the agent longer than ``request_timeout``.
        """
        ep = self.endpoint
        deadline = time.monotonic() + self.request_timeout
        conn_class = (
            http.client.HTTPSConnection if ep.scheme == "https" else http.client.HTTPConnection
        )
        conn = conn_class(ep.host, ep.port, timeout=self.connect_timeout)
        try:
            try:
                conn.connect()
                sock = conn.sock
                assert sock is not None
                sock.settimeout(_remaining(deadline))
                conn.request(method, path, headers=headers)
                response = conn.getresponse()
                limit = MAX_TOKEN_BYTES if path == TOKEN_PATH else MAX_BODY_BYTES
                body = bytearray()
                # The response closes the socket itself once the body is complete.
                while not response.isclosed():
                    sock.settimeout(_remaining(deadline))
                    chunk = response.read(min(8192, limit + 1 - len(body)))
                    if not chunk:
                        break
                    body += chunk
                    if len(body) > limit:
                        raise ImdsError(
                            f"the answer of the instance metadata service at {ep.url} for {path} "
                            f"exceeds {limit} bytes; refusing it"
                        )
                return response.status, bytes(body)
            except ImdsError:
                raise
            except TimeoutError:
                raise _Transient(
                    f"cannot reach the instance metadata service at {ep.url}: timed out "
                    f"({method} {path}): {_UNREACHABLE_HINT}"
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                raise _Transient(
                    f"cannot reach the instance metadata service at {ep.url}: "
                    f"{exc or type(exc).__name__}: {_UNREACHABLE_HINT}"
                ) from None
        finally:
            conn.close()


def _parse_endpoint(url: str) -> _Endpoint:
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ImdsError(
            f"{ENDPOINT_ENV}={url!r} is not an http:// or https:// URL of the metadata service"
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ImdsError(f"{ENDPOINT_ENV}={url!r} must not carry credentials, a query or a fragment")
    if parts.path not in {"", "/"}:
        raise ImdsError(f"{ENDPOINT_ENV}={url!r} must not carry a path")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ImdsError(f"{ENDPOINT_ENV}={url!r} has an invalid port") from None
    return _Endpoint(
        url=f"{parts.scheme}://{parts.netloc}", scheme=parts.scheme, host=parts.hostname, port=port
    )


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _decode(body: bytes, url: str, path: str) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise ImdsError(
            f"the instance metadata service at {url} sent non-UTF-8 data for {path}"
        ) from None


def _check_rsa2048(text: str, url: str) -> str:
    """Accept only base64 text (PEM armour allowed) so the server gets exactly what AWS signed."""
    payload = "\n".join(
        line for line in text.strip().splitlines() if not _PEM_LINE_RE.fullmatch(line.strip())
    )
    if not payload.strip() or not _BASE64_RE.fullmatch(payload):
        raise ImdsError(
            f"the instance metadata service at {url} returned something other than a base64 "
            f"rsa2048 identity document for {RSA2048_PATH}"
        )
    return text


def _parse_document(text: str, url: str, rsa2048: str) -> InstanceIdentity:
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise ImdsError(
            f"the instance metadata service at {url} returned an identity document that is not a "
            "JSON object"
        )
    account_id = document.get("accountId")
    instance_id = document.get("instanceId")
    region = document.get("region")
    if not isinstance(account_id, str) or not ACCOUNT_ID_RE.fullmatch(account_id):
        raise ImdsError(f"the identity document from {url} has no valid accountId")
    if not isinstance(instance_id, str) or not INSTANCE_ID_RE.fullmatch(instance_id):
        raise ImdsError(f"the identity document from {url} has no valid instanceId")
    if not isinstance(region, str) or not region:
        raise ImdsError(f"the identity document from {url} has no region")
    raw_ip = document.get("privateIp")
    private_ip: str | None = None
    if raw_ip is not None:
        # It becomes a certificate principal, so only a real address is passed on.
        try:
            private_ip = str(ipaddress.ip_address(raw_ip if isinstance(raw_ip, str) else ""))
        except ValueError:
            raise ImdsError(f"the identity document from {url} has an invalid privateIp") from None
    return InstanceIdentity(
        rsa2048=rsa2048,
        document=document,
        account_id=account_id,
        instance_id=instance_id,
        region=region,
        private_ip=private_ip,
    )
