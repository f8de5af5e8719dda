"""The navigation's count of requests waiting for the signed-in user; lazy, so pages that never show it pay nothing."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from .selectors import pending_for


def approvals(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    # One COUNT query, run only if a template reads the value.
    return {"approvals_pending_count": SimpleLazyObject(lambda: pending_for(user=user).count())}
