"""The project's URLs plus one no-op DRF view: the floor the agent-API benchmark compares heartbeats with.

Used only through benchmarks.bench_settings, by benchmarks/agent_api.py's gunicorn; the product's URLs are untouched.
"""

from __future__ import annotations

from django.urls import path
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from traceflux.urls import urlpatterns as project_urlpatterns

NOOP_PATH = "__bench__/noop/"


class NoopView(APIView):
    """The project's middleware and DRF's dispatch, and the JSON body parsed like a heartbeat's; no authentication,
    permission, rate limit, throttle or database access. Answers 200 {"ok": true, "fields": <top-level fields>}."""

    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes: list = []
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]

    def post(self, request: Request) -> Response:
        return Response({"ok": True, "fields": len(request.data)})


urlpatterns = [path(NOOP_PATH, NoopView.as_view(), name="bench-noop"), *project_urlpatterns]
