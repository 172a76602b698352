"""Realistic demo and benchmark data: tokens, registered hosts and a fleet's join history.

`seed_demo` writes what a few months of a real deployment would leave behind: a handful of EC2
tokens (one of them expired), instances in several accounts and regions, one allowed attempt per
registered host (and an earlier one for hosts that were forgotten and joined again), and a mix
of refusals whose codes, messages, reasons and check traces use the join service's own wording
(`joins.services`, `joins.iid`, `joins.aws`). Attempt times are spread over the chosen days, in id
order, as a live server would number them.

Attempts are built a batch at a time and inserted with `executemany` (see `_AttemptWriter`),
hosts and admin actions with `bulk_create`, so a million attempts take a few minutes and memory
stays flat (only the allowed attempts that hosts point to are kept until the hosts are written).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.management.color import no_style
from django.db import connection, models, transaction
from django.db.models import Max
from django.utils import timezone

from audit.models import AdminAction, Seal
from joins.constants import CHECKS, ERROR_OUTCOME, OUTCOME_ALLOWED
from joins.models import Host, JoinAttempt
from tokens.models import Token
from tokens.services import resource_snapshot

Progress = Callable[[str, int, int], None]
Row = dict[str, Any]

ACCOUNTS = ("123456789012", "210987654321", "345678901234", "456789012345")
STRANGER_ACCOUNTS = ("999988887777", "111122223333")
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2")
INSTANCE_TYPES = ("t3.medium", "t3.large", "m6i.large", "m6i.xlarge", "c6g.large", "r6i.large")
NAT_ADDRESSES = tuple(f"203.0.113.{n}" for n in range(10, 40))
SCANNER_ADDRESSES = tuple(f"198.51.100.{n}" for n in range(1, 12))
UNKNOWN_TOKENS = ("ec2-token", "prod-node", "nodes", "teleport", "join", "default")
DESCRIBE_ROLE = "arn:aws:iam::{account}:role/joinadmin-DescribeInstances"
HOST_CERT_HOURS = 24
SQLITE_CACHE_KIB = 256 * 1024
RATE_LIMIT = "20/s"
BODY_LIMIT = 64 * 1024

#: The demo tokens: name, roles, allow rules, aws_iid_ttl, share of the fleet, expired?
DEMO_TOKENS: tuple[dict[str, Any], ...] = (
    {
        "name": "demo-prod-nodes",
        "roles": ["Node"],
        "allow": [
            {"aws_account": ACCOUNTS[0], "aws_regions": ["us-east-1", "us-west-2"]},
            {
                "aws_account": ACCOUNTS[1],
                "aws_regions": ["eu-west-1", "eu-central-1"],
                "aws_role": DESCRIBE_ROLE.format(account=ACCOUNTS[1]),
            },
        ],
        "ttl": "5m",
        "share": 0.5,
        "description": "Production nodes in the two main accounts",
    },
    {
        "name": "demo-staging",
        "roles": ["Node", "App"],
        "allow": [{"aws_account": ACCOUNTS[2]}],
        "ttl": "5m",
        "share": 0.2,
        "description": "Staging, any region",
    },
    {
        "name": "demo-ci-runners",
        "roles": ["Node"],
        "allow": [{"aws_account": ACCOUNTS[3], "aws_regions": ["us-east-1"]}],
        "ttl": "10m",
        "share": 0.18,
        "description": "Short-lived CI runners",
    },
    {
        "name": "demo-databases",
        "roles": ["Node", "Db"],
        "allow": [{"aws_account": ACCOUNTS[0], "aws_regions": ["us-west-2"]}],
        "ttl": "5m",
        "share": 0.12,
        "description": "Database hosts",
    },
    {
        "name": "demo-legacy-2025",
        "roles": ["Node"],
        "allow": [{"aws_account": ACCOUNTS[0]}],
        "ttl": "5m",
        "share": 0.0,
        "expired": True,
        "description": "Replaced by demo-prod-nodes",
    },
)

#: Refusals by share of all refused attempts, roughly as a busy fleet produces them.
REFUSALS: tuple[tuple[str, float], ...] = (
    ("instance_already_joined", 0.30),
    ("iid_expired", 0.14),
    ("token_invalid", 0.10),
    ("no_matching_rule", 0.07),
    ("rate_limited", 0.08),
    ("invalid_request", 0.05),
    ("instance_not_running", 0.04),
    ("instance_not_found", 0.03),
    ("iid_signature_invalid", 0.03),
    ("iid_malformed", 0.03),
    ("role_not_allowed", 0.025),
    ("host_id_mismatch", 0.02),
    ("aws_unavailable", 0.025),
    ("aws_denied", 0.01),
    ("join_method_mismatch", 0.01),
    ("iid_pending_time_in_future", 0.01),
    ("iid_region_unsupported", 0.01),
    ("iid_unsupported_form", 0.01),
    ("request_too_large", 0.003),
    ("internal_error", 0.002),
)

#: The check that fails for each code (the order of checks is joins.constants.CHECKS).
FAILING_CHECK = {
    "request_too_large": "request",
    "rate_limited": "request",
    "invalid_request": "request",
    "token_invalid": "token",
    "join_method_mismatch": "join_method",
    "role_not_allowed": "roles",
    "iid_malformed": "document",
    "iid_unsupported_form": "document",
    "iid_region_unsupported": "document",
    "iid_signature_invalid": "document",
    "host_id_mismatch": "host_id",
    "iid_pending_time_in_future": "pending_time",
    "iid_expired": "pending_time",
    "no_matching_rule": "allow_rule",
    "instance_already_joined": "not_joined",
    "instance_not_found": "instance",
    "instance_not_running": "instance",
    "aws_denied": "instance",
    "aws_unavailable": "instance",
    "internal_error": "internal",
}
_STAGES = CHECKS  # the checks of a real join, in their order


@dataclass
class Instance:
    """An EC2 instance of the demo fleet."""

    account_id: str
    region: str
    instance_id: str
    private_ip: str
    zone: str
    image_id: str
    instance_type: str
    token: dict[str, Any]
    rule_index: int
    remote_addr: str
    node_name: str

    @property
    def host_id(self) -> str:
        return f"{self.account_id}-{self.instance_id}"


@dataclass
class SeedResult:
    """What `seed_demo` wrote."""

    tokens: int = 0
    hosts: int = 0
    attempts: int = 0
    actions: int = 0
    seconds: float = 0.0
    seed: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)


class _Generator:
    """Builds attempts for one seeding run; all randomness comes from one seeded generator."""

    def __init__(self, rng: random.Random, tokens: dict[str, Token]) -> None:
        self.rng = rng
        self.rows = {t["name"]: tokens[t["name"]] for t in DEMO_TOKENS}
        self.snapshots = {
            name: resource_snapshot(row.to_resource()) for name, row in self.rows.items()
        }
        self.live = [t for t in DEMO_TOKENS if not t.get("expired")]
        self.expired = [t for t in DEMO_TOKENS if t.get("expired")]
        self.images = {acct: [self._hex("ami-", 17) for _ in range(4)] for acct in ACCOUNTS}
        self.refusal_codes = [code for code, _ in REFUSALS]
        self.refusal_weights = [share for _, share in REFUSALS]

    def _hex(self, prefix: str, length: int) -> str:
        return f"{prefix}{self.rng.getrandbits(4 * length):0{length}x}"

    def instance(self, token: dict[str, Any] | None = None) -> Instance:
        rng = self.rng
        if token is None:
            token = rng.choices(self.live, weights=[t["share"] for t in self.live])[0]
        rule_index = rng.randrange(len(token["allow"]))
        rule = token["allow"][rule_index]
        account = rule["aws_account"]
        region = rng.choice(rule.get("aws_regions") or REGIONS)
        ip = f"10.{rng.randrange(0, 64)}.{rng.randrange(0, 256)}.{rng.randrange(4, 255)}"
        # Most agents reach the server inside the VPC; the rest through a NAT gateway.
        remote = ip if rng.random() < 0.7 else rng.choice(NAT_ADDRESSES)
        node_name = f"ip-{ip.replace('.', '-')}.{region}.compute.internal"
        return Instance(
            account_id=account,
            region=region,
            instance_id=self._hex("i-", 17),
            private_ip=ip,
            zone=region + rng.choice("abc"),
            image_id=rng.choice(self.images.get(account) or [self._hex("ami-", 17)]),
            instance_type=rng.choice(INSTANCE_TYPES),
            token=token,
            rule_index=rule_index,
            remote_addr=remote,
            node_name=node_name if rng.random() < 0.8 else "",
        )

    def document(self, inst: Instance, pending: datetime) -> dict[str, Any]:
        """The signed content of an rsa2048 identity document, field for field."""
        return {
            "accountId": inst.account_id,
            "architecture": "arm64" if inst.instance_type.startswith("c6g") else "x86_64",
            "availabilityZone": inst.zone,
            "billingProducts": None,
            "devpayProductCodes": None,
            "marketplaceProductCodes": None,
            "imageId": inst.image_id,
            "instanceId": inst.instance_id,
            "instanceType": inst.instance_type,
            "kernelId": None,
            "pendingTime": pending.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "privateIp": inst.private_ip,
            "ramdiskId": None,
            "region": inst.region,
            "version": "2017-09-30",
        }

    def _ok_details(self, inst: Instance, now: datetime, pending: datetime) -> dict[str, str]:
        token = inst.token
        via = (
            f" through {token['allow'][inst.rule_index]['aws_role']}"
            if token["allow"][inst.rule_index].get("aws_role")
            else ""
        )
        roles = ", ".join(token["roles"])
        age = max((now - pending).total_seconds(), 0)
        return {
            "request": "the request is well formed and its public keys are acceptable",
            "token": f"token {token['name']!r} exists and is not expired",
            "join_method": "join method ec2",
            "roles": f"all of the token's roles: {roles}",
            "document": f"signed by AWS for {inst.region}: account {inst.account_id}, "
            f"instance {inst.instance_id}",
            "host_id": f"host id {inst.host_id}",
            "pending_time": f"launched {age:.0f}s ago, within aws_iid_ttl {token['ttl']}",
            "allow_rule": f"rule {inst.rule_index} matches account {inst.account_id} "
            f"in {inst.region}",
            "not_joined": f"host {inst.host_id} has not joined before",
            "instance": f"DescribeInstances in {inst.region}{via}: {inst.instance_id} is running",
        }

    def _base(self, now: datetime, remote: str) -> dict[str, Any]:
        return {"time": now, "remote_addr": remote, "user_agent": "joinadmin-agent"}

    def allowed(self, inst: Instance, now: datetime) -> Row:
        rng = self.rng
        pending = now - timedelta(seconds=rng.uniform(6, 150))
        details = self._ok_details(inst, now, pending)
        tls_serial = self._hex("", 32)
        ssh_serial = str(rng.getrandbits(63))
        checks = [{"name": name, "ok": True, "detail": details[name]} for name in _STAGES[:-1]]
        checks.append(
            {
                "name": "issue",
                "ok": True,
                "detail": f"issued X.509 serial {tls_serial} and SSH serial {ssh_serial}",
            }
        )
        roles = list(inst.token["roles"])
        node_name = inst.node_name or inst.host_id
        return dict(
            **self._base(now, inst.remote_addr),
            join_method="ec2",
            token=inst.token["name"],
            requested_host_id=inst.host_id if rng.random() < 0.5 else "",
            host_id=inst.host_id,
            account_id=inst.account_id,
            region=inst.region,
            instance_id=inst.instance_id,
            pending_time=pending,
            roles=roles,
            node_name=node_name,
            outcome=OUTCOME_ALLOWED,
            error="",
            message="joined",
            reason=f"joined as {inst.host_id} with roles {', '.join(roles)}",
            checks=checks,
            duration_ms=round(rng.lognormvariate(math.log(420), 0.45), 2),
            token_snapshot=self.snapshots[inst.token["name"]],
            document=self.document(inst, pending),
            matched_rule=inst.rule_index,
            tls_cert_serial=tls_serial,
            ssh_cert_serial=ssh_serial,
        )

    def refused(self, code: str, now: datetime, inst: Instance, joined: Instance | None) -> Row:
        """One refused attempt with `code`, failing at that code's check with real wording."""
        rng = self.rng
        token = inst.token
        stage = FAILING_CHECK[code]
        pending = now - timedelta(seconds=rng.uniform(6, 150))
        remote = inst.remote_addr
        token_name = token["name"]
        requested_host_id = inst.host_id if rng.random() < 0.5 else ""
        roles = list(token["roles"])
        snapshot: dict[str, Any] | None = self.snapshots[token_name]
        message = reason = ""
        via = token["allow"][inst.rule_index].get("aws_role", "")
        via_text = f" through {via}" if via else ""
        state = ""
        if code == "instance_already_joined" and joined is not None:
            inst = joined
            token, token_name, remote = inst.token, inst.token["name"], inst.remote_addr
            roles, snapshot = list(token["roles"]), self.snapshots[token_name]
            message = (
                f"a host with ID {inst.host_id} already joined; an admin must forget it before "
                "this instance can join again"
            )
            reason = f"host {inst.host_id} is already registered"
        elif code == "iid_expired":
            pending = now - timedelta(minutes=rng.uniform(6, 60 * 24 * 20))
            age = (now - pending).total_seconds()
            message = (
                f"the instance was launched more than {token['ttl']} ago (the token's aws_iid_ttl)"
            )
            reason = (
                f"pendingTime {pending.isoformat()} is {age:.0f}s old at {now.isoformat()}, "
                f"older than the token's aws_iid_ttl of {token['ttl']}"
            )
        elif code == "iid_pending_time_in_future":
            pending = now + timedelta(seconds=rng.uniform(90, 900))
            ahead = (pending - now).total_seconds()
            message = "the document's pendingTime is in the future; check the server's clock"
            reason = (
                f"pendingTime {pending.isoformat()} is {ahead:.0f}s ahead of the server clock "
                f"({now.isoformat()}); 60s of skew are allowed"
            )
        elif code == "token_invalid":
            message = "the token does not exist or has expired"
            if self.expired and rng.random() < 0.4:
                old = rng.choice(self.expired)
                token_name = old["name"]
                snapshot = self.snapshots[token_name]
                expires = self.rows[token_name].expires
                reason = (
                    f"token {token_name!r} expired at {expires.isoformat() if expires else '?'}"
                )
            else:
                token_name = rng.choice(UNKNOWN_TOKENS)
                snapshot = None
                reason = f"no token named {token_name!r}"
                remote = rng.choice((*SCANNER_ADDRESSES, inst.remote_addr))
        elif code == "rate_limited":
            remote = rng.choice(SCANNER_ADDRESSES)
            wait = rng.randint(1, 3)
            message = f"too many join attempts from this source; retry in {wait}s"
            reason = f"rate limit {RATE_LIMIT} per source exceeded by {remote!r}"
            snapshot = None
        elif code == "invalid_request":
            message = rng.choice(
                (
                    "public_tls_key is required",
                    "the body is not JSON: Expecting value: line 1 column 1 (char 0)",
                    "ec2_identity_document must be a string, not dict",
                    "roles must be a list of strings",
                    "the body must be a JSON object",
                )
            )
            reason = message
            snapshot = None
        elif code == "request_too_large":
            message = reason = f"the request body is larger than {BODY_LIMIT} bytes"
            token_name, requested_host_id, roles, snapshot = "", "", [], None
            remote = rng.choice(SCANNER_ADDRESSES)
        elif code == "join_method_mismatch":
            method = rng.choice(("iam", "token", "kubernetes"))
            message = reason = f"the request names join method {method!r}, the token allows 'ec2'"
        elif code == "role_not_allowed":
            role = rng.choice(("Proxy", "Kube", "Auth"))
            message = reason = (
                f"the token does not allow role {role!r} (it allows {', '.join(token['roles'])})"
            )
            roles = [role]
        elif code == "iid_malformed":
            message = reason = (
                "The identity document is malformed: "
                + rng.choice(
                    (
                        "it is not base64 text",
                        "its signed content is not a JSON object",
                        "it is empty",
                        "pendingTime is not an RFC 3339 date-time",
                    )
                )
                + "."
            )
        elif code == "iid_unsupported_form":
            message = reason = (
                "The identity document is not in the supported rsa2048 form: it is a bare "
                "RSA-1024 signature (the /signature form); the agent must send the document "
                "from /latest/dynamic/instance-identity/rsa2048."
            )
        elif code == "iid_region_unsupported":
            region = rng.choice(("me-central-1", "il-central-1", "ap-southeast-5"))
            message = reason = (
                f"No AWS certificate is known for region {region}; an admin can add "
                f"{region}.pem to JOINADMIN_IID_CERTS_DIR."
            )
        elif code == "iid_signature_invalid":
            message = reason = rng.choice(
                (
                    "The identity document's content does not match its signed digest.",
                    f"The identity document's signature does not verify with AWS's certificate "
                    f"for {inst.region}.",
                    f"The identity document was not signed with AWS's certificate for "
                    f"{inst.region}.",
                )
            )
        elif code == "host_id_mismatch":
            claimed = f"{inst.account_id}-{self._hex('i-', 17)}"
            requested_host_id = claimed
            message = "the requested host ID does not match the instance identity document"
            reason = f"requested host id {claimed!r}, the document says {inst.host_id!r}"
        elif code == "no_matching_rule":
            account = rng.choice(STRANGER_ACCOUNTS)
            inst = Instance(**{**inst.__dict__, "account_id": account})
            message = (
                f"instance {inst.instance_id} did not match any allow rules in token {token_name}"
            )
            reason = (
                f"no allow rule of token {token_name!r} matches account {account} in region "
                f"{inst.region} (rules: {snapshot['spec']['allow'] if snapshot else []})"
            )
        elif code == "instance_not_found":
            message = "failed to get instance state"
            reason = (
                f"DescribeInstances in {inst.region}{via_text} does not know {inst.instance_id}"
            )
        elif code == "instance_not_running":
            state = rng.choice(("stopped", "stopping", "terminated", "shutting-down"))
            message = "instance is not running"
            reason = f"instance {inst.instance_id} is {state}, not running"
        elif code == "aws_denied":
            message = (
                "AWS refused the server's DescribeInstances call; ask an admin to check the "
                "server's IAM permissions"
            )
            reason = rng.choice(
                (
                    f"ec2:DescribeInstances in {inst.region}: UnauthorizedOperation: You are not "
                    "authorized to perform this operation.",
                    f"sts:AssumeRole into {DESCRIBE_ROLE.format(account=inst.account_id)}: "
                    "AccessDenied: User is not authorized to perform: sts:AssumeRole",
                )
            )
        elif code == "aws_unavailable":
            message = "AWS is unavailable or throttling; retry later"
            reason = rng.choice(
                (
                    f"ec2:DescribeInstances in {inst.region}: RequestLimitExceeded: Request limit "
                    "exceeded.",
                    f"ec2:DescribeInstances in {inst.region}: the time budget for AWS calls "
                    "ran out",
                )
            )
        elif code == "internal_error":
            message = "the server could not process the join; try again later"
            reason = "internal error: OperationalError: database is locked"

        checks: list[dict[str, Any]] = []
        details = self._ok_details(inst, now, pending)
        if stage != "internal":
            for name in _STAGES:
                if name == stage:
                    checks.append({"name": name, "ok": False, "detail": reason})
                    break
                checks.append({"name": name, "ok": True, "detail": details[name]})
        else:
            for name in _STAGES[: _STAGES.index("instance")]:
                checks.append({"name": name, "ok": True, "detail": details[name]})
            checks.append({"name": "internal", "ok": False, "detail": reason})

        reached_document = (
            _STAGES.index(stage) > _STAGES.index("document") if stage in _STAGES else True
        )
        if stage in ("request", "token") and code != "token_invalid":
            snapshot = None
        if stage in ("request", "token", "join_method"):
            roles = []  # granted roles are only known after the roles check
        duration = {
            "request": 0.4,
            "token": 1.2,
            "join_method": 1.3,
            "roles": 1.3,
            "document": 3.5,
            "host_id": 4.0,
            "pending_time": 4.0,
            "allow_rule": 4.2,
            "not_joined": 4.5,
            "instance": 380.0,
            "internal": 6.0,
        }[stage]
        if code == "aws_unavailable":
            duration = rng.uniform(2000, 8000)
        return dict(
            **self._base(now, remote),
            token=token_name,
            join_method="" if code == "request_too_large" else "ec2",
            requested_host_id=requested_host_id,
            host_id=inst.host_id if reached_document else "",
            account_id=inst.account_id if reached_document else "",
            region=inst.region if reached_document else "",
            instance_id=inst.instance_id if reached_document else "",
            pending_time=pending if reached_document else None,
            roles=roles,
            node_name=inst.node_name,
            outcome=ERROR_OUTCOME.get(code, "error"),
            error=code,
            message=message,
            reason=reason or message,
            checks=checks,
            duration_ms=round(duration * rng.lognormvariate(0, 0.35), 2),
            token_snapshot=snapshot,
            document=self.document(inst, pending) if reached_document else None,
            matched_rule=inst.rule_index if _after(stage, "allow_rule") else None,
        )


def _after(stage: str, check: str) -> bool:
    """Whether `check` passed before `stage` failed."""
    if stage == "internal":
        return True
    return _STAGES.index(stage) > _STAGES.index(check)


def ensure_demo_tokens(*, start: datetime) -> dict[str, Token]:
    """The demo tokens, created when missing (an existing row of that name is left alone)."""
    rows = {}
    for spec in DEMO_TOKENS:
        expires = (start + timedelta(days=2)) if spec.get("expired") else None
        row, _ = Token.objects.get_or_create(
            name=spec["name"],
            defaults={
                "join_method": "ec2",
                "roles": spec["roles"],
                "aws_iid_ttl": spec["ttl"],
                "allow": spec["allow"],
                "labels": {"env": "demo"},
                "description": spec["description"],
                "expires": expires,
            },
        )
        rows[spec["name"]] = row
    return rows


def seed_demo(
    *,
    attempts: int,
    hosts: int,
    days: float = 30,
    batch: int = 5000,
    seed: int | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> SeedResult:
    """Write `attempts` join attempts (of which `hosts` registered hosts' joins) over `days` days.

    Raises ValueError when the counts are impossible (each registered host needs its allowed
    attempt, so `hosts` cannot exceed `attempts`).
    """
    if attempts < 0 or hosts < 0 or batch < 1 or days <= 0:
        raise ValueError("attempts and hosts must be >= 0, batch >= 1 and days > 0")
    if hosts > attempts:
        raise ValueError("each registered host needs its allowed attempt: hosts <= attempts")
    started = time.monotonic()
    seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)  # noqa: S311 - demo data must be reproducible from its seed
    now = now or timezone.now()
    start = now - timedelta(days=days)
    result = SeedResult(seed=seed)
    tokens = ensure_demo_tokens(start=start)
    result.tokens = len(tokens)
    gen = _Generator(rng, tokens)

    # Hosts that were forgotten once and joined again have two allowed attempts: an earlier one
    # (False), then the one their current registration points to (True).
    rejoin = min(hosts // 20, attempts - hosts)
    fleet = [gen.instance() for _ in range(hosts)]
    join_events = [(h, True) for h in range(hosts)] + [(h, False) for h in range(rejoin)]
    rng.shuffle(join_events)
    slots = sorted(rng.sample(range(attempts), len(join_events)))
    event_at = dict(zip(slots, join_events, strict=True))
    slot_of = {event: slot for slot, event in event_at.items()}
    for host in range(rejoin):
        early, final = slot_of[(host, False)], slot_of[(host, True)]
        if early > final:
            event_at[early], event_at[final] = event_at[final], event_at[early]
            slot_of[(host, False)], slot_of[(host, True)] = final, early

    strangers = [gen.instance() for _ in range(max(50, hosts // 4))]
    offsets = sorted(rng.random() for _ in range(attempts))
    span = (now - start).total_seconds()

    def moment_of(index: int) -> datetime:
        return start + timedelta(seconds=offsets[index] * span)

    joined: list[int] = []
    joined_set: set[int] = set()
    final_attempts: dict[int, Row] = {}
    forgets: list[AdminAction] = []
    pending: list[Row] = []
    counts: dict[str, int] = {}

    writer = _AttemptWriter()
    next_id = [writer.first_free_id()]

    def flush() -> None:
        for row in pending:
            row["id"] = next_id[0]
            next_id[0] += 1
        writer.write(pending)
        result.attempts += len(pending)
        pending.clear()
        if progress:
            progress("attempts", result.attempts, attempts)

    for index in range(attempts):
        moment = moment_of(index)
        event = event_at.get(index)
        if event is not None:
            host, final = event
            row = gen.allowed(fleet[host], moment)
            if final:
                final_attempts[host] = row
                if host not in joined_set:
                    joined.append(host)
                    joined_set.add(host)
            else:
                rejoined = moment_of(slot_of[(host, True)])
                forgets.append(_forget_action(fleet[host], moment, rejoined, rng))
        else:
            code = rng.choices(gen.refusal_codes, weights=gen.refusal_weights)[0]
            if code == "instance_already_joined" and not joined:
                code = "iid_expired"
            known = fleet[rng.choice(joined)] if joined else None
            pool = fleet if fleet and rng.random() < 0.6 else strangers
            row = gen.refused(code, moment, rng.choice(pool), known)
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
        pending.append(row)
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    writer.finish()

    with transaction.atomic():
        result.hosts = _write_hosts(fleet, final_attempts, batch)
        result.actions = _write_actions(tokens, forgets, start)
    result.by_outcome = counts
    result.seconds = time.monotonic() - started
    return result


class _AttemptWriter:
    """Inserts attempt rows with `executemany`, values adapted by the backend's own adapters.

    At a million rows, `bulk_create`'s per-object work (model instances, per-field preparation,
    SQL assembly per few dozen rows) costs more than the database itself; this does the same
    inserts without it. Ids are given explicitly, from above every id in use or sealed, so that
    hosts can point at their allowed attempt without reading ids back; the backend's id sequence
    is moved past them at the end. Meant for demo and benchmark databases: a live server joining
    at the same moment could take one of the same ids.
    """

    def __init__(self) -> None:
        meta = JoinAttempt._meta
        self.fields = list(meta.concrete_fields)
        self.columns = [f.attname for f in self.fields]
        quote = connection.ops.quote_name
        names = ", ".join(quote(f.column) for f in self.fields)
        marks = ", ".join(["%s"] * len(self.fields))
        # Only the model's own table and column names, quoted; every value is a parameter.
        self.sql = f"INSERT INTO {quote(meta.db_table)} ({names}) VALUES ({marks})"  # noqa: S608
        self.adapters = [self._adapter(f) for f in self.fields]
        self.defaults = [None if f.primary_key else f.get_default() for f in self.fields]
        if connection.vendor == "sqlite":
            # Ten indexes grow at once; SQLite's default 2 MB page cache would reread their pages
            # from disk for every batch. This connection only, for the length of the seeding.
            with connection.cursor() as cursor:
                cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")

    @staticmethod
    def _adapter(field: Any) -> Callable[[Any], Any] | None:
        ops = connection.ops
        if isinstance(field, models.JSONField):
            return lambda value: ops.adapt_json_value(value, field.encoder)
        if isinstance(field, models.DateTimeField):
            return ops.adapt_datetimefield_value
        return None

    def first_free_id(self) -> int:
        highest = JoinAttempt.objects.aggregate(top=Max("id"))["top"] or 0
        sealed = Seal.objects.filter(stream="joinattempt").aggregate(top=Max("last_id"))["top"]
        return max(highest, sealed or 0) + 1

    def write(self, rows: list[Row]) -> None:
        plan = list(zip(self.columns, self.defaults, self.adapters, strict=True))
        params = [
            tuple(
                adapt(value) if adapt is not None and value is not None else value
                for name, default, adapt in plan
                for value in (row.get(name, default),)
            )
            for row in rows
        ]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(self.sql, params)

    def finish(self) -> None:
        statements = connection.ops.sequence_reset_sql(no_style(), [JoinAttempt])
        if statements:
            with connection.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)


def _forget_action(
    inst: Instance, joined_at: datetime, rejoined_at: datetime, rng: random.Random
) -> AdminAction:
    """The admin's `host.forget` between a host's two joins."""
    when = joined_at + (rejoined_at - joined_at) * rng.uniform(0.2, 0.8)
    return AdminAction(
        time=when,
        actor_name="demo-admin",
        action="host.forget",
        object_type="host",
        object_id=inst.host_id,
        before={
            "host_id": inst.host_id,
            "account_id": inst.account_id,
            "region": inst.region,
            "instance_id": inst.instance_id,
            "roles": inst.token["roles"],
            "token": inst.token["name"],
        },
        reason=rng.choice(
            (
                "instance rebuilt from a new AMI",
                "data dir lost after a disk swap",
                "re-joining after a role change",
            )
        ),
        remote_addr=rng.choice(NAT_ADDRESSES),
        via="console",
    )


def _write_hosts(fleet: list[Instance], finals: dict[int, Row], batch: int) -> int:
    rows = []
    for host, attempt in finals.items():
        inst = fleet[host]
        rows.append(
            Host(
                host_id=inst.host_id,
                account_id=inst.account_id,
                region=inst.region,
                instance_id=inst.instance_id,
                node_name=attempt["node_name"],
                roles=attempt["roles"],
                token=attempt["token"],
                first_joined_at=attempt["time"],
                last_joined_at=attempt["time"],
                join_count=1,
                tls_cert_serial=attempt["tls_cert_serial"],
                ssh_cert_serial=attempt["ssh_cert_serial"],
                cert_expires=attempt["time"] + timedelta(hours=HOST_CERT_HOURS),
                last_attempt_id=attempt["id"],
            )
        )
    # A host id already registered (a second run with the same seed) is left as it is.
    Host.objects.bulk_create(rows, batch_size=batch, ignore_conflicts=True)
    return len(rows)


def _write_actions(tokens: dict[str, Token], forgets: list[AdminAction], start: datetime) -> int:
    actions = [
        AdminAction(
            time=start - timedelta(days=1, minutes=index),
            actor_name="demo-admin",
            action="token.create",
            object_type="token",
            object_id=name,
            after=resource_snapshot(row.to_resource()),
            reason="",
            remote_addr=NAT_ADDRESSES[0],
            via="console",
        )
        for index, (name, row) in enumerate(tokens.items())
    ]
    # The admin log is in time order like the live one (ids follow time).
    actions.extend(sorted(forgets, key=lambda action: action.time))
    AdminAction.objects.bulk_create(actions)
    return len(actions)
