"""The estate every security test requests URLs against, and the principals that request them.

The estate is prod's: an incident with an uploaded bundle (tests/replays/conftest.make_world), a succeeded dry run, the
execute approval request it led to, a deployment awaiting its second approval (so a decision exists), a command for
the incident's agent, a heartbeat, a note, an agent key, an enrollment token, a personal token, a group. Everything is
made through the services by `requester` (the conftest `operator`, who may do anything anywhere) or the admin, so
none of the principals under test requested anything: an approver here may decide. The only object outside prod is the
agent whose key is the "agent key of another environment" (dev).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import Model
from django.test import Client
from django.utils import timezone
from guardian.shortcuts import assign_perm

from approvals.models import ApprovalDecision, ApprovalRequest, UserToken
from approvals.services import approval_decide, deployment_promote
from approvals.tokens import user_token_create
from artifacts.models import Artifact, artifact_storage
from incidents.models import (
    Agent,
    AgentKey,
    Command,
    Deployment,
    EnrollmentToken,
    Environment,
    Heartbeat,
    Incident,
    IncidentNote,
    PipelineVersion,
)
from incidents.services import (
    agent_create,
    agent_key_create,
    command_create,
    enrollment_token_create,
    environment_set_posture,
    heartbeat_record,
    incident_note_add,
)
from replays.models import ReplayExecution
from replays.services import replay_request_approval
from tests.factories import UserFactory
from tests.replays.conftest import World, make_world, run_dry_run
from traceflux.audit import SYSTEM
from traceflux.audit.models import AuditEvent

# Who requests, in the order of the matrix's columns. Each person holds guardian permissions on prod only.
PRINCIPALS = ("anonymous", "same_env_key", "other_env_key", "viewer", "dry_runner", "executor", "approver", "admin")
PEOPLE_PERMS = {
    "viewer": ("view_environment",),
    "dry_runner": ("view_environment", "replay_dry_run"),
    "executor": ("view_environment", "replay_dry_run", "replay_execute", "operate_environment"),
    "approver": ("view_environment", "approve_environment"),
}


@dataclass
class Estate:
    prod: Environment
    world: World
    dry_run: ReplayExecution
    approval: ApprovalRequest  # the execute approval of dry_run: pending, requested by `requester`
    command: Command  # for the incident's agent, pending
    keys: dict[str, str]  # plaintext agent keys: "same_env_key" (prod), "other_env_key" (dev)
    people: dict[str, Any]  # username-ish → User, for every person principal and `requester`
    secrets: dict[str, str] = field(default_factory=dict)  # every other plaintext the estate issued
    objects: dict[type[Model], Model] = field(default_factory=dict)  # one object of each model the console shows
    paths: dict[str, str] = field(default_factory=dict)  # route → the concrete path filled from these objects

    @property
    def incident(self) -> Incident:
        return self.world.incident

    def content_type_id(self, obj: Model) -> int:
        return ContentType.objects.get_for_model(obj).pk

    def bundle_file(self) -> SimpleUploadedFile:
        """The incident's bundle again, as an agent would upload it (its own agent: a duplicate)."""
        with artifact_storage().open(self.world.bundle.file.name, "rb") as handle:
            return SimpleUploadedFile("bundle.tar.gz", handle.read(), content_type="application/gzip")

    def client(self, principal: str, **kwargs: Any) -> Client:
        """A test client signed in as the principal: a session for people, a bearer key for agents."""
        if principal in self.keys:
            kwargs.setdefault("headers", {})["authorization"] = f"Bearer {self.keys[principal]}"
        client = Client(**kwargs)
        if principal in self.people:
            client.force_login(self.people[principal])
        return client


@pytest.fixture(autouse=True)
def _signing_key(signing_key_file) -> Path:
    return signing_key_file


def make_people(environments: dict[str, Environment], admin_user: Any, requester: Any) -> dict[str, Any]:
    people: dict[str, Any] = {"admin": admin_user, "requester": requester}
    for name, perms in PEOPLE_PERMS.items():
        user = UserFactory(username=name.replace("_", "-"))
        for perm in perms:
            assign_perm(f"incidents.{perm}", user, environments["prod"])
        people[name] = user
    return people


@pytest.fixture
def estate(environments, admin_user, operator, approver1, artifact_store,
           django_capture_on_commit_callbacks) -> Estate:
    requester = operator
    prod = environment_set_posture(environment=environments["prod"], actor=admin_user, reason="executes need approval",
                                   replay_policy="allowed", execute_policy="require_approval")
    world = make_world(prod, admin_user)
    dry_run = run_dry_run(world, requester, django_capture_on_commit_callbacks)
    assert dry_run.status == "succeeded", dry_run.error
    approval = replay_request_approval(dry_run=dry_run, user=requester, reason="drain POP-12")
    deployment, deploy_approval = deployment_promote(pipeline_version=world.tightened, environment=prod,
                                                     requested_by=requester, reason="roll out the tightened policy")
    assert deploy_approval is not None
    approval_decide(request=deploy_approval, approver=approver1, decision="approve", comment="looks right")
    command = command_create(agent=world.agent, kind="capture", payload={"ref": world.incident.ref},
                             idempotency_key="security-capture", actor=admin_user)
    heartbeat_record(agent=world.agent, status="ok", version=world.agent.version)
    note = incident_note_add(incident=world.incident, author=requester, body="edge-gw 5xx since 14:00")
    key, same_env_key = agent_key_create(agent=world.agent, actor=SYSTEM)
    other_agent = agent_create(environment=environments["dev"], name="edge-dev-9", hostname="edge-dev-9.example.test",
                               actor=admin_user)
    _, other_env_key = agent_key_create(agent=other_agent, actor=SYSTEM)
    enrollment, enrollment_token = enrollment_token_create(environment=prod, actor=admin_user,
                                                           expires_at=timezone.now() + timedelta(hours=1))
    user_token, personal_token = user_token_create(user=requester, name="cli", actor=requester)
    group = Group.objects.create(name="responders")
    people = make_people(environments, admin_user, requester)
    objects: dict[type[Model], Model] = {
        Environment: prod, Agent: world.agent, AgentKey: key, EnrollmentToken: enrollment,
        Heartbeat: Heartbeat.objects.filter(agent=world.agent).latest("pk"), Command: command,
        PipelineVersion: world.tightened, Deployment: deployment, Incident: world.incident, IncidentNote: note,
        Artifact: world.bundle, ApprovalRequest: approval, ApprovalDecision: ApprovalDecision.objects.latest("pk"),
        UserToken: user_token, ReplayExecution: dry_run, AuditEvent: AuditEvent.objects.filter(environment="prod")
        .latest("seq"), type(requester): requester, Group: group,
    }
    return Estate(
        prod=prod, world=world, dry_run=dry_run, approval=approval, command=command,
        keys={"same_env_key": same_env_key, "other_env_key": other_env_key}, people=people,
        secrets={"enrollment_token": enrollment_token, "personal_token": personal_token}, objects=objects,
    )
