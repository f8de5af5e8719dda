"""The dashboard, against the seeded demo world: each user sees their environments' state and nothing else."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from incidents import services
from incidents.demo import INCIDENT_REF, seed_demo
from incidents.models import Environment, Incident
from incidents.services import heartbeat_record, incident_open
from replays.services import replay_request_approval, replay_request_execute
from tests.factories import DeploymentFactory, EnvironmentFactory
from tests.replays.conftest import WINDOW_START, World, make_world, run_dry_run


@pytest.fixture
def demo(db):
    """The demo as `manage.py seed_demo` builds it, with a short heartbeat history to keep the test quick."""
    return seed_demo(heartbeat_minutes=15)


def demo_user(username: str):
    return get_user_model().objects.get(username=username)


def test_it_sends_an_anonymous_visitor_to_the_login_page(client):
    response = client.get(reverse("dashboard"))
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('admin:login')}?next={reverse('dashboard')}"


def test_it_shows_an_operator_the_open_incident_and_its_world(client, demo):
    client.force_login(demo_user("operator"))

    response = client.get(reverse("dashboard"))

    assert response.status_code == 200
    body = response.content.decode()
    incident = Incident.objects.get(ref=INCIDENT_REF)
    assert INCIDENT_REF in body
    assert reverse("admin:incidents_incident_change", args=[incident.pk]) in body
    assert "edge-use1-pop12-a" in body  # the source agent, with its last_seen_at
    assert "v2.14.3" in body  # the active baseline deployments
    for environment in Environment.objects.filter(slug__in=["dev", "staging", "prod"]):
        assert reverse("admin:incidents_environment_change", args=[environment.pk]) in body
    assert "incident.opened" in body  # the audit trail of its environments


def test_it_shows_posture_decisions_per_environment(client, demo):
    client.force_login(demo_user("operator"))

    environments = dict(client.get(reverse("dashboard")).context["environments"])

    decisions = {env.slug: {action: str(decision) for action, decision in d.items()} for env, d in environments.items()}
    assert decisions["dev"] == {"dry_run": "allow", "execute": "allow", "deploy": "allow"}
    assert decisions["prod"] == {"dry_run": "allow", "execute": "require_approval", "deploy": "require_approval"}


def test_it_shows_an_outsider_no_incident(client, demo, outsider):
    client.force_login(outsider)

    response = client.get(reverse("dashboard"))

    assert response.status_code == 200
    body = response.content.decode()
    assert INCIDENT_REF not in body
    assert "edge-use1-pop12-a" not in body
    assert "No environment is visible to you" in body
    assert "incident.opened" not in body


def test_it_keeps_events_of_no_environment_for_superusers(client, demo):
    # Pipeline versions are global: their audit events carry no environment, so only a superuser sees them here.
    services.pipeline_version_create(label="v9.0.0", spec={"schema": "traceflux.policy/v1", "name": "v9"}, actor=None)
    client.force_login(demo_user("operator"))
    assert "pipeline_version.created" not in client.get(reverse("dashboard")).content.decode()

    client.force_login(demo_user("admin"))
    assert "pipeline_version.created" in client.get(reverse("dashboard")).content.decode()


def test_it_logs_out_with_the_post_form_it_shows(client, demo):
    client.force_login(demo_user("operator"))
    body = client.get(reverse("dashboard")).content.decode()
    assert f'<form method="post" action="{reverse("admin:logout")}">' in body

    client.post(reverse("admin:logout"))

    assert client.get(reverse("dashboard")).status_code == 302


# --- what needs attention, in the replay tests' worlds (tests/replays/conftest.py) ---------------------------------


@pytest.fixture
def prod(environments, admin_user, artifact_store) -> World:
    """prod as the replay tests have it: execute needs two approvals; an incident with an uploaded bundle."""
    return make_world(environments["prod"], admin_user)


@pytest.fixture
def dev(environments, admin_user, artifact_store) -> World:
    return make_world(environments["dev"], admin_user)


def section(html: str, ident: str) -> str:
    found = re.search(rf'<section id="{ident}".*?</section>', html, re.S)
    assert found, f"no section {ident}"
    return found.group(0)


def dashboard_html(client) -> str:
    response = client.get(reverse("dashboard"))
    assert response.status_code == 200
    return response.content.decode()


def test_it_groups_open_incidents_by_environment_with_links_to_their_investigation(
    client, operator, prod, dev, admin_user
):
    resolved = incident_open(ref="INC-DEV-OLD", title="long gone", environment=dev.environment, actor=admin_user,
                             window_start=WINDOW_START, window_end=WINDOW_START + timedelta(minutes=4))
    for to in ("investigating", "mitigating", "monitoring", "resolved"):
        services.incident_transition(incident=resolved, to=to, actor=admin_user, reason="done")
    client.force_login(operator)

    incidents = section(dashboard_html(client), "incidents")

    for world in (prod, dev):
        group = re.search(rf'<tbody id="incidents-{world.environment.slug}">.*?</tbody>', incidents, re.S).group(0)
        assert reverse("incidents-ui:investigate", args=[world.incident.ref]) in group
        assert "1 open" in group
    assert "INC-DEV-OLD" not in incidents


def test_it_lists_the_approvals_waiting_for_me(client, operator, approver1, prod, django_capture_on_commit_callbacks):
    dry_run = run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    request = replay_request_approval(dry_run=dry_run, user=operator, reason="drain POP-12")

    client.force_login(approver1)
    assert reverse("approvals:review", args=[request.pk]) in section(dashboard_html(client), "my-approvals")

    client.force_login(operator)  # the requester: not theirs to approve
    assert reverse("approvals:review", args=[request.pk]) not in section(dashboard_html(client), "my-approvals")


def test_it_shows_recent_replays_with_their_status(client, operator, outsider, prod,
                                                   django_capture_on_commit_callbacks):
    dry_run = run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    client.force_login(operator)

    replays = section(dashboard_html(client), "recent-replays")

    row = re.search(rf'<tr id="replay-{dry_run.pk}">.*?</tr>', replays, re.S).group(0)
    assert reverse("replays:detail", args=[dry_run.pk]) in row and "succeeded" in row and prod.incident.ref in row
    client.force_login(outsider)
    assert f'id="replay-{dry_run.pk}"' not in dashboard_html(client)


def test_it_shows_the_stale_agents(client, operator, prod):
    heartbeat_record(agent=prod.agent, status="ok")
    client.force_login(operator)

    stale = section(dashboard_html(client), "stale-agents")

    assert f'id="stale-agent-{prod.neighbour.pk}"' in stale  # never seen
    assert f'id="stale-agent-{prod.agent.pk}"' not in stale  # reported just now


def test_it_shows_recent_rejections_in_the_environments_i_see(
    client, operator, outsider, prod, django_capture_on_commit_callbacks
):
    dry_run = run_dry_run(prod, operator, django_capture_on_commit_callbacks)
    rejected = replay_request_execute(dry_run=dry_run, user=operator)  # prod needs an approval first
    assert rejected.status == "rejected"
    with pytest.raises(PermissionDenied):
        heartbeat_record(agent=prod.agent, status="ok", deployment_id=foreign_deployment().pk)
    client.force_login(operator)

    rejections = section(dashboard_html(client), "rejections")

    row = re.search(rf'<tr id="rejected-{rejected.pk}">.*?</tr>', rejections, re.S).group(0)
    assert "approval" in row and reverse("replays:detail", args=[rejected.pk]) in row
    assert "heartbeat.rejected" in rejections
    assert "replay.rejected" not in rejections  # the rejected replay is listed once, above
    client.force_login(outsider)
    assert "heartbeat.rejected" not in dashboard_html(client)
    assert f'id="rejected-{rejected.pk}"' not in dashboard_html(client)


def foreign_deployment():
    """A deployment in an environment of its own, which no agent of the worlds may name."""
    return DeploymentFactory(environment=EnvironmentFactory(slug="elsewhere"))


DASHBOARD_QUERY_BOUND = 30


def test_it_costs_a_bounded_number_of_queries_whatever_the_data(
    client, operator, approver1, prod, dev, admin_user, django_assert_max_num_queries,
    django_capture_on_commit_callbacks,
):
    client.force_login(approver1)
    with django_assert_max_num_queries(DASHBOARD_QUERY_BOUND) as small:
        dashboard_html(client)

    for index in range(12):
        incident_open(ref=f"INC-PROD-{index + 100}", title="more", environment=prod.environment,
                      source_agent=prod.agent, window_start=WINDOW_START,
                      window_end=WINDOW_START + timedelta(minutes=4), actor=admin_user)
    for world in (prod, dev, prod):
        dry_run = run_dry_run(world, operator, django_capture_on_commit_callbacks)
        replay_request_execute(dry_run=dry_run, user=operator)
    replay_request_approval(dry_run=dry_run, user=operator, reason="drain POP-12")
    for _ in range(3):
        with pytest.raises(PermissionDenied):
            heartbeat_record(agent=prod.agent, status="ok", deployment_id=foreign_deployment().pk)
        heartbeat_record(agent=dev.agent, status="ok")

    with django_assert_max_num_queries(DASHBOARD_QUERY_BOUND) as large:
        html = dashboard_html(client)
    assert len(large.captured_queries) <= len(small.captured_queries)
    assert "INC-PROD-111" in html and 'id="rejected-' in html and 'id="stale-agent-' in html
