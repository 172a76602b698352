"""Trusted AWS certificates: `/tools/trusted-certificates/` and its add, detail and remove pages.

Everyone with a role reads; only admins change. Adding a certificate for a region that already
has one (built in, from the directory, or added earlier) goes through a confirmation page that
shows the fingerprints before and after; the certificate travels to that page as base64 DER
(no line breaks to lose in a hidden field), is validated again when confirmed, and must still
have the fingerprint that was shown.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_safe

from joinadmin.console import manager_required, source_address, viewer_required
from joins.cert_inspect import (
    EXPIRY_WARNING_DAYS,
    MAX_PEM_BYTES,
    CertificateRejected,
    pem_of,
)
from joins.iid import is_region_name
from joins.trusted_certs import (
    PRECEDENCE,
    SOURCE_DATABASE,
    CertificateChange,
    CertificateChangeRefused,
    apply_change,
    plan_change,
    region_certificates,
    regions,
    remove_certificate,
)


class CertificateForm(forms.Form):
    """A region and its certificate, uploaded as a file or pasted, and why."""

    region = forms.CharField(
        label="Region",
        max_length=40,
        help_text="As the identity document names it, e.g. us-west-2.",
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off"}),
    )
    pem_file = forms.FileField(
        label="Certificate file",
        required=False,
        help_text="The PEM file AWS publishes for the region under RSA-2048 "
        "(-----BEGIN CERTIFICATE-----).",
    )
    pem_text = forms.CharField(
        label="Or paste it",
        required=False,
        max_length=MAX_PEM_BYTES,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false", "class": "code"}),
    )
    reason = forms.CharField(
        label="Reason",
        max_length=1000,
        help_text='Recorded in the admin action log, e.g. "AWS rotated the ap-east-2 '
        'certificate (announcement of 2026-05-01)".',
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    def clean_region(self) -> str:
        region = self.cleaned_data["region"].strip()
        if not is_region_name(region):
            raise forms.ValidationError(
                "Not an AWS region name; use the document's form, e.g. us-west-2."
            )
        return region

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        upload = data.get("pem_file")
        text = data.get("pem_text") or ""
        if upload and text.strip():
            raise forms.ValidationError("Upload a file or paste the certificate, not both.")
        if upload:
            if upload.size > MAX_PEM_BYTES:
                self.add_error("pem_file", "The file is too large for a certificate.")
                return data
            data["pem"] = upload.read()
        elif text.strip():
            data["pem"] = text
        else:
            raise forms.ValidationError("Upload the certificate file or paste it.")
        return data


class ConfirmForm(forms.Form):
    """The confirmation page's hidden fields."""

    region = forms.CharField(max_length=40)
    certificate = forms.CharField(max_length=MAX_PEM_BYTES * 2)
    fingerprint = forms.CharField(max_length=200)
    reason = forms.CharField(max_length=1000)


class RemoveForm(forms.Form):
    reason = forms.CharField(
        label="Reason",
        max_length=1000,
        help_text="Recorded in the admin action log.",
        widget=forms.Textarea(attrs={"rows": 2}),
    )


def _row(item: Any, now: Any) -> dict[str, Any]:
    top = item.top
    return {
        "region": item.region,
        "entry": top,
        "facts": top.facts,
        "status": top.status(now),
        "days_left": top.facts.days_left(now) if top.facts else None,
        "shadowed": item.shadowed,
    }


@require_safe
@viewer_required
def certificate_list(request: HttpRequest) -> HttpResponse:
    """Every region with a certificate, the one in use first, and what needs attention."""
    now = timezone.now()
    problem = ""
    try:
        items = regions(settings.IID_CERTS_DIR)
    except ValueError as exc:
        # The verifier fails the same way: say so instead of an error page.
        items, problem = [], str(exc)
    rows = [_row(item, now) for item in items]
    context = {
        "rows": rows,
        "problem": problem,
        "attention": [row for row in rows if row["status"] != "ok"],
        "warn_days": EXPIRY_WARNING_DAYS,
        "counts": {
            source.replace("-", "_"): sum(1 for row in rows if row["entry"].source == source)
            for source in PRECEDENCE
        },
    }
    return render(request, "tools/trusted_certificates.html", context)


def _region_or_404(region: str) -> Any:
    if not is_region_name(region):
        raise Http404("no such region")
    try:
        item = region_certificates(region)
    except ValueError as exc:
        raise Http404(str(exc)) from None
    if item is None:
        raise Http404("no certificate for this region")
    return item


@require_safe
@viewer_required
def certificate_detail(request: HttpRequest, region: str) -> HttpResponse:
    """Every layer of one region, highest precedence first, with its PEM."""
    item = _region_or_404(region)
    now = timezone.now()
    layers = [
        {"entry": entry, "facts": entry.facts, "status": entry.status(now), "in_use": index == 0}
        for index, entry in enumerate(item.layers)
    ]
    return render(
        request,
        "tools/trusted_certificate_detail.html",
        {
            "region": region,
            "layers": layers,
            "has_database": any(entry.source == SOURCE_DATABASE for entry in item.layers),
        },
    )


@require_safe
@viewer_required
def certificate_pem(request: HttpRequest, region: str, source: str) -> HttpResponse:
    """One layer's certificate as a PEM file (to compare, or to put back a built-in one)."""
    item = _region_or_404(region)
    for entry in item.layers:
        if entry.source == source and entry.certificate is not None:
            response = HttpResponse(entry.pem, content_type="application/x-pem-file")
            response["Content-Disposition"] = f'attachment; filename="{region}-{source}.pem"'
            return response
    raise Http404("no such certificate")


def _encode(certificate: x509.Certificate) -> str:
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()


def _apply(request: HttpRequest, change: CertificateChange, reason: str) -> HttpResponse:
    apply_change(
        change,
        actor=request.user,
        reason=reason,
        via="console",
        remote_addr=source_address(request),
    )
    what = "replaced" if change.replaces else "added"
    messages.success(
        request,
        f"The certificate for {change.region} was {what} "
        f"(SHA-256 {change.facts.fingerprint}). Every server uses it within "
        f"{settings.IID_CERTS_REFRESH_SECONDS:g} seconds.",
    )
    return redirect("tools:trusted-certificate", region=change.region)


def _confirm_page(request: HttpRequest, change: CertificateChange, reason: str) -> HttpResponse:
    confirm = ConfirmForm(
        initial={
            "region": change.region,
            "certificate": _encode(change.certificate),
            "fingerprint": change.facts.fingerprint,
            "reason": reason,
        }
    )
    return render(
        request,
        "tools/trusted_certificate_confirm.html",
        {
            "change": change,
            "confirm": confirm,
            "reason": reason,
            "now": timezone.now(),
        },
    )


@require_http_methods(["GET", "POST"])
@manager_required
def certificate_add(request: HttpRequest) -> HttpResponse:
    """Add or replace a region's certificate; replacing asks for confirmation first."""
    if request.method == "POST" and request.POST.get("confirmed") == "yes":
        return _confirmed(request)
    initial = {"region": request.GET.get("region", "")}
    form = CertificateForm(request.POST or None, request.FILES or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            change = plan_change(data["region"], data["pem"])
        except (CertificateRejected, CertificateChangeRefused) as exc:
            form.add_error(None, str(exc))
        else:
            if change.replaces:
                return _confirm_page(request, change, data["reason"])
            return _apply(request, change, data["reason"])
    return render(request, "tools/trusted_certificate_form.html", {"form": form})


def _start_again(request: HttpRequest, message: str) -> HttpResponse:
    form = CertificateForm(initial={"region": request.POST.get("region", "")})
    return render(
        request, "tools/trusted_certificate_form.html", {"form": form, "start_again": message}
    )


def _confirmed(request: HttpRequest) -> HttpResponse:
    confirm = ConfirmForm(request.POST)
    if not confirm.is_valid():
        return _start_again(request, "The confirmation was incomplete; start again.")
    data = confirm.cleaned_data
    try:
        der = base64.b64decode(data["certificate"], validate=True)
        pem = pem_of(x509.load_der_x509_certificate(der))
        change = plan_change(data["region"], pem)
    except (binascii.Error, ValueError, CertificateChangeRefused) as exc:
        message = exc.message if isinstance(exc, CertificateChangeRefused) else str(exc)
        return _start_again(request, f"The certificate could not be added: {message}")
    if change.facts.fingerprint != data["fingerprint"]:
        return _start_again(
            request, "The certificate differs from the one you confirmed; start again."
        )
    return _apply(request, change, data["reason"])


@require_http_methods(["GET", "POST"])
@manager_required
def certificate_remove(request: HttpRequest, region: str) -> HttpResponse:
    """Remove the certificate added in the console; the directory or built-in one takes over."""
    item = _region_or_404(region)
    if item.top.source != SOURCE_DATABASE:
        messages.warning(request, f"No certificate for {region} was added in the console.")
        return redirect("tools:trusted-certificate", region=region)
    form = RemoveForm(request.POST or None)
    following = item.shadowed[0] if item.shadowed else None
    if request.method == "POST" and form.is_valid():
        try:
            after = remove_certificate(
                region,
                actor=request.user,
                reason=form.cleaned_data["reason"],
                via="console",
                remote_addr=source_address(request),
            )
        except CertificateChangeRefused as exc:
            messages.warning(request, exc.message)
            return redirect("tools:trusted-certificates")
        if after is None:
            messages.warning(
                request,
                f"The certificate for {region} was removed; no other "
                f"certificate is known for it, so {region} cannot join.",
            )
            return redirect("tools:trusted-certificates")
        messages.success(
            request,
            f"The certificate for {region} was removed; the "
            f"{after.source_label.lower()} one is used again.",
        )
        return redirect("tools:trusted-certificate", region=region)
    return render(
        request,
        "tools/trusted_certificate_remove.html",
        {"region": region, "current": item.top, "following": following, "form": form},
    )
