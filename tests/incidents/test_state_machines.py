from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from incidents import services
from incidents.models import Deployment, Incident
from tests.concurrency import race
from tests.factories import DeploymentFactory, IncidentFactory, PipelineVersionFactory
from traceflux.audit.models import AuditEvent
from traceflux.statemachine import TransitionError


@pytest.mark.django_db
def test_it_walks_a_deployment_along_its_main_path_recording_who_and_why(environments, admin_user):
    deployment = services.deployment_request(
        environment=environments["prod"], pipeline_version=PipelineVersionFactory(), actor=admin_user, reason="v2"
    )
    assert deployment.status == "pending_approval"
    for to, why in [("approved", "quorum met"), ("deploying", "rolling"), ("active", "all agents ack")]:
        services.deployment_transition(deployment=deployment, to=to, actor=admin_user, reason=why)
    deployment.refresh_from_db()
    assert deployment.status == "active"
    reasons = [(h.status, h.history_change_reason, h.history_user) for h in deployment.history.order_by("history_id")]
    assert reasons == [
        ("pending_approval", "v2", admin_user),
        ("approved", "quorum met", admin_user),
        ("deploying", "rolling", admin_user),
        ("active", "all agents ack", admin_user),
    ]
    actions = list(
        AuditEvent.objects.filter(target_id=str(deployment.pk)).order_by("seq").values_list("action", flat=True)
    )
    assert actions == ["deployment.requested", "deployment.approved", "deployment.deploying", "deployment.active"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("start", "to"),
    [
        ("pending_approval", "active"),
        ("approved", "active"),
        ("denied", "approved"),
        ("rolled_back", "active"),
        ("active", "pending_approval"),
        ("superseded", "active"),
        ("failed", "deploying"),
    ],
)
def test_it_refuses_illegal_deployment_moves_and_writes_nothing(environments, admin_user, start, to):
    deployment = DeploymentFactory(environment=environments["prod"], status=start)
    with pytest.raises(TransitionError, match=f"cannot move from {start} to {to}"):
        services.deployment_transition(deployment=deployment, to=to, actor=admin_user, reason="try")
    deployment.refresh_from_db()
    assert deployment.status == start
    assert not AuditEvent.objects.filter(target_id=str(deployment.pk)).exists()


@pytest.mark.django_db
def test_it_supersedes_the_previous_active_deployment(environments, admin_user):
    old = DeploymentFactory(environment=environments["dev"], status="active")
    new = DeploymentFactory(environment=environments["dev"], status="deploying")
    services.deployment_transition(deployment=new, to="active", actor=admin_user, reason="done")
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.status, new.status) == ("superseded", "active")
    assert old.history.first().history_change_reason == f"superseded by deployment #{new.pk}"


@pytest.mark.django_db
def test_it_needs_a_reason_to_deny_a_deployment(environments, admin_user):
    deployment = DeploymentFactory(environment=environments["prod"])
    with pytest.raises(ValidationError, match="a denial needs a reason"):
        services.deployment_transition(deployment=deployment, to="denied", actor=admin_user, reason=" ")
    deployment.refresh_from_db()
    assert deployment.status == "pending_approval"


@pytest.mark.django_db
def test_it_lets_the_posture_decide_how_a_deployment_starts(environments, admin_user):
    dev = services.deployment_request(
        environment=environments["dev"], pipeline_version=PipelineVersionFactory(), actor=admin_user, reason="go"
    )
    assert dev.status == "approved"
    services.environment_set_posture(
        environment=environments["prod"], actor=admin_user, reason="freeze", deploy_policy="deny"
    )
    environments["prod"].refresh_from_db()
    with pytest.raises(PermissionDenied, match="deployments are denied in prod"):
        services.deployment_request(
            environment=environments["prod"], pipeline_version=PipelineVersionFactory(), actor=admin_user, reason="go"
        )
    assert not Deployment.objects.filter(environment=environments["prod"]).exists()
    rejected = AuditEvent.objects.get(action="deployment.rejected")
    assert (rejected.outcome, rejected.environment, rejected.actor_name) == ("denied", "prod", "admin")


@pytest.mark.django_db
def test_it_walks_an_incident_through_its_lifecycle_and_back_from_monitoring(environments, operator):
    incident = IncidentFactory(environment=environments["prod"])
    for to in ["investigating", "mitigating", "monitoring", "mitigating", "monitoring", "resolved"]:
        services.incident_transition(incident=incident, to=to, actor=operator, reason=f"now {to}")
    incident.refresh_from_db()
    assert incident.status == "resolved"
    assert incident.history.first().history_user == operator
    with pytest.raises(TransitionError, match="resolved"):
        services.incident_transition(incident=incident, to="open", actor=operator, reason="reopen")


@pytest.mark.django_db
def test_it_refuses_skipping_incident_stages_and_reasonless_moves(environments, operator):
    incident = IncidentFactory(environment=environments["prod"])
    with pytest.raises(TransitionError):
        services.incident_transition(incident=incident, to="resolved", actor=operator, reason="done")
    with pytest.raises(ValidationError, match="needs a reason"):
        services.incident_transition(incident=incident, to="investigating", actor=operator, reason="")
    incident.refresh_from_db()
    assert incident.status == "open"


@pytest.mark.django_db
def test_it_refuses_an_incident_window_outside_two_to_ten_minutes(environments, operator):
    start = IncidentFactory.build().window_start
    for length in (timedelta(minutes=1), timedelta(minutes=11), timedelta(0)):
        with pytest.raises(ValidationError):
            services.incident_open(
                ref="INC-X",
                title="t",
                environment=environments["prod"],
                window_start=start,
                window_end=start + length,
                actor=operator,
            )
    assert not Incident.objects.filter(ref="INC-X").exists()


@pytest.mark.django_db
def test_it_links_a_new_incident_to_the_active_deployment(environments, operator):
    active = DeploymentFactory(environment=environments["prod"], status="active")
    start = IncidentFactory.build().window_start
    incident = services.incident_open(
        ref="INC-Y",
        title="t",
        environment=environments["prod"],
        window_start=start,
        window_end=start + timedelta(minutes=4),
        actor=operator,
    )
    assert incident.deployment == active


@pytest.mark.needs("postgresql")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", range(3))
def test_it_lets_exactly_one_of_two_concurrent_transitions_win(environments, admin_user, attempt):
    deployment = DeploymentFactory(environment=environments["prod"])

    def move(to: str):
        def go():
            stale = Deployment.objects.get(pk=deployment.pk)
            return services.deployment_transition(deployment=stale, to=to, actor=admin_user, reason=to).status

        return go

    results, errors = race([move("approved"), move("denied")])
    assert len(results) == 1, (results, errors)
    assert len(errors) == 1 and isinstance(errors[0], TransitionError)
    # Only the winner's move is recorded (an approval then dispatches the deployment on commit: later moves follow).
    moves = AuditEvent.objects.filter(
        target_id=str(deployment.pk), action__in=["deployment.approved", "deployment.denied"]
    )
    assert list(moves.values_list("action", flat=True)) == [f"deployment.{results[0]}"]
    statuses = list(deployment.history.order_by("history_id").values_list("status", flat=True))
    assert statuses[:2] == ["pending_approval", results[0]]
    assert "denied" not in statuses or "approved" not in statuses
