"""Approval requests and decisions: who signed off what, bound to a digest, used at most once."""

from __future__ import annotations

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q
from django.utils import timezone
from simple_history.models import HistoricalRecords

from incidents.models import Environment, PostureAction


class SubjectKind(models.TextChoices):
    REPLAY_EXECUTE = "replay_execute"
    DEPLOYMENT = "deployment"


# The posture action that governs each kind of subject (incidents.posture.posture_decision).
SUBJECT_ACTIONS: dict[str, str] = {
    SubjectKind.REPLAY_EXECUTE: PostureAction.EXECUTE,
    SubjectKind.DEPLOYMENT: PostureAction.DEPLOY,
}


class ApprovalStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    REVOKED = "revoked"
    WITHDRAWN = "withdrawn"
    CONSUMED = "consumed"


# consumed → approved is restoration only: the consuming execution was rejected or failed before dispatching anything.
# consumed → revoked: an approver pulls the sign-off back after it was used; an execute that has not started yet is
# then rejected when its task re-checks the gates (replays.services).
APPROVAL_TRANSITIONS: dict[str, set[str]] = {
    ApprovalStatus.PENDING: {
        ApprovalStatus.APPROVED,
        ApprovalStatus.DENIED,
        ApprovalStatus.EXPIRED,
        ApprovalStatus.REVOKED,
        ApprovalStatus.WITHDRAWN,
    },
    ApprovalStatus.APPROVED: {ApprovalStatus.CONSUMED, ApprovalStatus.EXPIRED, ApprovalStatus.REVOKED},
    ApprovalStatus.CONSUMED: {ApprovalStatus.APPROVED, ApprovalStatus.REVOKED},
}

# A subject has at most one request in these states at a time.
OPEN_STATUSES = (ApprovalStatus.PENDING, ApprovalStatus.APPROVED)


class ApprovalRequest(models.Model):
    """A request to approve exactly one thing (the digest) in one environment, with the posture of the moment."""

    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, related_name="+")
    object_id = models.PositiveBigIntegerField()
    subject = GenericForeignKey("content_type", "object_id")
    subject_kind = models.CharField(max_length=20, choices=SubjectKind.choices)
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="approval_requests")
    digest = models.CharField(max_length=64, db_index=True, help_text="sha256 of the canonical JSON approved.")
    summary = models.JSONField(default=dict, blank=True, help_text="Frozen when requested: what approvers judge.")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField()
    required_approvals = models.PositiveSmallIntegerField()
    expires_at = models.DateTimeField()
    status = models.CharField(
        max_length=20, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING, db_index=True
    )
    consumed_by_type = models.ForeignKey(
        ContentType, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    consumed_by_id = models.PositiveBigIntegerField(null=True, blank=True)
    consumed_by = GenericForeignKey("consumed_by_type", "consumed_by_id")
    consumed_at = models.DateTimeField(null=True, blank=True)
    break_glass = models.BooleanField(default=False)
    break_glass_reason = models.TextField(blank=True)
    break_glass_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    break_glass_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["environment", "status"], name="approval_env_status_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(required_approvals__gte=1), name="approval_quorum_positive"),
            models.CheckConstraint(
                condition=Q(break_glass=False) | ~Q(break_glass_reason=""), name="approval_break_glass_has_reason"
            ),
            models.CheckConstraint(
                condition=~Q(status="consumed") | Q(consumed_by_id__isnull=False),
                name="approval_consumed_names_execution",
            ),
            models.UniqueConstraint(
                fields=["content_type", "object_id"],
                condition=Q(status__in=["pending", "approved"]),
                name="approval_one_open_request_per_subject",
            ),
        ]

    def __str__(self) -> str:
        return f"approval #{self.pk} ({self.subject_kind} in {self.environment})"

    def audit_environment(self) -> str:
        return self.environment.slug

    def is_expired(self, *, now=None) -> bool:
        """Past expires_at by the clock, whatever the status says (the beat task may not have run yet)."""
        return self.expires_at <= (now or timezone.now())


class Decision(models.TextChoices):
    APPROVE = "approve"
    DENY = "deny"


class ApprovalDecision(models.Model):
    """One approver's decision on one request. Append-only; one per approver and request."""

    request = models.ForeignKey(ApprovalRequest, on_delete=models.PROTECT, related_name="decisions")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["request", "approver"], name="approval_decision_once_per_approver"),
            models.CheckConstraint(
                condition=~Q(decision="deny") | ~Q(comment=""), name="approval_decision_deny_has_comment"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.decision} by {self.approver} on #{self.request_id}"

    def audit_environment(self) -> str:
        return self.request.environment.slug


class UserToken(models.Model):
    """A person's API token, sent as `Authorization: Token tfu_<prefix>_<secret>`. Only its secret's HMAC is kept."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, help_text="What the token is for, e.g. 'laptop CLI'.")
    prefix = models.CharField(max_length=12, unique=True, editable=False)
    secret_hmac = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords(excluded_fields=["last_used_at"])

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"token {self.prefix} of {self.user}" + (f" ({self.name})" if self.name else "")

    def is_usable(self, *, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)
