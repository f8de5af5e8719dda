"""Approvals in the console: read-only, environment-scoped, decided only through the services (admin actions)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from incidents.admin import ConsoleAdmin, ShowSecretOnceMixin, VisibleEnvironmentFilter, reason_action

from . import services, tokens
from .models import ApprovalDecision, ApprovalRequest, Decision, UserToken


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
        count = sum(1 for decision in obj.decisions.all() if decision.decision == Decision.APPROVE)
        return f"{count}/{obj.required_approvals}"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The approvals column reads each row's decisions: one query for the whole page, not one per row.
        return super().get_queryset(request).prefetch_related("decisions")

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


# --- personal API tokens -----------------------------------------------------------------------------------------


class UserTokenAddForm(forms.ModelForm):
    class Meta:
        model = UserToken
        fields = ["user", "name", "expires_at"]

    def clean_expires_at(self) -> Any:
        expires_at = self.cleaned_data.get("expires_at")
        if expires_at is not None and expires_at <= timezone.now():
            raise ValidationError("a token cannot expire in the past")
        return expires_at


def _token_state(token: UserToken) -> str:
    if token.revoked_at:
        return "revoked"
    if token.expires_at and token.expires_at <= timezone.now():
        return "expired"
    return "active"


def _revoke_token(request: HttpRequest, token: UserToken, reason: str) -> UserToken:
    if not request.user.is_superuser and token.user_id != request.user.pk:
        raise PermissionDenied("only a superuser may revoke another person's token")
    if token.revoked_at:
        raise ValidationError(f"already revoked at {token.revoked_at:%Y-%m-%d %H:%M} UTC")
    return tokens.user_token_revoke(token=token, actor=request.user, reason=reason)


@admin.register(UserToken)
class UserTokenAdmin(ShowSecretOnceMixin, ConsoleAdmin):
    """People's API tokens: created through the service (shown once), revoked by an action, never edited.

    A superuser sees and manages everyone's tokens; anyone else only their own.
    """

    issued_template = "admin/approvals/usertoken/issued.html"
    issued_noun = "Token"

    environment_path = None
    add_form = UserTokenAddForm
    add_fields = ("user", "name", "expires_at")
    # secret_hmac is never shown anywhere: not a field, not a column, not searchable.
    change_fields = ("user", "name", "prefix", "state", "created_at", "expires_at", "revoked_at", "last_used_at")
    list_display = ("prefix", "user", "name", "state", "created_at", "expires_at", "revoked_at", "last_used_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("prefix", "name", "user__username")
    list_select_related = ("user",)
    actions = [reason_action(name="revoke_tokens", description="Revoke the selected tokens", apply=_revoke_token)]

    @admin.display(description="state")
    def state(self, obj: UserToken) -> str:
        return _token_state(obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        return queryset if request.user.is_superuser else queryset.filter(user=request.user)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "user" and not request.user.is_superuser:
            kwargs["queryset"] = get_user_model().objects.filter(pk=request.user.pk)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def create(self, request: HttpRequest, form: forms.ModelForm) -> UserToken:
        data = form.cleaned_data
        if not request.user.is_superuser and data["user"].pk != request.user.pk:
            raise PermissionDenied("only a superuser may create a token for someone else")
        token, plaintext = tokens.user_token_create(
            user=data["user"], name=data["name"], actor=request.user, expires_at=data["expires_at"]
        )
        self.remember_secret(request, plaintext)
        return token
