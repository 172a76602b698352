"""`/api/v1/tokens`: list, create (JSON or YAML, one or many documents), get, replace, delete."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import ReadForAuditorsWriteForAdmins
from joinadmin.api import ApiErrorSerializer, error_response
from joins.net import client_address
from tokens.codecs import parse_tokens
from tokens.models import Token
from tokens.resource import ResourceError
from tokens.services import (
    TokenExistsError,
    TokenNotFoundError,
    delete_token,
    import_tokens,
    resource_snapshot,
    save_token,
)

# --- OpenAPI description of the token resource (documentation only: the codecs parse) -------


class AllowRuleSchema(serializers.Serializer):
    aws_account = serializers.CharField(required=False, help_text="12-digit AWS account id")
    aws_regions = serializers.ListField(child=serializers.CharField(), required=False)
    aws_role = serializers.CharField(required=False, help_text="IAM role ARN to assume")
    aws_vpc_ids = serializers.ListField(child=serializers.CharField(), required=False)
    aws_subnet_ids = serializers.ListField(child=serializers.CharField(), required=False)
    aws_ami_ids = serializers.ListField(child=serializers.CharField(), required=False)
    aws_instance_profile_arns = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="a trailing * matches a prefix"
    )
    aws_security_group_ids = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="the instance must be in all"
    )
    aws_tags = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="tag key to its allowed values",
    )
    require_imdsv2 = serializers.BooleanField(required=False)
    max_imds_hop_limit = serializers.IntegerField(required=False, min_value=1, max_value=64)
    require_source_ip_match = serializers.BooleanField(required=False)


class TokenMetadataSchema(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField(required=False)
    expires = serializers.DateTimeField(required=False, help_text="RFC 3339")
    labels = serializers.DictField(child=serializers.CharField(), required=False)


class TokenSpecSchema(serializers.Serializer):
    roles = serializers.ListField(child=serializers.CharField())
    join_method = serializers.CharField(help_text="ec2")
    aws_iid_ttl = serializers.CharField(required=False, help_text="Go duration, default 5m")
    allow = serializers.ListField(child=AllowRuleSchema())
    allow_rejoin = serializers.BooleanField(
        required=False,
        help_text="extension: registered hosts may re-join with a proof of their key "
        "(docs/extensions.md, Re-join); written only when true",
    )


class TokenResourceSchema(serializers.Serializer):
    """A token as `tctl create` takes it (CONTRACT section 3)."""

    kind = serializers.CharField(help_text="token")
    version = serializers.CharField(help_text="v2")
    metadata = TokenMetadataSchema()
    spec = TokenSpecSchema()


class TokenStatusSchema(serializers.Serializer):
    state = serializers.CharField(help_text="active or expired")
    created = serializers.DateTimeField()
    updated = serializers.DateTimeField()


class TokenSchema(TokenResourceSchema):
    """A stored token: the resource and a read-only `status` block."""

    status = TokenStatusSchema()


class TokenListSchema(serializers.Serializer):
    results = TokenSchema(many=True)
    next = serializers.CharField(allow_null=True, help_text="always null: one page")


# Answers every operation may give: no or a bad credential, or a role that may not do this.
AUTH_ERRORS = {401: ApiErrorSerializer, 403: ApiErrorSerializer}


class RawBodyParser(BaseParser):
    """Hands the body over untouched: the token codecs read JSON and YAML themselves."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):  # type: ignore[no-untyped-def]
        return stream.read() if stream is not None else b""


def token_json(token: Token) -> dict:
    """The resource as tctl shows it, plus a read-only `status` block."""
    data = resource_snapshot(token.to_resource())
    data["status"] = {
        "state": token.status,
        "created": token.created_at.isoformat(),
        "updated": token.updated_at.isoformat(),
    }
    return data


def _resource_error(exc: ResourceError) -> Response:
    return error_response(
        "invalid_token_resource",
        exc.message if hasattr(exc, "message") else str(exc),
        details=[
            {"document": d.document, "field": d.field, "message": d.message} for d in exc.details
        ],
    )


def _actor_meta(request: Request) -> dict:
    from django.conf import settings

    return {"via": "api", "remote_addr": client_address(request._request, settings.TRUSTED_PROXIES)}


class TokenListView(APIView):
    permission_classes = [ReadForAuditorsWriteForAdmins]
    parser_classes = [RawBodyParser]

    @extend_schema(
        summary="List tokens",
        operation_id="v1_tokens_list",
        responses={200: TokenListSchema, **AUTH_ERRORS},
    )
    def get(self, request: Request) -> Response:
        tokens = Token.objects.all()
        return Response({"results": [token_json(t) for t in tokens], "next": None})

    @extend_schema(
        summary="Create tokens from JSON or YAML (one or many documents, all or nothing)",
        parameters=[OpenApiParameter("force", bool, description="replace tokens that exist")],
        request={"application/json": TokenResourceSchema, "application/yaml": str},
        responses={
            201: TokenSchema,  # or a TokenList when several documents were given
            400: ApiErrorSerializer,
            409: ApiErrorSerializer,
            **AUTH_ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        force = request.query_params.get("force", "").lower() in {"1", "true", "yes"}
        try:
            plan = import_tokens(
                request.data, actor=request.user, force=force, **_actor_meta(request)
            )
        except ResourceError as exc:
            return _resource_error(exc)
        except TokenExistsError as exc:
            return error_response(exc.code, exc.message, status.HTTP_409_CONFLICT, names=exc.names)
        tokens = {
            t.name: t for t in Token.objects.filter(name__in=[r.name for r in plan.resources])
        }
        results = [token_json(tokens[r.name]) for r in plan.resources]
        if len(results) == 1:
            return Response(results[0], status=status.HTTP_201_CREATED)
        return Response({"results": results, "next": None}, status=status.HTTP_201_CREATED)


class TokenDetailView(APIView):
    permission_classes = [ReadForAuditorsWriteForAdmins]
    parser_classes = [RawBodyParser]

    def _get(self, name: str) -> Token | None:
        return Token.objects.filter(name=name).first()

    @extend_schema(
        summary="Get a token",
        responses={200: TokenSchema, 404: ApiErrorSerializer, **AUTH_ERRORS},
    )
    def get(self, request: Request, name: str) -> Response:
        token = self._get(name)
        if token is None:
            return error_response(
                "not_found", f"no token named {name!r}", status.HTTP_404_NOT_FOUND
            )
        return Response(token_json(token))

    @extend_schema(
        summary="Create or replace a token",
        request={"application/json": TokenResourceSchema, "application/yaml": str},
        responses={200: TokenSchema, 201: TokenSchema, 400: ApiErrorSerializer, **AUTH_ERRORS},
    )
    def put(self, request: Request, name: str) -> Response:
        try:
            resources = parse_tokens(request.data)
            if len(resources) != 1:
                return error_response(
                    "invalid_token_resource",
                    f"PUT takes exactly one token document, got {len(resources)}",
                    details=[],
                )
            token, created = save_token(
                resources[0],
                actor=request.user,
                force=True,
                expected_name=name,
                **_actor_meta(request),
            )
        except ResourceError as exc:
            return _resource_error(exc)
        return Response(
            token_json(token), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(
        summary="Delete a token",
        responses={204: None, 404: ApiErrorSerializer, **AUTH_ERRORS},
    )
    def delete(self, request: Request, name: str) -> Response:
        try:
            delete_token(name, actor=request.user, **_actor_meta(request))
        except TokenNotFoundError as exc:
            return error_response(exc.code, exc.message, status.HTTP_404_NOT_FOUND)
        return Response(status=status.HTTP_204_NO_CONTENT)
