"""Console-wide helpers: who may open a page, where a request came from, and paging links.

Every console view is wrapped in `viewer_required` or `manager_required`, so that the answer to
"may this user see or change this" is given once, by `accounts.roles`, for every page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse

from accounts.constants import ADMINS_GROUP, AUDITORS_GROUP
from accounts.roles import can_manage, can_view
from joins.net import client_address

View = Callable[..., HttpResponse]
M = TypeVar("M", bound=Model)

NO_ROLE_MESSAGE = (
    "Your account has no role in this console. Ask an administrator to add it to the "
    f"{AUDITORS_GROUP} group (read only) or the {ADMINS_GROUP} group."
)
READ_ONLY_MESSAGE = (
    f"Your account can read the console but not change it; changes need the {ADMINS_GROUP} group."
)


def viewer_required(view: View) -> View:
    """Anonymous users go to the login page; signed-in users without a role get a 403."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not can_view(request.user):
            raise PermissionDenied(NO_ROLE_MESSAGE)
        return view(request, *args, **kwargs)

    return wrapper


def manager_required(view: View) -> View:
    """Like `viewer_required`, and only admins pass: the form pages answer 403 to auditors even
    on GET, so that a read-only user never fills in a form that could not be saved."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not can_view(request.user):
            raise PermissionDenied(NO_ROLE_MESSAGE)
        if not can_manage(request.user):
            raise PermissionDenied(READ_ONLY_MESSAGE)
        return view(request, *args, **kwargs)

    return wrapper


def source_address(request: HttpRequest) -> str:
    """The address recorded with an admin action (X-Forwarded-For only from trusted proxies)."""
    return client_address(request, settings.TRUSTED_PROXIES)


def query_string(params: Mapping[str, str], **changes: str | int | None) -> str:
    """`?a=1&b=2` of the non-empty `params` with `changes` applied; None drops a key.

    Links that page through a filtered list are built from the filter values only, so that a
    page link never carries another page's cursor along.
    """
    merged: dict[str, str] = {key: value for key, value in params.items() if value}
    for key, value in changes.items():
        if value is None or value == "":
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    return "?" + urlencode(merged) if merged else "?"


def page_links(page: Page, params: Mapping[str, str]) -> dict[str, str | None]:
    """Previous/next links of a numbered page that keep the list's filters."""
    return {
        "previous": query_string(params, page=page.previous_page_number())
        if page.has_previous()
        else None,
        "next": query_string(params, page=page.next_page_number()) if page.has_next() else None,
    }


def kept_params(source: Mapping[str, Any], names: Iterable[str]) -> dict[str, str]:
    """The non-empty values of the named query parameters, in the order of `names`."""
    kept: dict[str, str] = {}
    for name in names:
        value = source.get(name)
        if isinstance(value, str) and value.strip():
            kept[name] = value.strip()
    return kept


def _cursor(value: str | None) -> int | None:
    try:
        number = int(value or "")
    except ValueError:
        return None
    # Outside a 64-bit key a cursor is garbage, and would overflow the database's parameter.
    return number if 0 < number < 2**63 else None


@dataclass(frozen=True)
class KeysetPage:
    """One page of rows, newest first, with the cursors of its neighbours.

    Paging by primary key instead of by page number keeps every page an index range scan: the
    join history never counts its table, and inserts at the head do not shift later pages.
    """

    rows: list[Any]
    newer: int | None  # the `after` cursor of the newer page, if there is one
    older: int | None  # the `before` cursor of the older page, if there is one
    is_first: bool

    def links(self, params: Mapping[str, str]) -> dict[str, str | None]:
        """Query strings of the Newest, Newer and Older links that keep `params`."""
        return {
            "newest": None if self.is_first else query_string(params),
            "newer": None if self.newer is None else query_string(params, after=self.newer),
            "older": None if self.older is None else query_string(params, before=self.older),
        }


def keyset_page(queryset: QuerySet[M], request_params: Mapping[str, Any], size: int) -> KeysetPage:
    """The page of `queryset` that `?before=<id>` or `?after=<id>` asks for (newest first).

    At most two short queries: the page itself (one row more than shown, to learn whether
    another page follows in that direction) and one `EXISTS` for the other direction.
    """
    before = _cursor(request_params.get("before"))
    after = _cursor(request_params.get("after"))
    if after is not None and before is None:
        fetched = list(queryset.filter(pk__gt=after).order_by("pk")[: size + 1])
        has_newer = len(fetched) > size
        rows = fetched[:size][::-1]
        oldest = rows[-1].pk if rows else after + 1
        has_older = queryset.filter(pk__lt=oldest).exists()
        return KeysetPage(
            rows=rows,
            newer=rows[0].pk if has_newer and rows else None,
            older=oldest if has_older else None,
            is_first=not has_newer,
        )
    page_qs = queryset.order_by("-pk")
    if before is not None:
        page_qs = page_qs.filter(pk__lt=before)
    fetched = list(page_qs[: size + 1])
    has_older = len(fetched) > size
    rows = fetched[:size]
    newer = None
    if before is not None:
        newest = rows[0].pk if rows else before - 1
        newer = newest if queryset.filter(pk__gt=newest).exists() else None
    return KeysetPage(
        rows=rows,
        newer=newer,
        older=rows[-1].pk if has_older and rows else None,
        is_first=newer is None,
    )
