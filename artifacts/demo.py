"""The demo's evidence: the incident bundle the source agent captured for the demo incident, and one runtime snapshot
of that agent, stored the way an agent's upload stores them (artifacts.services.artifact_upload).

Both files are built from the demo plan (incidents.demo) alone, deterministically: the bundle is the engine's seeded
sample (`replays.engine.samples.sample_bundle`) for the incident's window, scope, agent and environment, shipping the
baseline pipeline version's spec as spec.json; the snapshot is canonical JSON. The same plan therefore always gives
the same bytes and the same SHA-256, which is the natural key: bytes already stored in the environment are skipped, so
running the seed again writes nothing (not even a duplicate count).

The bundle is what `python -m replays.engine make-sample` writes with the same options, e.g. for the default seed:

    python -m replays.engine make-sample --seed 20260226 --out INC-2026-0226-001.tar.gz \\
        --ref INC-2026-0226-001 --environment prod --agent edge-use1-pop12-a --spec baseline-v2.14.3.json
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from incidents.demo import DemoPlan
from incidents.models import Agent
from replays.engine import SNAPSHOT_FORMAT, canonical_json, spec_hash, write_bundle
from replays.engine.formats import format_timestamp
from replays.engine.samples import sample_bundle

from .models import Artifact, ArtifactKind
from .services import artifact_upload
from .uploads import upload_temp_dir

# Signal lines in the demo bundle: the engine's default sample size (about 90 KiB compressed).
DEMO_BUNDLE_SIGNALS = 5000
# The snapshot is taken three minutes into the window, while the source agent reports failing.
SNAPSHOT_OFFSET = timedelta(minutes=3)


@dataclass(frozen=True)
class DemoFile:
    """One file the demo uploads: its kind, a name for people, its bytes and their SHA-256."""

    kind: str
    name: str
    content: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass
class ArtifactSeedReport:
    """What seed_artifacts stored; `created` counts only rows this run wrote (key "artifacts")."""

    created: Counter[str] = field(default_factory=Counter)
    artifacts: list[Artifact] = field(default_factory=list)


def _baseline_spec(plan: DemoPlan) -> dict[str, Any]:
    return next(version.spec for version in plan.pipeline_versions if version.label == plan.baseline)


def demo_bundle(plan: DemoPlan) -> DemoFile:
    """The incident bundle of the plan's incident, as its source agent captured it (tar.gz)."""
    incident = plan.incident
    spec = _baseline_spec(plan)
    manifest, signals, baseline = sample_bundle(
        seed=plan.seed,
        ref=incident.ref,
        title=incident.title,
        severity=str(incident.severity),
        environment=incident.environment,
        agent=incident.source_agent,
        window_start=incident.window_start,
        minutes=(incident.window_end - incident.window_start) / timedelta(minutes=1),
        signals=DEMO_BUNDLE_SIGNALS,
        spec_hash=spec_hash(spec),
        service=incident.service,
        region=incident.region,
        pop=incident.pop,
    )
    buffer = io.BytesIO()
    write_bundle(buffer, manifest=manifest, signals=signals, baseline=baseline, spec=spec, fmt="tar.gz")
    return DemoFile(ArtifactKind.INCIDENT_BUNDLE, f"{incident.ref}.tar.gz", buffer.getvalue())


def demo_snapshot(plan: DemoPlan) -> DemoFile:
    """A runtime snapshot (traceflux.snapshot/v1) of the source agent in the middle of the incident."""
    incident = plan.incident
    agent = next(a for a in plan.agents if a.name == incident.source_agent)
    captured_at = incident.window_start + SNAPSHOT_OFFSET
    offset_min = (captured_at - incident.window_start) // timedelta(minutes=1)
    status = str(next((d.status for d in agent.disturbances if d.start_min <= offset_min < d.end_min), "ok"))
    spec = _baseline_spec(plan)
    rng = random.Random(plan.seed)
    upstreams = [
        {"name": f"{incident.service}-origin-{zone}", "healthy": zone != "b", "error_rate": round(rate, 4),
         "open_connections": rng.randint(200, 900)}
        for zone, rate in (("a", rng.uniform(0.0, 0.01)), ("b", rng.uniform(0.15, 0.3)), ("c", rng.uniform(0.0, 0.01)))
    ]
    document = {
        "format": SNAPSHOT_FORMAT,
        "agent": agent.name,
        "captured_at": format_timestamp(captured_at),
        "state": {
            "agent_version": agent.version,
            "status": status,
            "scope": {"region": agent.region, "pop": agent.pop, "services": list(agent.services)},
            "pipeline": {"label": plan.baseline, "spec_hash": spec_hash(spec)},
            "upstreams": upstreams,
            "queue_depth": rng.randint(200, 400),
        },
    }
    name = f"{agent.name}-{captured_at:%Y%m%dT%H%M%SZ}.json"
    return DemoFile(ArtifactKind.SNAPSHOT, name, canonical_json(document) + b"\n")


def _store(*, agent: Agent, demo_file: DemoFile) -> tuple[Artifact, bool]:
    """(artifact, created): the stored artifact with these bytes in the agent's environment, uploading it if new."""
    digest = demo_file.sha256
    existing = Artifact.objects.filter(environment_id=agent.environment_id, sha256=digest).first()
    if existing is not None:
        return existing, False
    temp_dir = upload_temp_dir()
    temp_dir.mkdir(parents=True, exist_ok=True)
    # On the artifact store's disk (like a real upload), so placing the bytes is a rename.
    fd, name = tempfile.mkstemp(prefix="demo-", suffix=".part", dir=temp_dir)
    temp_path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(demo_file.content)
        artifact, duplicate = artifact_upload(
            agent=agent, kind=demo_file.kind, temp_path=temp_path, sha256=digest, size=len(demo_file.content)
        )
    finally:
        temp_path.unlink(missing_ok=True)
    return artifact, not duplicate


def seed_artifacts(*, plan: DemoPlan) -> ArtifactSeedReport:
    """Store the demo bundle and snapshot as uploads of the incident's source agent; skip bytes already stored.

    Run it after incidents.demo.apply_plan (the agent, the incident and the pipeline versions must exist), outside a
    transaction: artifact_upload places the bytes before its row commits. Raises artifacts.errors.UploadRefused when
    the upload service refuses a file.
    """
    report = ArtifactSeedReport()
    agent = Agent.objects.select_related("environment").get(name=plan.incident.source_agent)
    for demo_file in (demo_bundle(plan), demo_snapshot(plan)):
        artifact, created = _store(agent=agent, demo_file=demo_file)
        if created:
            report.created["artifacts"] += 1
        report.artifacts.append(artifact)
    return report
