"""Fixtures for fuzzing the HTTP API: a MEDIA_ROOT of the test's own, rates no fuzzer can exhaust, and one world with
something behind every endpoint (an agent with a key of every scope and a delivered command, an enrollment token, an
incident with an uploaded bundle and a succeeded dry run, a pending approval request, an operator's and an approver's
personal tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.models import ApprovalRequest
from approvals.tokens import user_token_create
from incidents import services as incident_services
from incidents.models import Command
from replays.models import ReplayExecution
from tests.approvals.conftest import request_for
from tests.factories import DeploymentFactory
from tests.replays.conftest import (  # noqa: F401 - media_root and signing_key are autouse fixtures
    World,
    make_world,
    media_root,
    run_dry_run,
    signing_key,
)
from traceflux.audit import SYSTEM


@pytest.fixture
def unlimited_rates(settings):
    settings.TRACEFLUX_RATE_LIMITS = {group: "1000000/m" for group in settings.TRACEFLUX_RATE_LIMITS}


@dataclass
class ApiWorld:
    world: World
    agent_key: str
    enrollment_token: str
    command: Command
    dry_run: ReplayExecution
    approval: ApprovalRequest
    operator_token: str
    approver_token: str


@pytest.fixture
def api_world(environments, admin_user, operator, approver1, unlimited_rates,
              django_capture_on_commit_callbacks) -> ApiWorld:
    world = make_world(environments["prod"], admin_user)
    _, agent_key = incident_services.agent_key_create(agent=world.agent, actor=SYSTEM)
    _, enrollment_token = incident_services.enrollment_token_create(
        environment=world.environment, actor=SYSTEM, expires_at=timezone.now() + timedelta(hours=1), uses=1000
    )
    command = incident_services.command_create(
        agent=world.agent, kind="capture", payload={"what": "flows"}, idempotency_key="fuzz-capture-1", actor=SYSTEM
    )
    incident_services.command_lease(agent=world.agent)
    command.refresh_from_db()
    dry_run = run_dry_run(world, operator, django_capture_on_commit_callbacks)
    assert dry_run.status == "succeeded", dry_run.error
    approval = request_for(DeploymentFactory(environment=world.environment), by=operator)
    _, operator_token = user_token_create(user=operator, name="fuzz", actor=SYSTEM)
    _, approver_token = user_token_create(user=approver1, name="fuzz", actor=SYSTEM)
    return ApiWorld(world, agent_key, enrollment_token, command, dry_run, approval, operator_token, approver_token)
