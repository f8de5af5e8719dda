"""Heartbeats: liveness, version changes in history, deployments of the agent's own environment, pruning, staleness."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from incidents import services
from incidents.models import Agent, Heartbeat
from incidents.tasks import expire_overdue_commands, prune_heartbeats
from tests.factories import AgentFactory, DeploymentFactory, HeartbeatFactory
from traceflux.audit.models import AuditEvent

HEARTBEATS = "/api/v1/agent/heartbeats/"


def beat(client, **body):
    return client.post(HEARTBEATS, {"status": "ok", "version": "1.4.0", **body}, format="json")


@pytest.mark.django_db
def test_it_records_a_heartbeat_and_moves_last_seen_forward_without_a_history_row(agent_client, prod_agent):
    history_before = prod_agent.history.count()
    response = beat(agent_client, status="degraded", details={"queue_depth": 12})
    assert response.status_code == 201
    heartbeat = Heartbeat.objects.get()
    assert response.json() == {
        "id": heartbeat.pk,
        "agent": "edge-prod-1",
        "status": "degraded",
        "version": "1.4.0",
        "deployment": None,
        "details": {"queue_depth": 12},
        "received_at": response.json()["received_at"],
    }
    prod_agent.refresh_from_db()
    assert prod_agent.last_seen_at == heartbeat.received_at
    assert prod_agent.history.count() == history_before
    assert not AuditEvent.objects.filter(action__startswith="heartbeat").exists()


@pytest.mark.django_db
def test_it_never_moves_last_seen_backwards(prod_agent):
    now = timezone.now()
    services.heartbeat_record(agent=prod_agent, status="ok", now=now)
    services.heartbeat_record(agent=prod_agent, status="ok", now=now - timedelta(minutes=5))
    prod_agent.refresh_from_db()
    assert prod_agent.last_seen_at == now
    assert Heartbeat.objects.count() == 2


@pytest.mark.django_db
def test_it_records_a_version_change_in_the_agents_history_once(agent_client, prod_agent):
    history_before = prod_agent.history.count()
    assert beat(agent_client, version="1.5.0").status_code == 201
    assert beat(agent_client, version="1.5.0").status_code == 201
    assert beat(agent_client, version="").status_code == 201  # blank: unchanged
    prod_agent.refresh_from_db()
    assert prod_agent.version == "1.5.0"
    assert prod_agent.history.count() == history_before + 1
    latest = prod_agent.history.latest()
    assert (latest.version, latest.history_change_reason, latest.history_user) == (
        "1.5.0",
        "version 1.4.0 → 1.5.0",
        None,
    )
    event = AuditEvent.objects.get(action="agent.version_changed")
    assert (event.actor_kind, event.actor_name) == ("agent", "edge-prod-1")
    assert event.data == {"from": "1.4.0", "to": "1.5.0"}


@pytest.mark.django_db
def test_it_links_a_deployment_of_the_agents_own_environment(agent_client, environments):
    deployment = DeploymentFactory(environment=environments["prod"], status="active")
    response = beat(agent_client, deployment=deployment.pk)
    assert response.status_code == 201
    assert Heartbeat.objects.get().deployment == deployment


@pytest.mark.django_db
def test_it_refuses_with_403_a_deployment_of_another_environment(agent_client, prod_agent, environments):
    elsewhere = DeploymentFactory(environment=environments["staging"], status="active")
    response = beat(agent_client, deployment=elsewhere.pk)
    assert response.status_code == 403
    assert response.json() == {"detail": f"deployment #{elsewhere.pk} is not in this agent's environment prod"}
    assert not Heartbeat.objects.exists()
    prod_agent.refresh_from_db()
    assert prod_agent.last_seen_at is None
    event = AuditEvent.objects.get(action="heartbeat.rejected")
    assert (event.outcome, event.actor_name, event.environment) == ("denied", "edge-prod-1", "prod")
    assert event.data == {"deployment": elsewhere.pk, "deployment_environment": "staging"}


@pytest.mark.django_db
def test_it_answers_400_naming_an_unknown_deployment(agent_client):
    response = beat(agent_client, deployment=999999)
    assert response.status_code == 400
    assert response.json()["detail"] == "deployment: there is no deployment #999999"
    assert response.json()["field"] == "deployment"
    assert not Heartbeat.objects.exists()


@pytest.mark.django_db
def test_it_answers_400_when_details_is_not_an_object(agent_client):
    response = beat(agent_client, details=["a", "b"])
    assert response.status_code == 400
    assert response.json()["field"] == "details"


@pytest.mark.django_db
def test_it_answers_400_for_a_version_that_is_too_long(agent_client):
    response = beat(agent_client, version="1" * 51)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("version: ")


# --- pruning -----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_prunes_heartbeats_older_than_the_retention(prod_agent, settings):
    settings.TRACEFLUX_HEARTBEAT_RETENTION = timedelta(days=14)
    now = timezone.now()
    old = [HeartbeatFactory(agent=prod_agent, received_at=now - timedelta(days=15, minutes=i)) for i in range(3)]
    kept = HeartbeatFactory(agent=prod_agent, received_at=now - timedelta(days=13))
    assert prune_heartbeats() == 3
    assert list(Heartbeat.objects.all()) == [kept]
    assert not Heartbeat.objects.filter(pk__in=[h.pk for h in old]).exists()
    event = AuditEvent.objects.get(action="heartbeat.pruned")
    assert (event.actor_kind, event.data["deleted"]) == ("system", 3)
    assert prune_heartbeats() == 0
    assert AuditEvent.objects.filter(action="heartbeat.pruned").count() == 1


@pytest.mark.django_db
def test_it_prunes_in_batches(prod_agent, monkeypatch):
    monkeypatch.setattr(services, "HEARTBEAT_PRUNE_BATCH", 2)
    long_ago = timezone.now() - timedelta(days=30)
    for i in range(5):
        HeartbeatFactory(agent=prod_agent, received_at=long_ago - timedelta(minutes=i))
    assert services.heartbeat_prune(older_than=timedelta(days=1)) == 5
    assert not Heartbeat.objects.exists()


def test_it_schedules_the_periodic_tasks_with_celery_beat():
    schedule = {entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert schedule[prune_heartbeats.name] == timedelta(hours=1)
    assert schedule[expire_overdue_commands.name] == timedelta(minutes=1)
    assert timedelta(days=14) == settings.TRACEFLUX_HEARTBEAT_RETENTION
    assert timedelta(minutes=5) == settings.TRACEFLUX_AGENT_STALE_AFTER


# --- staleness ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_calls_an_agent_stale_after_five_minutes_without_a_heartbeat(environments):
    now = timezone.now()
    fresh = AgentFactory(environment=environments["prod"], last_seen_at=now - timedelta(minutes=4))
    stale = AgentFactory(environment=environments["prod"], last_seen_at=now - timedelta(minutes=6))
    never = AgentFactory(environment=environments["prod"], last_seen_at=None)
    assert (fresh.is_stale, stale.is_stale, never.is_stale) == (False, True, True)
    assert set(Agent.objects.stale()) == {stale, never}
    assert set(Agent.objects.live()) == {fresh}
    assert set(Agent.objects.stale(now=now + timedelta(minutes=2))) == {fresh, stale, never}


@pytest.mark.django_db
def test_it_makes_a_stale_agent_live_again_with_a_heartbeat(agent_client, prod_agent):
    assert prod_agent.is_stale
    beat(agent_client)
    prod_agent.refresh_from_db()
    assert not prod_agent.is_stale
    assert list(Agent.objects.live()) == [prod_agent]


@pytest.mark.django_db
def test_it_marks_stale_agents_on_the_dashboard(client, admin_user, environments):
    AgentFactory(name="edge-fresh", environment=environments["prod"], last_seen_at=timezone.now())
    AgentFactory(name="edge-silent", environment=environments["prod"], last_seen_at=timezone.now() - timedelta(hours=1))
    client.force_login(admin_user)
    html = client.get("/").content.decode()
    rows = {name: row for row in html.split("<tr>") for name in ("edge-fresh", "edge-silent") if f">{name}<" in row}
    assert '<span class="tag degraded">stale</span>' in rows["edge-silent"]
    assert "stale" not in rows["edge-fresh"]
