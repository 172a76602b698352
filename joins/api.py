"""Join endpoint, join history, hosts and CA over the API."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import ReadForAuditorsWriteForAdmins
from joinadmin.api import ApiErrorSerializer, error_response
from joins.authority import public_ca_material
from joins.filters import JoinAttemptFilter
from joins.host_services import HostNotFoundError, forget_host
from joins.models import Host, JoinAttempt
from joins.net import client_address
from joins.rejoin_service import CHALLENGE_MAX_BODY_BYTES, issue_rejoin_challenge
from joins.serializers import (
    ForgetHostSerializer,
    HostSerializer,
    JoinAttemptDetailSerializer,
    JoinAttemptSerializer,
)
from joins.services import perform_join


@method_decorator(csrf_exempt, name="dispatch")
class JoinView(View):
    """`POST /api/v1/join`. A plain Django view: no session, no login, the document is the
    credential, and the body is read here with a hard cap before anything parses it."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> JsonResponse:
        limit = settings.JOIN_MAX_BODY_BYTES
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        too_large = declared > limit
        body = b"" if too_large else request.read(limit + 1)
        too_large = too_large or len(body) > limit
        result = perform_join(
            b"" if too_large else body,
            remote_addr=client_address(request, settings.TRUSTED_PROXIES),
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
            too_large=too_large,
        )
        response = JsonResponse(result.body, status=result.status)
        for name, value in result.headers.items():
            response[name] = value
        response["Cache-Control"] = "no-store"
        return response


@method_decorator(csrf_exempt, name="dispatch")
class JoinChallengeView(View):
    """`POST /api/v1/join/challenge` `{"host_id": ...}`: a fresh challenge for a re-join.

    No login, like the join it serves; what it hands out is worthless without the host's key
    (joins/rejoin.py). The body is read with a small cap before anything parses it.
    """

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> JsonResponse:
        limit = CHALLENGE_MAX_BODY_BYTES
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        body = b"" if declared > limit else request.read(limit + 1)
        result = issue_rejoin_challenge(
            b"" if len(body) > limit else body,
            remote_addr=client_address(request, settings.TRUSTED_PROXIES),
            too_large=declared > limit or len(body) > limit,
        )
        response = JsonResponse(result.body, status=result.status)
        for name, value in result.headers.items():
            response[name] = value
        response["Cache-Control"] = "no-store"
        return response


# Answers every operation may give: no or a bad credential, or a role that may not do this.
AUTH_ERRORS = {401: ApiErrorSerializer, 403: ApiErrorSerializer}


class CAMaterialSchema(serializers.Serializer):
    """The public CA material (documentation only)."""

    tls_ca_certs = serializers.ListField(child=serializers.CharField(), help_text="PEM")
    ssh_ca_keys = serializers.ListField(child=serializers.CharField(), help_text="OpenSSH")


class AttemptPagination(CursorPagination):
    """Keyset pagination on the primary key: no COUNT, stable under inserts."""

    ordering = "-id"
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000


@extend_schema_view(
    get=extend_schema(
        responses={
            200: JoinAttemptSerializer,
            400: ApiErrorSerializer,
            404: ApiErrorSerializer,  # a cursor that is not one of ours
            **AUTH_ERRORS,
        }
    )
)
class JoinAttemptListView(generics.ListAPIView):
    permission_classes = [ReadForAuditorsWriteForAdmins]
    serializer_class = JoinAttemptSerializer
    pagination_class = AttemptPagination
    filterset_class = JoinAttemptFilter
    queryset = JoinAttempt.objects.defer("token_snapshot", "document")


@extend_schema_view(
    get=extend_schema(
        responses={200: JoinAttemptDetailSerializer, 404: ApiErrorSerializer, **AUTH_ERRORS}
    )
)
class JoinAttemptDetailView(generics.RetrieveAPIView):
    permission_classes = [ReadForAuditorsWriteForAdmins]
    serializer_class = JoinAttemptDetailSerializer
    queryset = JoinAttempt.objects.all()


class HostPagination(CursorPagination):
    ordering = "-id"
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000


@extend_schema_view(
    get=extend_schema(
        responses={
            200: HostSerializer,
            400: ApiErrorSerializer,
            404: ApiErrorSerializer,  # a cursor that is not one of ours
            **AUTH_ERRORS,
        }
    )
)
class HostListView(generics.ListAPIView):
    permission_classes = [ReadForAuditorsWriteForAdmins]
    serializer_class = HostSerializer
    pagination_class = HostPagination
    queryset = Host.objects.all()
    filterset_fields = ["token", "account_id", "region"]


class HostDetailView(APIView):
    permission_classes = [ReadForAuditorsWriteForAdmins]

    @extend_schema(responses={200: HostSerializer, 404: ApiErrorSerializer, **AUTH_ERRORS})
    def get(self, request: Request, host_id: str) -> Response:
        host = Host.objects.filter(host_id=host_id).first()
        if host is None:
            return error_response("not_found", f"no host {host_id!r}", status.HTTP_404_NOT_FOUND)
        return Response(HostSerializer(host).data)

    @extend_schema(
        summary="Forget a host so that its instance may join again",
        parameters=[OpenApiParameter("reason", str, description="why (recorded)")],
        request=ForgetHostSerializer,
        responses={204: None, 400: ApiErrorSerializer, 404: ApiErrorSerializer, **AUTH_ERRORS},
    )
    def delete(self, request: Request, host_id: str) -> Response:
        # The reason goes through the serializer wherever it came from: a non-string, a NUL
        # (which PostgreSQL refuses) or blank text must be a 400 or the default, never a 500.
        body = request.data if isinstance(request.data, dict) else {}
        form = ForgetHostSerializer(
            data={"reason": body.get("reason") or request.query_params.get("reason", "")}
        )
        form.is_valid(raise_exception=True)
        reason = form.validated_data.get("reason", "")
        try:
            forget_host(
                host_id,
                actor=request.user,
                reason=reason or "forgotten through the API without a stated reason",
                via="api",
                remote_addr=client_address(request._request, settings.TRUSTED_PROXIES),
            )
        except HostNotFoundError as exc:
            return error_response("not_found", str(exc), status.HTTP_404_NOT_FOUND)
        return Response(status=status.HTTP_204_NO_CONTENT)


class CAView(APIView):
    """The public CA material relying parties need to trust issued host credentials."""

    permission_classes = [ReadForAuditorsWriteForAdmins]

    @extend_schema(responses={200: CAMaterialSchema, **AUTH_ERRORS})
    def get(self, request: Request) -> Response:
        return Response(public_ca_material())
