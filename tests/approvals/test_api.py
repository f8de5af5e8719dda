"""The approvals API through its real URLs: visibility, decisions through approval_decide, and every refusal."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from guardian.shortcuts import assign_perm
from rest_framework.test import APIClient

from approvals.models import ApprovalRequest
from approvals.tokens import user_token_create
from incidents.models import Environment
from tests.factories import DeploymentFactory
from traceflux.audit.models import AuditEvent

from .conftest import request_for, shift_expiry

pytestmark = pytest.mark.django_db

LIST = reverse("approvals_api:request-list")


def detail(request: ApprovalRequest) -> str:
    return reverse("approvals_api:request-detail", args=[request.pk])


def approve(request: ApprovalRequest) -> str:
    return reverse("approvals_api:request-approve", args=[request.pk])


def deny(request: ApprovalRequest) -> str:
    return reverse("approvals_api:request-deny", args=[request.pk])


def client_for(user) -> APIClient:
    _, plaintext = user_token_create(user=user, name="terminal", actor=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {plaintext}")
    return client


@pytest.fixture
def dev_request(environments, operator) -> ApprovalRequest:
    """A pending request in dev, where approver1 may look but not approve."""
    Environment.objects.filter(slug="dev").update(deploy_policy="require_approval")
    environments["dev"].refresh_from_db()
    return request_for(DeploymentFactory(environment=environments["dev"]), by=operator)


def test_it_lists_the_pending_requests_approver1_may_see(approver1, prod_request, staging_request, approver2):
    client_for(approver2).post(approve(staging_request), {"comment": "fine"}, format="json")

    response = client_for(approver1).get(LIST, {"status": "pending"})

    assert response.status_code == 200
    body = response.json()
    assert [item["id"] for item in body["results"]] == [prod_request.pk]
    item = body["results"][0]
    assert item["environment"] == "prod"
    assert item["status"] == "pending"
    assert item["digest"] == prod_request.digest
    assert item["requested_by"] == "operator"
    assert item["required_approvals"] == 2
    assert item["approvals"] == 0
    assert item["decisions"] == []
    assert item["break_glass"] is False
    assert "expires_at" in item and "summary" in item and "subject_kind" in item


def test_it_filters_by_environment(approver1, prod_request, staging_request):
    response = client_for(approver1).get(LIST, {"environment": "staging"})
    assert [item["id"] for item in response.json()["results"]] == [staging_request.pk]


def test_it_shows_one_request_and_hides_it_from_an_outsider(approver1, outsider, prod_request):
    assert client_for(approver1).get(detail(prod_request)).json()["id"] == prod_request.pk
    assert client_for(outsider).get(detail(prod_request)).status_code == 404
    assert client_for(outsider).get(LIST).json()["results"] == []


def test_it_stores_a_decision_made_with_a_token(approver1, prod_request):
    response = client_for(approver1).post(approve(prod_request), {"comment": "diff reviewed"}, format="json")

    assert response.status_code == 200
    assert response.json()["approvals"] == 1
    assert response.json()["decisions"][0]["approver"] == "approver1"
    prod_request.refresh_from_db()
    assert prod_request.status == "pending"  # prod needs two
    decision = prod_request.decisions.get()
    assert (decision.approver, decision.decision, decision.comment) == (approver1, "approve", "diff reviewed")
    assert AuditEvent.objects.filter(action="approval.approve", reason="diff reviewed").exists()


def test_it_closes_the_request_on_quorum(approver1, approver2, prod_request):
    client_for(approver1).post(approve(prod_request), {"comment": "one"}, format="json")
    response = client_for(approver2).post(approve(prod_request), {"comment": "two"}, format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "approved"
    prod_request.refresh_from_db()
    assert prod_request.status == "approved"


def test_it_refuses_the_requesters_own_approval(environments, operator, prod_request):
    # The operator is made eligible, so the refusal proves separation of duties and not a missing permission.
    assign_perm("incidents.approve_environment", operator, environments["prod"])

    response = client_for(operator).post(approve(prod_request), {"comment": "mine"}, format="json")

    assert response.status_code == 403
    assert "requester" in response.json()["detail"]
    prod_request.refresh_from_db()
    assert prod_request.status == "pending"
    assert not prod_request.decisions.exists()


def test_it_refuses_an_approver_who_is_not_eligible_in_the_environment(approver1, dev_request):
    response = client_for(approver1).post(approve(dev_request), {"comment": "looks fine"}, format="json")

    assert response.status_code == 403
    assert "dev" in response.json()["detail"]
    dev_request.refresh_from_db()
    assert dev_request.status == "pending"
    assert not dev_request.decisions.exists()


def test_it_answers_404_to_an_outsider_deciding(outsider, prod_request):
    response = client_for(outsider).post(approve(prod_request), {"comment": "hi"}, format="json")

    assert response.status_code == 404
    assert not prod_request.decisions.exists()


def test_it_answers_409_for_a_request_that_is_no_longer_pending(approver1, approver2, staging_request):
    client_for(approver2).post(deny(staging_request), {"comment": "wrong targets"}, format="json")

    response = client_for(approver1).post(approve(staging_request), {"comment": "late"}, format="json")

    assert response.status_code == 409
    assert response.json()["current"] == "denied"
    staging_request.refresh_from_db()
    assert staging_request.decisions.count() == 1


def test_it_answers_409_for_an_expired_request(approver1, prod_request):
    shift_expiry(prod_request, -timedelta(minutes=1))

    response = client_for(approver1).post(approve(prod_request), {"comment": "late"}, format="json")

    assert response.status_code == 409
    assert response.json()["current"] == "expired"
    assert not prod_request.decisions.exists()


def test_it_refuses_a_denial_without_a_comment(approver1, prod_request):
    response = client_for(approver1).post(deny(prod_request), {"comment": "  "}, format="json")

    assert response.status_code == 400
    assert response.json()["field"] == "comment"
    prod_request.refresh_from_db()
    assert prod_request.status == "pending"
    assert not prod_request.decisions.exists()


def test_it_denies_with_a_comment(approver1, prod_request):
    response = client_for(approver1).post(deny(prod_request), {"comment": "wrong targets"}, format="json")

    assert response.status_code == 200
    prod_request.refresh_from_db()
    assert prod_request.status == "denied"


def test_it_keeps_csrf_for_session_authentication(approver1, prod_request):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(approver1)

    assert client.get(LIST).status_code == 200  # reading needs no CSRF token
    response = client.post(approve(prod_request), {"comment": "from the browser"}, format="json")

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not prod_request.decisions.exists()


def test_it_refuses_an_anonymous_decision_with_401(prod_request):
    response = APIClient().post(approve(prod_request), {"comment": "hi"}, format="json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert not prod_request.decisions.exists()
