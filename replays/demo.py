"""The demo's replays: one dry run of the demo incident's bundle under the tightened candidate, compared with the
baseline that produced it, requested by the operator, so the run history and run view have a real run to show."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from artifacts.models import Artifact, ArtifactKind
from incidents.demo import BASELINE_LABEL, CANDIDATE_LABEL, INCIDENT_REF
from incidents.models import Incident, PipelineVersion

from .models import ReplayExecution, ReplayMode
from .services import replay_request_dry_run


def seed_demo_replay() -> ReplayExecution | None:
    """Request the demo dry run unless one exists; it runs when the request commits (eagerly in the embedded
    mode, on a worker in production). None when the demo world is missing its incident or bundle."""
    incident = Incident.objects.filter(ref=INCIDENT_REF).first()
    bundle = Artifact.objects.filter(incident=incident, kind=ArtifactKind.INCIDENT_BUNDLE).first() if incident else None
    if incident is None or bundle is None:
        return None
    existing = ReplayExecution.objects.filter(incident=incident, mode=ReplayMode.DRY_RUN).first()
    if existing is not None:
        return existing
    operator = get_user_model().objects.get(username="operator")
    return replay_request_dry_run(
        incident=incident,
        artifact=bundle,
        user=operator,
        pipeline_version=PipelineVersion.objects.get(label=CANDIDATE_LABEL),
        compare_version=PipelineVersion.objects.get(label=BASELINE_LABEL),
    )
