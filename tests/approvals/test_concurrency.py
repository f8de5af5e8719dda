"""Concurrency on PostgreSQL: row locks and compare-and-swap keep the quorum honest and an approval single-use."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from approvals.models import ApprovalRequest
from approvals.services import approval_consume, approval_decide
from tests.approvals.conftest import approve_all, request_for
from tests.concurrency import race
from tests.factories import DeploymentFactory

pytestmark = [pytest.mark.needs("postgresql"), pytest.mark.django_db(transaction=True)]


def decide(pk: int, approver, decision: str, comment: str = "") -> Callable[[], str]:
    def go() -> str:
        stale = ApprovalRequest.objects.get(pk=pk)
        return approval_decide(request=stale, approver=approver, decision=decision, comment=comment).status

    return go


@pytest.mark.parametrize("attempt", range(3))
def test_it_counts_two_simultaneous_approvals_exactly_once_each(environments, operator, approver1, approver2, attempt):
    request = request_for(DeploymentFactory(environment=environments["prod"]), by=operator)

    results, errors = race([decide(request.pk, approver1, "approve"), decide(request.pk, approver2, "approve")])

    assert errors == []
    assert sorted(results) == ["approved", "pending"]
    request.refresh_from_db()
    assert request.status == "approved"
    assert request.decisions.count() == 2


@pytest.mark.parametrize("attempt", range(3))
def test_it_never_approves_a_request_with_a_deny(environments, operator, approver1, approver2, attempt):
    request = request_for(DeploymentFactory(environment=environments["staging"]), by=operator)  # quorum 1

    results, errors = race(
        [decide(request.pk, approver1, "approve"), decide(request.pk, approver2, "deny", "not during the freeze")]
    )

    request.refresh_from_db()
    decisions = set(request.decisions.values_list("decision", flat=True))
    assert len(results) + len(errors) == 2
    assert len(results) == 1  # whoever came second found the request closed
    assert request.status in {"approved", "denied"}
    assert decisions == ({"approve"} if request.status == "approved" else {"deny"})


@pytest.mark.parametrize("attempt", range(3))
def test_it_lets_exactly_one_of_two_simultaneous_consumers_through(environments, operator, approver1, attempt):
    deployment = DeploymentFactory(environment=environments["staging"])
    request = approve_all(request_for(deployment, by=operator), approver1)

    def consume() -> int:
        return approval_consume(digest=request.digest, environment=environments["staging"], execution=deployment).pk

    results, errors = race([consume, consume])

    assert results == [request.pk]
    assert len(errors) == 1
    assert "consumed" in str(errors[0])
    request.refresh_from_db()
    assert request.status == "consumed"
