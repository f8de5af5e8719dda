"""Approval fixtures: prod deployments (quorum 2) and staging ones (quorum 1), requested by the operator."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.digest import deployment_digest
from approvals.models import ApprovalRequest
from approvals.services import approval_decide, approval_request
from tests.factories import DeploymentFactory


def request_for(deployment, *, by, reason: str = "roll out the tightened policy") -> ApprovalRequest:
    return approval_request(
        subject=deployment,
        subject_kind="deployment",
        digest=deployment_digest(deployment),
        summary={"pipeline_version": deployment.pipeline_version.label, "targets": "everywhere"},
        environment=deployment.environment,
        requested_by=by,
        reason=reason,
    )


def approve_all(request: ApprovalRequest, *approvers) -> ApprovalRequest:
    for approver in approvers:
        request = approval_decide(request=request, approver=approver, decision="approve", comment="looks right")
    return request


def shift_expiry(request: ApprovalRequest, by: timedelta) -> ApprovalRequest:
    """Move the request's clock instead of the world's: expires_at relative to now (negative = already past)."""
    ApprovalRequest.objects.filter(pk=request.pk).update(expires_at=timezone.now() + by)
    request.refresh_from_db()
    return request


@pytest.fixture
def prod_deployment(environments):
    return DeploymentFactory(environment=environments["prod"])


@pytest.fixture
def staging_deployment(environments):
    return DeploymentFactory(environment=environments["staging"])


@pytest.fixture
def prod_request(operator, prod_deployment) -> ApprovalRequest:
    return request_for(prod_deployment, by=operator)


@pytest.fixture
def staging_request(operator, staging_deployment) -> ApprovalRequest:
    return request_for(staging_deployment, by=operator)


@pytest.fixture
def approved_prod_request(prod_request, approver1, approver2) -> ApprovalRequest:
    return approve_all(prod_request, approver1, approver2)
