"""HTTP client for ``POST /api/v1/join``: send the join request, retry only what may pass later.

A host that joined before re-joins with a proof of its key (``joinadmin_agent/rejoin.py``):
every attempt then first asks ``POST /api/v1/join/challenge`` for a fresh challenge, since a
challenge is good for one join only. A server without that endpoint (404) gets a plain join.

The identity document is the credential, so it only travels over verified TLS (plain HTTP is
accepted for a loopback server alone). Only answers that mean "try again later" are retried:
``aws_unavailable`` (503), ``rate_limited`` (429) and failures to get any answer at all. Every
other refusal is final, since repeating the same document cannot change the verdict and would
only add audit rows.
"""

from __future__ import annotations

import email.utils
import http.client
import ipaddress
import json
import random
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

JOIN_PATH = "/api/v1/join"
CHALLENGE_PATH = "/api/v1/join/challenge"
# A challenge endpoint answering these does not exist: the server predates re-joins.
NO_CHALLENGE_STATUSES = frozenset({404, 405})
MAX_RESPONSE_BYTES = 1024 * 1024
RETRYABLE_STATUSES = frozenset({429, 503})
USER_AGENT = "joinadmin-agent"


class ServerUrlError(ValueError):
    """The server URL cannot be used (wrong scheme, plain HTTP to a remote host, ...)."""


@dataclass(frozen=True)
class ServerError:
    """A non-200 answer of the join endpoint, as far as it could be read."""

    status: int
    code: str | None
    message: str | None
    join_attempt_id: str | None
    retry_after: float | None


class JoinError(Exception):
    """Joining did not succeed; ``server_error`` holds the server's last answer, if any."""

    def __init__(self, message: str, server_error: ServerError | None = None) -> None:
        super().__init__(message)
        self.server_error = server_error


class JoinRefused(JoinError):
    """The server gave a final answer: retrying the same request cannot succeed."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds on retrying: attempts and total time both cap the work a failing join can cause.

    Delays use exponential backoff with full jitter, so a fleet started at once by an
    autoscaling group spreads its retries instead of hitting the server in waves. A server's
    ``Retry-After`` is honoured as a minimum, capped so that no answer can park the agent
    indefinitely.
    """

    max_attempts: int = 8
    max_total_seconds: float = 120.0
    base_delay: float = 1.0
    max_delay: float = 30.0
    max_retry_after: float = 60.0

    def delay(self, retry: int, retry_after: float | None, rng: Callable[[], float]) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        wait = rng() * ceiling
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after))
        return wait


@dataclass(frozen=True)
class JoinResult:
    """The credentials of a successful join, checked for shape before anything is stored."""

    host_id: str
    roles: list[str]
    node_name: str | None
    tls_cert: str
    tls_ca_certs: list[str]
    ssh_cert: str | None
    ssh_ca_keys: list[str]
    expires: str
    join_attempt_id: str
    rejoined: bool = False

    @classmethod
    def from_json(cls, data: Any) -> JoinResult:
        """Validate a 200 body; raises JoinError when it is not what CONTRACT §4 promises."""
        if not isinstance(data, dict):
            raise JoinError("the server's success answer is not a JSON object")
        result = cls(
            host_id=_field(data, "host_id", str),
            roles=_string_list(data, "roles"),
            node_name=_field(data, "node_name", str, optional=True),
            tls_cert=_field(data, "tls_cert", str),
            tls_ca_certs=_string_list(data, "tls_ca_certs"),
            ssh_cert=_field(data, "ssh_cert", str, optional=True),
            ssh_ca_keys=_string_list(data, "ssh_ca_keys"),
            expires=_field(data, "expires", str),
            join_attempt_id=_field(data, "join_attempt_id", str),
            rejoined=data.get("rejoined") is True,
        )
        _check_certificates(result.tls_cert, "tls_cert")
        if not result.tls_ca_certs:
            raise JoinError("the server's answer has no tls_ca_certs")
        for pem in result.tls_ca_certs:
            _check_certificates(pem, "tls_ca_certs")
        for key in result.ssh_ca_keys:
            try:
                serialization.load_ssh_public_key(key.encode())
            except (ValueError, UnicodeEncodeError):
                raise JoinError(
                    "the server's answer has an ssh_ca_keys entry that does not parse"
                ) from None
        try:
            datetime.fromisoformat(result.expires.replace("Z", "+00:00"))
        except ValueError:
            raise JoinError("the server's answer has an expires that is not RFC 3339") from None
        return result


def join_url(server: str) -> str:
    """Return the join endpoint under ``server``; a bare ``host:port`` means HTTPS.

    Teleport's ``proxy_server`` is usually written without a scheme, so that form is accepted.
    Plain HTTP would hand the identity document to anyone on the path, who could then join
    in this host's place while the document is fresh; it is allowed for loopback only.
    """
    text = server.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise ServerUrlError(f"--server {server!r} is not an https:// URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ServerUrlError(
            f"--server {server!r} must not carry credentials, a query or a fragment"
        )
    try:
        parts.port  # noqa: B018 - parsing the port is the validation
    except ValueError:
        raise ServerUrlError(f"--server {server!r} has an invalid port") from None
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ServerUrlError(
            f"--server {server!r} uses plain http: the identity document is a credential and "
            "is only sent over https (http is accepted for a loopback server only)"
        )
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + JOIN_PATH, "", ""))


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verifying TLS context: the system trust store, or only ``ca_file`` when given.

    Raises ServerUrlError when the CA file cannot be loaded.
    """
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ServerUrlError(f"cannot load --ca-file {ca_file}: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass
class Rejoin:
    """How to prove, on each attempt, that this host holds the key it was last certified for.

    ``sign`` maps a challenge to the base64 signature of the ``rejoin`` block
    (``joinadmin_agent.rejoin.proof_signer``). ``supported`` turns False when the server has
    no challenge endpoint, and the remaining attempts are plain joins.
    """

    host_id: str
    sign: Callable[[str], str]
    supported: bool = True


def post_join(
    server: str,
    payload: dict[str, Any],
    *,
    ca_file: str | None = None,
    timeout: float = 15.0,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
    on_retry: Callable[[str, float], None] | None = None,
    rejoin: Rejoin | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> JoinResult:
    """POST the join request and return the validated credentials.

    With ``rejoin``, each attempt carries a proof over a challenge fetched for that attempt.
    Raises JoinRefused for a final refusal, JoinError when retries ran out or the answer
    cannot be used, ServerUrlError for an unusable server URL or CA file.
    """
    policy = policy or RetryPolicy()
    sleep = sleep or _sleep
    url = join_url(server)
    opener = _opener(url, ca_file)
    started = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            answered, status, headers, raw = _attempt(
                opener, url, payload, rejoin, timeout, on_notice
            )
        except _NoAnswer as exc:
            last: JoinError = JoinError(f"no answer from {exc.url or url}: {exc}")
            retry_after = None
        else:
            if status == 200:
                return JoinResult.from_json(_json_or_none(raw))
            error = _server_error(status, headers, raw)
            if status not in RETRYABLE_STATUSES:
                raise JoinRefused(_describe(answered, error), error)
            last = JoinError(_describe(answered, error), error)
            retry_after = error.retry_after
        if attempt >= policy.max_attempts:
            raise JoinError(f"giving up after {attempt} attempts: {last}", last.server_error)
        wait = policy.delay(attempt, retry_after, rng)
        if clock() - started + wait > policy.max_total_seconds:
            raise JoinError(
                f"giving up after {attempt} attempts in {clock() - started:.0f}s: {last}",
                last.server_error,
            )
        if on_retry is not None:
            on_retry(str(last), wait)
        sleep(wait)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _attempt(
    opener: urllib.request.OpenerDirector,
    url: str,
    payload: dict[str, Any],
    rejoin: Rejoin | None,
    timeout: float,
    on_notice: Callable[[str], None] | None,
) -> tuple[str, int, dict[str, str], bytes]:
    """One attempt: for a re-join a challenge first, then the join; returns who answered what.

    A failed challenge request is answered like a failed join (429/503 retried, the rest
    final), since the join cannot be sent without it.
    """
    body = payload
    if rejoin is not None and rejoin.supported:
        challenge_at = url + CHALLENGE_PATH.removeprefix(JOIN_PATH)
        request = json.dumps({"host_id": rejoin.host_id}).encode()
        status, headers, raw = _exchange(opener, challenge_at, request, timeout)
        if status in NO_CHALLENGE_STATUSES:
            rejoin.supported = False
            if on_notice is not None:
                on_notice(
                    f"{challenge_at} answered HTTP {status}: the server does not offer re-joins; "
                    "sending a plain join"
                )
        elif status != 200:
            return challenge_at, status, headers, raw
        else:
            challenge = _challenge(_json_or_none(raw), rejoin.host_id)
            try:
                signature = rejoin.sign(challenge)
            except ValueError as exc:
                raise JoinError(f"cannot sign the server's challenge: {exc}") from None
            body = {**payload, "rejoin": {"challenge": challenge, "signature": signature}}
    status, headers, raw = _exchange(opener, url, json.dumps(body).encode(), timeout)
    return url, status, headers, raw


def _challenge(data: Any, host_id: str) -> str:
    """The challenge of a 200 answer of the challenge endpoint; JoinError if it has none."""
    if not isinstance(data, dict):
        raise JoinError("the server's challenge answer is not a JSON object")
    challenge = data.get("challenge")
    if not isinstance(challenge, str) or not challenge or len(challenge) > 1024:
        raise JoinError("the server's challenge answer has no valid challenge")
    if data.get("host_id") not in (None, host_id):
        raise JoinError("the server sent a challenge for another host")
    return challenge


class _NoAnswer(Exception):
    """The request got no HTTP answer (refused, reset, timed out); worth retrying."""

    def __init__(self, message: str, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # Following a redirect would resend the credential to wherever the answer points.
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


def _opener(url: str, ca_file: str | None) -> urllib.request.OpenerDirector:
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.HTTPSHandler(context=tls_context(ca_file)),
        _NoRedirect(),
    ]
    hostname = urlsplit(url).hostname or ""
    if is_loopback(hostname):
        # A proxy from the environment has no business relaying a request to this machine.
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


def _exchange(
    opener: urllib.request.OpenerDirector, url: str, body: bytes, timeout: float
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(  # noqa: S310 - join_url allows http(s) only
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        },
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), _read_capped(response)
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                raw = _read_capped(exc)
            except (OSError, JoinError):
                raw = b""
            return exc.code, dict(exc.headers or {}), raw
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise JoinRefused(
                f"TLS verification of {url} failed: {reason.verify_message or reason}; "
                "pass --ca-file with the CA that signed the server's certificate"
            ) from None
        if isinstance(reason, ssl.SSLError):
            raise JoinRefused(f"TLS handshake with {url} failed: {reason}") from None
        raise _NoAnswer(str(reason), url) from None
    except ssl.SSLError as exc:
        raise JoinRefused(f"TLS error talking to {url}: {exc}") from None
    except (OSError, http.client.HTTPException) as exc:
        # urllib wraps only connection errors; a dropped connection while waiting for or
        # reading the answer surfaces raw from http.client.
        raise _NoAnswer(str(exc) or type(exc).__name__, url) from None


def _read_capped(response: Any) -> bytes:
    raw = response.read(MAX_RESPONSE_BYTES + 1)
    if len(raw) > MAX_RESPONSE_BYTES:
        raise JoinError(f"the server's answer exceeds {MAX_RESPONSE_BYTES} bytes")
    return raw


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _server_error(status: int, headers: dict[str, str], raw: bytes) -> ServerError:
    data = _json_or_none(raw)
    if not isinstance(data, dict):
        data = {}
    lowered = {key.lower(): value for key, value in headers.items()}

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) else None

    return ServerError(
        status=status,
        code=text("error"),
        message=text("message"),
        join_attempt_id=text("join_attempt_id"),
        retry_after=parse_retry_after(lowered.get("retry-after")),
    )


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _describe(url: str, error: ServerError) -> str:
    if error.code:
        return f"{url} answered HTTP {error.status} {error.code}"
    return f"{url} answered HTTP {error.status} without a join error code"


def _field(data: dict[str, Any], key: str, kind: type, *, optional: bool = False) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (isinstance(value, str) and not value):
        raise JoinError(f"the server's answer has no valid {key}")
    return value


def _string_list(data: dict[str, Any], key: str) -> list[str]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise JoinError(f"the server's answer has no valid {key} list")
    return list(value)


def _check_certificates(pem: str, key: str) -> None:
    try:
        x509.load_pem_x509_certificates(pem.encode())
    except (ValueError, UnicodeEncodeError):
        raise JoinError(f"the server's answer has a {key} that is not a PEM certificate") from None
