"""`GET /api/v1/ca/crl` (DER, `application/pkix-crl`) and `/api/v1/ca/crl.pem`: the host CA's
certificate revocation list; `GET /api/v1/ca/ssh-krl`: the same revocations for SSH clients, as
an OpenSSH key revocation list (`RevokedHostKeys` in ssh_config).

Public, like every CRL: relying parties (TLS servers checking host certificates) fetch it
without an account, and it reveals only serial numbers and revocation dates. The list is signed
by the active host CA (see `joins.revocation`), so a tampered copy fails verification.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.utils.http import http_date
from django.views.decorators.http import require_safe

from joins.crl import crl_pem
from joins.revocation import current_crl, current_krl

#: Clients and caches may keep a list this long: a revocation reaches them within about this
#: much time on top of the list's own re-signing interval.
MAX_AGE_SECONDS = 300


def _public(body: bytes | str, content_type: str) -> HttpResponse:
    """A response any client and cache may keep for `MAX_AGE_SECONDS`."""
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = f"public, max-age={MAX_AGE_SECONDS}"
    return response


def _respond(body: bytes | str, content_type: str, crl: object) -> HttpResponse:
    response = _public(body, content_type)
    response["Last-Modified"] = http_date(crl.this_update.timestamp())  # type: ignore[attr-defined]
    response["X-CRL-Number"] = str(crl.number)  # type: ignore[attr-defined]
    return response


@require_safe
def crl_der(request: HttpRequest) -> HttpResponse:
    """The CRL in DER, as RFC 5280 distribution points serve it."""
    crl = current_crl()
    return _respond(bytes(crl.der), "application/pkix-crl", crl)


@require_safe
def crl_pem_view(request: HttpRequest) -> HttpResponse:
    """The same CRL in PEM (`-----BEGIN X509 CRL-----`), for tools that want text."""
    crl = current_crl()
    return _respond(crl_pem(bytes(crl.der)), "application/x-pem-file", crl)


@require_safe
def ssh_krl(request: HttpRequest) -> HttpResponse:
    """The SSH host certificates' KRL (binary, OpenSSH's format; `ssh-keygen -Q` reads it)."""
    response = _public(current_krl(), "application/octet-stream")
    response["Content-Disposition"] = 'attachment; filename="joinadmin-hosts.krl"'
    return response
