"""Approvals in the console: read-only, environment-scoped, decided only through the services (admin actions)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.utils import timezone

from incidents.admin import ConsoleAdmin, VisibleEnvironmentFilter, reason_action

from . import services
from .models import ApprovalDecision, ApprovalRequest, Decision


class ApprovalDecisionInline(admin.TabularInline):
    model = ApprovalDecision
    fields = ("created_at", "approver", "decision", "comment")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _decide(decision: str):
    def apply(request: HttpRequest, approval: ApprovalRequest, reason: str) -> ApprovalRequest:
        return services.approval_decide(request=approval, approver=request.user, decision=decision, comment=reason)

    return apply


def _revoke(request: HttpRequest, approval: ApprovalRequest, reason: str) -> ApprovalRequest:
    return services.approval_revoke(request=approval, actor=request.user, reason=reason)


def _break_glass(request: HttpRequest, approval: ApprovalRequest, reason: str) -> ApprovalRequest:
    if not request.user.is_superuser:
        raise PermissionDenied("break-glass is for superusers only")
    return services.approval_break_glass(request=approval, actor=request.user, reason=reason)


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ConsoleAdmin):
    environment_path = "environment"
    change_fields = (
        "subject_kind", "subject_link", "environment", "status", "digest", "requested_by", "reason",
        "required_approvals", "expires_at", "time_left", "summary", "break_glass", "break_glass_reason",
        "break_glass_by", "break_glass_at", "consumed_by_ref", "consumed_at", "created_at", "status_changed_at",
    )
    inlines = [ApprovalDecisionInline]
    list_display = (
        "id", "subject_kind", "environment", "status", "approvals", "requested_by", "break_glass", "expires_at",
        "created_at",
    )
    list_filter = ("status", "subject_kind", "break_glass", ("environment", VisibleEnvironmentFilter))
    search_fields = ("digest", "reason", "requested_by__username")
    list_select_related = ("environment", "requested_by", "content_type")
    actions = [
        reason_action(name="approve", description="Approve (counts towards the quorum)",
                      apply=_decide(Decision.APPROVE)),
        reason_action(name="deny", description="Deny (pending → denied)", apply=_decide(Decision.DENY),
                      reason_required=True),
        reason_action(name="revoke", description="Revoke (pending/approved → revoked)", apply=_revoke,
                      reason_required=True),
        reason_action(name="break_glass", description="BREAK-GLASS: approve without the quorum (superusers)",
                      apply=_break_glass, reason_required=True),
    ]

    @admin.display(description="subject")
    def subject_link(self, obj: ApprovalRequest) -> str:
        return str(obj.subject) if obj.subject is not None else f"{obj.content_type} #{obj.object_id} (gone)"

    @admin.display(description="consumed by")
    def consumed_by_ref(self, obj: ApprovalRequest) -> str:
        if obj.consumed_by_id is None:
            return "-"
        return f"{obj.consumed_by_type} #{obj.consumed_by_id}"

    @admin.display(description="time left")
    def time_left(self, obj: ApprovalRequest) -> str:
        left = obj.expires_at - timezone.now()
        return "expired" if left.total_seconds() <= 0 else str(left).split(".")[0]

    @admin.display(description="approvals")
    def approvals(self, obj: ApprovalRequest) -> str:
        count = obj.decisions.filter(decision=Decision.APPROVE).count()
        return f"{count}/{obj.required_approvals}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(ApprovalDecision)
class ApprovalDecisionAdmin(ConsoleAdmin):
    environment_path = "request__environment"
    change_fields = ("request", "approver", "decision", "comment", "created_at")
    list_display = ("id", "request", "approver", "decision", "created_at")
    list_filter = ("decision", ("request__environment", VisibleEnvironmentFilter))
    search_fields = ("request__digest", "approver__username", "comment")
    list_select_related = ("request__environment", "approver")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return {}
