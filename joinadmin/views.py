"""Sign-in, sign-out and the dashboard.

The dashboard answers "is joining working right now, and if not, why": a handful of counts and
the latest refusals with their reasons. Every number is one indexed query; nothing here counts
the whole join history.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import views as auth_views
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from joinadmin.console import viewer_required
from joins.constants import OUTCOME_ALLOWED, OUTCOMES
from joins.models import Host, JoinAttempt
from joins.views import ATTEMPT_ROW_FIELDS, with_labels
from tokens.models import Token

RECENT_REFUSALS = 10


class LoginView(auth_views.LoginView):
    """Django's login, on our template; a signed-in user is sent on instead of shown the form."""

    template_name = "registration/login.html"
    redirect_authenticated_user = True


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


@require_safe
@viewer_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Token, host and last-24h join counts, and the latest refused attempts with their reason."""
    now = timezone.now()
    since = now - timedelta(hours=24)
    by_outcome = dict.fromkeys(OUTCOMES, 0)
    by_outcome.update(
        JoinAttempt.objects.filter(time__gte=since)
        .order_by()
        .values_list("outcome")
        .annotate(n=Count("id"))
    )
    refusals = with_labels(latest_refusals(RECENT_REFUSALS))
    context = {
        "tokens_active": Token.objects.active(now).count(),
        "tokens_expired": Token.objects.expired(now).count(),
        "hosts": Host.objects.count(),
        "attempts": by_outcome,
        "attempts_total": sum(by_outcome.values()),
        "since": since,
        "refusals": refusals,
    }
    return render(request, "dashboard.html", context)
