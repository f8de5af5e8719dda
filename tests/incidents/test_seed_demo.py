"""The demo world as incidents.demo builds it (`manage.py seed_demo`, in replays, adds the evidence on top: see
tests/replays/test_seed_demo.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from guardian.models import UserObjectPermission

from incidents.demo import (
    ANCHOR,
    BASELINE_LABEL,
    CANDIDATE_LABEL,
    INCIDENT_REF,
    SOURCE_AGENT,
    SeedReport,
    build_plan,
    seed_demo,
)
from incidents.models import (
    Agent,
    Deployment,
    Environment,
    Heartbeat,
    Incident,
    IncidentNote,
    PipelineVersion,
)
from incidents.selectors import APPROVE, OPERATE, VIEW, can_in_environment, visible_environments
from replays.engine import spec_hash
from traceflux.audit.models import AuditEvent
from traceflux.audit.services import audit_verify

User = get_user_model()
COUNTED = (Environment, Agent, Heartbeat, PipelineVersion, Deployment, Incident, IncidentNote, User, AuditEvent,
           Group, UserObjectPermission)
WITH_HISTORY = (Environment, Agent, PipelineVersion, Deployment, Incident, IncidentNote)


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    # The default PBKDF2 costs ~0.3 s per user; the seed hashes four.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def seed(**options: Any) -> SeedReport:
    return seed_demo(**options)


def counts() -> dict[str, int]:
    rows = {model.__name__: model.objects.count() for model in COUNTED}
    rows |= {f"history of {model.__name__}": model.history.count() for model in WITH_HISTORY}
    return rows


def snapshot() -> dict[str, Any]:
    return {
        "environments": list(Environment.objects.order_by("slug").values_list(
            "slug", "replay_policy", "execute_policy", "deploy_policy", "required_approvals", "approval_ttl")),
        "agents": list(Agent.objects.order_by("name").values_list(
            "name", "environment__slug", "hostname", "version", "region", "pop", "services", "last_seen_at")),
        "heartbeats": list(Heartbeat.objects.order_by("agent__name", "received_at").values_list(
            "agent__name", "received_at", "status", "details", "deployment_id")),
        "pipeline versions": list(PipelineVersion.objects.order_by("label").values_list(
            "label", "spec_hash", "parent__label")),
        "deployments": list(Deployment.objects.order_by("pk").values_list(
            "environment__slug", "pipeline_version__label", "status", "status_changed_at")),
        "incidents": list(Incident.objects.values_list(
            "ref", "status", "severity", "window_start", "window_end", "source_agent__name", "deployment_id")),
        "notes": list(IncidentNote.objects.order_by("pk").values_list("incident__ref", "author__username", "body")),
        "users": list(User.objects.order_by("username").values_list(
            "username", "password", "is_staff", "is_superuser", "groups__name")),
        "groups": list(Group.objects.order_by("name", "permissions__codename").values_list(
            "name", "permissions__codename")),
        "object permissions": sorted(UserObjectPermission.objects.values_list(
            "user__username", "permission__codename", "object_pk")),
        "audit head": AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first(),
    }


@pytest.mark.django_db
def test_it_leaves_the_same_rows_and_values_when_run_twice():
    first = seed()
    after_first, values_after_first = counts(), snapshot()
    assert audit_verify().ok

    second = seed()

    assert counts() == after_first
    assert snapshot() == values_after_first
    assert audit_verify().ok
    assert dict(first.created) == {"users": 4, "environments": 3, "agents": 7, "heartbeats": 840,
                                   "pipeline versions": 2, "deployments": 3, "incidents": 1, "notes": 2}
    assert not +second.created


@pytest.mark.django_db
def test_it_links_the_prod_incident_to_the_pop12_agent_and_the_active_baseline_deployment():
    seed(heartbeat_minutes=20)

    incident = Incident.objects.get(ref=INCIDENT_REF)
    assert incident.environment.slug == "prod"
    assert (incident.service, incident.region, incident.pop, incident.severity) == ("edge-gw", "us-east-1", "POP-12",
                                                                                   "sev2")
    assert incident.window_end - incident.window_start == timedelta(minutes=4)
    assert incident.status == "investigating"
    assert incident.source_agent.name == SOURCE_AGENT
    assert incident.source_agent.environment == incident.environment
    assert "edge-gw" in incident.source_agent.services
    assert incident.deployment.status == "active"
    assert incident.deployment.environment == incident.environment
    assert incident.deployment.pipeline_version.label == BASELINE_LABEL
    assert incident.notes.count() == 2
    assert list(AuditEvent.objects.filter(target_type="incidents.incident").order_by("seq")
                .values_list("action", flat=True)) == ["incident.opened", "incident.investigating",
                                                       "incident.note_added", "incident.note_added"]


@pytest.mark.django_db
def test_it_gives_approver1_approve_in_prod_but_not_in_dev():
    seed(heartbeat_minutes=1)
    envs = {env.slug: env for env in Environment.objects.all()}
    approver1 = User.objects.get(username="approver1")
    operator = User.objects.get(username="operator")

    assert can_in_environment(user=approver1, environment=envs["prod"], perm=APPROVE)
    assert can_in_environment(user=approver1, environment=envs["staging"], perm=APPROVE)
    assert not can_in_environment(user=approver1, environment=envs["dev"], perm=APPROVE)
    assert not can_in_environment(user=approver1, environment=envs["prod"], perm=OPERATE)
    assert all(can_in_environment(user=operator, environment=env, perm=OPERATE) for env in envs.values())
    assert not any(can_in_environment(user=operator, environment=env, perm=APPROVE) for env in envs.values())
    assert set(visible_environments(user=approver1)) == set(envs.values())
    # Environments are granted per object only: a global view_environment would open every future environment.
    assert not operator.has_perm(VIEW)
    assert operator.has_perm("incidents.add_incident") and operator.has_perm("incidents.view_heartbeat")
    assert approver1.has_perm("incidents.change_deployment") and not approver1.has_perm("incidents.add_incident")
    assert User.objects.filter(is_staff=True).count() == 4


@pytest.mark.django_db
def test_it_stores_spec_hashes_that_the_engine_recomputes():
    seed(heartbeat_minutes=1)
    baseline = PipelineVersion.objects.get(label=BASELINE_LABEL)
    candidate = PipelineVersion.objects.get(label=CANDIDATE_LABEL)

    for version in (baseline, candidate):
        assert version.spec_hash == spec_hash(version.spec)
    assert candidate.parent == baseline
    assert candidate.spec_hash != baseline.spec_hash
    # The candidate differs from the baseline in its joins (and its name and description) only.
    different = {key for key in baseline.spec.keys() | candidate.spec.keys()
                 if baseline.spec.get(key) != candidate.spec.get(key)}
    assert different <= {"name", "description", "correlation"}
    base_corr, cand_corr = baseline.spec["correlation"], candidate.spec["correlation"]
    assert {k: v for k, v in cand_corr.items() if k != "joins"} == {k: v for k, v in base_corr.items() if k != "joins"}
    assert len(cand_corr.get("joins", [])) > len(base_corr.get("joins", []))


@pytest.mark.django_db
def test_it_walks_gated_deployments_through_approval_with_the_admin():
    seed(heartbeat_minutes=1)
    prod = Deployment.objects.get(environment__slug="prod")
    dev = Deployment.objects.get(environment__slug="dev")

    assert Deployment.objects.filter(status="active").count() == 3
    assert [(h.status, h.history_user.username) for h in prod.history.order_by("history_id")] == [
        ("pending_approval", "admin"), ("approved", "admin"), ("deploying", "admin"), ("active", "admin"),
    ]
    # dev's posture allows deploys, so its request is approved at once.
    assert [h.status for h in dev.history.order_by("history_id")] == ["approved", "deploying", "active"]


@pytest.mark.django_db
def test_it_reports_the_source_agent_failing_in_the_incident_window():
    seed(heartbeat_minutes=30)
    source = Agent.objects.get(name=SOURCE_AGENT)
    in_window = source.heartbeats.filter(received_at__gte=ANCHOR, received_at__lt=ANCHOR + timedelta(minutes=4))

    assert set(in_window.values_list("status", flat=True)) == {"failing"}
    assert source.heartbeats.count() == 30
    assert source.last_seen_at == source.heartbeats.latest("received_at").received_at
    calm = Agent.objects.get(name="edge-euw1-pop31-a").heartbeats
    assert calm.filter(status="ok").count() >= 27
    # last_seen_at is telemetry: writing it must not add a history row.
    assert source.history.count() == 1


@pytest.mark.django_db
def test_it_keeps_a_password_changed_since_the_first_run():
    seed(heartbeat_minutes=1)
    operator = User.objects.get(username="operator")
    assert operator.check_password("demo-operator-pass")
    operator.set_password("changed-by-operator")
    operator.save()

    seed(heartbeat_minutes=1)

    operator.refresh_from_db()
    assert operator.check_password("changed-by-operator")


def test_it_generates_the_same_telemetry_from_the_same_seed_and_the_same_specs_from_any():
    first, again, other = build_plan(seed=7), build_plan(seed=7), build_plan(seed=8)

    assert first == again
    assert first.heartbeats != other.heartbeats
    assert [v.spec for v in first.pipeline_versions] == [v.spec for v in other.pipeline_versions]
    assert all(len(beats) == 120 for beats in first.heartbeats.values())


@pytest.mark.django_db
def test_it_refuses_a_heartbeat_history_out_of_range():
    with pytest.raises(ValueError, match="heartbeat_minutes must be between 1 and 1440, not 0"):
        seed(heartbeat_minutes=0)
    assert not Environment.objects.exists()
