"""The replay API, for operators at a terminal: request a dry run or an execute, list and read replays, download a
replay's report and evidence bundle.

Thin: what a user may see is replays.selectors (visible_replays, replay_for, incident_for) and
artifacts.selectors.visible_artifacts, so anything else is 404; a request is replays.services.replay_request_dry_run or
replay_request_execute and nothing lower. Their refusals become HTTP answers in the API exception handler
(incidents.api.exceptions): PermissionDenied → 403, ValidationError → 400 naming the field. A request the service
stores as `rejected` (a preflight check failed) is answered 409 with its checks; an accepted one 202.

Authentication is a personal token (`Authorization: Token tfu_…`) or the browser session, which keeps CSRF.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import django_filters
from django.http import FileResponse, Http404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import serializers, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError as DRFValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from approvals.tokens import UserTokenAuthentication
from artifacts.models import Artifact, artifact_storage
from artifacts.selectors import visible_artifacts
from incidents.api.base import JSONBodyMixin, SafeJSONParser
from incidents.api.serializers import ErrorSerializer, ValidationErrorSerializer
from incidents.models import Command, PipelineVersion
from incidents.selectors import visible_pipeline_versions
from replays.engine.formats import format_timestamp, parse_timestamp

from . import selectors, services
from .models import ReplayExecution, ReplayMode, ReplayStatus

log = logging.getLogger(__name__)

TAGS = ["replays"]
MAX_ID = 2**63 - 1  # the largest primary key a database holds; a larger id is a 400, never an overflow
MAX_NESTING = 4  # scope and controls are flat objects (controls.disabled_actions a list): deeper is a mistake


# --- request bodies ------------------------------------------------------------------------------------------------


def _check_plain(value: Any) -> None:
    """Refuse what the database cannot store in a JSON column: NUL characters; and anything nested deeper than a run
    input ever is. Iterative, so a deep document cannot exhaust the stack."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_NESTING:
            raise serializers.ValidationError("nested too deeply")
        if isinstance(item, str):
            if "\x00" in item:
                raise serializers.ValidationError("NUL characters are not allowed")
        elif isinstance(item, Mapping):
            pending.extend((key, depth + 1) for key in item)
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)


@extend_schema_field({"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "minLength": 1}]})
class IdOrKeyField(serializers.Field):
    """An id (a JSON integer) or a key (a string: an incident's ref, a pipeline version's label)."""

    def __init__(self, *, what: str, max_length: int, **kwargs: Any) -> None:
        self.what = what
        self.max_length = max_length
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int | str:
        if isinstance(data, int) and not isinstance(data, bool):
            if not 1 <= data <= MAX_ID:
                raise serializers.ValidationError(f"{data} is not a valid id")
            return data
        if isinstance(data, str):
            text = data.strip()
            if not text:
                raise serializers.ValidationError("this field may not be blank")
            if len(text) > self.max_length or "\x00" in text:
                raise serializers.ValidationError(f"not a valid {self.what}")
            return text
        raise serializers.ValidationError(f"expected an id (an integer) or a {self.what} (a string)")

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field(OpenApiTypes.DATETIME)
class TimestampField(serializers.Field):
    """An RFC 3339 timestamp with its time zone (2026-02-26T14:00:00Z); a time without a zone is refused."""

    def to_internal_value(self, data: Any):
        try:
            return parse_timestamp(data)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def to_representation(self, value: Any) -> str:
        return format_timestamp(value)


class ClosedSerializer(serializers.Serializer):
    """A body that names each key it takes: an unknown one is a 400 naming it, never silently ignored (a misspelt
    `controls` would otherwise run a wider replay than asked for)."""

    unknown_key_message = "not a field of this request; it takes {fields}"

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise DRFValidationError({"non_field_errors": ["expected a JSON object"]})
        unknown = sorted(str(key) for key in data if key not in self.fields)
        if unknown:
            message = self.unknown_key_message.format(fields=", ".join(self.fields))
            raise DRFValidationError({key: [message] for key in unknown})
        return super().to_internal_value(data)


class ReplayScopeSerializer(serializers.Serializer):
    """Documentation of `scope`: the service checks it (replays.controls.clean_scope)."""

    service = serializers.CharField(required=False, max_length=100)
    region = serializers.CharField(required=False, max_length=100)
    pop = serializers.CharField(required=False, max_length=100)


class ReplayControlsSerializer(serializers.Serializer):
    """Documentation of `controls`: the service checks it (replays.controls.clean_controls)."""

    disabled_actions = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Action names that must not run."
    )
    max_pops = serializers.IntegerField(required=False, min_value=0, help_text="At most this many POPs per action.")
    max_regions = serializers.IntegerField(
        required=False, min_value=0, help_text="At most this many regions per action."
    )


class _PassThroughField(serializers.Field):
    """Handed to the service as given (it names the bad key, e.g. `scope.colour`), once it is plain JSON."""

    def to_internal_value(self, data: Any) -> Any:
        _check_plain(data)
        return data

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field(ReplayScopeSerializer)
class ScopeField(_PassThroughField):
    pass


@extend_schema_field(ReplayControlsSerializer)
class ControlsField(_PassThroughField):
    pass


class ReplayWindowSerializer(ClosedSerializer):
    """A sub-window of the artifact's captured window: both ends, RFC 3339 with a time zone."""

    start = TimestampField(help_text="RFC 3339 with a time zone, inside the artifact's captured window.")
    end = TimestampField(help_text="RFC 3339 with a time zone, after start.")


@extend_schema_field(ReplayWindowSerializer)
class WindowField(serializers.Field):
    """{"start", "end"}: a bad one is named `window.start` or `window.end`."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise serializers.ValidationError("expected an object with start and end")
        inner = ReplayWindowSerializer(data=data)
        if not inner.is_valid():
            raise serializers.ValidationError(inner.errors)
        return dict(inner.validated_data)

    def to_representation(self, value: Any) -> Any:
        return value


class ReplayDryRunRequestSerializer(ClosedSerializer):
    """Request a dry run: replay one of the incident's bundles. An unknown key is a 400 naming it."""

    mode = serializers.ChoiceField(choices=ReplayMode.choices, help_text='"dry_run".')
    incident = IdOrKeyField(what="ref", max_length=40, help_text="The incident's id or ref (INC-…).")
    artifact = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, help_text="The id of one of the incident's bundles."
    )
    pipeline_version = IdOrKeyField(
        what="label", max_length=50, required=False, allow_null=True,
        help_text="The version to replay, by id or label. Default: the one whose spec hash the artifact names.",
    )
    compare_version = IdOrKeyField(
        what="label", max_length=50, required=False, allow_null=True,
        help_text="Another version to run side by side, by id or label.",
    )
    scope = ScopeField(required=False, allow_null=True, help_text="Label equality filter; {} or absent: everything.")
    window = WindowField(required=False, allow_null=True, help_text="A sub-window; absent: the whole capture.")
    controls = ControlsField(required=False, allow_null=True, help_text="Switches that only narrow the run.")


class ReplayExecuteRequestSerializer(ClosedSerializer):
    """Promote a succeeded dry run: the execute inherits every input from it, so any key but these two is a 400."""

    unknown_key_message = "an execute inherits everything from its dry run: send only {fields}"

    mode = serializers.ChoiceField(choices=ReplayMode.choices, help_text='"execute".')
    dry_run = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, help_text="The succeeded dry run to promote; the execute takes its inputs."
    )


REQUEST_SERIALIZERS: dict[str, type[ClosedSerializer]] = {
    ReplayMode.DRY_RUN: ReplayDryRunRequestSerializer,
    ReplayMode.EXECUTE: ReplayExecuteRequestSerializer,
}

ReplayRequestSerializer = PolymorphicProxySerializer(
    component_name="ReplayRequest",
    serializers={mode.value: cls for mode, cls in REQUEST_SERIALIZERS.items()},
    resource_type_field_name="mode",
)


def parse_request(data: Any) -> tuple[str, dict[str, Any]]:
    """(mode, validated body), or a DRF ValidationError naming the first bad field."""
    if not isinstance(data, Mapping):
        raise DRFValidationError({"non_field_errors": ["the body must be a JSON object"]})
    mode = data.get("mode")
    if not isinstance(mode, str) or mode not in REQUEST_SERIALIZERS:
        choices = ", ".join(f'"{m}"' for m in REQUEST_SERIALIZERS)
        raise DRFValidationError({"mode": [f"this field is required: {choices}" if mode is None else
                                           f"{json.dumps(mode)[:40]} is not one of {choices}"]})
    body = REQUEST_SERIALIZERS[mode](data=data)
    body.is_valid(raise_exception=True)
    return mode, dict(body.validated_data)


# --- responses -----------------------------------------------------------------------------------------------------


class ReplayCheckSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="dry_run, posture, pipeline_version or approval (permission at validation).")
    ok = serializers.BooleanField()
    detail = serializers.CharField()


class ReplayStageSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="running, done or failed.")
    started_at = serializers.CharField(allow_null=True)
    finished_at = serializers.CharField(allow_null=True)
    counts = serializers.DictField(help_text="What the stage counted (signals_in, incidents_formed …).")


class ReplayAcceptedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField(help_text="queued.")
    url = serializers.URLField(help_text="This replay in the API: poll it (also the Location header).")
    html_url = serializers.URLField(help_text="This replay's page.")


class ReplayRejectedSerializer(ErrorSerializer):
    id = serializers.IntegerField(help_text="The stored, rejected replay.")
    status = serializers.CharField(help_text="rejected.")
    url = serializers.URLField()
    html_url = serializers.URLField()
    checks = ReplayCheckSerializer(many=True, help_text="Every preflight check; each one that failed has ok false.")


class ReplayVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = PipelineVersion
        fields = ["id", "label", "spec_hash"]
        read_only_fields = fields


class ReplayArtifactSerializer(serializers.ModelSerializer):
    class Meta:
        model = Artifact
        fields = ["id", "sha256", "size", "window_start", "window_end"]
        read_only_fields = fields


class ReplayInputsSerializer(serializers.Serializer):
    """What the replay was asked to do: fixed at request time."""

    incident = serializers.CharField(source="incident.ref", read_only=True)
    environment = serializers.CharField(source="environment.slug", read_only=True)
    artifact = ReplayArtifactSerializer(read_only=True)
    pipeline_version = ReplayVersionSerializer(read_only=True)
    compare_version = ReplayVersionSerializer(read_only=True, allow_null=True)
    mode = serializers.ChoiceField(choices=ReplayMode.choices, read_only=True)
    dry_run = serializers.IntegerField(source="dry_run_id", read_only=True, allow_null=True,
                                       help_text="For an execute: the dry run it promotes.")
    scope = serializers.DictField(child=serializers.CharField(), read_only=True)
    window = serializers.SerializerMethodField(help_text="The sub-window; null: the artifact's whole capture.")
    controls = serializers.SerializerMethodField()

    @extend_schema_field(ReplayWindowSerializer(allow_null=True))
    def get_window(self, obj: ReplayExecution) -> dict[str, str] | None:
        if obj.window_start is None or obj.window_end is None:
            return None
        return {"start": format_timestamp(obj.window_start), "end": format_timestamp(obj.window_end)}

    @extend_schema_field(ReplayControlsSerializer)
    def get_controls(self, obj: ReplayExecution) -> dict[str, Any]:
        return obj.controls or {}


@extend_schema_field(OpenApiTypes.OBJECT)
class JSONObjectField(serializers.JSONField):
    """A JSON object stored as is."""


class ReplayCommandSerializer(serializers.ModelSerializer):
    agent = serializers.CharField(source="agent.name", read_only=True)
    action = serializers.SerializerMethodField()
    capability = serializers.SerializerMethodField()

    class Meta:
        model = Command
        fields = ["id", "agent", "action", "capability", "status", "created_at", "deadline", "delivered_at",
                  "acknowledged_at"]
        read_only_fields = fields

    def get_action(self, obj: Command) -> str | None:
        return obj.payload.get("action") if isinstance(obj.payload, dict) else None

    def get_capability(self, obj: Command) -> str | None:
        return obj.payload.get("capability") if isinstance(obj.payload, dict) else None


class _Links(serializers.Serializer):
    url = serializers.SerializerMethodField(help_text="This replay in the API.")
    html_url = serializers.SerializerMethodField(help_text="This replay's page.")

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, obj: ReplayExecution) -> str:
        return api_url(self.context["request"], obj)

    @extend_schema_field(OpenApiTypes.URI)
    def get_html_url(self, obj: ReplayExecution) -> str:
        return html_url(self.context["request"], obj)


class ReplayListSerializer(_Links, serializers.ModelSerializer):
    incident = serializers.CharField(source="incident.ref", read_only=True)
    environment = serializers.CharField(source="environment.slug", read_only=True)
    pipeline_version = serializers.CharField(source="pipeline_version.label", read_only=True)
    triggered_by = serializers.CharField(source="triggered_by.get_username", read_only=True, allow_null=True)

    class Meta:
        model = ReplayExecution
        fields = ["id", "url", "html_url", "mode", "status", "incident", "environment", "pipeline_version", "dry_run",
                  "triggered_by", "created_at", "finished_at"]
        read_only_fields = fields


class ReplaySerializer(ReplayListSerializer):
    inputs = ReplayInputsSerializer(source="*", read_only=True)
    stages = serializers.SerializerMethodField(help_text="Progress by stage, written as each stage happens.")
    checks = ReplayCheckSerializer(many=True, read_only=True, help_text="The preflight checks and their verdicts.")
    summary = JSONObjectField(read_only=True, help_text="Counts, parity and highlights, once the report exists.")
    audit_record = JSONObjectField(read_only=True, help_text="The run's audit record (audit_v 1): inputs, policy, "
                                   "and every planned action with its decision.")
    report_url = serializers.SerializerMethodField()
    evidence_url = serializers.SerializerMethodField()
    commands = serializers.SerializerMethodField(help_text="An execute's signed commands; null for a dry run.")

    class Meta(ReplayListSerializer.Meta):
        fields = [
            *ReplayListSerializer.Meta.fields, "status_changed_at", "started_at", "inputs", "stages", "checks",
            "summary", "audit_record", "task_id", "approval", "error", "report_sha256", "report_url",
            "evidence_sha256", "evidence_url", "commands",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.DictField(child=ReplayStageSerializer()))
    def get_stages(self, obj: ReplayExecution) -> dict[str, Any]:
        return obj.stages or {}

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_report_url(self, obj: ReplayExecution) -> str | None:
        if not obj.report_name:
            return None
        return self.context["request"].build_absolute_uri(reverse("replays-api:replay-report", args=[obj.pk]))

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_evidence_url(self, obj: ReplayExecution) -> str | None:
        if not obj.evidence_name:
            return None
        return self.context["request"].build_absolute_uri(reverse("replays-api:replay-evidence", args=[obj.pk]))

    @extend_schema_field(ReplayCommandSerializer(many=True, allow_null=True))
    def get_commands(self, obj: ReplayExecution) -> list[dict[str, Any]] | None:
        if obj.mode != ReplayMode.EXECUTE:
            return None
        commands = services.replay_commands(execution=obj).select_related("agent").order_by("pk")
        return ReplayCommandSerializer(commands, many=True).data


def api_url(request: Request, execution: ReplayExecution) -> str:
    return request.build_absolute_uri(reverse("replays-api:replay-detail", args=[execution.pk]))


def html_url(request: Request, execution: ReplayExecution) -> str:
    return request.build_absolute_uri(reverse("replays:detail", args=[execution.pk]))


# --- list filters and pagination -----------------------------------------------------------------------------------


class ReplayFilterSet(django_filters.FilterSet):
    environment = django_filters.CharFilter(field_name="environment__slug", help_text="An environment's slug.")
    mode = django_filters.ChoiceFilter(choices=ReplayMode.choices)
    status = django_filters.ChoiceFilter(choices=ReplayStatus.choices)
    pipeline_version = django_filters.CharFilter(field_name="pipeline_version__label", help_text="A version's label.")
    triggered_by = django_filters.CharFilter(field_name="triggered_by__username", help_text="A username.")
    incident = django_filters.CharFilter(field_name="incident__ref", help_text="An incident's ref.")

    class Meta:
        model = ReplayExecution
        fields = ["environment", "mode", "status", "pipeline_version", "triggered_by", "incident"]


class ReplayCursorPagination(CursorPagination):
    """Newest first; `next`/`previous` carry an opaque cursor, so new replays never shift a page under the reader."""

    ordering = ("-created_at", "-pk")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


# --- errors, as documented -----------------------------------------------------------------------------------------

_400 = OpenApiResponse(ValidationErrorSerializer, description="A bad query or body; `detail` and `field` name it.")
_401 = OpenApiResponse(
    ErrorSerializer,
    description="No credentials, or a malformed, unknown, revoked or expired token; `detail` says which.",
)
_404 = OpenApiResponse(ErrorSerializer, description="No such replay among those you may see.")
_NO_FILE = OpenApiResponse(
    ErrorSerializer, description="No such replay among those you may see, or it has no such file (yet)."
)

_CREATE_EXAMPLES = [
    OpenApiExample(
        "dry run",
        value={"mode": "dry_run", "incident": "INC-2026-0226-001", "artifact": 42, "pipeline_version": "v2-tightened",
               "scope": {"pop": "POP-12"}, "window": {"start": "2026-02-26T14:00:00Z", "end": "2026-02-26T14:02:00Z"},
               "controls": {"disabled_actions": ["page_oncall"], "max_pops": 1}},
        request_only=True,
    ),
    OpenApiExample("execute", value={"mode": "execute", "dry_run": 7}, request_only=True),
]


@extend_schema_view(
    list=extend_schema(
        operation_id="replays_list",
        summary="Replays you may see, newest first",
        tags=TAGS,
        responses={
            200: ReplayListSerializer(many=True),
            400: _400,
            401: _401,
            404: OpenApiResponse(ErrorSerializer, description="The `cursor` is not one this list handed out."),
        },
    ),
    retrieve=extend_schema(
        operation_id="replays_retrieve",
        summary="One replay: inputs, progress, checks, results and, for an execute, its commands",
        tags=TAGS,
        responses={200: ReplaySerializer, 401: _401, 404: _404},
    ),
)
class ReplayViewSet(JSONBodyMixin, viewsets.ReadOnlyModelViewSet):
    """Replays in the environments you may see (404 for any other); requesting one is a service call."""

    authentication_classes = [UserTokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    parser_classes = [SafeJSONParser]
    renderer_classes = [JSONRenderer]
    filterset_class = ReplayFilterSet
    pagination_class = ReplayCursorPagination
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self):
        return selectors.visible_replays(user=self.request.user)

    def get_serializer_class(self):
        return ReplayListSerializer if self.action == "list" else ReplaySerializer

    def get_object(self) -> ReplayExecution:
        return selectors.replay_for(user=self.request.user, pk=self.kwargs["pk"])

    def perform_content_negotiation(self, request: Request, force: bool = False):
        # The downloads answer with their own content type: an Accept of application/gzip must not be a 406.
        return super().perform_content_negotiation(request, force=force or self.action in ("report", "evidence"))

    # --- requesting ------------------------------------------------------------------------------------------------

    @extend_schema(
        operation_id="replays_create",
        summary="Request a dry run, or promote a succeeded dry run to an execute",
        description="A dry run names the incident, one of its bundles and optionally the version, scope, window and "
        "controls. An execute names only the dry run it promotes and inherits everything from it; its preflight "
        "checks (dry_run, posture, pipeline_version, approval) run before anything is queued, and an approval is "
        "consumed only when every check passes.",
        tags=TAGS,
        request=ReplayRequestSerializer,
        examples=_CREATE_EXAMPLES,
        responses={
            202: OpenApiResponse(ReplayAcceptedSerializer, description="Queued: poll `url`."),
            400: OpenApiResponse(
                ValidationErrorSerializer,
                description="A bad body: not an object, an unknown mode or key, a bad window, scope or controls, an "
                "artifact of another incident, an unknown pipeline version. `field` names it (e.g. `scope.colour`, "
                "`window.end`, `controls.max_pops`).",
            ),
            401: _401,
            403: OpenApiResponse(
                ErrorSerializer,
                description="You may see the environment but not dry-run (or execute) replays there. Also a session "
                "request without its CSRF token.",
            ),
            404: OpenApiResponse(
                ErrorSerializer, description="No such incident, artifact or dry run among those you may see."
            ),
            409: OpenApiResponse(
                ReplayRejectedSerializer,
                description="Stored as rejected: a check failed (the posture denies it; for an execute, any of the "
                "preflight checks). Nothing was queued and no approval was consumed; `checks` says which failed.",
            ),
            413: OpenApiResponse(ErrorSerializer, description="The body is over TRACEFLUX_MAX_JSON_BODY."),
            415: OpenApiResponse(ErrorSerializer, description="The body is not application/json."),
        },
    )
    def create(self, request: Request) -> Response:
        mode, body = parse_request(request.data)
        user = request.user
        if mode == ReplayMode.EXECUTE:
            dry_run = selectors.replay_for(user=user, pk=body["dry_run"], action=selectors.EXECUTE)
            execution = services.replay_request_execute(dry_run=dry_run, user=user)
        else:
            incident = selectors.incident_for(user=user, key=_incident_key(body["incident"]), action=selectors.DRY_RUN)
            artifact = visible_artifacts(user=user).filter(pk=body["artifact"]).first()
            if artifact is None:
                raise Http404(f"no artifact #{body['artifact']} that you can see")
            window = body.get("window") or {}
            execution = services.replay_request_dry_run(
                incident=incident,
                artifact=artifact,
                user=user,
                pipeline_version=_version(user, body.get("pipeline_version"), field="pipeline_version"),
                compare_version=_version(user, body.get("compare_version"), field="compare_version"),
                scope=body.get("scope"),
                window_start=window.get("start"),
                window_end=window.get("end"),
                controls=body.get("controls"),
            )
        links = {"url": api_url(request, execution), "html_url": html_url(request, execution)}
        if execution.status == ReplayStatus.REJECTED:
            failed = [check for check in execution.checks if not check.get("ok")]
            detail = "; ".join(f"{check['name']}: {check['detail']}" for check in failed) or "rejected"
            body_409 = {"detail": f"replay #{execution.pk} was rejected: {detail}", "id": execution.pk,
                        "status": execution.status, **links, "checks": execution.checks}
            return Response(body_409, status=status.HTTP_409_CONFLICT)
        return Response({"id": execution.pk, "status": execution.status, **links},
                        status=status.HTTP_202_ACCEPTED, headers={"Location": links["url"]})

    # --- downloads -------------------------------------------------------------------------------------------------

    @extend_schema(
        operation_id="replays_report",
        summary="The replay's report, byte for byte as stored (its sha256 is the replay's report_sha256)",
        tags=TAGS,
        responses={
            (200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT, description="The report document."),
            401: _401,
            404: _NO_FILE,
        },
    )
    @action(detail=True, methods=["get"])
    def report(self, request: Request, pk: str | None = None) -> FileResponse:
        execution = self.get_object()
        return _download(execution, name=execution.report_name, what="report", content_type="application/json",
                         filename=f"replay-{execution.pk}-report.json", attachment=False)

    @extend_schema(
        operation_id="replays_evidence",
        summary="The replay's evidence bundle (tar.gz); its sha256 is the replay's evidence_sha256",
        tags=TAGS,
        responses={
            (200, "application/gzip"): OpenApiResponse(OpenApiTypes.BINARY, description="The evidence bundle."),
            401: _401,
            404: _NO_FILE,
        },
    )
    @action(detail=True, methods=["get"])
    def evidence(self, request: Request, pk: str | None = None) -> FileResponse:
        execution = self.get_object()
        return _download(execution, name=execution.evidence_name, what="evidence bundle",
                         content_type="application/gzip", filename=f"replay-{execution.pk}-evidence.tar.gz",
                         attachment=True)


def _incident_key(key: int | str) -> int | str:
    if isinstance(key, str) and key.isdigit() and not key.isascii():
        raise Http404(f"no incident {key} that you can see")  # "²".isdigit(), but it is no id
    return key


def _version(user: Any, key: int | str | None, *, field: str) -> PipelineVersion | None:
    """A pipeline version by id (an integer) or label (a string; an all-digit string that is no label: an id)."""
    if key is None:
        return None
    versions = visible_pipeline_versions(user=user)
    if isinstance(key, int):
        found = versions.filter(pk=key).first()
    else:
        found = versions.filter(label=key).first()
        if found is None and key.isascii() and key.isdigit():
            found = versions.filter(pk=int(key)).first()
    if found is None:
        raise DRFValidationError({field: [f"no pipeline version {json.dumps(key)}"]})
    return found


def _download(execution: ReplayExecution, *, name: str, what: str, content_type: str, filename: str,
              attachment: bool) -> FileResponse:
    if not name:
        when = "yet " if not execution.is_final else ""
        raise Http404(f"replay #{execution.pk} has no {what} {when}(it is {execution.status})")
    try:
        stream = artifact_storage().open(name, "rb")
    except FileNotFoundError:
        log.error("replay #%s: its %s %s is missing from storage", execution.pk, what, name)
        raise Http404(f"replay #{execution.pk}'s {what} is missing from storage") from None
    return FileResponse(stream, content_type=content_type, as_attachment=attachment, filename=filename)

