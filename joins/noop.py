"""`POST /api/v1/noop`: an empty DRF endpoint, the yardstick of the throughput benchmark.

It parses the JSON body and answers a small JSON document through the same middleware, DRF and
gunicorn workers as the join, so `bench/throughput.py` can state how close a join comes to doing
nothing at all on the same server. Off unless `JOINADMIN_BENCH_NOOP=true`: a production server
answers 404 here, as for any unknown path.
"""

from __future__ import annotations

from django.conf import settings
from django.http import Http404
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class NoopView(APIView):
    """Reads the body and answers `{"ok": true}`; no authentication, no database."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    http_method_names = ["post"]
    schema = None  # not part of the API contract

    def post(self, request: Request) -> Response:
        if not settings.BENCH_NOOP:
            raise Http404
        return Response({"ok": isinstance(request.data, dict)})
