"""An operator without view permission on an environment sees none of its incidents, audit events, replays or
approvals: not in the console, not on the portal's pages, not in the API.

The operator here may view and operate in dev only. prod holds an incident with an uploaded bundle, a dry run and an
execute approval request, all made through the services; dev holds the same, so every page is seen listing dev's rows
(it works) and not prod's (it is narrowed). An object of prod named directly is a 404 on the portal's pages and in
the API, as if it did not exist; the console sends its change page back to the index, as for a missing object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from guardian.shortcuts import assign_perm
from rest_framework.test import APIClient

from approvals.models import ApprovalRequest
from approvals.tokens import user_token_create
from incidents.models import Environment
from incidents.services import environment_set_posture
from replays.models import ReplayExecution
from replays.services import replay_request_approval
from tests.console import admin_url
from tests.factories import UserFactory
from tests.replays.conftest import World, make_world, run_dry_run
from traceflux.audit.models import AuditEvent

CONSOLE_PERMS = ("view_incident", "view_auditevent", "view_replayexecution", "view_approvalrequest", "view_artifact")


@dataclass
class Side:
    """One environment's rows: its world (incident, bundle), a dry run and an execute approval request."""

    world: World
    run: ReplayExecution
    approval: ApprovalRequest

    @property
    def ref(self) -> str:
        return self.world.incident.ref

    def audit_events(self) -> list[AuditEvent]:
        return list(AuditEvent.objects.filter(environment=self.world.environment.slug))


@pytest.fixture
def dev_operator(environments):
    """Views and operates in dev, may dry-run and execute there; nothing in staging or prod."""
    user = UserFactory(username="dev-operator")
    for perm in ("view_environment", "operate_environment", "replay_dry_run", "replay_execute"):
        assign_perm(f"incidents.{perm}", user, environments["dev"])
    # Model-level view permissions open the console's pages at all; guardian narrows what is in them.
    user.user_permissions.add(*Permission.objects.filter(codename__in=CONSOLE_PERMS))
    return user


def make_side(environment: Environment, *, admin, user, capture) -> Side:
    environment = environment_set_posture(environment=environment, actor=admin, reason="executes need approval",
                                          replay_policy="allowed", execute_policy="require_approval")
    world = make_world(environment, admin)
    run = run_dry_run(world, user, capture)
    assert run.status == "succeeded", run.error
    approval = replay_request_approval(dry_run=run, user=user, reason=f"drain POP-12 in {environment.slug}")
    return Side(world, run, approval)


@pytest.fixture
def prod(environments, admin_user, operator, artifact_store, django_capture_on_commit_callbacks) -> Side:
    return make_side(environments["prod"], admin=admin_user, user=operator, capture=django_capture_on_commit_callbacks)


@pytest.fixture
def dev(environments, admin_user, dev_operator, artifact_store, django_capture_on_commit_callbacks) -> Side:
    return make_side(environments["dev"], admin=admin_user, user=dev_operator,
                     capture=django_capture_on_commit_callbacks)


@pytest.fixture
def dev_client(client, dev_operator):
    client.force_login(dev_operator)
    return client


@pytest.fixture
def dev_api(dev_operator) -> APIClient:
    """The dev operator at a terminal, with a personal token."""
    _, plaintext = user_token_create(user=dev_operator, name="cli", actor=dev_operator)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {plaintext}")
    return api


def page(client, url: str, data: dict[str, Any] | None = None, *, status: int | None = 200) -> str:
    """The page's HTML, after checking its status (None: any status but a 5xx)."""
    response = client.get(url, data or {})
    if status is None:
        assert response.status_code < 500, f"{url}: {response.status_code}"
    else:
        assert response.status_code == status, f"{url}: {response.status_code}"
    return response.content.decode()


# --- the console ---------------------------------------------------------------------------------------------------


def changelist(client, model: type, query: dict[str, Any] | None = None) -> tuple[str, set[Any]]:
    """The changelist's HTML, and the primary keys of the rows it lists."""
    response = client.get(admin_url(model), query or {})
    assert response.status_code == 200, f"{model.__name__}: {response.status_code}"
    return response.content.decode(), {obj.pk for obj in response.context["cl"].result_list}


@pytest.mark.parametrize("query", ["all", "search", "filter"])
def test_it_lists_no_prod_incident_in_the_console(dev_client, dev, prod, environments, query):
    incident = prod.world.incident
    queries = {"all": {}, "search": {"q": prod.ref}, "filter": {"environment__id__exact": environments["prod"].pk}}
    html, listed = changelist(dev_client, type(incident), queries[query])
    assert incident.pk not in listed
    assert admin_url(type(incident), "change", incident.pk) not in html
    if query == "all":
        assert listed == {dev.world.incident.pk}
        assert prod.ref not in html


def test_it_lists_no_prod_audit_event_in_the_console(dev_client, dev, prod):
    prod_events = {event.pk for event in prod.audit_events()}
    assert prod_events and dev.audit_events()
    for query in ({}, {"environment": "prod"}, {"q": prod.ref}):
        html, listed = changelist(dev_client, AuditEvent, query)
        assert not listed & prod_events, query
        assert not any(admin_url(AuditEvent, "change", pk) in html for pk in prod_events), query
    html, listed = changelist(dev_client, AuditEvent)
    assert listed == {event.pk for event in dev.audit_events()}
    assert prod.ref not in html


def test_it_lists_no_prod_replay_or_approval_in_the_console(dev_client, dev, prod):
    html, listed = changelist(dev_client, ReplayExecution)
    assert listed == {dev.run.pk}
    assert admin_url(ReplayExecution, "change", prod.run.pk) not in html
    assert prod.ref not in html

    html, listed = changelist(dev_client, ApprovalRequest)
    assert listed == {dev.approval.pk}
    assert admin_url(ApprovalRequest, "change", prod.approval.pk) not in html


def test_it_opens_no_prod_object_page_in_the_console(dev_client, dev, prod):
    for obj in (prod.world.incident, prod.run, prod.approval, prod.audit_events()[0], prod.world.bundle):
        response = dev_client.get(admin_url(type(obj), "change", obj.pk), follow=True)
        assert response.redirect_chain[-1][0] == reverse("admin:index"), type(obj).__name__  # "does not exist"
        assert prod.ref not in response.content.decode()
        # The history pages refuse (403) or, for the audit log, send back to the index: either way nothing of it shows.
        history = dev_client.get(admin_url(type(obj), "history", obj.pk))
        assert history.status_code in (302, 403), type(obj).__name__
        assert prod.ref not in history.content.decode()


# --- the portal's pages --------------------------------------------------------------------------------------------


def test_it_lists_no_prod_replay_in_the_run_history(dev_client, dev, prod):
    html = page(dev_client, reverse("replays:history"))
    assert reverse("replays:detail", args=[prod.run.pk]) not in html
    assert prod.ref not in html
    assert reverse("replays:detail", args=[dev.run.pk]) in html

    # prod is not a choice of the environment filter; naming it is a bad filter, not a way in.
    html = page(dev_client, reverse("replays:history"), {"environment": "prod"}, status=400)
    assert reverse("replays:detail", args=[prod.run.pk]) not in html
    html = page(dev_client, reverse("replays:history"), {"incident": prod.ref})
    assert reverse("replays:detail", args=[prod.run.pk]) not in html


@pytest.mark.parametrize("view", ["detail", "stages", "report_json", "evidence", "summary_md"])
def test_it_answers_404_for_a_prod_replays_pages(dev_client, dev, prod, view):
    response = dev_client.get(reverse(f"replays:{view}", args=[prod.run.pk]))
    assert response.status_code == 404
    assert prod.ref not in response.content.decode()


def test_it_answers_404_for_a_new_replay_of_a_prod_incident(dev_client, dev, prod):
    assert dev_client.get(reverse("replays:new"), {"incident": prod.ref}).status_code == 404
    assert dev_client.get(reverse("replays:compare"), {"a": prod.run.pk, "b": dev.run.pk}).status_code == 404


def test_it_lists_no_prod_approval_in_the_inbox(dev_client, dev, prod):
    html = page(dev_client, reverse("approvals:inbox"))
    assert reverse("approvals:review", args=[prod.approval.pk]) not in html
    assert reverse("approvals:review", args=[dev.approval.pk]) in html  # the dev operator's own open request
    assert dev_client.get(reverse("approvals:review", args=[prod.approval.pk])).status_code == 404


def test_it_shows_nothing_of_prod_on_the_dashboard(dev_client, dev, prod):
    html = page(dev_client, reverse("dashboard"))
    assert prod.ref not in html
    assert reverse("replays:detail", args=[prod.run.pk]) not in html
    assert reverse("approvals:review", args=[prod.approval.pk]) not in html
    assert dev.ref in html


@pytest.mark.parametrize("narrowed", ["all", "environment", "target"])
def test_it_shows_no_prod_audit_event_in_the_explorer_or_its_exports(dev_client, dev, prod, narrowed):
    incident = prod.world.incident
    query = {
        "all": {},
        "environment": {"environment": "prod"},
        "target": {"target_type": incident._meta.label_lower, "target_id": str(incident.pk)},
    }[narrowed]
    # Filtering on an environment one cannot see is refused (400) rather than answered empty; the others answer.
    expected = 400 if narrowed == "environment" else 200
    html = page(dev_client, reverse("audit-explorer"), query, status=expected)
    assert prod.ref not in html
    for name in ("audit-export-csv", "audit-export-json"):
        response = dev_client.get(reverse(name), query)
        assert response.status_code == expected, (name, response.status_code)
        body = b"".join(response.streaming_content).decode() if response.streaming else response.content.decode()
        assert prod.ref not in body, name
    if not query:
        assert dev.ref in html


def test_it_answers_404_for_a_prod_objects_history(dev_client, dev, prod):
    for obj in (prod.world.incident, prod.run, prod.approval):
        url = reverse("audit-history", args=[obj._meta.label_lower, obj.pk])
        assert dev_client.get(url).status_code == 404, url
    incident = dev.world.incident
    assert dev_client.get(reverse("audit-history", args=[incident._meta.label_lower, incident.pk])).status_code == 200


def test_it_answers_404_for_a_prod_incident_investigation(dev_client, dev, prod):
    assert dev_client.get(reverse("incidents-ui:investigate", args=[prod.ref])).status_code == 404
    assert dev_client.get(reverse("incidents-ui:investigate", args=[prod.world.incident.pk])).status_code == 404
    assert dev_client.get(reverse("incidents-ui:investigate", args=[dev.ref])).status_code == 200


# --- the API -------------------------------------------------------------------------------------------------------


def ids(response) -> set[int]:
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def test_it_lists_no_prod_replay_in_the_api(dev_api, dev, prod):
    url = reverse("replays-api:replay-list")
    assert ids(dev_api.get(url)) == {dev.run.pk}
    assert ids(dev_api.get(url, {"environment": "prod"})) == set()
    assert ids(dev_api.get(url, {"incident": prod.ref})) == set()


@pytest.mark.parametrize("view", ["replay-detail", "replay-report", "replay-evidence"])
def test_it_answers_404_for_a_prod_replay_in_the_api(dev_api, dev, prod, view):
    response = dev_api.get(reverse(f"replays-api:{view}", args=[prod.run.pk]))
    assert response.status_code == 404
    assert prod.ref not in response.content.decode()


def test_it_answers_404_for_a_replay_request_on_a_prod_incident(dev_api, dev, prod):
    body = {"mode": "dry_run", "incident": prod.ref, "artifact": prod.world.bundle.pk}
    response = dev_api.post(reverse("replays-api:replay-list"), body, format="json")
    assert response.status_code == 404
    assert not ReplayExecution.objects.filter(incident=prod.world.incident).exclude(pk=prod.run.pk).exists()


def test_it_lists_no_prod_approval_in_the_api(dev_api, dev, prod):
    url = reverse("approvals_api:request-list")
    assert ids(dev_api.get(url)) == {dev.approval.pk}
    assert ids(dev_api.get(url, {"environment": "prod"})) == set()
    assert dev_api.get(reverse("approvals_api:request-detail", args=[prod.approval.pk])).status_code == 404


def test_it_answers_404_for_a_decision_on_a_prod_approval_in_the_api(dev_api, dev, prod):
    response = dev_api.post(reverse("approvals_api:request-approve", args=[prod.approval.pk]), {}, format="json")
    assert response.status_code == 404
    prod.approval.refresh_from_db()
    assert prod.approval.status == "pending"
    assert not prod.approval.decisions.exists()
