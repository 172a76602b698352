"""API-wide behaviour: one error shape, `{"error": CODE, "message": ...}`, for every failure."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.ParseError: "invalid_request",
    exceptions.ValidationError: "invalid_request",
    exceptions.Throttled: "rate_limited",
    exceptions.NotAcceptable: "not_acceptable",
    # Django's own exceptions, which DRF turns into 404 and 403 answers (e.g. get_object()).
    Http404: "not_found",
    DjangoPermissionDenied: "permission_denied",
}


class ApiErrorSerializer(serializers.Serializer):
    """The error shape, for the OpenAPI schema only (answers are built by `error_response`)."""

    error = serializers.CharField(help_text="machine code, e.g. not_found")
    message = serializers.CharField(help_text="what went wrong, in plain words")
    details = serializers.JSONField(
        required=False,
        help_text="the problems found: a list of {document, field, message} for token "
        "resources, an object of field name to messages for other requests",
    )


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), "error")
    detail = response.data
    if isinstance(detail, dict) and "detail" in detail:
        message = str(detail["detail"])
        body: dict[str, Any] = {"error": code, "message": message}
    else:
        body = {"error": code, "message": "the request is not valid", "details": detail}
    response.data = body
    return response


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404 for an address that matches no URL: the API's error shape under /api/, so that a
    client never has to parse the console's HTML page; the console's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"error": "not_found", "message": f"no API resource at {request.path}"}, status=404
        )
    return defaults.page_not_found(request, exception)


def error_response(
    code: str, message: str, http_status: int = status.HTTP_400_BAD_REQUEST, **extra: Any
) -> Response:
    return Response({"error": code, "message": message, **extra}, status=http_status)
