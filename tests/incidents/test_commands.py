"""The command channel: idempotent creation, leases and re-leases, expiry, acknowledgements and the signal."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db.models import F
from django.utils import timezone

from incidents import services
from incidents.models import Command, CommandQuerySet
from incidents.signals import command_acknowledged, command_expired
from incidents.tasks import expire_overdue_commands
from tests.factories import AgentFactory
from traceflux.audit import SYSTEM
from traceflux.audit.models import AuditEvent

COMMANDS = "/api/v1/agent/commands/"


def ack_url(command: Command) -> str:
    return f"/api/v1/agent/commands/{command.pk}/ack/"


def a_command(agent, key: str = "reload-1", **kwargs) -> Command:
    defaults = {"kind": "reload_pipeline", "payload": {"version": "v2"}, "idempotency_key": key, "actor": SYSTEM}
    return services.command_create(agent=agent, **{**defaults, **kwargs})


def lease(client) -> list[dict]:
    response = client.get(COMMANDS)
    assert response.status_code == 200
    return response.json()["commands"]


def end_lease(command: Command) -> None:
    Command.objects.filter(pk=command.pk).update(lease_until=timezone.now() - timedelta(seconds=1))


@pytest.fixture
def received():
    """Everything sent on the two command signals during the test."""
    calls: list[tuple[str, Command, str | None]] = []

    def on_ack(sender, command, status, **kwargs):
        calls.append(("acknowledged", command, status))

    def on_expiry(sender, command, **kwargs):
        calls.append(("expired", command, None))

    command_acknowledged.connect(on_ack)
    command_expired.connect(on_expiry)
    yield calls
    command_acknowledged.disconnect(on_ack)
    command_expired.disconnect(on_expiry)


# --- creation ----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_creates_a_command_once_per_idempotency_key(prod_agent):
    first = a_command(prod_agent)
    again = a_command(prod_agent, payload={"version": "ignored"})
    assert again.pk == first.pk
    assert Command.objects.get().payload == {"version": "v2"}
    assert AuditEvent.objects.filter(action="command.created").count() == 1
    assert first.status == "pending"


@pytest.mark.django_db
def test_it_refuses_an_idempotency_key_reused_for_another_agent_or_kind(prod_agent, environments):
    a_command(prod_agent)
    other = AgentFactory(environment=environments["prod"])
    with pytest.raises(ValidationError, match="already belongs to command"):
        a_command(other)
    with pytest.raises(ValidationError, match="already belongs to command"):
        a_command(prod_agent, kind="restart")
    assert Command.objects.count() == 1


@pytest.mark.django_db
def test_it_refuses_a_deadline_in_the_past_but_returns_the_original_on_a_late_retry(prod_agent):
    with pytest.raises(ValidationError, match="deadline"):
        a_command(prod_agent, key="late", deadline=timezone.now() - timedelta(seconds=1))
    assert not Command.objects.exists()
    deadline = timezone.now() + timedelta(minutes=5)
    original = a_command(prod_agent, deadline=deadline)
    Command.objects.update(deadline=timezone.now() - timedelta(seconds=1))
    assert a_command(prod_agent, deadline=deadline).pk == original.pk


# --- leasing -----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_leases_pending_commands_to_their_agent(agent_client, prod_agent, settings):
    settings.TRACEFLUX_COMMAND_LEASE = timedelta(seconds=90)
    command = a_command(prod_agent)
    response = agent_client.get(COMMANDS)
    assert response.status_code == 200
    body = response.json()
    assert body["lease_seconds"] == 90
    assert [(c["id"], c["kind"], c["payload"], c["status"], c["delivery_count"]) for c in body["commands"]] == [
        (command.pk, "reload_pipeline", {"version": "v2"}, "delivered", 1)
    ]
    command.refresh_from_db()
    assert command.status == "delivered"
    assert command.delivery_count == 1
    assert command.lease_until - command.delivered_at == timedelta(seconds=90)
    assert command.history.latest().history_change_reason == "delivered to the agent"
    event = AuditEvent.objects.get(action="command.delivered")
    assert (event.actor_kind, event.actor_name) == ("agent", "edge-prod-1")


@pytest.mark.django_db
def test_it_does_not_offer_a_leased_command_again_until_the_lease_ends(agent_client, prod_agent):
    command = a_command(prod_agent)
    assert len(lease(agent_client)) == 1
    assert lease(agent_client) == []
    first_delivery = Command.objects.get().delivered_at
    end_lease(command)
    again = lease(agent_client)
    assert [(c["id"], c["delivery_count"]) for c in again] == [(command.pk, 2)]
    command.refresh_from_db()
    assert command.status == "delivered"
    assert command.delivered_at == first_delivery
    assert command.lease_until > timezone.now()
    assert AuditEvent.objects.filter(action="command.redelivered").count() == 1
    assert "delivered again (delivery 2)" in command.history.latest().history_change_reason


class _Snapshot(list):
    """What a poll read before another poll wrote: a list that answers order_by() like the queryset it replaces."""

    def order_by(self, *fields):
        return self


@pytest.mark.django_db
@pytest.mark.parametrize("state", ["pending", "delivered, lease ended"])
def test_it_skips_a_command_another_poll_leased_between_the_read_and_the_swap(prod_agent, monkeypatch, state):
    command = a_command(prod_agent)
    if state != "pending":
        services.command_lease(agent=prod_agent)
        end_lease(command)
    original = CommandQuerySet.leasable

    def read_then_lose_the_race(self, *, now):
        seen = _Snapshot(original(self, now=now))
        # The other poll wins: it leases the command after we read it and before our compare-and-swap.
        Command.objects.filter(pk=command.pk).update(
            status="delivered", lease_until=now + timedelta(minutes=1), delivery_count=F("delivery_count") + 1
        )
        return seen

    monkeypatch.setattr(CommandQuerySet, "leasable", read_then_lose_the_race)
    events_before = AuditEvent.objects.count()
    assert services.command_lease(agent=prod_agent) == []
    command.refresh_from_db()
    assert command.delivery_count == (1 if state == "pending" else 2)  # the winner's lease, not a second one
    assert AuditEvent.objects.count() == events_before


@pytest.mark.django_db
def test_it_only_leases_the_callers_own_commands_oldest_first(agent_client, prod_agent, environments):
    other = AgentFactory(environment=environments["prod"])
    theirs = a_command(other, key="theirs")
    first = a_command(prod_agent, key="mine-1")
    second = a_command(prod_agent, key="mine-2", kind="flush_cache")
    assert [c["id"] for c in lease(agent_client)] == [first.pk, second.pk]
    theirs.refresh_from_db()
    assert theirs.status == "pending"


@pytest.mark.django_db
def test_it_does_not_deliver_a_command_past_its_deadline(agent_client, prod_agent):
    a_command(prod_agent, deadline=timezone.now() + timedelta(minutes=1))
    Command.objects.update(deadline=timezone.now() - timedelta(seconds=1))
    assert lease(agent_client) == []
    assert Command.objects.get().status == "pending"


@pytest.mark.django_db
def test_it_answers_403_for_a_key_without_the_commands_scope(api_client, prod_agent):
    a_command(prod_agent)
    _, key = services.agent_key_create(agent=prod_agent, actor=SYSTEM, scopes=["heartbeats:write"])
    response = api_client.get(COMMANDS, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 403
    assert Command.objects.get().status == "pending"


# --- expiry ------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_expires_overdue_commands_that_nobody_holds(prod_agent, received, django_capture_on_commit_callbacks):
    soon = timezone.now() + timedelta(minutes=1)
    pending = a_command(prod_agent, key="p", deadline=soon)
    held = a_command(prod_agent, key="h", deadline=soon)
    released = a_command(prod_agent, key="r", deadline=soon)
    no_deadline = a_command(prod_agent, key="n")
    Command.objects.filter(pk=pending.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    services.command_lease(agent=prod_agent)
    Command.objects.filter(pk__in=[pending.pk, held.pk, released.pk]).update(
        status="pending", deadline=timezone.now() - timedelta(seconds=1)
    )
    Command.objects.filter(pk__in=[held.pk, released.pk]).update(status="delivered")
    Command.objects.filter(pk=held.pk).update(lease_until=timezone.now() + timedelta(seconds=30))
    end_lease(released)

    with django_capture_on_commit_callbacks(execute=True):
        assert expire_overdue_commands() == 2

    status = dict(Command.objects.values_list("idempotency_key", "status"))
    assert status == {"p": "expired", "h": "delivered", "r": "expired", "n": "delivered"}
    assert {(kind, c.idempotency_key) for kind, c, _ in received} == {("expired", "p"), ("expired", "r")}
    events = AuditEvent.objects.filter(action="command.expired")
    assert {(e.actor_kind, e.target_id) for e in events} == {("system", str(pending.pk)), ("system", str(released.pk))}
    assert no_deadline.pk  # a command without a deadline never expires
    assert expire_overdue_commands() == 0


# --- acknowledgements --------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_records_an_acknowledgement_and_tells_the_owner(
    agent_client, prod_agent, received, django_capture_on_commit_callbacks
):
    command = a_command(prod_agent)
    lease(agent_client)
    with django_capture_on_commit_callbacks(execute=True):
        response = agent_client.post(
            ack_url(command), {"status": "succeeded", "output": {"reloaded": "v2"}}, format="json"
        )
    assert response.status_code == 200
    assert response.json()["status"] == "succeeded"
    command.refresh_from_db()
    assert command.status == "succeeded"
    assert command.output == {"reloaded": "v2"}
    assert command.acknowledged_at is not None
    assert received == [("acknowledged", command, "succeeded")]
    event = AuditEvent.objects.get(action="command.succeeded")
    assert (event.actor_kind, event.actor_name, event.environment) == ("agent", "edge-prod-1", "prod")


@pytest.mark.django_db
def test_it_treats_a_repeated_acknowledgement_as_harmless(
    agent_client, prod_agent, received, django_capture_on_commit_callbacks
):
    command = a_command(prod_agent)
    lease(agent_client)
    with django_capture_on_commit_callbacks(execute=True):
        first = agent_client.post(ack_url(command), {"status": "failed", "output": "disk full"}, format="json")
        again = agent_client.post(ack_url(command), {"status": "failed", "output": "retry"}, format="json")
    assert (first.status_code, again.status_code) == (200, 200)
    command.refresh_from_db()
    assert (command.status, command.output) == ("failed", "disk full")
    assert AuditEvent.objects.filter(action="command.failed").count() == 1
    assert len(received) == 1


@pytest.mark.django_db
def test_it_answers_409_naming_the_status_when_an_acknowledgement_conflicts(agent_client, prod_agent):
    command = a_command(prod_agent)
    lease(agent_client)
    agent_client.post(ack_url(command), {"status": "succeeded"}, format="json")
    response = agent_client.post(ack_url(command), {"status": "failed"}, format="json")
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"command #{command.pk} is succeeded; it cannot be acknowledged as failed",
        "current": "succeeded",
    }
    command.refresh_from_db()
    assert command.status == "succeeded"


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["pending", "expired"])
def test_it_answers_409_for_a_command_that_was_never_delivered_or_has_expired(agent_client, prod_agent, status):
    command = a_command(prod_agent)
    Command.objects.filter(pk=command.pk).update(status=status)
    response = agent_client.post(ack_url(command), {"status": "succeeded"}, format="json")
    assert response.status_code == 409
    assert response.json()["current"] == status
    assert not AuditEvent.objects.filter(action="command.succeeded").exists()


@pytest.mark.django_db
def test_it_accepts_an_acknowledgement_after_the_lease_ended(agent_client, prod_agent):
    command = a_command(prod_agent)
    lease(agent_client)
    end_lease(command)
    assert agent_client.post(ack_url(command), {"status": "succeeded"}, format="json").status_code == 200
    assert lease(agent_client) == []


@pytest.mark.django_db
def test_it_answers_404_for_another_agents_command(agent_client, environments):
    other = AgentFactory(environment=environments["prod"])
    theirs = a_command(other, key="theirs")
    services.command_lease(agent=other)
    response = agent_client.post(ack_url(theirs), {"status": "succeeded"}, format="json")
    assert response.status_code == 404
    assert response.json() == {"detail": f"agent edge-prod-1 has no command #{theirs.pk}"}
    theirs.refresh_from_db()
    assert theirs.status == "delivered"
    missing = agent_client.post("/api/v1/agent/commands/999999/ack/", {"status": "failed"}, format="json")
    assert missing.status_code == 404


@pytest.mark.django_db
def test_it_answers_400_for_an_outcome_that_is_not_one(agent_client, prod_agent):
    command = a_command(prod_agent)
    lease(agent_client)
    response = agent_client.post(ack_url(command), {"status": "expired"}, format="json")
    assert response.status_code == 400
    assert response.json()["field"] == "status"
    assert Command.objects.get().status == "delivered"
