"""factory-boy factories. They build rows directly; tests of behaviour go through services and URLs."""

from __future__ import annotations

from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from incidents.models import Agent, Deployment, Environment, Heartbeat, Incident, PipelineVersion
from replays.engine import spec_hash


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.test")
    is_staff = True
    password = factory.django.Password("pw")


class EnvironmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Environment
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"env{n}")
    name = factory.LazyAttribute(lambda e: e.slug.title())
    replay_policy = "allowed"
    execute_policy = "require_approval"
    deploy_policy = "require_approval"
    required_approvals = 1


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agent

    environment = factory.SubFactory(EnvironmentFactory)
    name = factory.Sequence(lambda n: f"agent-{n}")
    hostname = factory.LazyAttribute(lambda a: f"{a.name}.example.test")
    version = "1.4.0"
    region = "us-east-1"
    pop = "POP-12"
    services = factory.LazyFunction(lambda: ["edge-gw"])


class PipelineVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PipelineVersion

    label = factory.Sequence(lambda n: f"v1.0.{n}")
    spec = factory.LazyAttribute(lambda p: {"version": p.label, "fingerprint": {"fields": ["source", "name"]}})
    spec_hash = factory.LazyAttribute(lambda p: spec_hash(p.spec))


class DeploymentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Deployment

    environment = factory.SubFactory(EnvironmentFactory)
    pipeline_version = factory.SubFactory(PipelineVersionFactory)
    status = "pending_approval"
    reason = "roll out"


class IncidentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Incident

    ref = factory.Sequence(lambda n: f"INC-2026-1124-{n:03d}")
    title = "Edge gateway 5xx burst"
    environment = factory.SubFactory(EnvironmentFactory)
    source_agent = factory.SubFactory(AgentFactory, environment=factory.SelfAttribute("..environment"))
    service = "edge-gw"
    region = "us-east-1"
    pop = "POP-12"
    window_start = factory.LazyFunction(lambda: timezone.now().replace(microsecond=0) - timedelta(minutes=30))
    window_end = factory.LazyAttribute(lambda i: i.window_start + timedelta(minutes=4))


class HeartbeatFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Heartbeat

    agent = factory.SubFactory(AgentFactory)
    received_at = factory.LazyFunction(timezone.now)
    status = "ok"
    version = "1.4.0"
