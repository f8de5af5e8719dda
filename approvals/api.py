"""The approvals API, for approvers at a terminal: list and read requests, approve or deny one.

Thin: the queryset is narrowed by approvals.selectors.visible_requests (404 for anything else), and a decision is
approvals.services.approval_decide and nothing lower. Its refusals become HTTP answers in the API exception handler
(incidents.api.exceptions): PermissionDenied → 403, ValidationError → 400, Conflict (a TransitionError) → 409.

Authentication is a personal token (`Authorization: Token tfu_…`) or the browser session, which keeps CSRF.
"""

from __future__ import annotations

import django_filters
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from incidents.api.base import SafeJSONParser
from incidents.api.serializers import ErrorSerializer, ValidationErrorSerializer

from . import services
from .models import ApprovalDecision, ApprovalRequest, ApprovalStatus, Decision
from .selectors import visible_requests
from .tokens import UserTokenAuthentication

TAGS = ["approvals"]


class UserTokenAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "approvals.tokens.UserTokenAuthentication"
    name = "userToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "A personal API token: `Authorization: Token tfu_<prefix>_<secret>`.",
        }


# --- bodies --------------------------------------------------------------------------------------------------------


class ApprovalConflictSerializer(ErrorSerializer):
    current = serializers.CharField(allow_null=True, help_text="The request's status now.")


class DecisionSerializer(serializers.ModelSerializer):
    approver = serializers.CharField(source="approver.get_username", read_only=True)

    class Meta:
        model = ApprovalDecision
        fields = ["approver", "decision", "comment", "created_at"]
        read_only_fields = fields


class ApprovalRequestSerializer(serializers.ModelSerializer):
    environment = serializers.CharField(source="environment.slug", read_only=True)
    requested_by = serializers.CharField(source="requested_by.get_username", read_only=True)
    approvals = serializers.SerializerMethodField(help_text="Approvals so far, towards required_approvals.")
    decisions = DecisionSerializer(many=True, read_only=True)

    class Meta:
        model = ApprovalRequest
        fields = [
            "id", "environment", "subject_kind", "status", "digest", "summary", "reason", "required_approvals",
            "approvals", "expires_at", "requested_by", "break_glass", "created_at", "decisions",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField())
    def get_approvals(self, obj: ApprovalRequest) -> int:
        return sum(1 for decision in obj.decisions.all() if decision.decision == Decision.APPROVE)


class DecideRequestSerializer(serializers.Serializer):
    comment = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=5000, help_text="Why; required to deny."
    )


class ApprovalRequestFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=ApprovalStatus.choices)
    environment = django_filters.CharFilter(field_name="environment__slug", help_text="An environment's slug.")

    class Meta:
        model = ApprovalRequest
        fields = ["status", "environment"]


# --- errors, as documented -----------------------------------------------------------------------------------------

_401 = OpenApiResponse(
    ErrorSerializer,
    description="No credentials, or a malformed, unknown, revoked or expired token; `detail` says which.",
)
_404 = OpenApiResponse(ErrorSerializer, description="No such request among those you may see.")
_DECIDE_ERRORS = {
    400: OpenApiResponse(ValidationErrorSerializer, description="A denial without a comment."),
    401: _401,
    403: OpenApiResponse(
        ErrorSerializer,
        description="You may not decide this request: you requested it, or you may not approve in its environment. "
        "Also a session request without its CSRF token.",
    ),
    404: _404,
    409: OpenApiResponse(
        ApprovalConflictSerializer,
        description="The request is no longer pending (decided, expired, revoked...), or you have already decided it. "
        "`current` names its status.",
    ),
}


@extend_schema_view(
    list=extend_schema(
        operation_id="approvals_list",
        summary="Approval requests you may see, newest first",
        tags=TAGS,
        responses={
            200: ApprovalRequestSerializer(many=True),
            400: ValidationErrorSerializer,
            401: _401,
            404: OpenApiResponse(ErrorSerializer, description="No such page: `page` is past the last or not a number."),
        },
    ),
    retrieve=extend_schema(
        operation_id="approvals_retrieve",
        summary="One approval request, with its decisions",
        tags=TAGS,
        responses={200: ApprovalRequestSerializer, 401: _401, 404: _404},
    ),
)
class ApprovalRequestViewSet(viewsets.ReadOnlyModelViewSet):
    authentication_classes = [UserTokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    parser_classes = [SafeJSONParser, FormParser, MultiPartParser]  # DRF's defaults, with a depth-safe JSON parser
    renderer_classes = [JSONRenderer]
    serializer_class = ApprovalRequestSerializer
    filterset_class = ApprovalRequestFilterSet
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return visible_requests(user=self.request.user).prefetch_related("decisions__approver")

    def _decide(self, request: Request, decision: str) -> Response:
        approval = self.get_object()  # 404 when not visible
        body = DecideRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.approval_decide(
            request=approval, approver=request.user, decision=decision, comment=body.validated_data["comment"]
        )
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        operation_id="approvals_approve",
        summary="Approve: counts towards the quorum",
        tags=TAGS,
        request=DecideRequestSerializer,
        responses={200: ApprovalRequestSerializer, **_DECIDE_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str | None = None) -> Response:
        return self._decide(request, Decision.APPROVE)

    @extend_schema(
        operation_id="approvals_deny",
        summary="Deny, with a comment: the request closes as denied",
        tags=TAGS,
        request=DecideRequestSerializer,
        responses={200: ApprovalRequestSerializer, **_DECIDE_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def deny(self, request: Request, pk: str | None = None) -> Response:
        return self._decide(request, Decision.DENY)
