"""The join request: its shape, checked before anything else. No Django import."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from joins.ca import KeyRejected, check_host_names, load_public_ssh_key, load_public_tls_key
from joins.rejoin import MAX_CHALLENGE_CHARS, MAX_SIGNATURE_BYTES, RejoinProof

MAX_DOCUMENT_CHARS = 16 * 1024
MAX_NAMES = 64


class RequestInvalid(Exception):
    """The body is not a join request we can read; `field` names what to fix."""

    code = "invalid_request"

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class JoinRequest:
    token: str
    document: str
    public_tls_key: Any
    public_tls_key_pem: str
    join_method: str = ""
    host_id: str = ""
    roles: tuple[str, ...] = ()
    node_name: str = ""
    public_ssh_key: Any = None
    dns_names: tuple[str, ...] = ()
    additional_principals: tuple[str, ...] = ()
    # A registered host's proof that it holds its key (docs/extensions.md, "Re-join").
    rejoin: RejoinProof | None = None


# What `decode` returns for a body that is not JSON.
NOT_JSON = object()


def decode(body: bytes) -> Any:
    """The body's JSON value, or NOT_JSON (`parse_join_request` then says what is wrong). A
    join decodes its body once, for its audit row and for its checks."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return NOT_JSON


def peek(body: bytes) -> dict[str, Any]:
    """Best-effort read of the body for the audit row, even when it is not a valid request."""
    data = decode(body)
    return data if isinstance(data, dict) else {}


def _string(data: dict, name: str, *, required: bool = False, limit: int = 256) -> str:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise RequestInvalid(f"{name} is required", name)
        return ""
    if not isinstance(value, str):
        raise RequestInvalid(f"{name} must be a string, not {type(value).__name__}", name)
    if len(value) > limit:
        raise RequestInvalid(f"{name} is longer than {limit} characters", name)
    return value.strip()


def _strings(data: dict, name: str) -> tuple[str, ...]:
    value = data.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RequestInvalid(f"{name} must be a list of strings", name)
    if len(value) > MAX_NAMES:
        raise RequestInvalid(f"{name} has more than {MAX_NAMES} entries", name)
    if any(len(item) > 253 for item in value):
        raise RequestInvalid(f"an entry of {name} is longer than 253 characters", name)
    return tuple(item.strip() for item in value)


def _rejoin(data: dict) -> RejoinProof | None:
    """The optional `rejoin` block: `{"challenge": base64, "signature": base64}`.

    Only its shape is checked here; whether the challenge and signature are good is the join
    service's to decide (joins/rejoin.py), with its own codes.
    """
    value = data.get("rejoin")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RequestInvalid("rejoin must be an object with challenge and signature", "rejoin")
    unknown = sorted(str(key) for key in value if key not in ("challenge", "signature"))
    if unknown:
        raise RequestInvalid(
            f"rejoin takes only challenge and signature, not {', '.join(unknown)[:100]}", "rejoin"
        )
    texts: dict[str, str] = {}
    for name, limit in (("challenge", MAX_CHALLENGE_CHARS), ("signature", 2 * MAX_SIGNATURE_BYTES)):
        item = value.get(name)
        if not isinstance(item, str) or not item.strip():
            raise RequestInvalid(
                f"rejoin.{name} is required: a re-join needs a challenge from "
                "POST /api/v1/join/challenge and a signature over it",
                f"rejoin.{name}",
            )
        if len(item) > limit:
            raise RequestInvalid(
                f"rejoin.{name} is longer than {limit} characters", f"rejoin.{name}"
            )
        texts[name] = item.strip()
    try:
        signature = base64.b64decode("".join(texts["signature"].split()), validate=True)
    except (binascii.Error, ValueError):
        raise RequestInvalid("rejoin.signature is not base64", "rejoin.signature") from None
    if not signature or len(signature) > MAX_SIGNATURE_BYTES:
        raise RequestInvalid(
            f"rejoin.signature must decode to 1 to {MAX_SIGNATURE_BYTES} bytes", "rejoin.signature"
        )
    return RejoinProof(challenge=texts["challenge"], signature=signature)


def parse_join_request(body: bytes, data: Any = NOT_JSON) -> JoinRequest:
    """Parse and check the request body (`data`: its value from `decode`, when the caller has
    it); raises RequestInvalid naming the field and the fix."""
    if data is NOT_JSON:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestInvalid(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestInvalid("the body must be a JSON object")
    token = _string(data, "token", required=True, limit=200)
    document = _string(data, "ec2_identity_document", required=True, limit=MAX_DOCUMENT_CHARS)
    tls_pem = _string(data, "public_tls_key", required=True, limit=8192)
    ssh_text = _string(data, "public_ssh_key", limit=8192)
    node_name = _string(data, "node_name", limit=253)
    dns_names = _strings(data, "dns_names")
    principals = _strings(data, "additional_principals")
    roles = _strings(data, "roles")
    try:
        check_host_names(node_name=node_name, dns_names=dns_names, additional_principals=principals)
        tls_key = load_public_tls_key(tls_pem)
        ssh_key = load_public_ssh_key(ssh_text) if ssh_text else None
    except KeyRejected as exc:
        raise RequestInvalid(exc.message, exc.field) from None
    return JoinRequest(
        token=token,
        document=document,
        public_tls_key=tls_key,
        public_tls_key_pem=tls_pem,
        join_method=_string(data, "join_method", limit=32),
        host_id=_string(data, "host_id", limit=200),
        roles=roles,
        node_name=node_name,
        public_ssh_key=ssh_key,
        dns_names=dns_names,
        additional_principals=principals,
        rejoin=_rejoin(data),
    )
