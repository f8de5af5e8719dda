"""Receivers that carry a closed approval over to its subject. Connected in ApprovalsConfig.ready().

approval_closed is sent on commit, so the deployment moves in its own transaction, through incidents' service.
"""

from __future__ import annotations

import contextlib
from typing import Any

from django.contrib.contenttypes.models import ContentType

from incidents.models import Deployment, DeploymentStatus
from incidents.services import deployment_transition
from traceflux import audit
from traceflux.statemachine import TransitionError

from .digest import deployment_digest
from .models import ApprovalRequest, ApprovalStatus, SubjectKind

# A request closed in one of these leaves its deployment denied. A withdrawn one does not: the requester may ask again.
DENYING = (ApprovalStatus.DENIED, ApprovalStatus.EXPIRED, ApprovalStatus.REVOKED)


def _closing_actor(request: ApprovalRequest) -> Any:
    """Whoever made the last move of the request (the last approver, a denier, a revoker, break-glass), else system."""
    last = request.history.order_by("-history_id").first()
    return last.history_user if last is not None and last.history_user is not None else audit.SYSTEM


def on_approval_closed(sender: Any, request: ApprovalRequest, status: str, **kwargs: Any) -> None:
    """pending_approval → approved when its request is approved (quorum or break-glass), → denied when it is not."""
    if request.subject_kind != SubjectKind.DEPLOYMENT:
        return
    if request.content_type_id != ContentType.objects.get_for_model(Deployment).pk:
        return
    deployment = Deployment.objects.select_related("environment", "pipeline_version").filter(
        pk=request.object_id
    ).first()
    if deployment is None or deployment.status != DeploymentStatus.PENDING_APPROVAL:
        return  # an approved request expiring later, or a deployment moved on by hand
    if status == ApprovalStatus.APPROVED:
        if deployment_digest(deployment) != request.digest:
            to = DeploymentStatus.DENIED
            reason = f"approval #{request.pk} approved another digest than this deployment's"
        else:
            to, reason = DeploymentStatus.APPROVED, f"approval #{request.pk} approved"
    elif status in DENYING:
        to, reason = DeploymentStatus.DENIED, f"approval #{request.pk} {status}"
    else:
        return
    with contextlib.suppress(TransitionError):  # moved concurrently (an admin action): the first move stands
        deployment_transition(deployment=deployment, to=to, actor=_closing_actor(request), reason=reason)
