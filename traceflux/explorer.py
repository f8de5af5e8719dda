"""The audit explorer (being built): one timeline of audit events, filters, keyset pages, export, history pages."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse


def explorer(request: HttpRequest) -> HttpResponse:
    return HttpResponse("audit")
