"""Agent authentication: `Authorization: Bearer tfk_<prefix>_<secret>`, looked up by prefix, checked by HMAC.

No password hasher runs per request: the secret is 256 random bits, so a keyed HMAC-SHA256 is as strong as
PBKDF2 would be and costs microseconds instead of hundreds of milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from incidents.models import Agent, AgentKey
from incidents.services import agent_request_denied
from traceflux.prefixed_secrets import AGENT_KEY

LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass
class AgentPrincipal:
    """What `request.user` is on the agent API: the agent and the key it authenticated with."""

    agent: Agent
    key: AgentKey
    is_authenticated: bool = True
    is_anonymous: bool = False
    is_staff: bool = False
    is_superuser: bool = False

    @property
    def pk(self) -> int:
        return self.agent.pk

    def audit_actor(self):
        return self.agent.audit_actor()

    def __str__(self) -> str:
        return f"agent {self.agent.name}"


def key_prefix_from_header(header: str) -> str | None:
    """The public prefix of whatever key a request carried, for counting failures of unidentified callers."""
    return AGENT_KEY.prefix_in(header)


class AgentKeyAuthentication(BaseAuthentication):
    """401 for a missing, malformed, unknown, expired or revoked key; the detail says which."""

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="traceflux-agent"'

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None  # DRF answers 401 NotAuthenticated, with our WWW-Authenticate header
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise exceptions.AuthenticationFailed("malformed Authorization header: expected 'Bearer <key>'")
        parsed = AGENT_KEY.parse(token)
        if parsed is None:
            raise exceptions.AuthenticationFailed("malformed agent key: expected tfk_<prefix>_<secret>")
        prefix, secret = parsed
        key = AgentKey.objects.select_related("agent__environment").filter(prefix=prefix).first()
        # matches() compares against a dummy for an unknown prefix, so timing does not reveal which prefixes exist.
        if not AGENT_KEY.matches(secret, key.secret_hmac if key else None) or key is None:
            raise exceptions.AuthenticationFailed("unknown agent key")
        now = timezone.now()
        request._agent_for_failures = key.agent_id  # lets the failure counter attribute the 401 to the agent
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("this agent key has been revoked")
        if key.expires_at is not None and key.expires_at <= now:
            raise exceptions.AuthenticationFailed("this agent key has expired")
        if key.last_used_at is None or key.last_used_at < now - LAST_USED_RESOLUTION:
            # At most one write a minute per key: the conditional UPDATE is a no-op when another request won.
            AgentKey.objects.filter(pk=key.pk, last_used_at=key.last_used_at).update(last_used_at=now)
        return AgentPrincipal(agent=key.agent, key=key), key


class AgentScopePermission(BasePermission):
    """403 when the key lacks the view's scope or the agent is disabled. Views set `required_scope`."""

    def has_permission(self, request, view) -> bool:
        principal = request.user
        if not isinstance(principal, AgentPrincipal):
            raise exceptions.NotAuthenticated("missing Authorization header: expected 'Bearer <agent key>'")
        scope = getattr(view, "required_scope", None)
        if not principal.agent.enabled:
            self.message = f"agent {principal.agent.name} is disabled"
        elif scope and scope not in principal.key.scopes:
            self.message = f"this key lacks the scope {scope}"
        else:
            return True
        # An authenticated refusal is audited (at most once a minute per agent and reason); a 401 never is.
        agent_request_denied(agent=principal.agent, reason=self.message, data={"path": request.path, "scope": scope})
        return False


def agent_rate(group: str) -> str:
    return settings.TRACEFLUX_RATE_LIMITS[group]
