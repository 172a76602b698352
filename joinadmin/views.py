"""Sign-in, sign-out and the dashboard.

The dashboard answers "is joining working right now, and if not, why": a handful of counts,
charts of the chosen range (`?range=24h|7d|30d`), the state of the audit seals and the latest
refusals with their reasons. Every number is one indexed query over a bounded time range or a
short backward index scan; nothing here counts the whole join history.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_safe

from audit.digests import SealFormatError
from audit.models import Seal
from audit.services import latest_seal, latest_verification, verification_is_authentic
from joinadmin.console import query_string, viewer_required
from joinadmin.security import ThrottledAuthenticationForm, refusal_status
from joins import charts, stats
from joins.constants import ERROR_OUTCOME, OUTCOME_ALLOWED, OUTCOME_DENIED, OUTCOMES
from joins.models import Host, JoinAttempt
from joins.trust import certificate_store
from joins.trusted_certs import attention_needed
from joins.views import ATTEMPT_ROW_FIELDS, error_label, with_labels
from tokens.models import Token

log = logging.getLogger(__name__)

RECENT_REFUSALS = 10
OUTCOME_LABELS = {"allowed": "Allowed", "denied": "Denied", "error": "Error"}
UNNAMED = "(no token)"
NO_CODE = "(no code)"


class LoginView(auth_views.LoginView):
    """Django's login, on our template; a signed-in user is sent on instead of shown the form.

    The form is throttled (`joinadmin.security`): a locked account name or address gets the
    form back with the reason, as 429 with Retry-After, so that scripts can tell too.
    """

    template_name = "registration/login.html"
    redirect_authenticated_user = True
    authentication_form = ThrottledAuthenticationForm

    def form_invalid(self, form: ThrottledAuthenticationForm) -> HttpResponse:
        response = super().form_invalid(form)
        response.status_code, headers = refusal_status(form)
        for name, value in headers.items():
            response[name] = value
        return response


class LogoutView(auth_views.LogoutView):
    """POST-only sign-out (Django's own): a link or an image tag cannot sign a user out."""


def latest_refusals(limit: int) -> list[JoinAttempt]:
    """The newest denied or failed attempts.

    One query per refusing outcome, each a backward scan of the (outcome, id) index, merged
    here: `outcome != 'allowed'` would walk the whole history when refusals are rare.
    """
    rows: list[JoinAttempt] = []
    for outcome in OUTCOMES:
        if outcome == OUTCOME_ALLOWED:
            continue
        rows.extend(
            JoinAttempt.objects.filter(outcome=outcome)
            .only(*ATTEMPT_ROW_FIELDS, "reason")
            .order_by("-id")[:limit]
        )
    return sorted(rows, key=lambda row: row.pk, reverse=True)[:limit]


def _filter_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def history_link(since: datetime, until: datetime, **filters: str) -> str:
    """The join history filtered to what a chart shows, over the chart's time range."""
    params = {**filters, "since": _filter_time(since), "until": _filter_time(until)}
    return reverse("joins:list") + query_string(params)


def overview_charts(stats_range: stats.StatsRange, timeline: stats.Timeline) -> dict[str, Any]:
    """The three charts of the range (the timeline given, two more grouped queries), as SVG,
    with the rows of the tables that give their numbers as links into the history."""
    win = timeline.window
    refusals = stats.top_refusals(win)
    tokens = stats.top_tokens(win)
    per = stats_range.step_label
    totals = timeline.totals
    timeline_svg = charts.timeline_chart(
        title=f"Join attempts per {per}, last {stats_range.label}",
        starts=win.starts,
        step=win.step,
        series=[charts.Series(o, OUTCOME_LABELS[o], timeline.counts[o]) for o in OUTCOMES],
        y_title=f"Attempts per {per}",
        summary=(
            f"Join attempts per {per} over the last {stats_range.label}, stacked by outcome: "
            + ", ".join(f"{charts.count(totals[o])} {o}" for o in OUTCOMES)
            + "."
        ),
    )
    reason_rows = [
        {
            "code": code,
            "label": error_label(code) if code else NO_CODE,
            "count": n,
            "href": history_link(win.since, win.until, error=code) if code else None,
        }
        for code, n in refusals
    ]
    reasons_svg = charts.bar_chart(
        title=f"Top refusal reasons, last {stats_range.label}",
        bars=[
            charts.Bar(
                row["label"],
                [(ERROR_OUTCOME.get(row["code"], OUTCOME_DENIED), row["count"])],
                detail=row["code"],
            )
            for row in reason_rows
        ],
        legend=[(OUTCOME_DENIED, "Denied"), ("error", "Error (our side or AWS)")],
    )
    token_rows = [
        {
            "name": t.token or UNNAMED,
            "counts": t.counts,
            "total": t.total,
            "href": history_link(win.since, win.until, token=t.token) if t.token else None,
        }
        for t in tokens
    ]
    tokens_svg = charts.bar_chart(
        title=f"Top tokens by join attempts, last {stats_range.label}",
        bars=[
            charts.Bar(row["name"], [(o, row["counts"][o]) for o in OUTCOMES]) for row in token_rows
        ],
        legend=[(o, OUTCOME_LABELS[o]) for o in OUTCOMES],
    )
    return {
        "range": stats_range,
        "since": win.since,
        "until": win.until,
        "total": timeline.total,
        "history_href": history_link(win.since, win.until),
        # The chart module escapes every text it writes.
        "timeline_svg": mark_safe(timeline_svg),  # noqa: S308
        "reasons_svg": mark_safe(reasons_svg) if reason_rows else "",  # noqa: S308
        "reasons": reason_rows,
        "tokens_svg": mark_safe(tokens_svg) if token_rows else "",  # noqa: S308
        "tokens": token_rows,
    }


def range_links(current: stats.StatsRange) -> list[dict[str, Any]]:
    return [
        {"label": r.label, "href": f"?range={r.key}", "current": r.key == current.key}
        for r in stats.RANGES.values()
    ]


def audit_integrity() -> dict[str, Any] | None:
    """The newest seal of each audited table and the newest `audit verify` run, for the
    dashboard's card (three short queries); None when nothing was ever sealed or verified."""
    seals = [
        {"stream": label, "seal": seal}
        for stream, label in Seal.STREAMS
        if (seal := latest_seal(stream)) is not None
    ]
    verification = latest_verification()
    if not seals and verification is None:
        return None
    authentic = None
    if verification is not None:
        try:
            authentic = verification_is_authentic(verification)
        except SealFormatError:  # no usable key on this server: say so rather than guess
            authentic = False
    return {"seals": seals, "verification": verification, "authentic": authentic}


def certificate_warnings(now: datetime) -> list[tuple[str, str, datetime]]:
    """AWS certificates in use that expire within 90 days or have expired (region, status,
    not-after); empty, with the reason logged, when the certificates cannot be loaded at all,
    which the trusted-certificates page explains."""
    try:
        return attention_needed(certificate_store(), now)
    except ValueError:
        log.exception("AWS certificates cannot be loaded")
        return []


@require_safe
@viewer_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Token, host and last-24h join counts, charts of the chosen range, the state of the
    audit seals, and the latest refused attempts with their reason."""
    now = timezone.now()
    stats_range = stats.chosen_range(request.GET.get("range"))
    # One query of hourly counts serves both the 24-hour figures and the chosen range's chart,
    # so that the figures and the 24-hour chart always add up to the same numbers.
    day = stats.window(stats.RANGES["24h"], now)
    win = stats.window(stats_range, now)
    hourly = stats.hourly_counts(min(day.since, win.since), max(day.until, win.until))
    by_outcome = stats.fold(hourly, day).totals
    since = day.since
    refusals = with_labels(latest_refusals(RECENT_REFUSALS))
    context = {
        "tokens_active": Token.objects.active(now).count(),
        "tokens_expired": Token.objects.expired(now).count(),
        "hosts": Host.objects.count(),
        "attempts": by_outcome,
        "attempts_total": sum(by_outcome.values()),
        "since": since,
        "refusals": refusals,
        "charts": overview_charts(stats_range, stats.fold(hourly, win)),
        "ranges": range_links(stats_range),
        "integrity": audit_integrity(),
        "certificate_warnings": certificate_warnings(now),
    }
    return render(request, "dashboard.html", context)
