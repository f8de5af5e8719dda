"""The API's error shape, `{"detail": ..., ...}`, plus failure counting for agent 401/403/429 answers.

- A validation error (a service's Django ValidationError or a serializer's DRF one) is 400 with a top-level "detail"
  naming the first bad field ("status: ..."), "field" (its dotted path) and "errors" (every problem, by field).
- A refused state move (traceflux.statemachine.TransitionError) is 409 with "detail" and "current" (the status now).
- A rate limit is 429 with a Retry-After header and "retry_after" (seconds) in the body.
- A backing service that fails mid-request is 503 with Retry-After and "retry_after", never a 500: the database
  connection lost (or a query it could not finish), the audit event refused (traceflux.audit.AuditWriteFailed: the
  change was rolled back with it), or the cache that holds the rate limits not answering.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback

from incidents.failures import COUNTED, failure_record
from traceflux.audit import AuditWriteFailed
from traceflux.statemachine import TransitionError

from .auth import AgentPrincipal, key_prefix_from_header
from .limits import CACHE_ERRORS, UNAVAILABLE_RETRY_AFTER

log = logging.getLogger(__name__)


def _validation_payload(error: DjangoValidationError) -> dict:
    if hasattr(error, "message_dict"):
        fields = {field: " ".join(messages) for field, messages in error.message_dict.items()}
        first_field, first_message = next(iter(fields.items()))
        if first_field == NON_FIELD_ERRORS:
            return {"detail": first_message, "errors": fields}
        return {"detail": f"{first_field}: {first_message}", "field": first_field, "errors": fields}
    return {"detail": " ".join(error.messages)}


def _first_problem(detail: Any, path: list[str]) -> tuple[str, str] | None:
    """The dotted path and message of the first error in a DRF error structure (dicts and lists, nested)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            found = _first_problem(value, [*path, str(key)])
            if found:
                return found
        return None
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            found = _first_problem(value, [*path, str(index)] if isinstance(value, dict | list) else path)
            if found:
                return found
        return None
    text = str(detail)
    return (".".join(path), text) if text else None


def _drf_validation_payload(detail: Any) -> dict:
    found = _first_problem(detail, [])
    if found is None:
        return {"detail": "invalid request", "errors": detail}
    field, message = found
    if field in ("", "non_field_errors"):
        return {"detail": message, "errors": detail}
    return {"detail": f"{field}: {message}", "field": field, "errors": detail}


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, extended: service errors become 400/403/409 with named problems; 429 carries retry_after; a
    backing service failing mid-request is 503 with Retry-After."""
    problem = _unavailable(exc)
    if problem is not None:
        # A refused audit write is an alarm (with its traceback); an outage is a warning per request, kept short.
        refused = isinstance(exc, AuditWriteFailed)
        log.log(logging.ERROR if refused else logging.WARNING, "%s %s answered 503: %s (%s: %s)", *_where(context),
                problem, type(exc).__name__, exc, exc_info=exc if refused else None)
        set_rollback()  # with ATOMIC_REQUESTS, the request's transaction too (no query: it only marks the block)
        return Response({"detail": problem, "retry_after": UNAVAILABLE_RETRY_AFTER},
                        status=status.HTTP_503_SERVICE_UNAVAILABLE,
                        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)})
    if isinstance(exc, DjangoValidationError):
        response = Response(_validation_payload(exc), status=status.HTTP_400_BAD_REQUEST)
    elif isinstance(exc, TransitionError):
        response = Response({"detail": str(exc), "current": exc.current}, status=status.HTTP_409_CONFLICT)
    else:
        if isinstance(exc, DjangoPermissionDenied) and not isinstance(exc, exceptions.APIException):
            exc = exceptions.PermissionDenied(str(exc) or "permission denied")
        response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = _drf_validation_payload(exc.detail)
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        response.data = {"detail": str(exc.detail), "retry_after": int(exc.wait)}
    if response.status_code in COUNTED:
        _count_failure(context.get("request"), response.status_code)
    return response


def _unavailable(exc: Exception) -> str | None:
    """What a 503 says when a backing service failed mid-request; None for any other exception."""
    if isinstance(exc, AuditWriteFailed):
        return "the audit log could not be written, so nothing was changed; retry"
    if isinstance(exc, InterfaceError | OperationalError):
        if _connection_lost(exc):
            return "the database connection was lost; retry"
        return "the database could not complete the request; retry"
    if isinstance(exc, CACHE_ERRORS):
        return "the cache that holds the rate limits did not answer; retry"
    return None


def _connection_lost(exc: Exception) -> bool:
    """A database error that means the connection went away (terminated, server shut down, network), as opposed to
    one the connection survives (a timeout, a deadlock)."""
    if isinstance(exc, InterfaceError):
        return True
    # psycopg: the server's SQLSTATE, or None for an error on the client side of a broken connection.
    sqlstate = getattr(exc.__cause__, "sqlstate", "")
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03")


def _where(context: dict) -> tuple[str, str]:
    request = context.get("request")
    return (request.method, request.path) if request is not None else ("-", "-")


def _count_failure(request, code: int) -> None:
    if request is None or not request.path.startswith("/api/v1/agent/"):
        return
    principal = getattr(request, "_user", None)  # never re-run authentication from an error path
    agent_id = principal.agent.pk if isinstance(principal, AgentPrincipal) else None
    agent_id = agent_id or getattr(request, "_agent_for_failures", None)
    prefix = key_prefix_from_header(request.META.get("HTTP_AUTHORIZATION", ""))
    try:
        failure_record(code=code, agent_id=agent_id, prefix=prefix)
    except CACHE_ERRORS as exc:  # a counter lost while the cache is down must not turn a 401 into a 500
        log.warning("failure counter not updated for a %s answer: %s", code, exc)
