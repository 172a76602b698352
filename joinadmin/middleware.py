"""Response headers and error answers that every page and API response shares."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

log = logging.getLogger(__name__)

# Everything the console needs is served from our own origin: no CDN, no inline script.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


class SecurityHeadersMiddleware:
    """Adds a strict Content Security Policy and a Permissions Policy to every response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault(
            "Permissions-Policy", "camera=(), microphone=(), geolocation=()"
        )
        return response


class DatabaseUnavailableMiddleware:
    """Answers 503 with Retry-After when the database cannot be reached, instead of a 500.

    A restarted or unreachable database is an outage to wait out, not a bug: agents retry a 503,
    and Django's connection health checks reconnect by themselves once it is back.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        from django.db import InterfaceError, OperationalError

        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        log.warning("database unavailable: %s", exception)
        message = "the database is unavailable; retry in a few seconds"
        if request.path.startswith("/api/"):
            response: HttpResponse = JsonResponse(
                {"error": "service_unavailable", "message": message}, status=503
            )
        else:
            response = HttpResponse(
                "<!doctype html><title>Unavailable</title><h1>Service unavailable</h1>"
                f"<p>{message}.</p>",
                status=503,
            )
        response["Retry-After"] = "5"
        return response
