"""Deployments carried out on fake agents through the real command API: deploy, acknowledge, active; failure, expiry
and rollback. Every step is driven by the acknowledgement (or expiry) signal on commit; nothing polls."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from incidents import services
from incidents.models import Command, Deployment
from tests.concurrency import race
from tests.factories import AgentFactory, DeploymentFactory, PipelineVersionFactory
from traceflux.audit import SYSTEM
from traceflux.audit.models import AuditEvent
from traceflux.statemachine import TransitionError

COMMANDS = "/api/v1/agent/commands/"


class FakeAgent:
    """An agent that talks to the server only through the agent API, with a commands:read key."""

    def __init__(self, agent) -> None:
        self.agent = agent
        _, key = services.agent_key_create(agent=agent, actor=SYSTEM, scopes=["commands:read"])
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    def poll(self) -> list[dict]:
        response = self.client.get(COMMANDS)
        assert response.status_code == 200, response.content
        return response.json()["commands"]

    def ack(self, command: dict, status: str = "succeeded") -> None:
        response = self.client.post(f"{COMMANDS}{command['id']}/ack/", {"status": status, "output": {}}, format="json")
        assert response.status_code == 200, response.content

    def carry_out(self, kind: str, status: str = "succeeded") -> None:
        (command,) = [c for c in self.poll() if c["kind"] == kind]
        self.ack(command, status)


@pytest.fixture
def fleet(environments):
    """Two enabled dev agents the deployment targets, and a disabled one it does not."""
    dev = environments["dev"]
    AgentFactory(environment=dev, name="edge-dev-off", enabled=False)
    return [FakeAgent(AgentFactory(environment=dev, name=f"edge-dev-{n}")) for n in (1, 2)]


@pytest.fixture
def previous(environments):
    return DeploymentFactory(environment=environments["dev"], status="active")


@pytest.fixture
def deploy(environments, operator, django_capture_on_commit_callbacks):
    """Request a deployment in dev (posture allow): approved at once, dispatched on commit."""

    def request(**targets) -> Deployment:
        version = PipelineVersionFactory(label="v2.15.0")
        with django_capture_on_commit_callbacks(execute=True):
            deployment = services.deployment_request(
                environment=environments["dev"],
                pipeline_version=version,
                actor=operator,
                reason="tighter joins",
                **targets,
            )
        deployment.refresh_from_db()
        return deployment

    return request


def statuses(deployment: Deployment) -> list[str]:
    return list(deployment.history.order_by("history_id").values_list("status", flat=True))


@pytest.mark.django_db
def test_it_deploys_to_every_target_agent_and_activates_when_all_acknowledge(
    fleet, previous, deploy, django_capture_on_commit_callbacks
):
    deployment = deploy()

    assert deployment.status == "deploying"
    commands = Command.objects.filter(kind="deploy").order_by("idempotency_key")
    assert [c.idempotency_key for c in commands] == [f"deploy:{deployment.pk}:{a.agent.pk}" for a in fleet]
    assert commands[0].payload == {
        "deployment": deployment.pk,
        "pipeline_version": "v2.15.0",
        "spec_hash": deployment.pipeline_version.spec_hash,
    }
    assert all(c.deadline is not None for c in commands)

    with django_capture_on_commit_callbacks(execute=True):
        fleet[0].carry_out("deploy")
    deployment.refresh_from_db()
    assert deployment.status == "deploying"  # one of two agents is not enough

    with django_capture_on_commit_callbacks(execute=True):
        fleet[1].carry_out("deploy")
    deployment.refresh_from_db()
    previous.refresh_from_db()
    assert deployment.status == "active"
    assert previous.status == "superseded"
    assert statuses(deployment) == ["approved", "deploying", "active"]
    event = AuditEvent.objects.get(action="deployment.active", target_id=str(deployment.pk))
    assert event.actor_kind == "agent"
    assert "acknowledged by all 2 agents: edge-dev-1, edge-dev-2" in event.reason


@pytest.mark.django_db
def test_it_fails_the_deployment_when_an_agent_reports_a_failure(
    fleet, previous, deploy, django_capture_on_commit_callbacks
):
    deployment = deploy()

    with django_capture_on_commit_callbacks(execute=True):
        fleet[0].carry_out("deploy", status="failed")
        fleet[1].carry_out("deploy")  # a late success changes nothing

    deployment.refresh_from_db()
    previous.refresh_from_db()
    assert deployment.status == "failed"
    assert previous.status == "active"  # the running version stays
    assert AuditEvent.objects.get(action="deployment.failed").reason == "deploy on edge-dev-1 failed"


@pytest.mark.django_db
def test_it_fails_the_deployment_when_a_deploy_command_expires(fleet, deploy, django_capture_on_commit_callbacks):
    deployment = deploy()
    fleet[0].carry_out("deploy")
    Command.objects.filter(agent=fleet[1].agent).update(deadline=timezone.now() - timedelta(seconds=1))

    with django_capture_on_commit_callbacks(execute=True):
        assert services.command_expire_overdue() == 1

    deployment.refresh_from_db()
    assert deployment.status == "failed"
    event = AuditEvent.objects.get(action="deployment.failed")
    assert (event.actor_kind, event.reason) == ("system", "deploy on edge-dev-2 expired")


@pytest.mark.django_db
def test_it_fails_a_deployment_that_targets_no_agent(fleet, deploy):
    deployment = deploy(target_regions=["eu-nowhere-1"])

    assert deployment.status == "failed"
    assert statuses(deployment) == ["approved", "deploying", "failed"]
    assert not Command.objects.exists()
    assert AuditEvent.objects.get(action="deployment.failed").reason == "no target agents"


@pytest.mark.django_db
def test_it_dispatches_a_deployment_approved_by_hand_and_only_once(
    fleet, environments, admin_user, django_capture_on_commit_callbacks
):
    deployment = DeploymentFactory(environment=environments["prod"])
    AgentFactory(environment=environments["prod"], name="edge-prod-1")

    with django_capture_on_commit_callbacks(execute=True):
        services.deployment_transition(deployment=deployment, to="approved", actor=admin_user, reason="ok")

    deployment.refresh_from_db()
    assert deployment.status == "deploying"
    assert list(Command.objects.values_list("agent__name", flat=True)) == ["edge-prod-1"]  # prod's agents only
    with pytest.raises(TransitionError, match="only an approved deployment can be dispatched"):
        services.deployment_dispatch(deployment=deployment, actor=admin_user)
    assert Command.objects.count() == 1


@pytest.mark.django_db
def test_it_rolls_back_through_rollback_commands(fleet, deploy, operator, django_capture_on_commit_callbacks):
    deployment = deploy()
    with django_capture_on_commit_callbacks(execute=True):
        for agent in fleet:
            agent.carry_out("deploy")

    rolled = services.deployment_rollback(deployment=deployment, actor=operator, reason="pages doubled")

    assert rolled.status == "rolling_back"
    keys = sorted(Command.objects.filter(kind="rollback").values_list("idempotency_key", flat=True))
    assert keys == [f"rollback:{deployment.pk}:{a.agent.pk}" for a in fleet]
    with django_capture_on_commit_callbacks(execute=True):
        for agent in fleet:
            agent.carry_out("rollback")
    deployment.refresh_from_db()
    assert deployment.status == "rolled_back"
    assert statuses(deployment)[-3:] == ["active", "rolling_back", "rolled_back"]


@pytest.mark.django_db
def test_it_fails_the_deployment_when_a_rollback_fails(fleet, deploy, operator, django_capture_on_commit_callbacks):
    deployment = deploy()
    with django_capture_on_commit_callbacks(execute=True):
        for agent in fleet:
            agent.carry_out("deploy")
    services.deployment_rollback(deployment=deployment, actor=operator, reason="pages doubled")
    with django_capture_on_commit_callbacks(execute=True):
        fleet[1].carry_out("rollback", status="failed")

    deployment.refresh_from_db()
    assert deployment.status == "failed"


@pytest.mark.django_db
def test_it_refuses_to_roll_back_what_is_not_active_or_without_a_reason(fleet, deploy, operator):
    deployment = deploy()
    with pytest.raises(ValidationError):
        services.deployment_rollback(deployment=deployment, actor=operator, reason=" ")
    with pytest.raises(TransitionError, match="cannot move from deploying to rolling_back"):
        services.deployment_rollback(deployment=deployment, actor=operator, reason="pages doubled")
    assert not Command.objects.filter(kind="rollback").exists()


@pytest.mark.django_db
def test_it_rolls_back_from_the_admin_action_through_rollback_commands(
    client, operator, fleet, deploy, django_capture_on_commit_callbacks
):
    operator.is_staff = True
    operator.save()
    deployment = deploy()
    with django_capture_on_commit_callbacks(execute=True):
        for agent in fleet:
            agent.carry_out("deploy")
    operator.user_permissions.add(*_deployment_perms())
    client.force_login(operator)

    response = client.post(
        reverse("admin:incidents_deployment_changelist"),
        {
            "action": "roll_back",
            ACTION_CHECKBOX_NAME: [deployment.pk],
            "confirm": "yes",
            "reason": "pages doubled",
        },
    )

    assert response.status_code == 302
    deployment.refresh_from_db()
    assert deployment.status == "rolling_back"
    assert Command.objects.filter(kind="rollback").count() == 2
    assert AuditEvent.objects.get(action="deployment.rolling_back").actor_name == "operator"


def _deployment_perms():
    from django.contrib.auth.models import Permission

    return Permission.objects.filter(
        content_type__app_label="incidents",
        codename__in=[
            "view_deployment",
            "change_deployment",
        ],
    )


# --- concurrency -------------------------------------------------------------------------------------------------


@pytest.mark.needs("postgresql")
@pytest.mark.django_db(transaction=True)
def test_it_activates_once_when_the_last_two_agents_acknowledge_at_once(fleet, previous, deploy):
    deployment = deploy()
    commands = {agent.agent.pk: agent.poll()[0] for agent in fleet}
    _, errors = race([lambda agent=agent: agent.ack(commands[agent.agent.pk]) for agent in fleet])

    assert errors == []
    deployment.refresh_from_db()
    previous.refresh_from_db()
    assert (deployment.status, previous.status) == ("active", "superseded")
    assert AuditEvent.objects.filter(action="deployment.active").count() == 1
    assert AuditEvent.objects.filter(action="deployment.superseded").count() == 1
