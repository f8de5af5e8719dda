"""The API's error shape, `{"detail": ..., ...}`, plus failure counting for agent 401/403/429 answers.

- A validation error (a service's Django ValidationError or a serializer's DRF one) is 400 with a top-level "detail"
  naming the first bad field ("status: ..."), "field" (its dotted path) and "errors" (every problem, by field).
- A refused state move (traceflux.statemachine.TransitionError) is 409 with "detail" and "current" (the status now).
- A rate limit is 429 with a Retry-After header and "retry_after" (seconds) in the body.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from incidents.failures import COUNTED, failure_record
from traceflux.statemachine import TransitionError

from .auth import AgentPrincipal, key_prefix_from_header


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
    """DRF's handler, extended: service errors become 400/403/409 with named problems; 429 carries retry_after."""
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


def _count_failure(request, code: int) -> None:
    if request is None or not request.path.startswith("/api/v1/agent/"):
        return
    principal = getattr(request, "_user", None)  # never re-run authentication from an error path
    agent_id = principal.agent.pk if isinstance(principal, AgentPrincipal) else None
    agent_id = agent_id or getattr(request, "_agent_for_failures", None)
    prefix = key_prefix_from_header(request.META.get("HTTP_AUTHORIZATION", ""))
    failure_record(code=code, agent_id=agent_id, prefix=prefix)
