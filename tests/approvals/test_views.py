"""The approver's pages through their real URLs: inbox, review, approve/deny, promotion, and the emails."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core import mail
from django.urls import reverse
from guardian.shortcuts import assign_perm

from approvals.models import ApprovalDecision, ApprovalRequest
from approvals.templatetags.approvals_tags import readable
from incidents.models import Deployment
from tests.approvals.conftest import approve_all, request_for, shift_expiry
from tests.factories import DeploymentFactory, PipelineVersionFactory, UserFactory
from traceflux.audit.models import AuditEvent


@pytest.fixture
def version(db):
    return PipelineVersionFactory(label="v2.0.0")


def test_it_shows_a_pending_request_in_the_approvers_inbox_and_not_the_requesters(
    client, prod_request, approver1, operator
):
    client.force_login(approver1)
    response = client.get(reverse("approvals:inbox"))
    assert response.status_code == 200
    assert reverse("approvals:review", args=[prod_request.pk]) in response.content.decode()
    assert response.context["pending"].filter(pk=prod_request.pk).exists()
    assert response.context["approvals_pending_count"] == 1

    client.force_login(operator)
    response = client.get(reverse("approvals:inbox"))
    assert not response.context["pending"].exists()
    assert response.context["mine"].filter(pk=prod_request.pk).exists()


def test_it_filters_the_inbox_by_environment(client, prod_request, staging_request, approver1):
    client.force_login(approver1)
    response = client.get(reverse("approvals:inbox"), {"environment": "staging"})
    assert [r.pk for r in response.context["pending"]] == [staging_request.pk]


def test_it_lists_recent_decisions_in_the_inbox(client, prod_request, approver1, approver2):
    approve_all(prod_request, approver1)
    client.force_login(approver2)
    response = client.get(reverse("approvals:inbox"))
    assert [d.approver for d in response.context["decisions"]] == [approver1]


def test_it_hides_the_review_page_from_someone_who_cannot_see_the_environment(client, prod_request, outsider):
    client.force_login(outsider)
    assert client.get(reverse("approvals:review", args=[prod_request.pk])).status_code == 404
    response = client.post(reverse("approvals:approve", args=[prod_request.pk]), {"approve-comment": "hi"})
    assert response.status_code == 404
    assert not prod_request.decisions.exists()


def test_it_sends_anonymous_visitors_to_the_login_page(client, prod_request):
    response = client.get(reverse("approvals:review", args=[prod_request.pk]))
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_it_shows_the_approver_what_is_approved_with_both_buttons(client, prod_request, approver1):
    client.force_login(approver1)
    response = client.get(reverse("approvals:review", args=[prod_request.pk]))
    body = response.content.decode()
    assert response.status_code == 200
    assert prod_request.digest in body
    assert prod_request.summary["pipeline_version"] in body
    assert ">Approve</button>" in body and ">Deny</button>" in body


def test_it_gives_the_requester_no_button_and_refuses_a_hand_made_post(client, prod_request, operator):
    client.force_login(operator)
    page = client.get(reverse("approvals:review", args=[prod_request.pk])).content.decode()
    assert ">Approve</button>" not in page
    assert "the requester cannot decide their own request" in page

    response = client.post(reverse("approvals:approve", args=[prod_request.pk]), {"approve-comment": "mine"})
    assert response.status_code == 403
    prod_request.refresh_from_db()
    assert prod_request.status == "pending"
    assert not prod_request.decisions.exists()


def test_it_refuses_a_deny_without_reason_by_the_requester_with_403(client, prod_request, operator):
    client.force_login(operator)
    response = client.post(reverse("approvals:deny", args=[prod_request.pk]), {"deny-comment": ""})
    assert response.status_code == 403
    assert not prod_request.decisions.exists()


def test_it_gives_someone_not_eligible_no_button_and_a_403(client, environments, operator):
    request = request_for(DeploymentFactory(environment=environments["staging"]), by=operator)
    viewer = UserFactory(username="viewer")
    assign_perm("incidents.view_environment", viewer, environments["staging"])
    client.force_login(viewer)
    page = client.get(reverse("approvals:review", args=[request.pk])).content.decode()
    assert "You are not an approver in staging." in page
    assert ">Approve</button>" not in page
    response = client.post(reverse("approvals:approve", args=[request.pk]), {"approve-comment": "ok"})
    assert response.status_code == 403
    assert not request.decisions.exists()


def test_it_approves_in_prod_once_two_approvers_have_approved(client, prod_request, approver1, approver2):
    for approver in (approver1, approver2):
        client.force_login(approver)
        response = client.post(
            reverse("approvals:approve", args=[prod_request.pk]), {"approve-comment": f"ok from {approver}"}
        )
        assert response.status_code == 302
    prod_request.refresh_from_db()
    assert prod_request.status == "approved"
    assert list(prod_request.decisions.values_list("approver__username", "comment")) == [
        ("approver1", "ok from approver1"),
        ("approver2", "ok from approver2"),
    ]


def test_it_keeps_a_request_pending_after_one_approval_in_prod(client, prod_request, approver1):
    client.force_login(approver1)
    client.post(reverse("approvals:approve", args=[prod_request.pk]), {"approve-comment": ""})
    prod_request.refresh_from_db()
    assert prod_request.status == "pending"
    page = client.get(reverse("approvals:review", args=[prod_request.pk])).content.decode()
    assert "You already decided (approve)" in page
    assert ">Approve</button>" not in page


def test_it_refuses_a_deny_without_a_comment_with_a_form_error(client, prod_request, approver1):
    client.force_login(approver1)
    response = client.post(reverse("approvals:deny", args=[prod_request.pk]), {"deny-comment": "  "})
    assert response.status_code == 400
    assert "a denial needs a reason" in response.content.decode()
    prod_request.refresh_from_db()
    assert prod_request.status == "pending"
    assert not ApprovalDecision.objects.exists()


def test_it_denies_with_a_comment(client, prod_request, approver1):
    client.force_login(approver1)
    response = client.post(reverse("approvals:deny", args=[prod_request.pk]), {"deny-comment": "wrong targets"})
    assert response.status_code == 302
    prod_request.refresh_from_db()
    assert prod_request.status == "denied"
    assert prod_request.decisions.get().comment == "wrong targets"


def test_it_answers_409_on_a_request_that_is_no_longer_pending(client, staging_request, approver1, approver2):
    approve_all(staging_request, approver1)  # quorum 1 in staging: approved
    client.force_login(approver2)
    page = client.get(reverse("approvals:review", args=[staging_request.pk])).content.decode()
    assert ">Approve</button>" not in page
    assert "This request is approved" in page
    response = client.post(reverse("approvals:approve", args=[staging_request.pk]), {"approve-comment": "late"})
    assert response.status_code == 409
    assert staging_request.decisions.count() == 1


def test_it_answers_409_on_an_expired_request(client, prod_request, approver1):
    shift_expiry(prod_request, timedelta(minutes=-1))
    client.force_login(approver1)
    page = client.get(reverse("approvals:review", args=[prod_request.pk])).content.decode()
    assert "expired" in page and ">Approve</button>" not in page
    response = client.post(reverse("approvals:approve", args=[prod_request.pk]), {"approve-comment": "late"})
    assert response.status_code == 409
    prod_request.refresh_from_db()
    assert prod_request.status == "expired"
    assert not prod_request.decisions.exists()


def test_it_promotes_to_prod_with_a_deployment_and_a_request(
    client, version, operator, approver1, approver2, django_capture_on_commit_callbacks
):
    client.force_login(operator)
    assert client.get(reverse("approvals:promote", args=[version.pk])).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("approvals:promote", args=[version.pk]), {"environment": "prod", "reason": "tighten rules"}
        )
    deployment = Deployment.objects.get()
    request = ApprovalRequest.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("approvals:review", args=[request.pk])
    assert (deployment.environment.slug, deployment.status, deployment.pipeline_version) == (
        "prod", "pending_approval", version
    )
    assert (request.subject, request.environment.slug, request.required_approvals) == (deployment, "prod", 2)
    assert request.summary["pipeline_version"]["spec_hash"] == version.spec_hash
    assert request.summary["requested_by"] == "operator"
    assert sorted(m.to[0] for m in mail.outbox) == ["approver1@example.test", "approver2@example.test"]
    assert all(reverse("approvals:review", args=[request.pk]) in m.body for m in mail.outbox)


def test_it_promotes_to_dev_approved_at_once_without_a_request(client, version, operator):
    client.force_login(operator)
    response = client.post(reverse("approvals:promote", args=[version.pk]), {"environment": "dev", "reason": "try"})
    assert response.status_code == 302
    deployment = Deployment.objects.get()
    assert deployment.environment.slug == "dev"
    assert deployment.status in {"approved", "deploying"}
    assert not ApprovalRequest.objects.exists()


def test_it_refuses_a_promotion_where_the_user_may_not_operate(client, version, approver1):
    client.force_login(approver1)
    response = client.post(reverse("approvals:promote", args=[version.pk]), {"environment": "prod", "reason": "x"})
    assert response.status_code == 400
    assert not Deployment.objects.exists()


def test_it_answers_404_for_an_unknown_pipeline_version(client, operator):
    client.force_login(operator)
    assert client.get(reverse("approvals:promote", args=[999999])).status_code == 404


def test_it_links_the_pipeline_version_admin_page_to_promotion(client, version, operator):
    operator.user_permissions.add(Permission.objects.get(codename="view_pipelineversion"))
    client.force_login(operator)
    page = client.get(reverse("admin:incidents_pipelineversion_change", args=[version.pk])).content.decode()
    assert f'{reverse("approvals:promote", args=[version.pk])}?environment=prod' in page
    assert "Promote to prod" in page


def test_it_emails_the_approvers_and_not_the_requester(
    operator, approver1, approver2, prod_deployment, django_capture_on_commit_callbacks
):
    # approver1 also operates in prod and requests: eligible, yet not emailed about their own request.
    assign_perm("incidents.operate_environment", approver1, prod_deployment.environment)
    with django_capture_on_commit_callbacks(execute=True):
        request = request_for(prod_deployment, by=approver1)
    recipients = sorted(m.to[0] for m in mail.outbox)
    assert recipients == ["approver2@example.test"]
    assert f"/approvals/{request.pk}/" in mail.outbox[0].body
    assert AuditEvent.objects.filter(action="approval.requested").exists()


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ({"pops": ["POP-12"], "regions": ["us-east-1", "us-east-2"], "services": []},
         "pops: POP-12 · regions: us-east-1, us-east-2 · services: none"),
        ({"score": 0.954, "confidence": "high", "split": None}, "confidence: high · score: 0.954 · split: none"),
        (["traffic:drain", "service:restart"], "traffic:drain, service:restart"),
        ({}, "none"),
        (None, "none"),
        ("INC-2026-0226-001", "INC-2026-0226-001"),
        (2, "2"),
        ({"labels": {"pop": "POP-12"}}, '{\n  "labels": {\n    "pop": "POP-12"\n  }\n}'),
        ([{"a": 1}], '[\n  {\n    "a": 1\n  }\n]'),
    ],
)
def test_it_renders_a_summary_value_for_a_person_and_nests_only_what_it_must(value, shown):
    assert readable(value) == shown
