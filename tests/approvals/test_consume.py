"""Using an approval: exactly the digest it was given for, in its environment, once; restored only when unused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from approvals.digest import approval_digest, deployment_digest
from approvals.services import Conflict, approval_break_glass, approval_consume, approval_restore
from incidents import services as incidents_services
from tests.approvals.conftest import shift_expiry
from tests.factories import DeploymentFactory
from traceflux.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_it_consumes_an_approved_request_once_for_the_execution(approved_prod_request, prod_deployment, environments):
    used = approval_consume(
        digest=deployment_digest(prod_deployment), environment=environments["prod"], execution=prod_deployment
    )
    assert used.pk == approved_prod_request.pk
    assert used.status == "consumed"
    assert used.consumed_by == prod_deployment
    assert used.consumed_at is not None
    event = AuditEvent.objects.get(action="approval.consumed")
    assert event.data["execution"] == f"incidents.deployment:{prod_deployment.pk}"

    with pytest.raises(Conflict, match="is consumed, not approved"):
        approval_consume(
            digest=deployment_digest(prod_deployment), environment=environments["prod"], execution=prod_deployment
        )


def test_it_refuses_a_digest_that_was_not_approved(approved_prod_request, prod_deployment, environments):
    prod_deployment.target_regions = ["eu-west-1"]  # a wider or other blast radius is another digest
    with pytest.raises(PermissionDenied, match="no approval in prod covers digest"):
        approval_consume(
            digest=deployment_digest(prod_deployment), environment=environments["prod"], execution=prod_deployment
        )
    approved_prod_request.refresh_from_db()
    assert approved_prod_request.status == "approved"


def test_it_refuses_the_right_digest_in_another_environment(approved_prod_request, prod_deployment, environments):
    with pytest.raises(PermissionDenied, match="no approval in staging covers"):
        approval_consume(
            digest=approved_prod_request.digest, environment=environments["staging"], execution=prod_deployment
        )


def test_it_refuses_to_consume_a_pending_request(prod_request, prod_deployment, environments):
    with pytest.raises(Conflict, match="is pending, not approved") as refused:
        approval_consume(digest=prod_request.digest, environment=environments["prod"], execution=prod_deployment)
    assert refused.value.current == "pending"


def test_it_checks_the_clock_at_use_and_expires_an_overdue_approval(
    approved_prod_request, prod_deployment, environments
):
    shift_expiry(approved_prod_request, -timedelta(seconds=1))
    with pytest.raises(Conflict, match="expired"):
        approval_consume(
            digest=approved_prod_request.digest, environment=environments["prod"], execution=prod_deployment
        )
    approved_prod_request.refresh_from_db()
    assert approved_prod_request.status == "expired"


def test_it_refuses_to_consume_once_the_posture_denies(
    approved_prod_request, prod_deployment, environments, admin_user
):
    incidents_services.environment_set_posture(
        environment=environments["prod"], actor=admin_user, reason="freeze", deploy_policy="deny"
    )
    with pytest.raises(PermissionDenied, match="denied in prod by its posture"):
        approval_consume(
            digest=approved_prod_request.digest, environment=environments["prod"], execution=prod_deployment
        )
    approved_prod_request.refresh_from_db()
    assert approved_prod_request.status == "approved"


def test_it_restores_an_approval_whose_execution_failed_before_dispatching(
    approved_prod_request, prod_deployment, environments
):
    used = approval_consume(
        digest=approved_prod_request.digest, environment=environments["prod"], execution=prod_deployment
    )
    with pytest.raises(ValidationError, match="reason"):
        approval_restore(request=used, execution=prod_deployment, reason="")

    restored = approval_restore(request=used, execution=prod_deployment, reason="rejected in validation")

    assert restored.status == "approved"
    assert restored.consumed_by_id is None
    event = AuditEvent.objects.get(action="approval.restored")
    assert event.reason == "rejected in validation"
    assert event.data["execution"] == f"incidents.deployment:{prod_deployment.pk}"
    again = approval_consume(
        digest=approved_prod_request.digest, environment=environments["prod"], execution=prod_deployment
    )
    assert again.status == "consumed"


def test_it_restores_only_for_the_execution_that_consumed_it(approved_prod_request, prod_deployment, environments):
    with pytest.raises(Conflict, match="only a consumed approval"):
        approval_restore(request=approved_prod_request, execution=prod_deployment, reason="nothing to restore")
    approval_consume(digest=approved_prod_request.digest, environment=environments["prod"], execution=prod_deployment)
    other = DeploymentFactory(environment=environments["prod"])
    with pytest.raises(Conflict, match="consumed by another execution"):
        approval_restore(request=approved_prod_request, execution=other, reason="not mine")


def test_it_still_needs_consumption_after_break_glass(prod_request, prod_deployment, environments, admin_user):
    approval_break_glass(request=prod_request, actor=admin_user, reason="SEV1")
    used = approval_consume(digest=prod_request.digest, environment=environments["prod"], execution=prod_deployment)
    assert (used.status, used.break_glass) == ("consumed", True)
    assert AuditEvent.objects.get(action="approval.consumed").data["break_glass"] is True
    with pytest.raises(Conflict):
        approval_consume(digest=prod_request.digest, environment=environments["prod"], execution=prod_deployment)


def test_it_binds_the_digest_to_every_part_of_what_is_approved(environments):
    base = {
        "subject_kind": "replay_execute",
        "environment": environments["prod"],
        "spec_hash": "sha256:" + "a" * 64,
        "artifact_sha256": "b" * 64,
        "scope": {"pops": ["POP-12"]},
        "window": ["2026-02-26T10:00:00Z", "10:04"],
        "mode": "execute",
        "capabilities": ["silence", "page"],
    }
    digest = approval_digest(**base)
    assert len(digest) == 64
    assert approval_digest(**{**base, "environment": "prod", "capabilities": ["page", "silence"]}) == digest
    for field, other in [
        ("subject_kind", "deployment"),
        ("environment", "staging"),
        ("spec_hash", "sha256:" + "c" * 64),
        ("artifact_sha256", "d" * 64),
        ("scope", {"pops": ["POP-13"]}),
        ("window", None),
        ("mode", "dry_run"),
        ("capabilities", ["page"]),
    ]:
        assert approval_digest(**{**base, field: other}) != digest, field
