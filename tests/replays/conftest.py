"""Replay fixtures: a prod incident whose source agent uploaded a small bundle produced by the baseline policy, the
two demo pipeline versions, neighbour agents at the same POP, and helpers to run a replay to the end."""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from approvals.services import approval_decide
from artifacts.models import Artifact
from artifacts.services import artifact_upload
from artifacts.uploads import upload_temp_dir
from incidents.models import Agent, Environment, Incident, PipelineVersion
from incidents.services import incident_open, pipeline_version_create
from replays.engine import spec_hash, write_bundle
from replays.engine.demo_policies import baseline_policy, tightened_policy
from replays.engine.samples import sample_bundle
from replays.models import ReplayExecution
from replays.services import replay_request_approval, replay_request_dry_run, replay_request_execute
from tests.factories import AgentFactory
from traceflux.audit import SYSTEM

WINDOW_START = datetime(2026, 2, 26, 14, 0, tzinfo=UTC)
SIGNALS = 600


@pytest.fixture(autouse=True)
def media_root(artifact_store) -> Path:
    return artifact_store


@pytest.fixture(autouse=True)
def signing_key(signing_key_file) -> Path:
    return signing_key_file


@dataclass
class World:
    environment: Environment
    agent: Agent
    neighbour: Agent
    baseline: PipelineVersion
    tightened: PipelineVersion
    incident: Incident
    bundle: Artifact


def upload(agent: Agent, content: bytes) -> Artifact:
    import hashlib

    temp_dir = upload_temp_dir()
    temp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="test-", suffix=".part", dir=temp_dir)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        artifact, _ = artifact_upload(agent=agent, kind="incident_bundle", temp_path=path,
                                      sha256=hashlib.sha256(content).hexdigest(), size=len(content))
    finally:
        path.unlink(missing_ok=True)
    return artifact


def make_world(environment: Environment, admin) -> World:
    agent = AgentFactory(environment=environment, name=f"edge-{environment.slug}-1", region="us-east-1", pop="POP-12",
                         services=["edge-gw"])
    neighbour = AgentFactory(environment=environment, name=f"edge-{environment.slug}-2", region="us-east-1",
                             pop="POP-12", services=["dns-resolver"])
    AgentFactory(environment=environment, name=f"edge-{environment.slug}-far", region="eu-west-1", pop="POP-40")
    baseline = PipelineVersion.objects.filter(spec_hash=spec_hash(baseline_policy())).first() or (
        pipeline_version_create(label="v1-baseline", spec=baseline_policy(), actor=admin)
    )
    tightened = PipelineVersion.objects.filter(spec_hash=spec_hash(tightened_policy())).first() or (
        pipeline_version_create(label="v2-tightened", spec=tightened_policy(), actor=admin, parent=baseline)
    )
    ref = f"INC-{environment.slug.upper()}-001"
    incident = incident_open(
        ref=ref, title="edge-gw 5xx burst at POP-12", severity="sev2", environment=environment, source_agent=agent,
        service="edge-gw", region="us-east-1", pop="POP-12", window_start=WINDOW_START,
        window_end=WINDOW_START + timedelta(minutes=4), actor=admin,
    )
    manifest, lines, baseline_doc = sample_bundle(
        seed=7, ref=ref, environment=environment.slug, agent=agent.name, window_start=WINDOW_START, minutes=4,
        signals=SIGNALS, spec_hash=baseline.spec_hash,
    )
    buffer = io.BytesIO()
    write_bundle(buffer, manifest=manifest, signals=lines, baseline=baseline_doc, spec=baseline.spec, fmt="tar.gz")
    bundle = upload(agent, buffer.getvalue())
    return World(environment, agent, neighbour, baseline, tightened, incident, bundle)


@pytest.fixture
def prod(environments, admin_user) -> World:
    env = environments["prod"]
    Environment.objects.filter(pk=env.pk).update(replay_policy="allowed", execute_policy="require_approval")
    env.refresh_from_db()
    return make_world(env, admin_user)


@pytest.fixture
def dev(environments, admin_user) -> World:
    return make_world(environments["dev"], admin_user)


def run_dry_run(world: World, user, django_capture_on_commit_callbacks, **inputs) -> ReplayExecution:
    with django_capture_on_commit_callbacks(execute=True):
        execution = replay_request_dry_run(incident=world.incident, artifact=world.bundle, user=user, **inputs)
    execution.refresh_from_db()
    return execution


def approve_execute(dry_run: ReplayExecution, requester, *approvers):
    request = replay_request_approval(dry_run=dry_run, user=requester, reason="drain POP-12")
    for approver in approvers:
        request = approval_decide(request=request, approver=approver, decision="approve", comment="parity is high")
    return request


def run_execute(dry_run: ReplayExecution, user, django_capture_on_commit_callbacks) -> ReplayExecution:
    with django_capture_on_commit_callbacks(execute=True):
        execution = replay_request_execute(dry_run=dry_run, user=user)
    execution.refresh_from_db()
    return execution


def acknowledge_all(execution: ReplayExecution, *, on_commit=None) -> int:
    """The agents' side, in this process: each target agent leases its commands, verifies the signed credential
    against the portal's published keys and its own configuration, and acknowledges succeeded. Returns how many."""
    import contextlib

    from artifacts.client import verify_command
    from incidents.services import command_acknowledge, command_lease
    from replays.services import replay_commands
    from traceflux.signing import verification_keys

    keys = verification_keys()
    done = 0
    for agent in {command.agent for command in replay_commands(execution=execution).select_related("agent")}:
        for command in command_lease(agent=agent):
            document = verify_command(
                {"id": command.pk, "kind": command.kind, "payload": command.payload,
                 "idempotency_key": command.idempotency_key},
                keys=keys, environment=agent.environment.slug, agent=agent.name, now=command.created_at,
            )
            assert document["execution_id"] == execution.pk
            with on_commit(execute=True) if on_commit else contextlib.nullcontext():
                command_acknowledge(command=command, agent=agent, status="succeeded")
            done += 1
    return done


__all__ = ["SYSTEM", "World", "acknowledge_all", "approve_execute", "make_world", "run_dry_run", "run_execute"]
