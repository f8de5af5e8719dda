"""The approval rules, through the services: posture, separation of duties, quorum, deny, expiry, break-glass."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm

from approvals import selectors
from approvals.models import ApprovalDecision, ApprovalRequest
from approvals.services import (
    Conflict,
    approval_break_glass,
    approval_decide,
    approval_expire_overdue,
    approval_revoke,
    approval_withdraw,
    status_after_decisions,
)
from approvals.tasks import expire_overdue_approvals
from incidents import services as incidents_services
from incidents.selectors import APPROVE, can_in_environment
from tests.approvals.conftest import approve_all, request_for, shift_expiry
from tests.factories import DeploymentFactory
from traceflux.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def set_posture(environment, admin_user, **posture):
    return incidents_services.environment_set_posture(
        environment=environment, actor=admin_user, reason="the drill", **posture
    )


# --- the quorum as a pure function -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("required", "decisions", "expected"),
    [
        (1, [], "pending"),
        (1, [("a", "approve")], "approved"),
        (2, [("a", "approve")], "pending"),
        (2, [("a", "approve"), ("a", "approve")], "pending"),
        (2, [("a", "approve"), ("b", "approve")], "approved"),
        (2, [("a", "approve"), ("b", "deny")], "denied"),
        (1, [("a", "deny"), ("b", "approve")], "denied"),
        (3, [("a", "approve"), ("b", "approve"), ("c", "approve")], "approved"),
    ],
)
def test_it_computes_the_status_from_the_decisions(required, decisions, expected):
    assert status_after_decisions(required, decisions) == expected


# --- requesting --------------------------------------------------------------------------------------------------


def test_it_copies_the_quorum_and_expiry_from_the_posture_at_request_time(prod_request, environments, admin_user):
    prod = environments["prod"]
    assert prod_request.status == "pending"
    assert prod_request.required_approvals == 2
    assert abs(prod_request.expires_at - (timezone.now() + prod.approval_ttl)) < timedelta(seconds=30)
    assert prod_request.subject == prod_request.subject  # the generic relation resolves
    assert AuditEvent.objects.filter(action="approval.requested", environment="prod").count() == 1

    set_posture(prod, admin_user, required_approvals=3)
    prod_request.refresh_from_db()
    assert prod_request.required_approvals == 2


def test_it_refuses_a_request_where_the_posture_denies_the_action(environments, operator, admin_user):
    prod = set_posture(environments["prod"], admin_user, deploy_policy="deny")
    with pytest.raises(PermissionDenied, match="denied in prod by its posture"):
        request_for(DeploymentFactory(environment=prod), by=operator)
    assert not ApprovalRequest.objects.exists()
    refused = AuditEvent.objects.get(action="approval.request_refused")
    assert refused.outcome == "denied"


def test_it_says_no_approval_is_needed_where_the_posture_allows_the_action(environments, operator):
    with pytest.raises(ValidationError, match="no approval is needed"):
        request_for(DeploymentFactory(environment=environments["dev"]), by=operator)
    assert not ApprovalRequest.objects.exists()


def test_it_refuses_a_request_without_a_reason_or_from_someone_who_may_not_operate(
    prod_deployment, operator, approver1
):
    with pytest.raises(ValidationError, match="reason"):
        request_for(prod_deployment, by=operator, reason="  ")
    with pytest.raises(PermissionDenied, match="may not operate in prod"):
        request_for(prod_deployment, by=approver1)
    assert not ApprovalRequest.objects.exists()


def test_it_refuses_a_second_open_request_for_the_same_subject(prod_request, prod_deployment, operator):
    with pytest.raises(Conflict, match="already has an open approval request"):
        request_for(prod_deployment, by=operator)
    assert ApprovalRequest.objects.count() == 1


# --- separation of duties, eligibility ---------------------------------------------------------------------------


def test_it_refuses_the_requesters_own_approval_even_when_they_are_eligible(prod_request, operator, environments):
    assign_perm("incidents.approve_environment", operator, environments["prod"])
    assert can_in_environment(user=operator, environment=environments["prod"], perm=APPROVE)

    with pytest.raises(PermissionDenied, match="requester cannot decide their own request"):
        approval_decide(request=prod_request, approver=operator, decision="approve", comment="mine")

    prod_request.refresh_from_db()
    assert prod_request.status == "pending"
    assert not prod_request.decisions.exists()
    refusal = AuditEvent.objects.get(action="approval.approve")
    assert (refusal.outcome, refusal.actor_name) == ("denied", "operator")


def test_it_refuses_approvers_who_are_not_eligible_in_the_environment(
    environments, operator, approver1, outsider, admin_user, prod_request
):
    dev = set_posture(environments["dev"], admin_user, deploy_policy="require_approval")
    dev_request = request_for(DeploymentFactory(environment=dev), by=operator)
    with pytest.raises(PermissionDenied, match="may not approve in dev"):
        approval_decide(request=dev_request, approver=approver1, decision="approve")
    with pytest.raises(PermissionDenied, match="may not approve in prod"):
        approval_decide(request=prod_request, approver=outsider, decision="approve")
    assert not ApprovalDecision.objects.exists()


# --- quorum, deny, nobody twice ----------------------------------------------------------------------------------


def test_it_approves_a_prod_request_only_when_two_distinct_approvers_have_approved(prod_request, approver1, approver2):
    after_one = approval_decide(request=prod_request, approver=approver1, decision="approve", comment="ok")
    assert after_one.status == "pending"

    after_two = approval_decide(request=prod_request, approver=approver2, decision="approve", comment="ok too")
    assert after_two.status == "approved"
    assert after_two.decisions.count() == 2
    actions = list(
        AuditEvent.objects.filter(target_type="approvals.approvalrequest")
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions == ["approval.requested", "approval.approve", "approval.approve", "approval.approved"]
    assert prod_request.history.latest().status == "approved"


def test_it_denies_on_the_first_deny_which_needs_a_comment(prod_request, approver1, approver2):
    with pytest.raises(ValidationError, match="a denial needs a reason"):
        approval_decide(request=prod_request, approver=approver1, decision="deny", comment=" ")

    approval_decide(request=prod_request, approver=approver1, decision="approve", comment="fine by me")
    denied = approval_decide(request=prod_request, approver=approver2, decision="deny", comment="targets too wide")
    assert denied.status == "denied"
    assert AuditEvent.objects.filter(action="approval.denied", reason="targets too wide").exists()


def test_it_refuses_any_decision_after_a_deny(staging_request, approver1, approver2, environments):
    approval_decide(request=staging_request, approver=approver1, decision="deny", comment="not now")
    with pytest.raises(Conflict, match="is denied"):
        approval_decide(request=staging_request, approver=approver2, decision="approve")
    staging_request.refresh_from_db()
    assert staging_request.status == "denied"


def test_it_enforces_a_comment_on_a_deny_in_the_database_too(prod_request, approver1):
    with pytest.raises(IntegrityError), transaction.atomic():
        ApprovalDecision.objects.create(request=prod_request, approver=approver1, decision="deny", comment="")


def test_it_counts_nobody_twice(prod_request, approver1):
    approval_decide(request=prod_request, approver=approver1, decision="approve", comment="ok")
    with pytest.raises(Conflict, match="approver1 has already decided"):
        approval_decide(request=prod_request, approver=approver1, decision="approve", comment="again")
    prod_request.refresh_from_db()
    assert prod_request.status == "pending"
    assert prod_request.decisions.count() == 1


# --- expiry ------------------------------------------------------------------------------------------------------


def test_it_refuses_a_decision_on_an_expired_request_and_marks_it_expired(prod_request, approver1):
    shift_expiry(prod_request, -timedelta(seconds=1))
    with pytest.raises(Conflict, match="has expired"):
        approval_decide(request=prod_request, approver=approver1, decision="approve", comment="late")
    prod_request.refresh_from_db()
    assert prod_request.status == "expired"
    assert not prod_request.decisions.exists()
    assert AuditEvent.objects.get(action="approval.expired").actor_kind == "system"


def test_it_expires_overdue_pending_and_approved_requests_from_the_beat_task(
    prod_request, staging_request, approver1, environments, operator
):
    approve_all(staging_request, approver1)
    shift_expiry(staging_request, -timedelta(minutes=1))
    assert expire_overdue_approvals() == 1
    assert approval_expire_overdue() == 0
    staging_request.refresh_from_db()
    prod_request.refresh_from_db()
    assert (staging_request.status, prod_request.status) == ("expired", "pending")

    shift_expiry(prod_request, -timedelta(minutes=1))
    assert approval_expire_overdue() == 1


# --- revocation and withdrawal -----------------------------------------------------------------------------------


def test_it_lets_an_eligible_approver_revoke_an_approved_request(approved_prod_request, approver1, outsider):
    with pytest.raises(PermissionDenied):
        approval_revoke(request=approved_prod_request, actor=outsider, reason="no")
    with pytest.raises(ValidationError, match="reason"):
        approval_revoke(request=approved_prod_request, actor=approver1, reason="")

    revoked = approval_revoke(request=approved_prod_request, actor=approver1, reason="the incident is over")
    assert revoked.status == "revoked"
    assert AuditEvent.objects.get(action="approval.revoked").data["from"] == "approved"
    with pytest.raises(Conflict, match="is revoked"):
        approval_revoke(request=approved_prod_request, actor=approver1, reason="again")


def test_it_lets_a_superuser_revoke_a_pending_request(prod_request, admin_user):
    assert approval_revoke(request=prod_request, actor=admin_user, reason="wrong version").status == "revoked"


def test_it_lets_only_the_requester_withdraw_a_pending_request(prod_request, operator, approver1, approver2):
    with pytest.raises(PermissionDenied, match="only the requester"):
        approval_withdraw(request=prod_request, actor=approver1)
    assert approval_withdraw(request=prod_request, actor=operator, reason="typo in targets").status == "withdrawn"
    with pytest.raises(Conflict):
        approval_decide(request=prod_request, approver=approver2, decision="approve")


def test_it_refuses_to_withdraw_an_approved_request(approved_prod_request, operator):
    with pytest.raises(Conflict, match="only a pending request can be withdrawn"):
        approval_withdraw(request=approved_prod_request, actor=operator)


# --- break-glass -------------------------------------------------------------------------------------------------


def test_it_lets_a_superuser_break_glass_loudly_and_briefly(prod_request, admin_user, approver1, settings):
    settings.TRACEFLUX_BREAK_GLASS_TTL = timedelta(minutes=15)
    approval_decide(request=prod_request, approver=approver1, decision="approve", comment="one of two")
    before = prod_request.expires_at

    broken = approval_break_glass(request=prod_request, actor=admin_user, reason="SEV1: pager storm, need it now")

    assert broken.status == "approved"  # approved, not consumed: the execution still has to consume it
    assert broken.break_glass is True
    assert broken.break_glass_by == admin_user
    assert broken.break_glass_reason == "SEV1: pager storm, need it now"
    assert broken.expires_at < before
    assert broken.expires_at <= timezone.now() + timedelta(minutes=15)
    event = AuditEvent.objects.get(action="approval.break_glass")
    assert event.outcome == "success"
    assert event.data["break_glass"] is True
    assert event.environment == "prod"


def test_it_refuses_break_glass_to_anyone_but_a_superuser_and_without_a_reason(prod_request, approver1, admin_user):
    with pytest.raises(PermissionDenied, match="superusers only"):
        approval_break_glass(request=prod_request, actor=approver1, reason="I am in a hurry")
    assert AuditEvent.objects.get(action="approval.break_glass").outcome == "denied"
    with pytest.raises(ValidationError, match="reason"):
        approval_break_glass(request=prod_request, actor=admin_user, reason=" ")
    prod_request.refresh_from_db()
    assert (prod_request.status, prod_request.break_glass) == ("pending", False)


def test_it_never_breaks_glass_through_a_posture_of_deny(prod_request, admin_user, environments):
    set_posture(environments["prod"], admin_user, deploy_policy="deny")
    with pytest.raises(PermissionDenied, match="does not override it"):
        approval_break_glass(request=prod_request, actor=admin_user, reason="SEV1")
    prod_request.refresh_from_db()
    assert prod_request.status == "pending"


def test_it_refuses_break_glass_on_ones_own_request_or_a_closed_one(admin_user, prod_deployment, staging_request):
    own = request_for(prod_deployment, by=admin_user)
    with pytest.raises(PermissionDenied, match="own request"):
        approval_break_glass(request=own, actor=admin_user, reason="SEV1")
    approval_revoke(request=staging_request, actor=admin_user, reason="superseded")
    with pytest.raises(Conflict, match="is revoked"):
        approval_break_glass(request=staging_request, actor=admin_user, reason="SEV1")


# --- selectors ---------------------------------------------------------------------------------------------------


def test_it_puts_a_request_in_the_inbox_of_eligible_approvers_only(
    prod_request, operator, approver1, approver2, outsider, environments
):
    assign_perm("incidents.approve_environment", operator, environments["prod"])
    assert list(selectors.pending_for(user=approver1)) == [prod_request]
    assert list(selectors.pending_for(user=operator)) == []  # their own
    assert list(selectors.pending_for(user=outsider)) == []
    assert list(selectors.visible_requests(user=outsider)) == []
    assert list(selectors.visible_requests(user=operator)) == [prod_request]

    approval_decide(request=prod_request, approver=approver1, decision="approve", comment="ok")
    assert list(selectors.pending_for(user=approver1)) == []  # already decided
    assert list(selectors.pending_for(user=approver2)) == [prod_request]
