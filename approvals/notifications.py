"""Email the eligible approvers when a request is made. Connected in ApprovalsConfig.ready; runs on commit."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.dispatch import receiver
from django.urls import reverse
from guardian.shortcuts import get_users_with_perms

from .models import ApprovalRequest
from .signals import approval_requested

logger = logging.getLogger(__name__)

APPROVE_CODENAME = "approve_environment"


def eligible_approvers(request: ApprovalRequest) -> list:
    """Active users granted approve on the environment (directly or through a group), without the requester."""
    users = get_users_with_perms(
        request.environment, only_with_perms_in=[APPROVE_CODENAME], with_group_users=True, with_superusers=False
    )
    return list(
        users.filter(is_active=True).exclude(pk=request.requested_by_id).exclude(email="").order_by("username")
    )


def review_url(request: ApprovalRequest) -> str:
    return settings.TRACEFLUX_BASE_URL.rstrip("/") + reverse("approvals:review", args=[request.pk])


def request_email(request: ApprovalRequest, approver) -> EmailMessage:
    summary = request.summary or {}
    version = summary.get("pipeline_version")
    label = version.get("label") if isinstance(version, dict) else version
    what = f"{request.get_subject_kind_display()}" + (f" of {label}" if label else "")
    body = "\n".join(
        [
            f"Hello {approver.get_username()},",
            "",
            f"{request.requested_by.get_username()} asks for approval of a {what} in {request.environment.slug}.",
            f"Reason: {request.reason}",
            f"Approvals needed: {request.required_approvals}",
            f"Expires at: {request.expires_at:%Y-%m-%d %H:%M} UTC",
            "",
            f"Review it: {review_url(request)}",
        ]
    )
    return EmailMessage(
        subject=f"[TraceFlux] Approval #{request.pk}: {what} in {request.environment.slug}",
        body=body,
        to=[approver.email],
    )


@receiver(approval_requested, dispatch_uid="approvals.notifications.email_approvers")
def email_approvers(sender, request: ApprovalRequest, **kwargs) -> int:
    """One email per approver, so approvers do not see each other's addresses. A mail failure never breaks the request.

    Returns how many were sent.
    """
    try:
        messages = [request_email(request, approver) for approver in eligible_approvers(request)]
        if not messages:
            return 0
        return get_connection().send_messages(messages) or 0
    except Exception:  # the request is committed; a mail server outage must not turn it into a 500
        logger.exception("could not email the approvers of approval #%s", request.pk)
        return 0
