"""The operator's console, through its real URLs: every page renders, writes go through services, scoping holds."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.db import models
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from guardian.shortcuts import assign_perm
from simple_history.admin import SimpleHistoryAdmin

from approvals.digest import deployment_digest
from approvals.models import ApprovalDecision, ApprovalRequest, UserToken
from approvals.services import approval_request
from approvals.tokens import user_token_create
from artifacts.models import Artifact
from incidents import services
from incidents.models import (
    Agent,
    AgentKey,
    Command,
    Deployment,
    EnrollmentToken,
    Environment,
    Heartbeat,
    Incident,
    IncidentNote,
    PipelineVersion,
)
from replays.engine import spec_hash
from replays.models import ReplayExecution
from tests.console import REGISTERED, admin_url
from tests.factories import HeartbeatFactory, UserFactory
from traceflux import audit
from traceflux.audit.models import AuditEvent

WITH_HISTORY = [model for model in REGISTERED if isinstance(admin.site._registry[model], SimpleHistoryAdmin)]
FIRST_NOTE = "first look: 5xx at POP-12"
SPEC = {"schema": "traceflux.policy/v1", "name": "console test policy", "correlation": {"window_s": 600}}


def grant(user, *codenames: str) -> None:
    """Model-level permissions, which staff need to open console pages at all; guardian narrows what is inside."""
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="incidents", codename__in=codenames))


@pytest.fixture
def world(admin_user, environments) -> dict[type[models.Model], models.Model]:
    """One object of every registered model, made the way the product makes them: through the services."""
    prod = environments["prod"]
    agent = services.agent_create(environment=prod, name="edge-prod-1", hostname="edge-prod-1.example.test",
                                  actor=admin_user, region="us-east-1", pop="POP-12", services=["edge-gw"])
    key, _ = services.agent_key_create(agent=agent, actor=admin_user)
    version = services.pipeline_version_create(label="v2.14.3", spec=SPEC, actor=admin_user)
    deployment = services.deployment_request(environment=prod, pipeline_version=version, actor=admin_user,
                                             reason="roll out v2.14.3")
    start = timezone.now().replace(microsecond=0) - timedelta(minutes=30)
    incident = services.incident_open(ref="INC-2026-0226-001", title="Edge gateway 5xx burst", environment=prod,
                                      window_start=start, window_end=start + timedelta(minutes=4), actor=admin_user,
                                      source_agent=agent, deployment=deployment, service="edge-gw")
    # Artifacts arrive through the upload API (tests/artifacts); a plain row is enough to render their pages.
    artifact = Artifact.objects.create(
        environment=prod, agent=agent, incident=incident, kind="incident_bundle", size=3, sha256="ab" * 32,
        detected_type="tar.gz", captured_at=start, file="artifacts/sha256/ab/ab/" + "ab" * 32,
    )
    return {
        Environment: prod,
        Agent: agent,
        AgentKey: key,
        Heartbeat: HeartbeatFactory(agent=agent, deployment=deployment),
        Command: services.command_create(agent=agent, kind="capture", payload={}, idempotency_key="cmd-0001",
                                         actor=admin_user),
        EnrollmentToken: services.enrollment_token_create(
            environment=prod, actor=admin_user, expires_at=timezone.now() + timedelta(hours=1)
        )[0],
        PipelineVersion: version,
        Deployment: deployment,
        Incident: incident,
        IncidentNote: services.incident_note_add(incident=incident, author=admin_user, body=FIRST_NOTE),
        Artifact: artifact,
        # Replays run through replays.services (tests/replays); a plain row is enough to render their pages.
        ReplayExecution: ReplayExecution.objects.create(incident=incident, environment=prod, artifact=artifact,
                                                        pipeline_version=version, mode="dry_run"),
        ApprovalRequest: approval_request(subject=deployment, subject_kind="deployment", summary={},
                                          digest=deployment_digest(deployment), environment=prod,
                                          requested_by=admin_user, reason="roll out v2.14.3"),
        ApprovalDecision: ApprovalDecision.objects.create(request=ApprovalRequest.objects.get(), decision="approve",
                                                          approver=UserFactory(username="reviewer"), comment="ok"),
        UserToken: user_token_create(user=admin_user, name="console", actor=admin_user)[0],
        AuditEvent: audit.record(action="test.event", actor=admin_user, reason="rendering the console"),
        Group: Group.objects.create(name="operators"),
        admin_user.__class__: admin_user,
    }


# --- every page renders ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", REGISTERED, ids=lambda model: model._meta.label)
def test_it_renders_the_changelist_change_and_add_pages_of_every_registered_model(client, admin_user, world, rf, model):
    assert model in world, f"{model._meta.label} is registered in the admin: add one of it to the world fixture"
    client.force_login(admin_user)

    assert client.get(admin_url(model, "changelist")).status_code == 200
    assert client.get(admin_url(model, "change", world[model].pk)).status_code == 200

    request = rf.get("/")
    request.user = admin_user
    addable = admin.site._registry[model].has_add_permission(request)
    assert client.get(admin_url(model, "add")).status_code == (200 if addable else 403)


def test_it_offers_an_add_form_only_where_a_service_creates_the_object(rf, admin_user):
    request = rf.get("/")
    request.user = admin_user
    ours = [model for model in REGISTERED if model._meta.app_label == "incidents"]
    addable = {model for model in ours if admin.site._registry[model].has_add_permission(request)}
    assert addable == {Environment, Agent, AgentKey, EnrollmentToken, PipelineVersion, Deployment, Incident}
    assert not admin.site._registry[AuditEvent].has_add_permission(request)


@pytest.mark.parametrize("model", WITH_HISTORY, ids=lambda model: model._meta.label)
def test_it_renders_the_history_page_of_every_history_model(client, admin_user, world, model):
    client.force_login(admin_user)
    response = client.get(admin_url(model, "history", world[model].pk))
    assert response.status_code == 200
    assert str(world[model]) in response.content.decode()


def test_it_refuses_to_revert_an_object_from_its_history(client, admin_user, world):
    incident = world[Incident]
    record = incident.history.earliest()
    client.force_login(admin_user)
    url = reverse("admin:incidents_incident_simple_history", args=[incident.pk, record.history_id])
    assert client.get(url).status_code == 200
    assert client.post(url, {"title": "rewritten"}).status_code == 403


def test_it_sends_an_anonymous_visitor_to_the_console_login(client):
    response = client.get(reverse("admin:index"))
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('admin:login')}?next={reverse('admin:index')}"


def test_it_never_shows_an_agent_keys_secret_digest(client, admin_user, world):
    key = services.agent_key_revoke(key=world[AgentKey], actor=admin_user, reason="gives history a second record")
    first = key.history.earliest()
    client.force_login(admin_user)
    for url in (
        admin_url(AgentKey, "change", key.pk),
        admin_url(AgentKey, "changelist"),
        admin_url(AgentKey, "history", key.pk),
        reverse("admin:incidents_agentkey_simple_history", args=[key.pk, first.history_id]),
        admin_url(Agent, "change", key.agent_id),
    ):
        body = client.get(url).content.decode()
        assert key.prefix in body
        assert key.secret_hmac not in body


def test_it_shows_an_agents_recent_heartbeats_and_keys_on_its_page(client, admin_user, world):
    agent = world[Agent]
    HeartbeatFactory.create_batch(25, agent=agent, status="degraded", version="9.9.9")
    client.force_login(admin_user)
    body = client.get(admin_url(Agent, "change", agent.pk)).content.decode()
    assert body.count("<td>degraded</td>") == 20
    assert world[AgentKey].prefix in body


# --- state changes are actions that call the services ------------------------------------------------------------


def test_it_approves_a_pending_deployment_through_the_changelist_action(client, admin_user, world):
    deployment = world[Deployment]
    assert deployment.status == "pending_approval"
    client.force_login(admin_user)

    response = client.post(admin_url(Deployment, "changelist"), {
        "action": "approve", ACTION_CHECKBOX_NAME: [deployment.pk], "confirm": "yes", "reason": "diff reviewed",
    })

    assert response.status_code == 302
    deployment.refresh_from_db()
    assert deployment.status == "approved"
    latest = deployment.history.latest()
    assert latest.history_user == admin_user
    assert latest.status == "approved"
    event = AuditEvent.objects.get(action="deployment.approved", target_id=str(deployment.pk))
    assert event.actor_name == "admin"
    assert event.reason == "diff reviewed"


def test_it_asks_for_confirmation_before_moving_anything(client, admin_user, world):
    deployment = world[Deployment]
    client.force_login(admin_user)

    response = client.post(admin_url(Deployment, "changelist"),
                           {"action": "approve", ACTION_CHECKBOX_NAME: [deployment.pk], "index": 0})

    assert response.status_code == 200
    assert 'name="reason"' in response.content.decode()
    deployment.refresh_from_db()
    assert deployment.status == "pending_approval"


def test_it_reports_an_illegal_transition_and_leaves_the_status_alone(client, admin_user, world):
    deployment = world[Deployment]
    client.force_login(admin_user)

    response = client.post(admin_url(Deployment, "changelist"), {
        "action": "activate", ACTION_CHECKBOX_NAME: [deployment.pk], "confirm": "yes", "reason": "",
    }, follow=True)

    assert response.status_code == 200
    assert "cannot move from pending_approval to active" in response.content.decode()
    deployment.refresh_from_db()
    assert deployment.status == "pending_approval"
    assert not AuditEvent.objects.filter(action="deployment.active").exists()


def test_it_asks_again_when_a_denial_has_no_reason(client, admin_user, world):
    deployment = world[Deployment]
    client.force_login(admin_user)

    response = client.post(admin_url(Deployment, "changelist"), {
        "action": "deny", ACTION_CHECKBOX_NAME: [deployment.pk], "confirm": "yes", "reason": "  ",
    })

    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    deployment.refresh_from_db()
    assert deployment.status == "pending_approval"


def test_it_refuses_an_approval_from_an_operator_who_is_not_an_approver(client, operator, world):
    deployment = world[Deployment]
    grant(operator, "view_deployment", "change_deployment")
    client.force_login(operator)

    response = client.post(admin_url(Deployment, "changelist"), {
        "action": "approve", ACTION_CHECKBOX_NAME: [deployment.pk], "confirm": "yes", "reason": "mine",
    }, follow=True)

    assert "you may not approve in prod" in response.content.decode()
    deployment.refresh_from_db()
    assert deployment.status == "pending_approval"


def test_it_moves_an_incident_with_a_reason_and_audits_it(client, operator, world):
    incident = world[Incident]
    grant(operator, "view_incident", "change_incident")
    client.force_login(operator)

    client.post(admin_url(Incident, "changelist"), {
        "action": "investigate", ACTION_CHECKBOX_NAME: [incident.pk], "confirm": "yes", "reason": "paged",
    })

    incident.refresh_from_db()
    assert incident.status == "investigating"
    assert incident.history.latest().history_user == operator
    assert AuditEvent.objects.filter(action="incident.investigating", actor_name="operator", reason="paged").exists()


def test_it_revokes_a_key_through_the_service(client, admin_user, world):
    key = world[AgentKey]
    client.force_login(admin_user)

    client.post(admin_url(AgentKey, "changelist"), {
        "action": "revoke_keys", ACTION_CHECKBOX_NAME: [key.pk], "confirm": "yes", "reason": "host rebuilt",
    })

    key.refresh_from_db()
    assert key.revoked_at is not None
    assert AuditEvent.objects.filter(action="agent_key.revoked", reason="host rebuilt").exists()


def test_it_has_no_delete_anywhere_in_the_incidents_console(client, admin_user, world):
    client.force_login(admin_user)
    for model in (Environment, Deployment, Incident, Agent):
        response = client.get(admin_url(model, "delete", world[model].pk))
        assert response.status_code == 403
        assert "delete_selected" not in client.get(admin_url(model, "changelist")).content.decode()


# --- creation goes through the services --------------------------------------------------------------------------


def environment_form(**overrides: Any) -> dict[str, Any]:
    return {
        "slug": "qa", "name": "QA", "replay_policy": "allowed", "execute_policy": "require_approval",
        "deploy_policy": "require_approval", "required_approvals": 1, "approval_ttl": "1 00:00:00", **overrides,
    }


def test_it_refuses_a_contradictory_posture_on_the_add_form(client, admin_user):
    client.force_login(admin_user)

    response = client.post(admin_url(Environment, "add"),
                           environment_form(replay_policy="disabled", execute_policy="allow"))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "execute_policy must be deny when replay_policy is disabled" in errors["execute_policy"][0]
    assert not Environment.objects.filter(slug="qa").exists()
    assert not AuditEvent.objects.filter(action="environment.created").exists()


def test_it_creates_an_environment_through_the_service(client, admin_user):
    client.force_login(admin_user)

    response = client.post(admin_url(Environment, "add"), environment_form())

    assert response.status_code == 302
    environment = Environment.objects.get(slug="qa")
    assert environment.history.get().history_user == admin_user
    assert AuditEvent.objects.filter(action="environment.created", environment="qa", actor_name="admin").exists()


def test_it_changes_a_posture_only_with_a_reason(client, admin_user, environments):
    staging = environments["staging"]
    client.force_login(admin_user)
    url = admin_url(Environment, "change", staging.pk)
    form = {field: getattr(staging, field) for field in ("replay_policy", "deploy_policy", "required_approvals")}
    form.update(execute_policy="allow", approval_ttl="1 00:00:00")

    refused = client.post(url, {**form, "change_reason": ""})
    assert "a posture change needs a reason" in refused.context["adminform"].form.errors["change_reason"][0]
    staging.refresh_from_db()
    assert staging.execute_policy == "require_approval"

    accepted = client.post(url, {**form, "change_reason": "staging mirrors dev for the drill"})
    assert accepted.status_code == 302
    staging.refresh_from_db()
    assert staging.execute_policy == "allow"
    assert staging.history.latest().history_change_reason == "staging mirrors dev for the drill"
    assert AuditEvent.objects.filter(action="environment.posture_changed", environment="staging").exists()


def test_it_computes_the_spec_hash_of_a_pipeline_version_added_in_the_console(client, admin_user):
    client.force_login(admin_user)

    response = client.post(admin_url(PipelineVersion, "add"),
                           {"label": "v3.0.0", "spec": json.dumps(SPEC), "parent": "", "notes": "first"})

    assert response.status_code == 302
    version = PipelineVersion.objects.get(label="v3.0.0")
    assert version.spec_hash == spec_hash(SPEC)
    assert version.created_by == admin_user
    assert AuditEvent.objects.filter(action="pipeline_version.created", target_id=str(version.pk)).exists()


def test_it_refuses_a_spec_that_is_not_a_valid_policy_naming_the_json_path(client, admin_user):
    client.force_login(admin_user)
    bad = {**SPEC, "correlation": {"window_s": "five minutes"}}

    response = client.post(admin_url(PipelineVersion, "add"),
                           {"label": "v3.0.1", "spec": json.dumps(bad), "parent": "", "notes": ""})

    assert response.status_code == 200
    assert "$.correlation.window_s" in response.context["adminform"].form.errors["spec"][0]
    assert not PipelineVersion.objects.filter(label="v3.0.1").exists()


def test_it_refuses_a_spec_that_is_already_a_version(client, admin_user, world):
    client.force_login(admin_user)

    response = client.post(admin_url(PipelineVersion, "add"),
                           {"label": "v9.9.9", "spec": json.dumps(SPEC), "parent": "", "notes": ""})

    assert response.status_code == 200
    assert "already pipeline version v2.14.3" in response.context["adminform"].form.errors["spec"][0]
    assert not PipelineVersion.objects.filter(label="v9.9.9").exists()


def test_it_shows_a_pipeline_versions_spec_read_only(client, admin_user, world):
    version = world[PipelineVersion]
    client.force_login(admin_user)
    url = admin_url(PipelineVersion, "change", version.pk)

    page = client.get(url)
    assert page.status_code == 200
    assert 'name="spec"' not in page.content.decode()
    assert version.spec_hash in page.content.decode()

    assert client.post(url, {"label": "v2.14.3", "spec": json.dumps({"other": True})}).status_code == 403
    version.refresh_from_db()
    assert version.spec == SPEC


def test_it_requests_a_deployment_through_the_service(client, admin_user, world, environments):
    client.force_login(admin_user)

    response = client.post(admin_url(Deployment, "add"), {
        "environment": environments["staging"].pk, "pipeline_version": world[PipelineVersion].pk,
        "target_regions": "us-east-1, eu-west-1", "target_pops": "", "target_services": "", "reason": "canary",
    })

    assert response.status_code == 302
    deployment = Deployment.objects.get(environment=environments["staging"])
    assert deployment.status == "pending_approval"
    assert deployment.target_regions == ["eu-west-1", "us-east-1"]
    assert deployment.requested_by == admin_user
    assert AuditEvent.objects.filter(action="deployment.requested", target_id=str(deployment.pk)).exists()


def test_it_refuses_a_deployment_where_the_posture_denies_it(client, admin_user, world, environments):
    services.environment_set_posture(environment=environments["staging"], actor=admin_user, reason="freeze",
                                     deploy_policy="deny")
    client.force_login(admin_user)

    response = client.post(admin_url(Deployment, "add"), {
        "environment": environments["staging"].pk, "pipeline_version": world[PipelineVersion].pk, "reason": "now",
    })

    assert response.status_code == 200
    assert "deployments are denied in staging" in response.context["adminform"].form.errors["environment"][0]
    assert not Deployment.objects.filter(environment=environments["staging"]).exists()


def test_it_refuses_an_incident_window_outside_the_bounds(client, admin_user, environments):
    client.force_login(admin_user)

    response = client.post(admin_url(Incident, "add"), {
        "ref": "INC-1", "title": "too long", "severity": "sev2", "environment": environments["prod"].pk,
        "window_start_0": "2026-02-26", "window_start_1": "10:00:00",
        "window_end_0": "2026-02-26", "window_end_1": "10:30:00",
    })

    assert response.status_code == 200
    assert "between 2 and 10 minutes" in response.context["adminform"].form.errors["window_end"][0]
    assert not Incident.objects.exists()


def test_it_opens_an_incident_through_the_service(client, admin_user, environments):
    client.force_login(admin_user)

    response = client.post(admin_url(Incident, "add"), {
        "ref": "INC-2", "title": "POP-12 5xx", "severity": "sev2", "environment": environments["prod"].pk,
        "window_start_0": "2026-02-26", "window_start_1": "10:00:00",
        "window_end_0": "2026-02-26", "window_end_1": "10:04:00",
        "notes-TOTAL_FORMS": 0, "notes-INITIAL_FORMS": 0,
    })

    assert response.status_code == 302
    incident = Incident.objects.get(ref="INC-2")
    assert incident.opened_by == admin_user
    assert AuditEvent.objects.filter(action="incident.opened", target_id=str(incident.pk)).exists()


def test_it_adds_an_incident_note_through_the_service_and_keeps_old_notes(client, admin_user, world):
    incident, first = world[Incident], world[IncidentNote]
    client.force_login(admin_user)

    response = client.post(admin_url(Incident, "change", incident.pk), {
        "notes-TOTAL_FORMS": 2, "notes-INITIAL_FORMS": 1,
        "notes-0-id": first.pk, "notes-0-incident": incident.pk, "notes-0-body": "edited in place",
        "notes-1-incident": incident.pk, "notes-1-body": "rolled back POP-12",
    })

    assert response.status_code == 302
    assert list(incident.notes.values_list("body", flat=True)) == [FIRST_NOTE, "rolled back POP-12"]
    assert incident.notes.get(body="rolled back POP-12").author == admin_user
    assert AuditEvent.objects.filter(action="incident.note_added", target_id=str(incident.pk)).count() == 2


def test_it_issues_an_agent_key_once_and_stores_only_its_digest(client, admin_user, world):
    agent = world[Agent]
    client.force_login(admin_user)

    response = client.post(admin_url(AgentKey, "add"), {
        "agent": agent.pk, "scopes": ["heartbeats:write"], "expires_at_0": "", "expires_at_1": "",
    })

    assert response.status_code == 200
    plaintext = response.context["plaintext"]
    _, prefix, secret = plaintext.split("_", 2)
    key = AgentKey.objects.get(prefix=prefix)
    assert key.scopes == ["heartbeats:write"]
    assert key.secret_hmac == services.agent_key_digest(secret)
    assert secret not in client.get(admin_url(AgentKey, "change", key.pk)).content.decode()


def test_it_registers_an_agent_through_the_service(client, admin_user, environments):
    client.force_login(admin_user)

    response = client.post(admin_url(Agent, "add"), {
        "environment": environments["dev"].pk, "name": "edge-dev-1", "hostname": "edge-dev-1.example.test",
        "version": "1.4.0", "region": "us-east-1", "pop": "POP-1", "services": "edge-gw, auth",
    })

    assert response.status_code == 302
    agent = Agent.objects.get(name="edge-dev-1")
    assert agent.services == ["auth", "edge-gw"]
    assert AuditEvent.objects.filter(action="agent.created", target_id=str(agent.pk)).exists()


def test_it_reports_a_refusal_that_slipped_past_the_form_instead_of_failing(client, admin_user, environments,
                                                                          monkeypatch):
    # The forms check what the services check; only a concurrent writer can still make a service refuse.
    def created_concurrently(**kwargs: Any) -> None:
        raise ValidationError({"name": "an agent named 'edge-dev-1' already exists"})

    monkeypatch.setattr(services, "agent_create", created_concurrently)
    client.force_login(admin_user)

    response = client.post(admin_url(Agent, "add"), {
        "environment": environments["dev"].pk, "name": "edge-dev-1", "hostname": "edge-dev-1.example.test",
    }, follow=True)

    assert response.status_code == 200
    assert "Nothing was saved: name: an agent named" in response.content.decode()
    assert not Agent.objects.exists()


# --- environment scoping -----------------------------------------------------------------------------------------


def test_it_shows_an_outsider_no_incident_even_with_the_model_permission(client, outsider, world):
    incident = world[Incident]
    grant(outsider, "view_incident")
    client.force_login(outsider)

    listing = client.get(admin_url(Incident, "changelist"))
    assert listing.status_code == 200
    assert incident.ref not in listing.content.decode()
    assert client.get(admin_url(Incident, "change", incident.pk)).status_code in (302, 404)
    # The history page looks the object up outside the queryset; it must still say no.
    assert client.get(admin_url(Incident, "history", incident.pk)).status_code == 403


def test_it_shows_an_operator_the_incidents_of_their_environments(client, operator, world):
    incident = world[Incident]
    grant(operator, "view_incident")
    client.force_login(operator)

    assert incident.ref in client.get(admin_url(Incident, "changelist")).content.decode()
    assert client.get(admin_url(Incident, "change", incident.pk)).status_code == 200
    assert client.get(admin_url(Incident, "history", incident.pk)).status_code == 200


def test_it_offers_only_visible_environments_in_forms_and_filters(client, environments):
    not_prod = UserFactory(username="not-prod")
    for slug in ("dev", "staging"):
        assign_perm("incidents.view_environment", not_prod, environments[slug])
    grant(not_prod, "view_incident", "add_incident")
    client.force_login(not_prod)

    form = client.get(admin_url(Incident, "add")).context["adminform"].form
    assert set(form.fields["environment"].queryset) == {environments["dev"], environments["staging"]}

    listing = client.get(admin_url(Incident, "changelist")).content.decode()
    assert f"environment__id__exact={environments['staging'].pk}" in listing
    assert f"environment__id__exact={environments['prod'].pk}" not in listing


def test_it_refuses_a_foreign_environment_posted_by_hand(client, environments):
    dev_only = UserFactory(username="dev-only")
    assign_perm("incidents.view_environment", dev_only, environments["dev"])
    grant(dev_only, "view_incident", "add_incident")
    client.force_login(dev_only)

    response = client.post(admin_url(Incident, "add"), {
        "ref": "INC-3", "title": "sneaky", "severity": "sev3", "environment": environments["prod"].pk,
        "window_start_0": "2026-02-26", "window_start_1": "10:00:00",
        "window_end_0": "2026-02-26", "window_end_1": "10:04:00",
        "notes-TOTAL_FORMS": 0, "notes-INITIAL_FORMS": 0,
    })

    assert response.status_code == 200
    assert "environment" in response.context["adminform"].form.errors
    assert not Incident.objects.filter(ref="INC-3").exists()


def test_it_lets_a_superuser_see_every_environment(admin_user, environments):
    client = Client()
    client.force_login(admin_user)
    body = client.get(admin_url(Environment, "changelist")).content.decode()
    for slug in ("dev", "staging", "prod"):
        assert f">{slug}<" in body


# --- agent API surfaces in the console ---------------------------------------------------------------------------


def test_it_shows_an_agents_refused_requests_of_the_last_hour_with_an_escalation_hint(client, admin_user, world):
    from incidents.failures import failure_record

    agent = world[Agent]
    client.force_login(admin_user)
    page = client.get(admin_url(Agent, "change", agent.pk)).content.decode()
    assert "401: 0 · 403: 0 · 429: 0" in page
    assert "escalate" not in page
    for _ in range(12):
        failure_record(code=429, agent_id=agent.pk)
    failure_record(code=403, agent_id=agent.pk)
    page = client.get(admin_url(Agent, "change", agent.pk)).content.decode()
    assert "401: 0 · 403: 1 · 429: 12" in page
    assert "repeated refusals: escalate" in page


def test_it_issues_an_enrollment_token_once_and_stores_only_its_hmac(client, admin_user, environments):
    client.force_login(admin_user)
    response = client.post(
        admin_url(EnrollmentToken, "add"), {"environment": environments["prod"].pk, "uses": 2, "expires_in_hours": 3}
    )
    assert response.status_code == 200
    plaintext = response.context["plaintext"]
    token = EnrollmentToken.objects.get()
    assert plaintext.startswith(f"tfe_{token.prefix}_")
    assert token.uses_left == 2
    secret = plaintext.split("_", 2)[2]
    assert secret not in token.secret_hmac
    assert token.secret_hmac == services.enrollment_token_digest(secret)
    assert secret not in client.get(admin_url(EnrollmentToken, "change", token.pk)).content.decode()


def test_it_refuses_an_enrollment_token_in_an_environment_the_user_cannot_operate(client, approver1, environments):
    grant(approver1, "view_enrollmenttoken", "add_enrollmenttoken")
    client.force_login(approver1)
    response = client.post(
        admin_url(EnrollmentToken, "add"), {"environment": environments["prod"].pk, "uses": 1, "expires_in_hours": 1}
    )
    assert not EnrollmentToken.objects.exists()
    assert response.status_code == 403


# --- importing an Alertmanager configuration ---------------------------------------------------------------------

AM_CONFIG = """
route:
  receiver: default
  group_by: [alertname, pop]
  routes:
    - receiver: network
      matchers: ['alertname=~"BGP.*"']
receivers:
  - name: default
  - name: network
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [pop]
"""


def test_it_imports_an_alertmanager_configuration_through_the_service(client, admin_user):
    client.force_login(admin_user)
    url = reverse("admin:incidents_pipelineversion_import_alertmanager")
    assert "Import Alertmanager config" in client.get(admin_url(PipelineVersion, "changelist")).content.decode()

    response = client.post(url, {"label": "am-1", "config": AM_CONFIG, "silences": "", "notes": "from prod AM"})

    assert response.status_code == 302
    version = PipelineVersion.objects.get(label="am-1")
    assert version.spec_hash == spec_hash(version.spec)
    assert version.spec["correlation"]["routes"]["routes"][0]["receiver"] == "network"
    assert version.created_by == admin_user
    assert AuditEvent.objects.filter(action="pipeline_version.created", target_id=str(version.pk)).exists()


def test_it_names_the_yaml_path_of_a_bad_configuration_and_creates_nothing(client, admin_user):
    client.force_login(admin_user)
    bad = AM_CONFIG.replace("equal: [pop]", "equal: pop")

    response = client.post(reverse("admin:incidents_pipelineversion_import_alertmanager"),
                           {"label": "am-2", "config": bad, "silences": "[not json"})

    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "silences" in errors and "not JSON" in errors["silences"][0]
    assert not PipelineVersion.objects.filter(label="am-2").exists()
    response = client.post(reverse("admin:incidents_pipelineversion_import_alertmanager"),
                           {"label": "am-2", "config": bad})
    assert "inhibit_rules[0].equal" in response.context["form"].errors["config"][0]
    assert not PipelineVersion.objects.exists()


def test_it_refuses_the_import_page_to_staff_who_may_not_add_versions(client, operator):
    grant(operator, "view_pipelineversion")
    client.force_login(operator)
    response = client.post(reverse("admin:incidents_pipelineversion_import_alertmanager"),
                           {"label": "am-3", "config": AM_CONFIG})
    assert response.status_code == 403
    assert not PipelineVersion.objects.exists()


def test_it_offers_a_roll_back_button_on_an_active_deployment_that_runs_the_action(client, admin_user, environments):
    from tests.factories import DeploymentFactory

    active = DeploymentFactory(environment=environments["dev"], status="active")
    pending = DeploymentFactory(environment=environments["dev"])
    client.force_login(admin_user)
    assert "Roll back</button>" in client.get(admin_url(Deployment, "change", active.pk)).content.decode()
    assert "Roll back</button>" not in client.get(admin_url(Deployment, "change", pending.pk)).content.decode()

    confirm = client.post(admin_url(Deployment, "changelist"), {"action": "roll_back", "_selected_action": [active.pk]})
    assert confirm.status_code == 200 and "reason" in confirm.content.decode()
    client.post(admin_url(Deployment, "changelist"), {
        "action": "roll_back", "_selected_action": [active.pk], "confirm": "yes", "reason": "bad spec",
    })
    active.refresh_from_db()
    assert active.status in {"rolling_back", "rolled_back"}
