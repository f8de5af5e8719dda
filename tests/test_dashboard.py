"""The dashboard, against the seeded demo world: each user sees their environments' state and nothing else."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from incidents import services
from incidents.demo import INCIDENT_REF, seed_demo
from incidents.models import Environment, Incident


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


def test_it_keeps_events_of_no_environment_for_superusers(client, demo, outsider):
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
