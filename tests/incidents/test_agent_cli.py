"""The fleet's management commands: agent, agent_key and enrollment_token, run through call_command."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from incidents.models import Agent, AgentKey, EnrollmentToken
from traceflux.audit.models import AuditEvent

HEARTBEATS = "/api/v1/agent/heartbeats/"


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().rstrip("\n").splitlines()


def beat_with(key: str):
    return APIClient().post(HEARTBEATS, {"status": "ok"}, format="json", HTTP_AUTHORIZATION=f"Bearer {key}")


def commands_with(key: str):
    return APIClient().get("/api/v1/agent/commands/", HTTP_AUTHORIZATION=f"Bearer {key}")


@pytest.mark.django_db
def test_it_creates_an_agent_audited_as_the_cli(environments):
    lines = run("agent", "create", "--environment", "prod", "--name", "edge-cli-1", "--hostname", "h1.example.test",
                "--region", "eu-west-1", "--pop", "POP-9", "--services", "edge-gw, billing")
    agent = Agent.objects.get(name="edge-cli-1")
    assert lines == [f"Created agent edge-cli-1 (#{agent.pk}) in environment prod."]
    assert (agent.environment.slug, agent.hostname, agent.region, agent.pop) == ("prod", "h1.example.test",
                                                                                 "eu-west-1", "POP-9")
    assert agent.services == ["billing", "edge-gw"]
    event = AuditEvent.objects.get(action="agent.created")
    assert (event.actor_kind, event.actor_name) == ("system", "cli")


@pytest.mark.django_db
def test_it_uses_the_name_as_hostname_by_default(environments):
    run("agent", "create", "--environment", "dev", "--name", "edge-dev-1")
    assert Agent.objects.get(name="edge-dev-1").hostname == "edge-dev-1"


@pytest.mark.django_db
def test_it_names_an_unknown_environment_and_a_taken_name(environments, prod_agent):
    with pytest.raises(CommandError, match=r"no environment with slug 'qa' \(known: dev, prod, staging\)"):
        run("agent", "create", "--environment", "qa", "--name", "x")
    with pytest.raises(CommandError, match="name: an agent named 'edge-prod-1' already exists"):
        run("agent", "create", "--environment", "prod", "--name", "edge-prod-1")


@pytest.mark.django_db
def test_it_prints_a_new_key_alone_on_the_last_line_and_the_key_works(prod_agent):
    lines = run("agent_key", "create", "--agent", "edge-prod-1")
    key = lines[-1]
    stored = AgentKey.objects.get(agent=prod_agent)
    assert key.startswith(f"tfk_{stored.prefix}_")
    assert " " not in key
    assert key not in "\n".join(lines[:-1])
    assert stored.scopes == ["artifacts:write", "commands:read", "heartbeats:write"]
    assert stored.expires_at is None
    assert beat_with(key).status_code == 201
    event = AuditEvent.objects.get(action="agent_key.created")
    assert (event.actor_kind, event.actor_name) == ("system", "cli")


@pytest.mark.django_db
def test_it_creates_a_key_with_the_scopes_and_lifetime_asked_for(prod_agent):
    lines = run("agent_key", "create", "--agent", "edge-prod-1", "--scopes", "heartbeats:write", "--expires-in", "30d")
    key = lines[-1]
    stored = AgentKey.objects.get(agent=prod_agent)
    assert stored.scopes == ["heartbeats:write"]
    assert abs(stored.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    assert beat_with(key).status_code == 201
    assert commands_with(key).status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize(("text", "expected"), [("12h", timedelta(hours=12)), ("45m", timedelta(minutes=45)),
                                                ("90s", timedelta(seconds=90))])
def test_it_reads_hours_minutes_and_seconds(prod_agent, text, expected):
    run("agent_key", "create", "--agent", "edge-prod-1", "--expires-in", text)
    expires_at = AgentKey.objects.get(agent=prod_agent).expires_at
    assert abs(expires_at - (timezone.now() + expected)) < timedelta(minutes=1)


@pytest.mark.django_db
@pytest.mark.parametrize("text", ["30x", "d30", "0d", "-1h", "1.5h", ""])
def test_it_refuses_a_bad_duration_naming_the_option(prod_agent, text):
    with pytest.raises(CommandError, match=f"--expires-in {text!r} is not a duration"):
        run("agent_key", "create", "--agent", "edge-prod-1", f"--expires-in={text}")
    assert not AgentKey.objects.exists()


@pytest.mark.django_db
def test_it_names_an_unknown_agent_and_an_unknown_scope(prod_agent):
    with pytest.raises(CommandError, match="no agent named 'ghost'"):
        run("agent_key", "create", "--agent", "ghost")
    with pytest.raises(CommandError, match="scopes: unknown scopes"):
        run("agent_key", "create", "--agent", "edge-prod-1", "--scopes", "root")
    assert not AgentKey.objects.exists()


@pytest.mark.django_db
def test_it_revokes_a_key_by_prefix_and_the_key_stops_working(prod_agent):
    key = run("agent_key", "create", "--agent", "edge-prod-1")[-1]
    prefix = AgentKey.objects.get().prefix
    assert run("agent_key", "revoke", prefix, "--reason", "laptop stolen")[0].startswith(
        f"Revoked key {prefix} of agent edge-prod-1 at "
    )
    response = beat_with(key)
    assert response.status_code == 401
    assert response.json() == {"detail": "this agent key has been revoked"}
    assert run("agent_key", "revoke", key)[0].startswith(f"Key {prefix} of agent edge-prod-1 was already revoked")
    event = AuditEvent.objects.get(action="agent_key.revoked")
    assert (event.actor_name, event.reason) == ("cli", "laptop stolen")


@pytest.mark.django_db
def test_it_names_an_unknown_prefix(prod_agent):
    with pytest.raises(CommandError, match="no agent key with prefix 'abcdefabcdef'"):
        run("agent_key", "revoke", "abcdefabcdef")


@pytest.mark.django_db
def test_it_prints_an_enrollment_token_that_enrolls_an_agent(environments):
    lines = run("enrollment_token", "create", "--environment", "staging", "--uses", "2", "--expires-in", "2h")
    token = lines[-1]
    stored = EnrollmentToken.objects.get()
    assert token.startswith(f"tfe_{stored.prefix}_")
    assert (stored.environment.slug, stored.uses_left) == ("staging", 2)
    assert abs(stored.expires_at - (timezone.now() + timedelta(hours=2))) < timedelta(minutes=1)
    assert stored.created_by is None
    assert AuditEvent.objects.get(action="enrollment_token.created").actor_name == "cli"
    response = APIClient().post(
        "/api/v1/agent/enroll/", {"token": token, "name": "edge-staging-5", "hostname": "h5"}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["agent"]["environment"] == "staging"
    assert beat_with(response.json()["key"]).status_code == 201


@pytest.mark.django_db
def test_it_makes_a_one_use_token_valid_for_an_hour_by_default(environments):
    run("enrollment_token", "create", "--environment", "prod")
    stored = EnrollmentToken.objects.get()
    assert stored.uses_left == 1
    assert abs(stored.expires_at - (timezone.now() + timedelta(hours=1))) < timedelta(minutes=1)


@pytest.mark.django_db
def test_it_refuses_a_token_for_an_unknown_environment_without_uses_or_with_a_bad_duration(environments):
    with pytest.raises(CommandError, match="no environment with slug 'qa'"):
        run("enrollment_token", "create", "--environment", "qa")
    with pytest.raises(CommandError, match="--uses 0: an enrollment token needs at least one use"):
        run("enrollment_token", "create", "--environment", "prod", "--uses", "0")
    with pytest.raises(CommandError, match="--expires-in 'soon' is not a duration"):
        run("enrollment_token", "create", "--environment", "prod", "--expires-in", "soon")
    assert not EnrollmentToken.objects.exists()
