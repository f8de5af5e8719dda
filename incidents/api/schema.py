"""OpenAPI (drf-spectacular) for the agent API: the bearer security scheme and the shared error responses."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from .serializers import ConflictSerializer, ErrorSerializer, RateLimitedSerializer, ValidationErrorSerializer


class AgentKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "incidents.api.auth.AgentKeyAuthentication"
    name = "agentKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "tfk_<prefix>_<secret>",
            "description": "An agent key: `Authorization: Bearer tfk_<prefix>_<secret>`.",
        }


ERROR_RESPONSES = {
    400: OpenApiResponse(ValidationErrorSerializer, description="A field is missing or invalid; `detail` names it."),
    401: OpenApiResponse(
        ErrorSerializer, description="Missing, malformed, unknown, expired or revoked credentials; `detail` says which."
    ),
    403: OpenApiResponse(
        ErrorSerializer,
        description="The key lacks the scope, the agent is disabled, or the request names an environment or agent "
        "other than the key's own.",
    ),
    404: OpenApiResponse(ErrorSerializer, description="No such command for this agent."),
    409: OpenApiResponse(
        ConflictSerializer,
        description="The command cannot take this outcome: it is pending (never delivered), expired, or already "
        "acknowledged with the other status. `current` names its status.",
    ),
    413: OpenApiResponse(ErrorSerializer, description="Content-Length is over TRACEFLUX_MAX_JSON_BODY."),
    415: OpenApiResponse(ErrorSerializer, description="The body is not application/json."),
    429: OpenApiResponse(RateLimitedSerializer, description="Rate limit exceeded; see Retry-After."),
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: ERROR_RESPONSES[code] for code in codes}


RETRY_AFTER = OpenApiParameter(
    "Retry-After", OpenApiTypes.INT, OpenApiParameter.HEADER, response=[429], description="Seconds to wait."
)
WWW_AUTHENTICATE = OpenApiParameter(
    "WWW-Authenticate", OpenApiTypes.STR, OpenApiParameter.HEADER, response=[401], description="Bearer challenge."
)
