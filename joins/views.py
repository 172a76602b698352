"""Console pages of the join history (list, detail, CSV/JSONL export) and of registered hosts.

The history can hold millions of rows, so its pages never count it: the list pages by primary
key (`?before=` / `?after=`), and the exports stream rows in chunks with constant memory. The
filters are the API's own `JoinAttemptFilter`, so a URL copied from the console and a query
against the API select the same rows (host and instance IDs aside: the console matches those as
prefixes, as the API does for a value ending in `*`).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml
from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_safe

from joinadmin.console import (
    kept_params,
    keyset_page,
    manager_required,
    page_links,
    query_string,
    source_address,
    viewer_required,
)
from joins.constants import CHECKS, ERROR_CODES, OUTCOME_ALLOWED, OUTCOMES
from joins.filters import JoinAttemptFilter
from joins.host_services import HostNotFoundError, forget_host
from joins.models import Host, JoinAttempt
from joins.serializers import JoinAttemptSerializer
from tokens.models import Token

ATTEMPT_PAGE_SIZE = 50
HOST_PAGE_SIZE = 50
HOST_HISTORY_SIZE = 20
EXPORT_CHUNK_SIZE = 2000

#: The columns of an attempt row in every table; the large JSON columns stay in the database.
ATTEMPT_ROW_FIELDS = (
    "id",
    "time",
    "outcome",
    "error",
    "token",
    "host_id",
    "account_id",
    "region",
    "instance_id",
    "node_name",
    "remote_addr",
    "duration_ms",
)

#: Exported columns: the API's list fields, so that an export and the API agree.
EXPORT_FIELDS: tuple[str, ...] = tuple(JoinAttemptSerializer.Meta.fields)

CHECK_LABELS = {
    "request": "Request well formed",
    "token": "Token exists and is valid",
    "join_method": "Join method",
    "roles": "Roles allowed",
    "document": "Identity document signature",
    "host_id": "Host ID",
    "pending_time": "Document age (pendingTime)",
    "allow_rule": "Allow rule matches",
    "not_joined": "Instance not already joined",
    "instance": "Instance running (AWS)",
    "issue": "Credentials issued",
    "internal": "Server processing",
    "rejoin": "Re-join proof (previously issued key)",
    "condition:aws_vpc_ids": "Condition: VPC",
    "condition:aws_subnet_ids": "Condition: subnet",
    "condition:aws_ami_ids": "Condition: AMI",
    "condition:aws_instance_profile_arns": "Condition: instance profile",
    "condition:aws_security_group_ids": "Condition: security groups",
    "condition:aws_tags": "Condition: tags",
    "condition:require_imdsv2": "Condition: IMDSv2 required",
    "condition:max_imds_hop_limit": "Condition: IMDS hop limit",
    "condition:require_source_ip_match": "Condition: source address is the instance's",
}


@dataclass(frozen=True)
class FilterField:
    """One input of the history filter form; `name` is the query parameter."""

    name: str
    label: str
    kind: str = "text"  # text, select or datetime
    help: str = ""
    choices: tuple[tuple[str, str], ...] = ()


FILTER_FIELDS = (
    FilterField("token", "Token"),
    FilterField(
        "outcome", "Outcome", "select", choices=tuple((o, o.capitalize()) for o in OUTCOMES)
    ),
    FilterField(
        "error",
        "Error",
        "select",
        choices=tuple((code, label) for code, (_, label) in ERROR_CODES.items()),
    ),
    FilterField("account", "AWS account"),
    FilterField("region", "Region"),
    FilterField("host_id", "Host ID starts with", help="e.g. 111111111111-i-0ab"),
    FilterField("instance_id", "Instance ID starts with", help="e.g. i-0ab"),
    FilterField("remote_addr", "Source address"),
    FilterField("since", "Since (UTC)", "datetime"),
    FilterField("until", "Until (UTC)", "datetime"),
)
FILTER_NAMES = tuple(field.name for field in FILTER_FIELDS)
#: Filters the console always runs as "starts with": the API's prefix form is a trailing `*`,
#: which the console adds, so that a typed "i-0ab" finds i-0abc... and a full ID still finds
#: itself. The URL keeps what was typed.
PREFIX_FILTERS = ("host_id", "instance_id")


def error_label(code: str) -> str:
    """The console's wording of an error code; an unknown code is shown as it is."""
    return ERROR_CODES.get(code, (0, code))[1] if code else ""


def with_labels(rows: Iterable[JoinAttempt]) -> list[JoinAttempt]:
    """The rows, each with `error_label` set for the templates."""
    out = list(rows)
    for row in out:
        row.error_label = error_label(row.error)  # type: ignore[attr-defined]
    return out


def _filtered(request: HttpRequest, queryset: Any) -> tuple[JoinAttemptFilter, dict[str, str]]:
    """The history filter of the query string, and the non-empty parameters it was built from."""
    params = kept_params(request.GET, FILTER_NAMES)
    data = {
        name: value + "*" if name in PREFIX_FILTERS and not value.endswith("*") else value
        for name, value in params.items()
    }
    return JoinAttemptFilter(data, queryset=queryset), params


def _filter_inputs(filterset: JoinAttemptFilter, params: dict[str, str]) -> list[dict[str, Any]]:
    """What the filter form shows: each input's value and error.

    A valid time is shown back in the `datetime-local` format, because a browser leaves such an
    input empty when its value carries a zone (`...Z`).
    """
    errors = filterset.errors
    cleaned = getattr(filterset.form, "cleaned_data", {})
    inputs = []
    for field in FILTER_FIELDS:
        value = params.get(field.name, "")
        moment = cleaned.get(field.name) if field.kind == "datetime" else None
        if isinstance(moment, datetime) and field.name not in errors:
            value = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        inputs.append({"field": field, "value": value, "errors": list(errors.get(field.name, []))})
    return inputs


@require_safe
@viewer_required
def attempt_list(request: HttpRequest) -> HttpResponse:
    """The join history, newest first, filtered by the query string and paged by id."""
    filterset, params = _filtered(request, JoinAttempt.objects.only(*ATTEMPT_ROW_FIELDS))
    page = (
        keyset_page(filterset.qs, request.GET, ATTEMPT_PAGE_SIZE) if filterset.is_valid() else None
    )
    context = {
        "filters": _filter_inputs(filterset, params),
        "filter_errors": bool(filterset.errors),
        "filtered": bool(params),
        "rows": with_labels(page.rows) if page else [],
        "links": page.links(params) if page else {},
        "export_query": query_string(params),
    }
    return render(request, "joins/list.html", context)


def check_trace(attempt: JoinAttempt) -> list[dict[str, Any]]:
    """The recorded checks in the order they ran, then, for a refusal, those never reached."""
    trace = []
    seen = set()
    for check in attempt.checks or []:
        if not isinstance(check, dict):
            continue
        name = str(check.get("name", ""))
        seen.add(name)
        trace.append(
            {
                "name": name,
                "label": CHECK_LABELS.get(name, name),
                "state": "pass" if check.get("ok") else "fail",
                "detail": str(check.get("detail", "")),
            }
        )
    if attempt.outcome != OUTCOME_ALLOWED:
        trace.extend(
            {"name": name, "label": CHECK_LABELS.get(name, name), "state": "skipped", "detail": ""}
            for name in CHECKS
            if name not in seen
        )
    return trace


def _yaml_text(value: Any) -> str:
    if value in (None, "", {}):
        return ""
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _shown(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else str(value)


@require_safe
@viewer_required
def attempt_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Every field of one attempt, its check trace, and what the agent was told vs why."""
    attempt = get_object_or_404(JoinAttempt, pk=pk)
    document = attempt.document if isinstance(attempt.document, dict) else {}
    context = {
        "attempt": with_labels([attempt])[0],
        "checks": check_trace(attempt),
        "snapshot": _yaml_text(attempt.token_snapshot),
        "document_fields": sorted((str(k), _shown(v)) for k, v in document.items()),
        "host_registered": bool(attempt.host_id)
        and Host.objects.filter(host_id=attempt.host_id).exists(),
        "token_exists": bool(attempt.token) and Token.objects.filter(name=attempt.token).exists(),
    }
    return render(request, "joins/detail.html", context)


# --- Exports --------------------------------------------------------------------------------

_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> str:
    """A CSV cell. Text that a spreadsheet would run as a formula gets a leading quote: node
    names and tokens come from the joining machines, which are not trusted."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        value = " ".join(value)
    elif isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    else:
        value = str(value)
    return "'" + value if value.startswith(_FORMULA_PREFIXES) else value


class _Echo:
    """A file-like object whose `write` returns the line, so csv.writer can feed a generator."""

    def write(self, value: str) -> str:
        return value


def _csv_lines(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_FIELDS)
    for row in rows:
        yield writer.writerow([_csv_cell(row[name]) for name in EXPORT_FIELDS])


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot export {type(value).__name__}")


def _jsonl_lines(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, default=_json_default, ensure_ascii=False) + "\n"


EXPORTS = {
    "csv": ("text/csv; charset=utf-8", _csv_lines),
    "jsonl": ("application/x-ndjson; charset=utf-8", _jsonl_lines),
}


def export_filename(params: dict[str, str], extension: str) -> str:
    """`join-attempts_outcome-denied_token-x.csv`: the filter, in key order, in the name."""
    parts = ["join-attempts"]
    for key in sorted(params):
        value = re.sub(r"[^A-Za-z0-9._-]+", "-", params[key])[:64].strip("-.") or "x"
        parts.append(f"{key}-{value}")
    return "_".join(parts)[:200] + f".{extension}"


def _export(request: HttpRequest, fmt: str) -> HttpResponse:
    filterset, params = _filtered(request, JoinAttempt.objects.all())
    if not filterset.is_valid():
        problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in filterset.errors.items())
        return HttpResponseBadRequest(
            f"invalid filter: {problems}\n", content_type="text/plain; charset=utf-8"
        )
    content_type, render_lines = EXPORTS[fmt]
    rows = (
        filterset.qs.order_by("-id").values(*EXPORT_FIELDS).iterator(chunk_size=EXPORT_CHUNK_SIZE)
    )
    response = StreamingHttpResponse(render_lines(rows), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{export_filename(params, fmt)}"'
    response["Cache-Control"] = "no-store"
    return response


@require_safe
@viewer_required
def export_csv(request: HttpRequest) -> HttpResponse:
    """The filtered history as CSV, streamed."""
    return _export(request, "csv")


@require_safe
@viewer_required
def export_jsonl(request: HttpRequest) -> HttpResponse:
    """The filtered history as JSON Lines (one API-shaped object a line), streamed."""
    return _export(request, "jsonl")


# --- Hosts ----------------------------------------------------------------------------------

HOST_FILTERS = (
    FilterField("token", "Token"),
    FilterField("account", "AWS account"),
    FilterField("region", "Region"),
)
_HOST_COLUMNS = {"token": "token", "account": "account_id", "region": "region"}


@require_safe
@viewer_required
def host_list(request: HttpRequest) -> HttpResponse:
    """Registered hosts, most recently joined first, filtered by token, account or region."""
    params = kept_params(request.GET, _HOST_COLUMNS)
    hosts = Host.objects.filter(**{_HOST_COLUMNS[key]: value for key, value in params.items()})
    page = Paginator(hosts, HOST_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "filters": [
            {"field": field, "value": params.get(field.name, ""), "errors": []}
            for field in HOST_FILTERS
        ],
        "filtered": bool(params),
        "page": page,
        "page_links": page_links(page, params),
    }
    return render(request, "hosts/list.html", context)


@require_safe
@viewer_required
def host_detail(request: HttpRequest, host_id: str) -> HttpResponse:
    """One host and its latest join attempts."""
    host = get_object_or_404(Host, host_id=host_id)
    history = with_labels(
        JoinAttempt.objects.filter(host_id=host_id)
        .only(*ATTEMPT_ROW_FIELDS)
        .order_by("-id")[:HOST_HISTORY_SIZE]
    )
    context = {
        "host": host,
        "history": history,
        "history_size": HOST_HISTORY_SIZE,
        "token_exists": Token.objects.filter(name=host.token).exists(),
    }
    return render(request, "hosts/detail.html", context)


class ForgetHostForm(forms.Form):
    """The reason is required: forgetting a host lets a document of its instance join again,
    and whoever reads the action log later needs to know why that door was reopened."""

    reason = forms.CharField(
        label="Reason",
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text='Recorded in the admin action log, e.g. "instance rebuilt from a new AMI".',
    )


@require_http_methods(["GET", "POST"])
@manager_required
def host_forget(request: HttpRequest, host_id: str) -> HttpResponse:
    """Confirm, with a stated reason, that a host is to be forgotten; POST forgets it."""
    host = get_object_or_404(Host, host_id=host_id)
    form = ForgetHostForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            forget_host(
                host_id,
                actor=request.user,
                reason=form.cleaned_data["reason"],
                via="console",
                remote_addr=source_address(request),
            )
        except HostNotFoundError:
            messages.warning(request, f"Host {host_id} was already forgotten.")
            return redirect("hosts:list")
        messages.success(
            request,
            f"Host {host_id} was forgotten; its instance may join again with a new "
            "identity document.",
        )
        return redirect("hosts:list")
    return render(request, "hosts/forget.html", {"host": host, "form": form})
