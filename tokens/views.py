"""Console pages of EC2 join tokens: list, detail, download, create, edit, delete and upload.

Each page turns the request into one call of `tokens.services` (or a read of the model) and the
result into a page; what makes a token valid is decided by `tokens.resource`, what a change does
by `tokens.services`, which also records it in the admin action log.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_safe

from joinadmin.console import (
    manager_required,
    page_links,
    query_string,
    source_address,
    viewer_required,
)
from joins.models import Host, JoinAttempt
from joins.views import ATTEMPT_ROW_FIELDS, with_labels
from tokens.codecs import EXPORT_FORMATS
from tokens.forms import ApplyUploadForm, TokenEditor, UploadForm
from tokens.models import Token
from tokens.resource import ResourceError, TokenResource, validate_resource
from tokens.services import (
    TokenExistsError,
    TokenNotFoundError,
    delete_token,
    import_tokens,
    plan_import,
    save_token,
)

TOKEN_PAGE_SIZE = 50
RECENT_ATTEMPTS = 10
STATUSES = ("active", "expired")
#: Download buttons, in the order shown, with their labels.
DOWNLOADS = (("yaml", "YAML"), ("json", "JSON"), ("k8s", "Kubernetes"), ("terraform", "Terraform"))


def rules_summary(allow: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The accounts and regions a token's rules name, for one table cell."""
    accounts: list[str] = []
    regions: list[str] = []
    for rule in allow:
        account = rule.get("aws_account") or ""
        if account and account not in accounts:
            accounts.append(account)
        for region in rule.get("aws_regions") or ():
            if region not in regions:
                regions.append(region)
    return {"accounts": accounts, "regions": regions}


@require_safe
@viewer_required
def token_list(request: HttpRequest) -> HttpResponse:
    """Tokens by name, with a search box (`?q=`) and a status filter (`?status=`)."""
    now = timezone.now()
    q = request.GET.get("q", "").strip()[:200]
    status = request.GET.get("status", "")
    status = status if status in STATUSES else ""
    tokens = Token.objects.search(q)
    counts = {"active": tokens.active(now).count(), "expired": tokens.expired(now).count()}
    if status == "active":
        tokens = tokens.active(now)
    elif status == "expired":
        tokens = tokens.expired(now)
    page = Paginator(tokens, TOKEN_PAGE_SIZE).get_page(request.GET.get("page"))
    for token in page:
        token.summary = rules_summary(token.allow)  # type: ignore[attr-defined]
    params = {"q": q, "status": status}
    context = {
        "page": page,
        "q": q,
        "status": status,
        "counts": counts,
        "total": counts["active"] + counts["expired"],
        "filtered": bool(q or status),
        "page_links": page_links(page, params),
        "status_links": [
            ("", "All", query_string(params, status=None)),
            *((s, s.capitalize(), query_string(params, status=s)) for s in STATUSES),
        ],
    }
    return render(request, "tokens/list.html", context)


@require_safe
@viewer_required
def token_detail(request: HttpRequest, name: str) -> HttpResponse:
    """Every field of a token, its rules, its latest join attempts and the download buttons."""
    token = get_object_or_404(Token.objects.select_related("created_by", "updated_by"), name=name)
    attempts = with_labels(
        JoinAttempt.objects.filter(token=name)
        .only(*ATTEMPT_ROW_FIELDS)
        .order_by("-id")[:RECENT_ATTEMPTS]
    )
    context = {
        "token": token,
        "labels": sorted((token.labels or {}).items()),
        "attempts": attempts,
        "hosts": Host.objects.filter(token=name).count(),
        "downloads": DOWNLOADS,
    }
    return render(request, "tokens/detail.html", context)


@require_safe
@viewer_required
def token_download(request: HttpRequest, name: str, fmt: str) -> HttpResponse:
    """The token as a file in one of the export formats (tctl YAML, JSON, Kubernetes, Terraform)."""
    if fmt not in EXPORT_FORMATS:
        raise Http404("unknown format")
    token = get_object_or_404(Token, name=name)
    media_type, extension, render_text = EXPORT_FORMATS[fmt]
    response = HttpResponse(
        render_text(token.to_resource()), content_type=f"{media_type}; charset=utf-8"
    )
    # Valid names are already header-safe; the substitution guards rows written some other way.
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", token.name) or "token"
    response["Content-Disposition"] = f'attachment; filename="{filename}.{extension}"'
    return response


def _editor_page(request: HttpRequest, token: Token | None) -> HttpResponse:
    """The create and edit pages: one form, three buttons (save, add a rule row, cancel)."""
    editor: TokenEditor
    if request.method != "POST":
        editor = TokenEditor(token=token)
    elif request.POST.get("action") == "add_rule":
        editor = TokenEditor.with_new_row(request.POST, token=token)
    else:
        editor = TokenEditor(request.POST, token=token)
        if editor.is_valid():
            response = _save(request, editor, token)
            if response is not None:
                return response
    return render(
        request, "tokens/form.html", {"editor": editor, "token": token, "editing": bool(token)}
    )


def _save(request: HttpRequest, editor: TokenEditor, token: Token | None) -> HttpResponse | None:
    """Validate and save; None when the page must show the errors."""
    try:
        resource: TokenResource = validate_resource(editor.resource_object())
        saved, created = save_token(
            resource,
            actor=request.user,
            force=token is not None,
            expected_name=token.name if token is not None else None,
            via="console",
            remote_addr=source_address(request),
        )
    except ResourceError as exc:
        editor.attach_errors(exc.details)
        return None
    except TokenExistsError:
        editor.form.add_error(
            "name", "A token with this name already exists; choose another name or edit that one."
        )
        return None
    messages.success(request, f"Token {saved.name} was {'created' if created else 'saved'}.")
    return redirect("tokens:detail", name=saved.name)


@require_http_methods(["GET", "POST"])
@manager_required
def token_create(request: HttpRequest) -> HttpResponse:
    """A new token from the form."""
    return _editor_page(request, None)


@require_http_methods(["GET", "POST"])
@manager_required
def token_edit(request: HttpRequest, name: str) -> HttpResponse:
    """Change every field of a token except its name."""
    return _editor_page(request, get_object_or_404(Token, name=name))


@require_http_methods(["GET", "POST"])
@manager_required
def token_delete(request: HttpRequest, name: str) -> HttpResponse:
    """GET asks for confirmation, naming what depends on the token; POST deletes it."""
    token = get_object_or_404(Token, name=name)
    if request.method == "POST":
        try:
            delete_token(
                name, actor=request.user, via="console", remote_addr=source_address(request)
            )
        except TokenNotFoundError:
            messages.warning(request, f"Token {name} was already deleted.")
        else:
            messages.success(request, f"Token {name} was deleted.")
        return redirect("tokens:list")
    context = {"token": token, "hosts": Host.objects.filter(token=name).count()}
    return render(request, "tokens/delete.html", context)


@require_http_methods(["GET", "POST"])
@manager_required
def token_upload(request: HttpRequest) -> HttpResponse:
    """Import token documents in two steps: Preview (parse, validate, compare) then Apply.

    Apply posts back the exact text that was previewed, so what is applied is what was shown.
    """
    action = request.POST.get("action") if request.method == "POST" else None
    if action == "apply":
        return _apply_upload(request)
    upload = UploadForm(request.POST or None, request.FILES or None)
    context: dict[str, Any] = {"upload": upload}
    if action == "preview" and upload.is_valid():
        content = upload.cleaned_data["content"]
        try:
            plan = plan_import(content)
        except ResourceError as exc:
            context["errors"] = exc.details
            context["upload"] = UploadForm(
                initial={"text": content, "replace": upload.cleaned_data["replace"]}
            )
        else:
            context["plan"] = _plan_rows(plan.resources, set(plan.replaces))
            context["replaces"] = plan.replaces
            context["apply"] = ApplyUploadForm(
                initial={"content": content, "replace": upload.cleaned_data["replace"]}
            )
    return render(request, "tokens/upload.html", context)


def _plan_rows(resources: list[TokenResource], replaces: set[str]) -> list[dict[str, Any]]:
    return [
        {
            "resource": resource,
            "replace": resource.name in replaces,
            "summary": rules_summary([rule.to_dict() for rule in resource.allow]),
        }
        for resource in resources
    ]


def _apply_upload(request: HttpRequest) -> HttpResponse:
    form = ApplyUploadForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The upload was lost; choose the file or paste the text again.")
        return redirect("tokens:upload")
    content = form.cleaned_data["content"]
    context: dict[str, Any] = {
        "upload": UploadForm(initial={"text": content, "replace": form.cleaned_data["replace"]})
    }
    try:
        plan = import_tokens(
            content,
            actor=request.user,
            force=form.cleaned_data["replace"],
            via="console",
            remote_addr=source_address(request),
        )
    except ResourceError as exc:
        context["errors"] = exc.details
    except TokenExistsError as exc:
        messages.error(
            request,
            f"Nothing was imported: {', '.join(exc.names)} already "
            f'{"exists" if len(exc.names) == 1 else "exist"}. Tick "Replace tokens that '
            'already exist" to overwrite them.',
        )
    else:
        parts = []
        if plan.creates:
            parts.append(f"created {', '.join(plan.creates)}")
        if plan.replaces:
            parts.append(f"replaced {', '.join(plan.replaces)}")
        messages.success(request, f"Imported {len(plan.resources)} token(s): {'; '.join(parts)}.")
        return redirect("tokens:list")
    return render(request, "tokens/upload.html", context)
