"""Asking AWS whether an instance exists and runs: DescribeInstances, through AssumeRole for
other accounts. No Django import: settings come in as arguments.

Errors are normalised into two codes the contract fixes: `aws_denied` when AWS refuses *our*
call (a configuration problem on our side, not retried) and `aws_unavailable` when AWS is
throttling, slow or failing (transient, the agent may retry later).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "AuthFailure",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "OptInRequired",
        "RegionDisabledException",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)
NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})
THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "Unavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
    }
)
# Assumed-role credentials are renewed this long before they expire, so no call races expiry.
CREDENTIAL_RENEW_MARGIN = timedelta(minutes=5)


class AwsError(Exception):
    """AWS could not answer our question. `code` is `aws_denied` or `aws_unavailable`."""

    def __init__(self, code: str, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class InstanceInfo:
    """What DescribeInstances said of one instance."""

    instance_id: str
    state: str
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


def classify(exc: Exception, what: str) -> AwsError:
    """Turn a botocore exception into the contract's two AWS error codes, with plain words."""
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        detail = f"{what}: {code or 'error'}: {error.get('Message', '')}".strip()
        if code in DENIED_CODES or status in (401, 403):
            return AwsError("aws_denied", detail)
        if code in THROTTLE_CODES or status == 429 or status >= 500:
            return AwsError("aws_unavailable", detail)
        return AwsError("aws_denied", detail)
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return AwsError("aws_denied", f"{what}: the server has no usable AWS credentials")
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return AwsError("aws_unavailable", f"{what}: {type(exc).__name__}: {exc}")
    return AwsError("aws_unavailable", f"{what}: {type(exc).__name__}: {exc}")


@dataclass
class _Credentials:
    access_key: str
    secret_key: str
    token: str
    expires: datetime


class Ec2Lookup:
    """Looks up instances with boto3; thread-safe; caches clients and assumed-role credentials.

    One instance serves the whole process: boto3 clients are thread-safe and expensive to build,
    and AssumeRole credentials are valid for an hour, so neither is made per join.
    """

    def __init__(self, *, connect_timeout: float = 2, read_timeout: float = 4,
                 max_attempts: int = 3, session_name: str = "joinadmin") -> None:
        self._config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
        )
        self._session_name = session_name
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str, str], Any] = {}
        self._credentials: dict[tuple[str, str], _Credentials] = {}
        self.calls = 0

    def describe(self, *, region: str, instance_ids: list[str], role_arn: str = "") -> dict[str, InstanceInfo]:
        """DescribeInstances for `instance_ids` in `region`; returns the ones AWS knows.

        An id AWS does not know is simply absent from the answer (AWS raises NotFound for the
        whole call; we report that as an empty answer).
        """
        client = self._client(region, role_arn)
        self.calls += 1
        try:
            pages = client.get_paginator("describe_instances").paginate(InstanceIds=instance_ids)
            found: dict[str, InstanceInfo] = {}
            for page in pages:
                for reservation in page.get("Reservations", []):
                    for item in reservation.get("Instances", []):
                        info = InstanceInfo(
                            instance_id=item.get("InstanceId", ""),
                            state=str(item.get("State", {}).get("Name", "")),
                            raw=item,
                        )
                        found[info.instance_id] = info
            return found
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in NOT_FOUND_CODES:
                return {}
            raise classify(exc, f"ec2:DescribeInstances in {region}") from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise classify(exc, f"ec2:DescribeInstances in {region}") from exc

    def _client(self, region: str, role_arn: str) -> Any:
        creds = self._assumed(region, role_arn) if role_arn else None
        key = (region, role_arn, creds.access_key if creds else "")
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                kwargs: dict[str, Any] = {"region_name": region, "config": self._config}
                if creds:
                    kwargs.update(
                        aws_access_key_id=creds.access_key,
                        aws_secret_access_key=creds.secret_key,
                        aws_session_token=creds.token,
                    )
                client = boto3.session.Session().client("ec2", **kwargs)
                # Drop clients of expired credentials of this role so the cache stays small.
                for old in [k for k in self._clients if k[:2] == (region, role_arn)]:
                    del self._clients[old]
                self._clients[key] = client
            return client

    def _assumed(self, region: str, role_arn: str) -> _Credentials:
        now = datetime.now(UTC)
        cache_key = (region, role_arn)
        with self._lock:
            cached = self._credentials.get(cache_key)
        if cached and cached.expires - CREDENTIAL_RENEW_MARGIN > now:
            return cached
        sts = boto3.session.Session().client("sts", region_name=region, config=self._config)
        try:
            answer = sts.assume_role(RoleArn=role_arn, RoleSessionName=self._session_name)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, OSError) as exc:
            raise classify(exc, f"sts:AssumeRole into {role_arn}") from exc
        raw = answer["Credentials"]
        expires = raw["Expiration"]
        if isinstance(expires, str):
            expires = datetime.fromisoformat(expires.replace("Z", "+00:00"))
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        creds = _Credentials(raw["AccessKeyId"], raw["SecretAccessKey"], raw["SessionToken"], expires)
        with self._lock:
            self._credentials[cache_key] = creds
        return creds

    def clear(self) -> None:
        """Forget cached clients and credentials (tests, credential rotation)."""
        with self._lock:
            self._clients.clear()
            self._credentials.clear()
            self.calls = 0


def describe_one(lookup: Ec2Lookup, *, region: str, instance_id: str, role_arn: str = "",
                 deadline: float | None = None) -> InstanceInfo | None:
    """Describe a single instance; None when AWS does not know it."""
    if deadline is not None and time.monotonic() > deadline:
        raise AwsError("aws_unavailable", "the time budget for AWS calls ran out")
    return lookup.describe(region=region, instance_ids=[instance_id], role_arn=role_arn).get(instance_id)
