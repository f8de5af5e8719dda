"""The agent's upload endpoint: POST /api/v1/agent/artifacts/ (multipart: `file` and `kind`).

The view is thin: it refuses what it can judge without reading the body (media type, Content-Length), receives the
file through ArtifactUploadHandler, and hands the temporary file to artifacts.services. Every refusal after
authentication is audited; the temporary file is removed on every path.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.utils.http import parse_header_parameters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import exceptions, serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from incidents.api.base import AgentAPIView
from incidents.api.serializers import ErrorSerializer, RateLimitedSerializer
from incidents.models import AgentScope
from traceflux import metrics

from . import services
from .errors import UploadRefused
from .models import Artifact, ArtifactKind
from .uploads import (
    FILE_FIELD,
    ArtifactUploadHandler,
    ReceivedFile,
    max_request_bytes,
    max_upload_bytes,
    upload_temp_dir,
)

MULTIPART = "multipart/form-data"


# --- shapes --------------------------------------------------------------------------------------------------------


class ArtifactUploadRequestSerializer(serializers.Serializer):
    """The multipart form (for the schema only: the view reads the parts itself, streaming the file)."""

    file = serializers.FileField(help_text="The bundle (tar.gz or zip) or the snapshot (JSON). Its type is judged "
                                 "by its bytes, never by its name or the part's Content-Type.")
    kind = serializers.ChoiceField(choices=ArtifactKind.choices)


class ArtifactUploadResponseSerializer(serializers.ModelSerializer):
    duplicate = serializers.SerializerMethodField()
    incident = serializers.SlugRelatedField(slug_field="ref", read_only=True, help_text="The incident's ref.")
    pipeline_version = serializers.SlugRelatedField(
        slug_field="label", read_only=True, help_text="The label of the version with the manifest's spec hash, or null."
    )

    class Meta:
        model = Artifact
        fields = [
            "id",
            "kind",
            "sha256",
            "size",
            "duplicate",
            "incident",
            "captured_at",
            "spec_hash",
            "pipeline_version",
            "validation",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_duplicate(self, artifact: Artifact) -> bool:
        return bool(self.context.get("duplicate"))


class UploadErrorSerializer(serializers.Serializer):
    """Every refusal: `detail` names the problem; `field` its JSON path; `lines` the first bad signal lines."""

    detail = serializers.CharField()
    field = serializers.CharField(required=False, help_text="For example manifest.window.end")
    lines = serializers.ListField(child=serializers.IntegerField(), required=False,
                                  help_text="The first (at most 20) bad line numbers of signals.jsonl.")
    more_lines = serializers.IntegerField(required=False, help_text="How many further lines were bad.")


def _error(description: str, example: dict[str, Any], shape: type = UploadErrorSerializer) -> OpenApiResponse:
    return OpenApiResponse(
        response=shape,
        description=description,
        examples=[OpenApiExample(description, value=example, response_only=True)],
    )


# --- refusals ------------------------------------------------------------------------------------------------------


class UploadRefusedError(exceptions.APIException):
    """Carries an UploadRefused through DRF's exception handler, keeping its body as is (line numbers stay ints)."""

    def __init__(self, refusal: UploadRefused) -> None:
        super().__init__(detail=refusal.detail)
        self.status_code = refusal.status
        self.detail = refusal.as_dict()  # type: ignore[assignment]


def _media_type(request: Request) -> str:
    media_type, _ = parse_header_parameters(request.META.get("CONTENT_TYPE", ""))
    return media_type


def refuse_before_reading(request: Request) -> None:
    """What can be refused from the headers alone: a body that is not multipart, or is announced too large."""
    media_type = _media_type(request)
    if media_type != MULTIPART:
        raise UploadRefused(
            f"expected {MULTIPART} with the parts {FILE_FIELD} and kind; got {media_type or 'no Content-Type'}",
            status=415,
        )
    try:
        announced = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise UploadRefused("Content-Length is not a number", status=400) from None
    if announced > max_request_bytes():
        raise UploadRefused(
            f"Content-Length {announced} is over the upload limit of {max_upload_bytes()} bytes "
            "(TRACEFLUX_MAX_UPLOAD_BYTES); nothing was read",
            status=413,
            field=FILE_FIELD,
        )


def read_form(request: Request) -> tuple[str, ReceivedFile]:
    """Parse the body (the upload handler streams the file to disk) and return (kind, received file)."""
    try:
        data = request.data
    except exceptions.ParseError as exc:
        raise UploadRefused(f"the multipart body could not be parsed: {exc.detail}", status=400) from None
    except RequestDataTooBig:
        raise UploadRefused("the form's fields besides the file are too large", status=413) from None
    except (TooManyFieldsSent, TooManyFilesSent) as exc:
        raise UploadRefused(f"the form has too many parts: {exc}", status=400) from None
    kinds = data.getlist("kind") if hasattr(data, "getlist") else [data.get("kind")]
    kind = kinds[-1] if kinds else None
    received = request.FILES.get(FILE_FIELD)
    if not isinstance(received, ReceivedFile):
        if data.get(FILE_FIELD) is not None:
            raise UploadRefused(f"{FILE_FIELD}: send it as a file part (with a filename)", status=400, field=FILE_FIELD)
        raise UploadRefused(f"{FILE_FIELD}: this part is required", status=400, field=FILE_FIELD)
    if not isinstance(kind, str) or not kind:
        raise UploadRefused(
            f"kind: this part is required ({' or '.join(ArtifactKind.values)})", status=400, field="kind"
        )
    return kind, received


# --- the view ------------------------------------------------------------------------------------------------------


class ArtifactUploadView(AgentAPIView):
    required_scope = AgentScope.ARTIFACTS_WRITE
    rate_group = "uploads"
    parser_classes = [MultiPartParser]
    renderer_classes = [JSONRenderer]  # an agent API: no browsable form that would read the body on its own

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """After authentication, scope and rate checks (none of which read the body), install the streaming handler."""
        super().initial(request, *args, **kwargs)
        self.upload = ArtifactUploadHandler(request, max_bytes=max_upload_bytes(), temp_dir=upload_temp_dir())
        request._request.upload_handlers = [self.upload]

    @extend_schema(
        operation_id="agent_artifact_upload",
        summary="Upload an incident bundle or a snapshot",
        description=(
            "multipart/form-data with `file` and `kind`. The file's type is decided by its bytes. "
            "The same bytes already stored in the agent's environment answer 200 with `duplicate: true`; "
            "new bytes answer 201. Needs a key with the scope artifacts:write."
        ),
        request={MULTIPART: ArtifactUploadRequestSerializer},
        responses={
            200: OpenApiResponse(ArtifactUploadResponseSerializer, description="Already stored: the existing one."),
            201: OpenApiResponse(ArtifactUploadResponseSerializer, description="Stored."),
            400: _error("The content is wrong", {"detail": "signals.jsonl: 2 lines have timestamps outside the window "
                        "(line 3: ts 2026-02-26T14:20:00Z is after window.end 2026-02-26T14:10:00Z)",
                        "lines": [3, 4], "more_lines": 0}),
            401: _error("No or a bad key", {"detail": "unknown agent key"}, ErrorSerializer),
            403: _error("Key lacks the scope, or the manifest names another environment or agent",
                        {"detail": "manifest.environment: 'prod' is not this key's environment", "field":
                         "manifest.environment"}),
            413: _error("Too large", {"detail": "file: the upload is larger than the limit of 67108864 bytes "
                        "(TRACEFLUX_MAX_UPLOAD_BYTES)", "field": "file"}),
            415: _error("Not multipart, or the file is not the declared kind",
                        {"detail": "kind incident_bundle expects a gzip'd tar or a zip; the file is JSON"}),
            429: _error("Rate limit", {"detail": "rate limit for uploads exceeded (30/m); retry in 12 s",
                                       "retry_after": 12}, RateLimitedSerializer),
        },
        tags=["agent"],
    )
    def post(self, request: Request) -> Response:
        agent = self.principal.agent
        kind = ""
        try:
            refuse_before_reading(request)
            kind, received = read_form(request)
            artifact, duplicate = services.artifact_upload(
                agent=agent, kind=kind, temp_path=received.path, sha256=received.sha256, size=received.size
            )
        except UploadRefused as refusal:
            if not refusal.audited:
                services.artifact_reject(agent=agent, kind=kind, refusal=refusal)
            raise UploadRefusedError(refusal) from None
        finally:
            self.upload.discard()
        metrics.artifact_uploaded(kind=artifact.kind, size=artifact.size, duplicate=duplicate)
        body = ArtifactUploadResponseSerializer(artifact, context={"duplicate": duplicate}).data
        return Response(body, status=200 if duplicate else 201)
