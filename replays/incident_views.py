"""The incident investigation page (being built)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse


def investigate(request: HttpRequest, key: str) -> HttpResponse:
    return HttpResponse(f"incident {key}")
