"""Operations endpoints (being built): readiness and Prometheus metrics."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse


def readyz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ready")


def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse("")
