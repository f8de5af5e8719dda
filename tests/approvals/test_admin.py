"""Approvals in the console: read-only pages, scoped by environment, decided only through the services."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission
from django.urls import reverse
from guardian.shortcuts import assign_perm

from approvals.models import ApprovalDecision, ApprovalRequest
from approvals.services import approval_decide
from traceflux.audit.models import AuditEvent

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:approvals_approvalrequest_changelist"


def grant(user, *codenames: str) -> None:
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="approvals", codename__in=codenames))


def act(client, action: str, request: ApprovalRequest, reason: str, **extra):
    return client.post(
        reverse(CHANGELIST),
        {"action": action, ACTION_CHECKBOX_NAME: [request.pk], "confirm": "yes", "reason": reason},
        **extra,
    )


def test_it_shows_a_request_with_its_decisions_read_only_and_no_add_or_delete(client, admin_user, prod_request,
                                                                               approver1):
    approval_decide(request=prod_request, approver=approver1, decision="approve", comment="diff reviewed")
    client.force_login(admin_user)

    page = client.get(reverse("admin:approvals_approvalrequest_change", args=[prod_request.pk]))
    body = page.content.decode()
    assert page.status_code == 200
    assert "diff reviewed" in body
    assert prod_request.digest in body
    assert 'name="decisions-0-comment"' not in body  # the inline is read-only
    assert client.get(reverse("admin:approvals_approvalrequest_add")).status_code == 403
    assert client.get(reverse("admin:approvals_approvalrequest_delete", args=[prod_request.pk])).status_code == 403
    assert client.get(reverse("admin:approvals_approvaldecision_add")).status_code == 403
    decision = ApprovalDecision.objects.get()
    assert client.get(reverse("admin:approvals_approvaldecision_change", args=[decision.pk])).status_code == 200


def test_it_approves_through_the_changelist_action_and_the_service(client, approver1, approver2, prod_request):
    for approver in (approver1, approver2):
        grant(approver, "view_approvalrequest", "change_approvalrequest")
        client.force_login(approver)
        response = act(client, "approve", prod_request, "targets match the incident")
        assert response.status_code == 302

    prod_request.refresh_from_db()
    assert prod_request.status == "approved"
    assert prod_request.decisions.count() == 2
    assert AuditEvent.objects.filter(action="approval.approve", reason="targets match the incident").count() == 2


def test_it_refuses_the_requesters_own_approval_in_the_console(client, operator, prod_request, environments):
    assign_perm("incidents.approve_environment", operator, environments["prod"])
    grant(operator, "view_approvalrequest", "change_approvalrequest")
    client.force_login(operator)

    response = act(client, "approve", prod_request, "mine", follow=True)

    assert "the requester cannot decide their own request" in response.content.decode()
    prod_request.refresh_from_db()
    assert prod_request.status == "pending"
    assert not prod_request.decisions.exists()


def test_it_asks_again_when_a_denial_has_no_comment(client, approver1, prod_request):
    grant(approver1, "view_approvalrequest", "change_approvalrequest")
    client.force_login(approver1)

    response = act(client, "deny", prod_request, "  ")

    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    assert not prod_request.decisions.exists()


def test_it_breaks_glass_only_for_a_superuser(client, approver1, admin_user, prod_request):
    grant(approver1, "view_approvalrequest", "change_approvalrequest")
    client.force_login(approver1)
    response = act(client, "break_glass", prod_request, "hurry", follow=True)
    assert "break-glass is for superusers only" in response.content.decode()
    prod_request.refresh_from_db()
    assert prod_request.status == "pending"

    client.force_login(admin_user)
    act(client, "break_glass", prod_request, "SEV1 in progress")
    prod_request.refresh_from_db()
    assert (prod_request.status, prod_request.break_glass) == ("approved", True)


def test_it_shows_an_outsider_no_request_even_with_the_model_permission(client, outsider, prod_request):
    grant(outsider, "view_approvalrequest", "view_approvaldecision")
    client.force_login(outsider)

    listing = client.get(reverse(CHANGELIST))
    assert listing.status_code == 200
    assert listing.context["cl"].result_count == 0
    assert client.get(reverse("admin:approvals_approvalrequest_change", args=[prod_request.pk])).status_code in (
        302,
        404,
    )
    assert client.get(reverse("admin:approvals_approvalrequest_history", args=[prod_request.pk])).status_code == 403
