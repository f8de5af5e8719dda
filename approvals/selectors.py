"""What a user sees of approvals: narrowed by incidents.selectors, the one place that decides per environment."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from incidents.selectors import APPROVE, environments_where, visible_environments

from .models import ApprovalRequest, ApprovalStatus


def visible_requests(*, user) -> QuerySet[ApprovalRequest]:
    """Requests in the environments the user may see."""
    return ApprovalRequest.objects.filter(environment__in=visible_environments(user=user)).select_related(
        "environment", "requested_by", "content_type"
    )


def pending_for(*, user) -> QuerySet[ApprovalRequest]:
    """The user's inbox: pending, unexpired requests where they may approve, not their own, not yet decided by them."""
    if user is None or not user.is_authenticated:
        return ApprovalRequest.objects.none()
    return (
        visible_requests(user=user)
        .filter(
            status=ApprovalStatus.PENDING,
            expires_at__gt=timezone.now(),
            environment__in=environments_where(user=user, perm=APPROVE),
        )
        .exclude(requested_by=user)
        .exclude(decisions__approver=user)
        .order_by("expires_at", "pk")
    )
