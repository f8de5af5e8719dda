"""The agent API's endpoints. Thin: validate the body, call one service, shape the answer.

Authentication, scope, the per-key rate limit (AgentAPIView) and the body checks (JSONBodyMixin) run before a view
method; every decision and write is a service in incidents.services.
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.views import APIView

from incidents import services
from incidents.models import AgentScope, Command
from traceflux import signing

from . import schema
from .base import AgentAPIView, AgentJSONAPIView, JSONBodyMixin
from .limits import EnrollmentRateLimit
from .serializers import (
    AckRequestSerializer,
    CommandListSerializer,
    CommandSerializer,
    EnrollRequestSerializer,
    EnrollResponseSerializer,
    HeartbeatRequestSerializer,
    HeartbeatSerializer,
    SigningKeyListSerializer,
)

TAGS = ["agent"]


class EnrollmentTokenInvalid(exceptions.APIException):
    status_code = status.HTTP_401_UNAUTHORIZED
    default_detail = "invalid enrollment token"
    default_code = "enrollment_refused"
    auth_header = 'Bearer realm="traceflux-enrollment"'


def _valid(serializer_class: type[Serializer], request: Request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class EnrollView(JSONBodyMixin, APIView):
    """Unauthenticated: the enrollment token in the body is the credential. Attempts are rate-limited per address."""

    authentication_classes: list = []
    permission_classes = [EnrollmentRateLimit]
    renderer_classes = [JSONRenderer]

    @extend_schema(
        operation_id="agent_enroll",
        summary="Trade an enrollment token for an agent identity and key",
        tags=TAGS,
        auth=[],
        request=EnrollRequestSerializer,
        responses={201: EnrollResponseSerializer, **schema.errors(400, 401, 413, 415, 429)},
        parameters=[schema.RETRY_AFTER, schema.WWW_AUTHENTICATE],
    )
    def post(self, request: Request) -> Response:
        data = _valid(EnrollRequestSerializer, request)
        try:
            agent, key, plaintext = services.agent_enroll(**data)
        except services.EnrollmentRefused as exc:
            raise EnrollmentTokenInvalid(str(exc)) from exc
        body = EnrollResponseSerializer({"agent": agent, "key": plaintext, "scopes": key.scopes}).data
        return Response(body, status=status.HTTP_201_CREATED)


class HeartbeatView(AgentJSONAPIView):
    """Every heartbeat moves the agent's last_seen_at forward; a new version is recorded in the agent's history."""

    required_scope = AgentScope.HEARTBEATS_WRITE
    rate_group = "heartbeats"

    @extend_schema(
        operation_id="agent_heartbeat",
        summary="Report liveness, version and the deployment the agent runs",
        tags=TAGS,
        request=HeartbeatRequestSerializer,
        responses={201: HeartbeatSerializer, **schema.errors(400, 401, 403, 413, 415, 429)},
        parameters=[schema.RETRY_AFTER, schema.WWW_AUTHENTICATE],
    )
    def post(self, request: Request) -> Response:
        data = _valid(HeartbeatRequestSerializer, request)
        agent = self.principal.agent
        services.agent_assert_own(agent=agent, agent_name=data.get("agent"), environment_slug=data.get("environment"))
        heartbeat = services.heartbeat_record(
            agent=agent,
            status=data["status"],
            version=data["version"],
            deployment_id=data["deployment"],
            details=data["details"],
        )
        return Response(HeartbeatSerializer(heartbeat).data, status=status.HTTP_201_CREATED)


class CommandListView(AgentAPIView):
    """Leasing is the delivery: what this returns is the agent's to run until the lease ends."""

    required_scope = AgentScope.COMMANDS_READ
    rate_group = "commands"

    @extend_schema(
        operation_id="agent_commands_lease",
        summary="Lease this agent's waiting commands",
        description="Returns the agent's pending commands and the delivered ones whose lease has ended, and leases "
        "each for TRACEFLUX_COMMAND_LEASE. Not idempotent: a command leased here is not returned again until its "
        "lease ends unacknowledged.",
        tags=TAGS,
        responses={200: CommandListSerializer, **schema.errors(401, 403, 429)},
        parameters=[schema.RETRY_AFTER, schema.WWW_AUTHENTICATE],
    )
    def get(self, request: Request) -> Response:
        commands = services.command_lease(agent=self.principal.agent)
        lease_seconds = int(settings.TRACEFLUX_COMMAND_LEASE.total_seconds())
        body = CommandListSerializer({"commands": commands, "lease_seconds": lease_seconds}).data
        return Response(body)


class CommandAckView(AgentJSONAPIView):
    """The agent's own commands only: another agent's command is 404, as if it did not exist."""

    required_scope = AgentScope.COMMANDS_READ
    rate_group = "commands"

    @extend_schema(
        operation_id="agent_command_ack",
        summary="Record a command's outcome",
        description="Acknowledging again with the status already recorded is harmless (200, nothing changes); "
        "another status is 409.",
        tags=TAGS,
        request=AckRequestSerializer,
        responses={200: CommandSerializer, **schema.errors(400, 401, 403, 404, 409, 413, 415, 429)},
        parameters=[schema.RETRY_AFTER, schema.WWW_AUTHENTICATE],
    )
    def post(self, request: Request, pk: int) -> Response:
        agent = self.principal.agent
        command = Command.objects.for_agent(agent).filter(pk=pk).first()
        if command is None:
            raise exceptions.NotFound(f"agent {agent.name} has no command #{pk}")
        data = _valid(AckRequestSerializer, request)
        command, _changed = services.command_acknowledge(
            command=command, agent=agent, status=data["status"], output=data["output"]
        )
        return Response(CommandSerializer(command).data)


class SigningKeysView(AgentAPIView):
    """Public key material: any valid key of an enabled agent may read it, whatever its scopes."""

    required_scope = None
    rate_group = "signing_keys"

    @extend_schema(
        operation_id="agent_signing_keys",
        summary="The portal's public keys for verifying signed command credentials",
        description="Every Ed25519 public key a command credential may be signed with: the active signer first, then "
        "keys kept for verification after a rotation. The keys come from files on the portal, never from its "
        "database. See docs/api.md, 'Signed command credentials'.",
        tags=TAGS,
        responses={200: SigningKeyListSerializer, **schema.errors(401, 403, 429)},
        parameters=[schema.RETRY_AFTER, schema.WWW_AUTHENTICATE],
    )
    def get(self, request: Request) -> Response:
        return Response(SigningKeyListSerializer({"keys": signing.published_keys()}).data)
