"""The policy tester page, `/tools/policy-tester/` (auditors and admins).

Pick a token, paste a document or give a join attempt's number, optionally a time, a source
address and "Ask AWS"; the page shows what `joins.policy.evaluate_policy` found. The form is
POSTed, never sent as a query string, so pasted documents stay out of URLs, browser history and
access logs. `?attempt=N` only pre-fills the form (the attempt page links here).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from joinadmin.console import viewer_required
from joins import ratelimit
from joins.constants import ERROR_CODES
from joins.iid import MAX_DOCUMENT_CHARS
from joins.models import JoinAttempt
from joins.policy import FAIL, PASS, PolicyReport, evaluate_policy
from joins.views import CHECK_LABELS
from tokens.models import Token

_AT_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")
#: DescribeInstances calls one user may make from the tester: the account's API budget is the
#: one joins spend, and a read-only user must not be able to use it up.
AWS_LOOKUP_RATE = ratelimit.Rate(count=30, period=60)


def check_label(name: str) -> str:
    """The console's wording of a check; a condition check is labelled by its field."""
    if name in CHECK_LABELS:
        return CHECK_LABELS[name]
    if name.startswith("condition:"):
        return "Condition " + name.removeprefix("condition:")
    return name


class PolicyTesterForm(forms.Form):
    """A token, then either a document or a join attempt; the rest is optional."""

    token = forms.ChoiceField(label="Token", help_text="The token whose rules are tested.")
    document = forms.CharField(
        label="Identity document",
        required=False,
        max_length=MAX_DOCUMENT_CHARS,
        strip=True,
        help_text="The rsa2048 document as the agent sends it (base64, PEM armour optional), "
        "from http://169.254.169.254/latest/dynamic/instance-identity/rsa2048.",
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false", "class": "code"}),
    )
    attempt = forms.IntegerField(
        label="Or a join attempt #",
        required=False,
        min_value=1,
        max_value=2**63 - 1,
        help_text="Re-check the document recorded with this attempt instead of a pasted one.",
    )
    at = forms.DateTimeField(
        label="At (UTC)",
        required=False,
        input_formats=_AT_FORMATS,
        help_text="Check the document's age and the token's expiry at this time. Empty: now, "
        "or for a join attempt the time it was received.",
        widget=forms.DateTimeInput(
            attrs={"type": "datetime-local", "step": "1"}, format="%Y-%m-%dT%H:%M:%S"
        ),
    )
    source_ip = forms.GenericIPAddressField(
        label="Agent's source address",
        required=False,
        help_text="Only for a rule with require_source_ip_match. For a join attempt, empty "
        "means the address it came from.",
    )
    ask_aws = forms.BooleanField(
        label="Ask AWS",
        required=False,
        help_text="Also call DescribeInstances with the matched rule's role, and check the "
        "rule's instance conditions on the answer. Nothing is registered either way.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = list(Token.objects.order_by("name").values_list("name", flat=True))
        self.fields["token"].choices = [("", "Choose a token")] + [(n, n) for n in names]

    def clean_at(self) -> datetime | None:
        value = self.cleaned_data.get("at")
        if value is None:
            return None
        # The field is labelled UTC: read a naive value as UTC whatever the server's zone.
        return value.replace(tzinfo=UTC) if timezone.is_naive(value) else value.astimezone(UTC)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        document, attempt_id = data.get("document"), data.get("attempt")
        if document and attempt_id:
            raise forms.ValidationError(
                "Give either a document or a join attempt number, not both."
            )
        if not document and not attempt_id and "attempt" not in self.errors:
            raise forms.ValidationError("Paste a document or give a join attempt number.")
        if attempt_id:
            attempt = JoinAttempt.objects.filter(pk=attempt_id).first()
            if attempt is None:
                self.add_error("attempt", f"There is no join attempt #{attempt_id}.")
            data["attempt_row"] = attempt
        return data


def _initial(request: HttpRequest) -> dict[str, Any]:
    """Pre-fill from `?attempt=N`: its number, its token (if it still exists) and its time."""
    try:
        attempt_id = int(request.GET.get("attempt", ""))
    except ValueError:
        return {}
    attempt = JoinAttempt.objects.filter(pk=attempt_id).only("id", "token", "time").first()
    if attempt is None:
        return {}
    initial: dict[str, Any] = {"attempt": attempt.pk, "at": attempt.time.astimezone(UTC)}
    if Token.objects.filter(name=attempt.token).exists():
        initial["token"] = attempt.token
    return initial


def _rows(report: PolicyReport) -> list[dict[str, Any]]:
    return [
        {
            "name": check.name,
            "label": check_label(check.name),
            "state": check.state,
            "detail": check.detail,
            "code": check.code,
            "code_label": ERROR_CODES.get(check.code, (0, ""))[1] if check.code else "",
        }
        for check in report.checks
    ]


def _report(request: HttpRequest, form: PolicyTesterForm) -> PolicyReport | None:
    """Run the tester for a valid form; None (with the reason on the form) otherwise."""
    if not form.is_valid():
        return None
    data = form.cleaned_data
    row = Token.objects.filter(name=data["token"]).first()
    if row is None:
        form.add_error("token", "This token was deleted meanwhile; choose another.")
        return None
    if data["ask_aws"]:
        wait = ratelimit.hit("policy-tester-aws", str(request.user.pk), AWS_LOOKUP_RATE)
        if wait:
            form.add_error(
                "ask_aws",
                f"Too many AWS lookups from the tester; try again in {wait} seconds, or test "
                "without asking AWS.",
            )
            return None
    attempt = data.get("attempt_row")
    at = data["at"] or (attempt.time if attempt is not None else timezone.now())
    source_ip = data["source_ip"] or (attempt.remote_addr if attempt is not None else "")
    return evaluate_policy(
        token=row.to_resource(),
        at=at,
        document_text=None if attempt is not None else data["document"],
        attempt=attempt,
        ask_aws=data["ask_aws"],
        source_addr=source_ip or "",
    )


@require_http_methods(["GET", "POST"])
@viewer_required
def policy_tester(request: HttpRequest) -> HttpResponse:
    """The form; on POST, the report of `evaluate_policy` under it."""
    report = None
    if request.method == "POST":
        form = PolicyTesterForm(request.POST)
        report = _report(request, form)
    else:
        form = PolicyTesterForm(initial=_initial(request))
    context: dict[str, Any] = {"form": form, "report": report}
    if report is not None:
        doc = report.document
        context.update(
            checks=_rows(report),
            failed=report.first_failure,
            passed_all=report.ok and report.complete,
            document_fields=sorted(
                (str(k), "" if v is None else str(v)) for k, v in (doc.raw if doc else {}).items()
            ),
            pass_state=PASS,
            fail_state=FAIL,
        )
    return render(request, "tools/policy_tester.html", context)
