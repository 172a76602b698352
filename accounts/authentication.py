"""`Authorization: Bearer <api key>` for the API."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from accounts.services import authenticate_api_key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Authenticates a request carrying an API key; the key acts as its user."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != self.keyword.lower():
            return None
        if not value.strip():
            raise exceptions.AuthenticationFailed("Bearer header without a key.")
        key = authenticate_api_key(value)
        if key is None:
            raise exceptions.AuthenticationFailed("Unknown, revoked or malformed API key.")
        return key.user, key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
