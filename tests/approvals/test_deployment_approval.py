"""A deployment waits for its approval request: approved by the quorum (or break-glass) → approved and dispatched to
its agents; denied, expired or revoked → denied. Driven by approval_closed on commit."""

from __future__ import annotations

from datetime import timedelta

import pytest

from approvals.services import approval_break_glass, approval_decide, approval_expire_overdue, approval_revoke
from incidents.models import Command
from tests.approvals.conftest import approve_all, request_for, shift_expiry
from tests.factories import AgentFactory
from traceflux.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def prod_agents(environments):
    return [AgentFactory(environment=environments["prod"], name=f"edge-prod-{n}") for n in (1, 2)]


def test_it_approves_and_dispatches_a_prod_deployment_once_the_quorum_approves(
    prod_deployment, prod_agents, operator, approver1, approver2, django_capture_on_commit_callbacks
):
    request = request_for(prod_deployment, by=operator)

    with django_capture_on_commit_callbacks(execute=True):
        approval_decide(request=request, approver=approver1, decision="approve", comment="diff reviewed")
    prod_deployment.refresh_from_db()
    assert prod_deployment.status == "pending_approval"  # one of two approvals

    with django_capture_on_commit_callbacks(execute=True):
        approval_decide(request=request, approver=approver2, decision="approve", comment="matches the replay")

    prod_deployment.refresh_from_db()
    assert prod_deployment.status == "deploying"
    history = prod_deployment.history.order_by("history_id")
    assert [h.status for h in history] == ["pending_approval", "approved", "deploying"]
    assert history[1].history_user == approver2
    approved = AuditEvent.objects.get(action="deployment.approved")
    assert (approved.actor_name, approved.reason) == ("approver2", f"approval #{request.pk} approved")
    keys = sorted(Command.objects.filter(kind="deploy").values_list("idempotency_key", flat=True))
    assert keys == [f"deploy:{prod_deployment.pk}:{agent.pk}" for agent in prod_agents]


def test_it_approves_a_deployment_by_break_glass(
    prod_deployment, prod_agents, operator, admin_user, django_capture_on_commit_callbacks
):
    request = request_for(prod_deployment, by=operator)

    with django_capture_on_commit_callbacks(execute=True):
        approval_break_glass(request=request, actor=admin_user, reason="outage, nobody else awake")

    prod_deployment.refresh_from_db()
    assert prod_deployment.status == "deploying"
    assert AuditEvent.objects.get(action="deployment.approved").actor_name == "admin"


def test_it_denies_the_deployment_when_its_request_is_denied(
    prod_deployment, prod_agents, operator, approver1, django_capture_on_commit_callbacks
):
    request = request_for(prod_deployment, by=operator)

    with django_capture_on_commit_callbacks(execute=True):
        approval_decide(request=request, approver=approver1, decision="deny", comment="not during the freeze")

    prod_deployment.refresh_from_db()
    assert prod_deployment.status == "denied"
    assert AuditEvent.objects.get(action="deployment.denied").reason == f"approval #{request.pk} denied"
    assert not Command.objects.exists()


@pytest.mark.parametrize("closing", ["expired", "revoked"])
def test_it_denies_the_deployment_when_its_request_expires_or_is_revoked(
    closing, prod_deployment, operator, approver1, django_capture_on_commit_callbacks
):
    request = request_for(prod_deployment, by=operator)

    with django_capture_on_commit_callbacks(execute=True):
        if closing == "expired":
            shift_expiry(request, -timedelta(seconds=1))
            assert approval_expire_overdue() == 1
        else:
            approval_revoke(request=request, actor=approver1, reason="wrong version")

    prod_deployment.refresh_from_db()
    assert prod_deployment.status == "denied"
    assert AuditEvent.objects.get(action="deployment.denied").reason == f"approval #{request.pk} {closing}"


def test_it_denies_a_deployment_whose_approved_digest_is_not_its_own(
    prod_deployment, operator, approver1, approver2, django_capture_on_commit_callbacks
):
    request = request_for(prod_deployment, by=operator)
    type(request).objects.filter(pk=request.pk).update(digest="0" * 64)
    request.refresh_from_db()

    with django_capture_on_commit_callbacks(execute=True):
        approve_all(request, approver1, approver2)

    prod_deployment.refresh_from_db()
    assert prod_deployment.status == "denied"
    assert not Command.objects.exists()


def test_it_leaves_a_deployment_alone_when_its_approved_request_expires_later(
    prod_deployment, operator, approver1, approver2, django_capture_on_commit_callbacks
):
    request = request_for(prod_deployment, by=operator)
    with django_capture_on_commit_callbacks(execute=True):
        approve_all(request, approver1, approver2)
    prod_deployment.refresh_from_db()
    assert prod_deployment.status == "failed"  # approved, then dispatched to no agent at all

    with django_capture_on_commit_callbacks(execute=True):
        shift_expiry(request, -timedelta(seconds=1))
        assert approval_expire_overdue() == 1

    prod_deployment.refresh_from_db()
    assert prod_deployment.status == "failed"
    assert not AuditEvent.objects.filter(action="deployment.denied").exists()
