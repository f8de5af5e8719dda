"""The demo's pending approval: operator asks to promote the tightened pipeline version to prod.

Called by `manage.py seed_demo` after incidents.demo has built the world, so the approvers' inbox has something in it.
Idempotent: once any deployment of that version to prod exists, whatever became of it, nothing is written.
"""

from __future__ import annotations

from collections import Counter

from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import transaction

from incidents.demo import CANDIDATE_LABEL
from incidents.models import Deployment, Environment, PipelineVersion

from .models import ApprovalRequest
from .services import deployment_promote

PROMOTION_ENVIRONMENT = "prod"
PROMOTION_REQUESTER = "operator"
PROMOTION_REASON = (
    f"promote {CANDIDATE_LABEL} to prod: it joins the BGP flap and the DNS errors at one POP into one page; "
    "the dry-run replay of INC-2026-0226-001 shows one incident instead of two"
)


@transaction.atomic
def seed_pending_promotion() -> tuple[ApprovalRequest | None, Counter[str]]:
    """Request the promotion (deployment pending approval plus its request) unless one was already made."""
    created: Counter[str] = Counter()
    environment = Environment.objects.get(slug=PROMOTION_ENVIRONMENT)
    version = PipelineVersion.objects.get(label=CANDIDATE_LABEL)
    existing = Deployment.objects.filter(environment=environment, pipeline_version=version).order_by("pk").first()
    if existing is not None:
        request = ApprovalRequest.objects.filter(
            content_type=ContentType.objects.get_for_model(Deployment), object_id=existing.pk
        ).first()
        return request, created
    operator = get_user_model().objects.get(username=PROMOTION_REQUESTER)
    _, request = deployment_promote(
        pipeline_version=version, environment=environment, requested_by=operator, reason=PROMOTION_REASON
    )
    created["deployments"] += 1
    if request is not None:
        created["approval requests"] += 1
    return request, created
