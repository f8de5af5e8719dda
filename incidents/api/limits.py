"""Request limits for the agent API: per-key rate limits (django-ratelimit counters in the shared cache), answered as
429 with Retry-After, and the body checks that run before a body is read (413 by Content-Length, 415 by type)."""

from __future__ import annotations

import math

from django.conf import settings
from django_ratelimit.core import get_usage
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError
from rest_framework import exceptions, status
from rest_framework.permissions import BasePermission

from .auth import AgentPrincipal

# The cache holding the counters did not answer: callers answer 503 with Retry-After rather than fail open or 500.
CACHE_ERRORS = (ConnectionInterrupted, RedisError)  # RedisError: refused connections and timeouts among them
UNAVAILABLE_RETRY_AFTER = 5  # seconds a client is asked to wait after a 503 from a backing service


class RateLimited(exceptions.Throttled):
    default_detail = "rate limit exceeded"

    def __init__(self, *, group: str, rate: str, wait: float) -> None:
        wait_s = max(1, math.ceil(wait))
        super().__init__(wait=wait_s)
        self.rate = rate
        # Set after DRF's constructor, which would append its own "Expected available in ..." sentence.
        self.detail = exceptions.ErrorDetail(
            f"rate limit for {group} exceeded ({rate}); retry in {wait_s} s", code=self.default_code
        )


def enforce_rate(request, *, group: str, key: str) -> None:
    """Count this request against `group` for `key`; raise RateLimited when over the named rate in settings."""
    rate = settings.TRACEFLUX_RATE_LIMITS[group]
    usage = get_usage(request, group=f"traceflux.{group}", key=lambda _group, _request: key, rate=rate, increment=True)
    if usage is not None and usage["should_limit"]:
        raise RateLimited(group=group, rate=rate, wait=usage["time_left"])


class AgentRateLimit(BasePermission):
    """Runs after authentication and scope checks, so only known agents use up their key's budget."""

    def has_permission(self, request, view) -> bool:
        group = getattr(view, "rate_group", None)
        if group and isinstance(request.user, AgentPrincipal):
            enforce_rate(request, group=group, key=f"key:{request.user.key.prefix}")
        return True


def client_ip(request) -> str:
    """The address the request came from, as the WSGI server saw it (a proxy must pass the client's on as it)."""
    return request.META.get("REMOTE_ADDR") or "unknown"


class EnrollmentRateLimit(BasePermission):
    """Enrollment is unauthenticated, so its attempts are counted per client address (rate group "enroll")."""

    def has_permission(self, request, view) -> bool:
        enforce_rate(request, group="enroll", key=f"ip:{client_ip(request)}")
        return True


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "the request body is too large"
    default_code = "payload_too_large"


def check_body_size(request, *, limit: int, setting: str) -> None:
    """Refuse with 413 a body whose declared Content-Length is over `limit`, before anything reads it.

    `setting` names the setting that holds the limit, so the answer tells the operator what to raise.
    """
    raw = request.META.get("CONTENT_LENGTH") or "0"
    try:
        length = int(raw)
    except ValueError:
        raise exceptions.ParseError(f"Content-Length {raw!r} is not a number of bytes") from None
    if length > limit:
        raise PayloadTooLarge(f"the request body is {length} bytes; the limit is {limit} bytes ({setting})")


def require_json(request) -> None:
    """Refuse with 415 a body that is not declared as application/json."""
    media_type = (request.META.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise exceptions.UnsupportedMediaType(
            media_type or "(none)",
            detail=f"this endpoint takes application/json; the request's Content-Type is {media_type or 'missing'}",
        )
