"""The base every agent endpoint builds on: key authentication, then scope, then the key's rate limit."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from replays.engine.formats import text_problem

from .auth import AgentKeyAuthentication, AgentPrincipal, AgentScopePermission
from .limits import AgentRateLimit, check_body_size, require_json

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, but a body nested too deeply for Python's parser is a 400 rather than a RecursionError, and
    so is one holding text the database cannot store (a NUL character, a lone surrogate), wherever it is: a 400
    whose `field` is the dotted path to it."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply") from None
        # The engine's rule for stored text, so an upload's documents and an API body refuse the same characters.
        problem = text_problem(data)
        if problem is not None:
            path, message = problem
            field = path.removeprefix("$").removeprefix(".")
            raise ValidationError({field or "non_field_errors": [f"{path}: {message}"]})
        return data


class AgentAPIView(APIView):
    """Subclasses set `required_scope` (e.g. "artifacts:write") and `rate_group` (a key of TRACEFLUX_RATE_LIMITS)."""

    authentication_classes = [AgentKeyAuthentication]
    permission_classes = [AgentScopePermission, AgentRateLimit]
    # Agents read JSON; the browsable API would also re-run permission checks just to draw its forms.
    renderer_classes = [JSONRenderer]
    required_scope: str | None = None
    rate_group: str | None = None

    @property
    def principal(self) -> AgentPrincipal:
        return self.request.user  # type: ignore[return-value]

    def perform_authentication(self, request) -> None:
        super().perform_authentication(request)
        # DRF also hands the principal to the underlying HttpRequest, where django-simple-history's middleware would
        # take it for the User behind every history row written during the request. An agent is not a User: keep
        # the HttpRequest anonymous. The audit log names the agent; request.user (DRF's) is still the principal.
        request._request.user = AnonymousUser()


class JSONBodyMixin:
    """For endpoints that take a JSON body. After authentication, permissions and rate limits, and before the body is
    read: 413 when Content-Length is over TRACEFLUX_MAX_JSON_BODY, 415 when the Content-Type is not application/json.
    """

    parser_classes = [SafeJSONParser]

    def initial(self, request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        if request.method in BODY_METHODS:
            check_body_size(request, limit=settings.TRACEFLUX_MAX_JSON_BODY, setting="TRACEFLUX_MAX_JSON_BODY")
            require_json(request)


class AgentJSONAPIView(JSONBodyMixin, AgentAPIView):
    """An agent endpoint that takes a JSON body."""
