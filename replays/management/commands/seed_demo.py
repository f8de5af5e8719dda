"""`manage.py seed_demo`: fill the embedded demo with environments, agents, pipelines, one prod incident and its
evidence (the source agent's incident bundle and a runtime snapshot), and a pending approval request in prod (the
promotion of the tightened pipeline version, by operator; approvals.demo).

Idempotent: a second run finds every row by its natural key (and every artifact by its SHA-256) and writes nothing.
The world is built by incidents.demo and the evidence by artifacts.demo; the command lives in the top app because
only here may both be imported (incidents may not import artifacts). It only parses options and prints.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from approvals.demo import seed_pending_promotion
from approvals.models import ApprovalRequest
from artifacts.demo import ArtifactSeedReport, seed_artifacts
from artifacts.errors import UploadRefused
from artifacts.models import Artifact, ArtifactKind
from incidents.demo import (
    DEFAULT_HEARTBEAT_MINUTES,
    DEFAULT_SEED,
    MAX_HEARTBEAT_MINUTES,
    SOURCE_AGENT,
    SeedReport,
    seed_demo,
)
from incidents.models import Agent, Deployment, Environment, Heartbeat, Incident, PipelineVersion
from replays.demo import seed_demo_replay

CREATED_ORDER = ("users", "environments", "agents", "heartbeats", "pipeline versions", "deployments", "incidents",
                 "notes", "artifacts", "approval requests")


def _count(n: int, plural: str) -> str:
    return f"{n} {plural[:-1] if n == 1 else plural}"


class Command(BaseCommand):
    help = ("Create the demo data (idempotent): dev/staging/prod, agents with heartbeats, pipelines, one incident "
            "with its incident bundle and a snapshot.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                            help=f"seed of the random generator for telemetry (default {DEFAULT_SEED})")
        parser.add_argument("--heartbeat-minutes", type=int, default=DEFAULT_HEARTBEAT_MINUTES,
                            help=f"minutes of heartbeat history per agent, one a minute "
                                 f"(default {DEFAULT_HEARTBEAT_MINUTES}, at most {MAX_HEARTBEAT_MINUTES})")

    def handle(self, *args: Any, seed: int, heartbeat_minutes: int, **options: Any) -> None:
        try:
            report = seed_demo(seed=seed, heartbeat_minutes=heartbeat_minutes)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        try:
            evidence = seed_artifacts(plan=report.plan)
        except UploadRefused as exc:
            raise CommandError(f"the demo evidence was refused by the upload service: {exc.detail}") from exc
        pending, promotion = seed_pending_promotion()
        replay = seed_demo_replay()
        self.stdout.write(self._summary(report, evidence, promotion))
        if replay is not None:
            replay.refresh_from_db()
            self.stdout.write(
                f"  Replay #{replay.pk} [{replay.status}]: dry run of {replay.incident.ref} under "
                f"{replay.pipeline_version.label}, compared with {replay.compare_version}: /replays/{replay.pk}/"
            )
        if pending is not None:
            self.stdout.write(
                f"  Approval #{pending.pk} [{pending.status}]: {pending.subject} requested by "
                f"{pending.requested_by}, {pending.required_approvals} approvals needed."
            )
        self.stdout.write("")
        self.stdout.write(self._logins(report))

    def _summary(self, report: SeedReport, evidence: ArtifactSeedReport, promotion: Counter[str]) -> str:
        created = report.created + evidence.created + promotion
        made = [_count(created[kind], kind) for kind in CREATED_ORDER if created[kind]]
        lines = [
            f"Demo seeded (seed {report.plan.seed}): created {', '.join(made)}."
            if made else f"Demo already seeded (seed {report.plan.seed}): nothing to create."
        ]
        lines.append(
            f"  Now: {_count(Environment.objects.count(), 'environments')}, {_count(Agent.objects.count(), 'agents')}, "
            f"{_count(Heartbeat.objects.count(), 'heartbeats')}, "
            f"{_count(PipelineVersion.objects.count(), 'pipeline versions')}, "
            f"{_count(Deployment.objects.filter(status='active').count(), 'active deployments')}, "
            f"{_count(Incident.objects.count(), 'incidents')}, {_count(Artifact.objects.count(), 'artifacts')}, "
            f"{_count(ApprovalRequest.objects.filter(status='pending').count(), 'pending approval requests')}."
        )
        incident = report.incident
        if incident is not None:
            lines.append(
                f"  {incident.ref} \"{incident.title}\" [{incident.severity}, {incident.status}] in "
                f"{incident.environment.slug}, window {incident.window_start:%Y-%m-%d %H:%M}-"
                f"{incident.window_end:%H:%M} UTC, source agent {incident.source_agent}, "
                f"deployment {incident.deployment}."
            )
        for artifact in evidence.artifacts:
            if artifact.kind == ArtifactKind.INCIDENT_BUNDLE:
                signals = sum(artifact.signal_counts.values())
                version = artifact.pipeline_version.label if artifact.pipeline_version else "unknown"
                what = (f"incident bundle of {artifact.incident.ref if artifact.incident else 'no incident'}: "
                        f"{signals} signals, pipeline version {version}")
            else:
                what = f"snapshot of {artifact.agent.name} at {artifact.captured_at:%H:%M} UTC"
            lines.append(f"  Artifact #{artifact.pk} {what}, {artifact.size} bytes, sha256 {artifact.sha256[:12]}.")
        return "\n".join(lines)

    def _logins(self, report: SeedReport) -> str:
        rows = [("username", "password", "role")]
        rows += [(u.username, u.password, u.role) for u in report.plan.users]
        widths = [max(len(row[i]) for row in rows) for i in range(2)]
        lines = ["Demo logins (for this embedded demo only; a password is set when its user is created, never reset):"]
        lines += [f"  {row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}" for row in rows]
        lines.append("Agent keys are shown once, so the seed makes none: "
                     f"`manage.py agent_key create --agent {SOURCE_AGENT}` prints one (README: Agent client).")
        return "\n".join(lines)
