"""The admin action log page: who changed what, when, from where and why.

Read-only for everyone, admins included: the log is only ever appended to, by the services that
make the changes.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_safe

from audit.models import AdminAction
from joinadmin.console import kept_params, page_links, viewer_required
from joins.models import Host
from tokens.models import Token

ACTION_PAGE_SIZE = 50


def _pretty(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _link_live_objects(rows: list[AdminAction]) -> None:
    """Set `object_url` on rows whose token or host still exists (two queries per page), so the
    log never links to a page that would answer 404."""
    names = {row.object_id for row in rows if row.object_type == "token"}
    hosts = {row.object_id for row in rows if row.object_type == "host"}
    live_tokens = set(Token.objects.filter(name__in=names).values_list("name", flat=True))
    live_hosts = set(Host.objects.filter(host_id__in=hosts).values_list("host_id", flat=True))
    for row in rows:
        row.object_url = None  # type: ignore[attr-defined]
        if row.object_type == "token" and row.object_id in live_tokens:
            row.object_url = reverse("tokens:detail", args=[row.object_id])  # type: ignore[attr-defined]
        elif row.object_type == "host" and row.object_id in live_hosts:
            row.object_url = reverse("hosts:detail", args=[row.object_id])  # type: ignore[attr-defined]


@require_safe
@viewer_required
def action_list(request: HttpRequest) -> HttpResponse:
    """Newest first, filtered by action (exact) and actor (part of the user name)."""
    params = kept_params(request.GET, ("action", "actor"))
    actions = AdminAction.objects.all()
    if "action" in params:
        actions = actions.filter(action=params["action"])
    if "actor" in params:
        actions = actions.filter(actor_name__icontains=params["actor"][:150])
    page = Paginator(actions, ACTION_PAGE_SIZE).get_page(request.GET.get("page"))
    rows = list(page.object_list)
    for row in rows:
        row.before_text = _pretty(row.before)  # type: ignore[attr-defined]
        row.after_text = _pretty(row.after)  # type: ignore[attr-defined]
    if rows:
        _link_live_objects(rows)
    known_actions = list(
        AdminAction.objects.order_by("action").values_list("action", flat=True).distinct()
    )
    context = {
        "page": page,
        "rows": rows,
        "action": params.get("action", ""),
        "actor": params.get("actor", ""),
        "known_actions": known_actions,
        "filtered": bool(params),
        "page_links": page_links(page, params),
    }
    return render(request, "audit/actions.html", context)
