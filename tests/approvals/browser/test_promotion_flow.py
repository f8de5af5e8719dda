"""End to end in a real browser: promote to prod, the requester cannot approve, two approvers approve, audited."""

from __future__ import annotations

import re

import pytest

from approvals.models import ApprovalRequest
from incidents.models import Deployment
from tests.factories import PipelineVersionFactory
from traceflux.audit.models import AuditEvent

pytestmark = [pytest.mark.needs("chromium"), pytest.mark.django_db(transaction=True)]


def with_password(user, password: str):
    user.set_password(password)
    user.save(update_fields=["password"])
    return user


def sign_in(page, live_server, user, password: str, next_path: str) -> None:
    page.goto(f"{live_server.url}/admin/login/?next={next_path}")
    page.fill("#id_username", user.get_username())
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(re.escape(live_server.url + next_path.split("?")[0])))


def test_it_promotes_to_prod_and_two_approvers_sign_it_off(
    new_page, live_server, operator, approver1, approver2, prod_agent
):
    version = PipelineVersionFactory(label="v3.1.0")
    with_password(operator, "pw-operator")
    with_password(approver1, "pw-approver1")
    with_password(approver2, "pw-approver2")

    # 1. The operator promotes the version to prod through the form.
    operator_page = new_page()
    sign_in(operator_page, live_server, operator, "pw-operator", f"/approvals/promote/{version.pk}/")
    operator_page.select_option("#id_environment", "prod")
    operator_page.fill("#id_reason", "roll out the tightened rules")
    operator_page.click("main button:has-text('Promote')")
    operator_page.wait_for_url(re.compile(r"/approvals/\d+/$"))
    deployment = Deployment.objects.get(pipeline_version=version)
    request = ApprovalRequest.objects.get(object_id=deployment.pk, subject_kind="deployment")
    assert (deployment.environment.slug, deployment.status) == ("prod", "pending_approval")
    assert (request.status, request.required_approvals) == ("pending", 2)

    # 2. The operator's page has no approve button; a hand-made POST with a valid CSRF token is refused.
    assert operator_page.locator("button", has_text="Approve").count() == 0
    assert "the requester cannot decide their own request" in operator_page.inner_text("#why-not")
    token = next(c["value"] for c in operator_page.context.cookies() if c["name"] == "csrftoken")
    response = operator_page.request.post(
        f"{live_server.url}/approvals/{request.pk}/approve/",
        form={"csrfmiddlewaretoken": token, "approve-comment": "my own"},
        headers={"X-CSRFToken": token, "Referer": operator_page.url},
    )
    assert response.status == 403
    request.refresh_from_db()
    assert request.status == "pending"
    assert not request.decisions.exists()

    # 3. Each approver signs in, finds the request in the inbox, reviews it and approves with a comment.
    for approver, password in ((approver1, "pw-approver1"), (approver2, "pw-approver2")):
        page = new_page()
        sign_in(page, live_server, approver, password, "/approvals/")
        assert page.inner_text("#nav-approvals").strip().endswith("1")
        page.click(f"#pending a[href='/approvals/{request.pk}/'] >> nth=0")
        page.wait_for_url(f"{live_server.url}/approvals/{request.pk}/")
        assert request.digest in page.content()
        assert "v3.1.0" in page.inner_text("#what")
        page.fill("#id_approve-comment", f"checked by {approver.get_username()}")
        page.click("main button:has-text('Approve')")
        page.wait_for_url(f"{live_server.url}/approvals/{request.pk}/")
        assert f"checked by {approver.get_username()}" in page.inner_text("#decisions")

    # 4. The request is approved; so is the deployment, which then dispatches `deploy` to prod_agent: deploying.
    request.refresh_from_db()
    deployment.refresh_from_db()
    assert request.status == "approved"
    assert deployment.status in {"approved", "deploying"}  # "deploying" once the deployments dispatch has run

    # 5. The audit log has both decisions, by name and with their comments.
    decisions = AuditEvent.objects.filter(action="approval.approve", outcome="success").order_by("seq")
    assert [(e.actor_name, e.reason) for e in decisions] == [
        ("approver1", "checked by approver1"),
        ("approver2", "checked by approver2"),
    ]
    assert AuditEvent.objects.filter(action="approval.approved").count() == 1
    assert AuditEvent.objects.filter(action="approval.approve", outcome="denied", actor_name="operator").exists()
