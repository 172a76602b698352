"""Instance lifecycle: asking AWS what became of registered hosts (`manage.py hosts reconcile`).

A host joined while its instance ran; instances stop, start and terminate later without telling
us. `reconcile_hosts` asks DescribeInstances, in batches of up to 100 ids per (region,
credentials) group, for every host not yet retired, and records each answer on the host. A host
whose instance is terminated, or no longer known to AWS at all (AWS forgets terminated
instances after about an hour), is retired and its X.509 certificate revoked: the CRL lists it
from then on. Nothing is deleted, and a retired host keeps blocking its instance id: AWS never
reuses an instance id, so a document naming it can only be a replay of an old one.

Credentials: a host is looked up with the `aws_role` of the rule of its token that matches its
account and region now. If the token is gone or no longer has such a rule, the role of the rule
that admitted the host (recorded with its join attempt) is used; failing that, the server's own
credentials. Each fallback is reported. The server's own credentials only see their own account,
so their "no such instance" is believed only for hosts of that account (sts:GetCallerIdentity);
for other hosts the state is left as it was and the run reports them.

AWS errors leave the hosts of the group that failed untouched; the other groups are still
recorded (one account's broken role must not stop retirement everywhere else), and the run is
reported as failed (the command exits non-zero with each reason).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from django.db import transaction
from django.utils import timezone

from audit.services import record_action
from joins.aws import AwsError, InstanceInfo, InstancesNotFound, caller_account, regroup_not_found
from joins.models import Host, JoinAttempt
from joins.revocation import current_crl, revoke_host
from joins.rules import rule_account
from joins.trust import ec2_lookup
from tokens.models import Token
from tokens.resource import AllowRule, TokenResource

log = logging.getLogger(__name__)

#: The state recorded for an instance DescribeInstances does not know.
NOT_FOUND = "not-found"
#: States after which an instance never runs again: its host is retired.
RETIRING_STATES = frozenset({"terminated", NOT_FOUND})
#: DescribeInstances takes up to 1,000 ids; 100 keeps each answer and each failed call small.
MAX_BATCH = 100
#: Time allowed for one DescribeInstances call, retries included (a background job can wait
#: longer than a join, but must not hang for ever on a throttled account).
CALL_BUDGET_SECONDS = 60.0
#: DescribeInstances is eventually consistent: right after a launch it may not know an
#: instance yet. A host that joined this recently is not retired for "not found"; the next run
#: decides.
NOT_FOUND_GRACE = timedelta(minutes=15)
#: Host ids named in the admin-log summary; the rest are counted.
MAX_IDS_IN_SUMMARY = 500
SERVER_CREDENTIALS = "the server's own credentials"


class Describe(Protocol):
    """The part of `joins.aws.Ec2Lookup` reconcile uses (tests substitute their own)."""

    def describe(
        self,
        *,
        region: str,
        instance_ids: list[str],
        role_arn: str = "",
        deadline: float | None = None,
        report_not_found: bool = False,
    ) -> Mapping[str, InstanceInfo]: ...


def role_account_of(role_arn: str) -> str:
    """The account a role ARN belongs to (empty for the server's own credentials)."""
    parts = role_arn.split(":")
    return parts[4] if len(parts) > 4 else ""


def credentials_label(role_arn: str) -> str:
    return role_arn or SERVER_CREDENTIALS


@dataclass
class ReconcileReport:
    """What one run found and did, printed by the command and kept in the admin log."""

    started_at: datetime
    batch: int
    hosts: int = 0
    groups: int = 0
    calls: int = 0
    states: Counter[str] = field(default_factory=Counter)
    changed: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    revoked: int = 0
    unverified: list[str] = field(default_factory=list)
    young: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    crl_number: int | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        """One paragraph in plain words."""
        states = ", ".join(f"{n} {s}" for s, n in sorted(self.states.items())) or "none"
        lines = [
            f"checked {sum(self.states.values())} of {self.hosts} hosts in service "
            f"({self.groups} region/credential groups, {self.calls} DescribeInstances calls); "
            f"states: {states}",
            f"state changed: {len(self.changed)}; retired: {len(self.retired)}; "
            f"certificates revoked: {self.revoked}"
            + (f"; CRL #{self.crl_number} issued" if self.crl_number else ""),
        ]
        for host_id in self.retired:
            lines.append(f"retired {host_id}")
        if self.unverified:
            lines.append(
                f"{len(self.unverified)} host(s) not found with credentials of another account, "
                f"left as they were: {', '.join(self.unverified[:20])}"
            )
        if self.young:
            lines.append(
                f"{len(self.young)} host(s) not found but joined less than "
                f"{NOT_FOUND_GRACE.seconds // 60} minutes ago, not retired yet: "
                f"{', '.join(self.young[:20])}"
            )
        lines.extend(f"note: {note}" for note in self.notes)
        lines.extend(f"error: {error}" for error in self.errors)
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """The admin-log `after` of the run (host lists capped at MAX_IDS_IN_SUMMARY)."""
        return {
            "started_at": self.started_at.isoformat(),
            "batch": self.batch,
            "hosts_in_service": self.hosts,
            "groups": self.groups,
            "describe_calls": self.calls,
            "states": dict(sorted(self.states.items())),
            "changed": len(self.changed),
            "retired": self.retired[:MAX_IDS_IN_SUMMARY],
            "retired_count": len(self.retired),
            "revoked": self.revoked,
            "unverified": self.unverified[:MAX_IDS_IN_SUMMARY],
            "not_found_recently_joined": self.young[:MAX_IDS_IN_SUMMARY],
            "notes": self.notes,
            "errors": self.errors,
            "crl_number": self.crl_number,
            "ok": self.ok,
        }


def rule_for(token: TokenResource, account_id: str, region: str) -> AllowRule | None:
    """The first rule of `token` that admits `account_id` in `region` (the join's choice)."""
    for rule in token.allow:
        account = rule_account(rule)
        if (not account or account == account_id) and (
            not rule.aws_regions or region in rule.aws_regions
        ):
            return rule
    return None


def _recorded_role(attempt: JoinAttempt | None) -> str | None:
    """The `aws_role` of the rule that admitted a join, from the attempt's token snapshot."""
    if attempt is None or attempt.matched_rule is None:
        return None
    try:
        rule = attempt.token_snapshot["spec"]["allow"][attempt.matched_rule]
    except (TypeError, KeyError, IndexError):
        return None
    role = rule.get("aws_role", "") if isinstance(rule, dict) else None
    return role if isinstance(role, str) and (role == "" or role.startswith("arn:")) else None


def _plan(hosts: Sequence[Host], report: ReconcileReport) -> dict[tuple[str, str], list[Host]]:
    """Group the hosts by (region, role ARN), noting every fallback once per cause."""
    names = {host.token for host in hosts}
    tokens = {row.name: row.to_resource() for row in Token.objects.filter(name__in=names)}
    need_snapshot = [
        host.last_attempt_id
        for host in hosts
        if host.last_attempt_id
        and (
            host.token not in tokens
            or rule_for(tokens[host.token], host.account_id, host.region) is None
        )
    ]
    attempts = {
        row.pk: row
        for row in JoinAttempt.objects.filter(pk__in=need_snapshot).only(
            "id", "token_snapshot", "matched_rule"
        )
    }
    fallbacks: Counter[str] = Counter()
    groups: dict[tuple[str, str], list[Host]] = {}
    for host in hosts:
        token = tokens.get(host.token)
        rule = rule_for(token, host.account_id, host.region) if token else None
        if rule is not None:
            role_arn = rule.aws_role
        else:
            why = (
                f"token {host.token!r} no longer exists"
                if token is None
                else f"token {host.token!r} has no rule for account {host.account_id} in "
                f"{host.region} any more"
            )
            recorded = _recorded_role(attempts.get(host.last_attempt_id or 0))
            if recorded is not None:
                role_arn = recorded
                fallbacks[
                    f"{why}: asked with the role of the rule that admitted the host "
                    f"({recorded or SERVER_CREDENTIALS})"
                ] += 1
            else:
                role_arn = ""
                fallbacks[f"{why}: asked with {SERVER_CREDENTIALS}"] += 1
        groups.setdefault((host.region, role_arn), []).append(host)
    report.notes.extend(
        f"{text} ({count} host{'s' if count != 1 else ''})"
        for text, count in sorted(fallbacks.items())
    )
    return groups


def _describe(
    lookup: Describe, region: str, role_arn: str, ids: list[str], report: ReconcileReport
) -> dict[str, InstanceInfo | None]:
    """Every id's answer (None: AWS does not know it), splitting a call that AWS refused
    because of unknown ids until each unknown id is pinned down. Raises AwsError."""
    answers: dict[str, InstanceInfo | None] = {}
    pending = [ids]
    while pending:
        group = pending.pop()
        report.calls += 1
        try:
            found = lookup.describe(
                region=region,
                instance_ids=group,
                role_arn=role_arn,
                deadline=time.monotonic() + CALL_BUDGET_SECONDS,
                report_not_found=True,
            )
        except InstancesNotFound as exc:
            pending.extend(regroup_not_found(group, exc, answers))
            continue
        answers.update({i: found.get(i) for i in group})
    return answers


def _apply(
    hosts: Iterable[Host],
    answers: Mapping[str, InstanceInfo | None],
    *,
    trusted_not_found: Callable[[Host], bool],
    now: datetime,
    report: ReconcileReport,
) -> None:
    """Record the answers on the hosts, retiring and revoking, in one transaction per batch."""
    wanted = {host.pk for host in hosts}
    with transaction.atomic():
        rows = Host.objects.select_for_update().filter(pk__in=wanted, retired_at__isnull=True)
        for host in rows:
            info = answers.get(host.instance_id)
            if info is None and not trusted_not_found(host):
                report.unverified.append(host.host_id)
                continue
            state = info.state if info is not None else NOT_FOUND
            state = state[:32] or "unknown"
            report.states[state] += 1
            if state != host.aws_state:
                report.changed.append(host.host_id)
            host.aws_state = state
            host.aws_state_checked_at = now
            fields = ["aws_state", "aws_state_checked_at"]
            if state == NOT_FOUND and host.last_joined_at > now - NOT_FOUND_GRACE:
                report.young.append(host.host_id)
            elif state in RETIRING_STATES:
                host.retired_at = now
                reason = (
                    f"instance {host.instance_id} is terminated"
                    if state == "terminated"
                    else f"instance {host.instance_id} is unknown to AWS (terminated and gone)"
                )
                report.revoked += revoke_host(host, reason=reason, now=now)
                fields += ["retired_at", "revoked_at", "revocation_reason"]
                report.retired.append(host.host_id)
            host.save(update_fields=fields)


def reconcile_hosts(
    *,
    actor: Any,
    batch: int = MAX_BATCH,
    via: str = "cli",
    now: datetime | None = None,
    lookup: Describe | None = None,
    account_of_server: Callable[[str], str] = caller_account,
) -> ReconcileReport:
    """Ask AWS about every host in service, record the states, retire and revoke the gone.

    Records exactly one admin action (`hosts.reconcile`) summarising the run, errors included,
    and issues a fresh CRL when it revoked anything. Raises ValueError for a batch size outside
    1..100; AWS errors are in the report (see the module doc), never raised.
    """
    if not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"--batch must be between 1 and {MAX_BATCH}")
    now = now or timezone.now()
    lookup = lookup or ec2_lookup()
    report = ReconcileReport(started_at=now, batch=batch)
    hosts = list(
        Host.objects.filter(retired_at__isnull=True)
        .only(
            "id",
            "host_id",
            "account_id",
            "region",
            "instance_id",
            "token",
            "last_attempt_id",
            "aws_state",
        )
        .order_by("region", "id")
    )
    report.hosts = len(hosts)
    groups = _plan(hosts, report)
    report.groups = len(groups)
    server_account = ""

    for (region, role_arn), members in sorted(groups.items()):
        for start in range(0, len(members), batch):
            chunk = members[start : start + batch]
            try:
                answers = _describe(
                    lookup, region, role_arn, [host.instance_id for host in chunk], report
                )
                # Asked before the transaction: "not found" through the server's credentials
                # is only believed for hosts of the server's own account.
                if not role_arn and not server_account and None in answers.values():
                    server_account = account_of_server(region)
            except AwsError as exc:
                left = len(members) - start
                report.errors.append(
                    f"{region} with {credentials_label(role_arn)}: {exc.code}: {exc.message} "
                    f"({left} host{'s' if left != 1 else ''} left as they were)"
                )
                break
            seen_by = role_account_of(role_arn) if role_arn else server_account
            _apply(
                chunk,
                answers,
                trusted_not_found=lambda h, a=seen_by: h.account_id == a,
                now=now,
                report=report,
            )
    if report.revoked:
        report.crl_number = current_crl(now).number
    record_action(
        actor=actor,
        action="hosts.reconcile",
        object_type="host",
        object_id="*",
        after=report.as_dict(),
        reason="instance lifecycle: DescribeInstances for every host in service",
        via=via,
    )
    log.info("hosts reconcile: %s", report.summary().replace("\n", "; "))
    return report
