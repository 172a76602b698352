"""Asking AWS whether an instance exists and runs: DescribeInstances, through AssumeRole for
other accounts. No Django import: settings come in as arguments.

Errors are normalised into two codes the contract fixes: `aws_denied` when AWS refuses *our*
call (a configuration problem on our side, not retried) and `aws_unavailable` when AWS is
throttling, slow or failing (transient, the agent may retry later).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from joinadmin import metrics
from joins import ec2_model

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
# HTTP connections kept per client: one process may have this many DescribeInstances in flight
# (botocore's default of 10 would make threads beyond it open and drop connections).
MAX_POOL_CONNECTIONS = 64
_INSTANCE_ID = re.compile(r"\bi-[0-9a-zA-Z]+\b")


class AwsError(Exception):
    """AWS could not answer our question. `code` is `aws_denied` or `aws_unavailable`."""

    def __init__(self, code: str, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


class InstancesNotFound(Exception):
    """AWS refused a whole DescribeInstances call because some of its ids are unknown.

    AWS fails the entire call when one id is unknown (or, right after launch, not yet visible),
    so a batch of many instances cannot tell who is missing from the error alone. `instance_ids`
    holds the ids of the call that the error message names (possibly none); the caller decides
    how to ask about the others.
    """

    def __init__(self, message: str, instance_ids: tuple[str, ...]) -> None:
        super().__init__(message)
        self.message = message
        self.instance_ids = instance_ids


def regroup_not_found(
    group: list[str], exc: InstancesNotFound, answers: dict[str, InstanceInfo | None]
) -> list[list[str]]:
    """After a batch failed on unknown ids: record who is unknown and return what to ask again.

    The ids AWS named are unknown; the others are asked again without them. When AWS names none
    (or the batch is one id, or every id is named), halve the batch or settle it, so that one
    unknown id never refuses the others and the search always ends.
    """
    named = [i for i in group if i in exc.instance_ids]
    if len(group) == 1 or len(named) == len(group):
        answers.update(dict.fromkeys(group))
        return []
    if named:
        answers.update(dict.fromkeys(named))
        return [[i for i in group if i not in exc.instance_ids]]
    half = len(group) // 2
    return [group[half:], group[:half]]


class _BudgetSpent(Exception):
    """Raised from a botocore hook to stop retrying once the caller's time budget is spent."""


# The deadline of the DescribeInstances call running on this thread, read by the hook that
# botocore runs before every HTTP attempt (retries included).
_call_deadline = threading.local()


def _check_budget(**_: Any) -> None:
    """botocore `before-send` hook: refuse another attempt once the deadline has passed.

    botocore's standard retries back off for up to seconds when throttled; without this the
    retries could outlast the join that asked, spending the account's request budget for an
    answer nobody waits for any more.
    """
    deadline = getattr(_call_deadline, "value", None)
    if deadline is not None and time.monotonic() >= deadline:
        raise _BudgetSpent("the time budget for AWS calls ran out")


@dataclass(frozen=True)
class InstanceInfo:
    """What DescribeInstances said of one instance."""

    instance_id: str
    state: str
    raw: dict[str, Any] = field(default_factory=dict, compare=False)
    # True when the answer is a recent confirmation from the shared cache, not a fresh call.
    cached: bool = field(default=False, compare=False)


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
    if isinstance(
        exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
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
    and AssumeRole credentials are valid for an hour, so neither is made per join. Its clients
    come from one boto3 session, which keeps the service descriptions it has read: a client for
    a new region or for a role's renewed credentials then costs about 5 ms of CPU instead of
    the 100 ms of reading and decoding EC2's description again (a session is not thread-safe,
    so clients are made under the lock).
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 2,
        read_timeout: float = 4,
        max_attempts: int = 3,
        session_name: str = "joinadmin",
    ) -> None:
        self._config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
            max_pool_connections=MAX_POOL_CONNECTIONS,
        )
        self._session_name = session_name
        self._lock = threading.Lock()
        self._session = boto3.session.Session()
        # Its EC2 description reads only what a join uses of an instance (joins/ec2_model.py).
        ec2_model.install(self._session._session)
        self._clients: dict[tuple[str, str, str], Any] = {}
        self._credentials: dict[tuple[str, str], _Credentials] = {}
        # One lock per (region, role): concurrent first calls for a role wait for one
        # AssumeRole instead of each spending the server account's STS quota.
        self._assume_locks: dict[tuple[str, str], threading.Lock] = {}
        self.calls = 0

    def preload(self) -> None:
        """Load what every EC2 and STS client of the session needs (the two services'
        descriptions, the endpoint rules) without making a client: no credentials are resolved
        and nothing reaches the network. A worker does it before serving (joinadmin/worker.py)."""
        with self._lock:
            botocore_session = self._session._session
            for service in ("ec2", "sts"):
                botocore_session.get_service_model(service)
            botocore_session._get_internal_component("endpoint_resolver")

    def describe(
        self,
        *,
        region: str,
        instance_ids: list[str],
        role_arn: str = "",
        deadline: float | None = None,
        report_not_found: bool = False,
    ) -> dict[str, InstanceInfo]:
        """DescribeInstances for `instance_ids` in `region`; returns the ones AWS knows.

        An id AWS does not know is simply absent from the answer (AWS raises NotFound for the
        whole call; we report that as an empty answer), unless `report_not_found`: then that
        error is raised as `InstancesNotFound`, since for a batch of several ids an empty answer
        would wrongly say that none of them exists. botocore's standard retries stop once
        `deadline` (a `time.monotonic()` value) has passed.
        """
        if deadline is not None and time.monotonic() >= deadline:
            raise AwsError("aws_unavailable", "the time budget for AWS calls ran out")
        _call_deadline.value = deadline
        try:
            client = self._client(region, role_arn)
            with self._lock:
                self.calls += 1
            found: dict[str, InstanceInfo] = {}
            # Asked by instance ids, EC2 answers them all at once (up to 1,000 ids, no
            # MaxResults allowed): a NextToken is followed all the same, without botocore's
            # paginator, whose set-up per call cost more than a join's share of the call.
            request: dict[str, Any] = {"InstanceIds": instance_ids}
            seen: set[str] = set()
            while True:
                page = client.describe_instances(**request)
                for reservation in page.get("Reservations", []):
                    for item in reservation.get("Instances", []):
                        info = InstanceInfo(
                            instance_id=item.get("InstanceId", ""),
                            state=str(item.get("State", {}).get("Name", "")),
                            raw=item,
                        )
                        found[info.instance_id] = info
                token = page.get("NextToken")
                if not token or token in seen:
                    return found
                seen.add(token)
                request["NextToken"] = token
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") in NOT_FOUND_CODES:
                if not report_not_found:
                    return {}
                message = str(error.get("Message", ""))
                asked = set(instance_ids)
                named = tuple(
                    dict.fromkeys(name for name in _INSTANCE_ID.findall(message) if name in asked)
                )
                raise InstancesNotFound(message, named) from exc
            raise classify(exc, f"ec2:DescribeInstances in {region}") from exc
        except _BudgetSpent as exc:
            raise AwsError(
                "aws_unavailable",
                f"ec2:DescribeInstances in {region}: the time budget for AWS calls ran out",
            ) from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise classify(exc, f"ec2:DescribeInstances in {region}") from exc
        finally:
            _call_deadline.value = None

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
                client = self._session.client("ec2", **kwargs)
                client.meta.events.register("before-send.ec2.DescribeInstances", _check_budget)
                metrics.watch_aws_client(client)
                # Drop clients of expired credentials of this role so the cache stays small.
                for old in [k for k in self._clients if k[:2] == (region, role_arn)]:
                    del self._clients[old]
                self._clients[key] = client
            return client

    def _assumed(self, region: str, role_arn: str) -> _Credentials:
        cache_key = (region, role_arn)
        cached = self._fresh_credentials(cache_key)
        if cached:
            return cached
        with self._lock:
            assume_lock = self._assume_locks.setdefault(cache_key, threading.Lock())
        with assume_lock:
            # Another thread may have assumed the role while this one waited for the lock.
            return self._fresh_credentials(cache_key) or self._assume(region, role_arn)

    def _fresh_credentials(self, cache_key: tuple[str, str]) -> _Credentials | None:
        """Cached credentials of the role unless they expire within the renewal margin."""
        with self._lock:
            cached = self._credentials.get(cache_key)
        if cached and cached.expires - CREDENTIAL_RENEW_MARGIN > datetime.now(UTC):
            return cached
        return None

    def _assume(self, region: str, role_arn: str) -> _Credentials:
        cache_key = (region, role_arn)
        with self._lock:
            sts = self._session.client("sts", region_name=region, config=self._config)
        sts.meta.events.register("before-send.sts.AssumeRole", _check_budget)
        metrics.watch_aws_client(sts)
        try:
            answer = sts.assume_role(RoleArn=role_arn, RoleSessionName=self._session_name)
        except _BudgetSpent as exc:
            raise AwsError(
                "aws_unavailable", f"sts:AssumeRole into {role_arn}: the time budget ran out"
            ) from exc
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, OSError) as exc:
            raise classify(exc, f"sts:AssumeRole into {role_arn}") from exc
        raw = answer["Credentials"]
        expires = raw["Expiration"]
        if isinstance(expires, str):
            expires = datetime.fromisoformat(expires.replace("Z", "+00:00"))
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        creds = _Credentials(
            raw["AccessKeyId"], raw["SecretAccessKey"], raw["SessionToken"], expires
        )
        with self._lock:
            self._credentials[cache_key] = creds
        return creds

    def clear(self) -> None:
        """Forget cached clients and credentials (tests, credential rotation)."""
        with self._lock:
            self._clients.clear()
            self._credentials.clear()
            self.calls = 0


def describe_one(
    lookup: Ec2Lookup,
    *,
    region: str,
    instance_id: str,
    role_arn: str = "",
    deadline: float | None = None,
) -> InstanceInfo | None:
    """Describe a single instance; None when AWS does not know it."""
    if deadline is not None and time.monotonic() > deadline:
        raise AwsError("aws_unavailable", "the time budget for AWS calls ran out")
    answer = lookup.describe(
        region=region, instance_ids=[instance_id], role_arn=role_arn, deadline=deadline
    )
    return answer.get(instance_id)


def caller_account(region: str, *, connect_timeout: float = 2, read_timeout: float = 4) -> str:
    """The AWS account of the server's own credentials (sts:GetCallerIdentity).

    `hosts reconcile` asks this before it believes a "no such instance" answer obtained with the
    server's own credentials: those credentials only see their own account, so an instance of
    another account is unknown to them without being gone. Raises AwsError.
    """
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "max_attempts": 3},
    )
    try:
        sts = boto3.session.Session().client("sts", region_name=region, config=config)
        return str(sts.get_caller_identity()["Account"])
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, OSError) as exc:
        raise classify(exc, "sts:GetCallerIdentity") from exc
