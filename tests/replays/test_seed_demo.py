"""`manage.py seed_demo` (replays/management/commands): the demo world (incidents.demo) plus its evidence
(artifacts.demo), stored through the upload service under MEDIA_ROOT. Idempotent down to the files."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from approvals.models import ApprovalRequest
from artifacts.demo import DEMO_BUNDLE_SIGNALS, demo_bundle, demo_snapshot
from artifacts.models import Artifact
from incidents.demo import (
    BASELINE_LABEL,
    CANDIDATE_LABEL,
    DEFAULT_SEED,
    INCIDENT_REF,
    SOURCE_AGENT,
    baseline_spec,
    build_plan,
)
from incidents.models import Agent, Deployment, Environment, Heartbeat, Incident, PipelineVersion
from replays.engine import spec_hash, validate_bundle, validate_snapshot
from replays.engine.__main__ import main as engine_main
from traceflux.audit.models import AuditEvent
from traceflux.audit.services import audit_verify

COUNTED = (Environment, Agent, Heartbeat, PipelineVersion, Deployment, Incident, Artifact, ApprovalRequest, AuditEvent)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = root
    settings.FILE_UPLOAD_TEMP_DIR = None
    return root


def seed(**options: Any) -> str:
    out = StringIO()
    call_command("seed_demo", stdout=out, **options)
    return out.getvalue()


def counts() -> dict[str, int]:
    rows = {model.__name__: model.objects.count() for model in COUNTED}
    rows["history of Artifact"] = Artifact.history.count()
    rows["duplicates"] = sum(Artifact.objects.values_list("duplicate_count", flat=True))
    return rows


def files(root: Path) -> dict[str, str]:
    """Every file under MEDIA_ROOT (temporary ones included) and the SHA-256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*")
            if p.is_file()}


@pytest.mark.django_db
def test_it_leaves_the_same_rows_and_files_when_run_twice(media_root):
    first_output = seed(heartbeat_minutes=20)
    after_first, files_after_first = counts(), files(media_root)
    head = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()

    second_output = seed(heartbeat_minutes=20)

    assert counts() == after_first
    assert files(media_root) == files_after_first
    assert AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first() == head
    assert audit_verify().ok
    assert after_first["Artifact"] == 2 and after_first["duplicates"] == 0
    stored = {f"artifacts/sha256/{a.sha256[:2]}/{a.sha256[2:4]}/{a.sha256}": a.sha256 for a in Artifact.objects.all()}
    assert files_after_first == stored  # the two artifacts and nothing else: no temporary file left behind
    assert "created 4 users, 3 environments, 7 agents, 140 heartbeats" in first_output
    assert "2 pipeline versions, 4 deployments, 1 incident, 2 notes, 2 artifacts, 1 approval request." in first_output
    assert after_first["Deployment"] == 4 and after_first["ApprovalRequest"] == 1
    assert "nothing to create" in second_output
    assert "1 pending approval request." in second_output
    assert f"incident bundle of {INCIDENT_REF}: {DEMO_BUNDLE_SIGNALS} signals, pipeline version {BASELINE_LABEL}" \
        in second_output
    assert "agent_key create --agent edge-use1-pop12-a" in second_output


@pytest.mark.django_db
def test_it_leaves_the_promotion_of_the_tightened_version_to_prod_pending(media_root):
    output = seed(heartbeat_minutes=5)

    request = ApprovalRequest.objects.get()
    deployment = request.subject
    assert (request.status, request.subject_kind, request.environment.slug) == ("pending", "deployment", "prod")
    assert (deployment.pipeline_version.label, deployment.status) == (CANDIDATE_LABEL, "pending_approval")
    assert request.requested_by.username == deployment.requested_by.username == "operator"
    assert request.required_approvals == 2
    assert request.summary["pipeline_version"]["label"] == CANDIDATE_LABEL
    assert f"Approval #{request.pk} [pending]: {deployment} requested by operator, 2 approvals needed." in output
    assert not deployment.history.filter(status="approved").exists()


@pytest.mark.django_db
def test_it_links_the_demo_bundle_to_the_incident_and_the_baseline_version(media_root):
    seed(heartbeat_minutes=5)

    incident = Incident.objects.get(ref=INCIDENT_REF)
    bundle = Artifact.objects.get(kind="incident_bundle")
    assert bundle.incident == incident
    assert bundle.pipeline_version.label == BASELINE_LABEL
    assert bundle.spec_hash == incident.deployment.pipeline_version.spec_hash == spec_hash(baseline_spec())
    assert (bundle.environment.slug, bundle.agent.name) == ("prod", SOURCE_AGENT)
    assert (bundle.window_start, bundle.window_end) == (incident.window_start, incident.window_end)
    assert (bundle.service, bundle.region, bundle.pop) == (incident.service, incident.region, incident.pop)
    assert bundle.detected_type == "tar.gz"
    info = validate_bundle(media_root / bundle.file.name)
    assert info.signal_count == DEMO_BUNDLE_SIGNALS and info.has_spec and info.has_baseline
    assert info.incident == {"ref": INCIDENT_REF, "title": incident.title, "severity": "sev2"}

    snapshot = Artifact.objects.get(kind="snapshot")
    assert (snapshot.agent.name, snapshot.incident, snapshot.environment.slug) == (SOURCE_AGENT, None, "prod")
    assert snapshot.captured_at == datetime(2026, 2, 26, 14, 3, tzinfo=UTC)
    document = json.loads((media_root / snapshot.file.name).read_bytes())
    assert document["format"] == "traceflux.snapshot/v1"
    assert document["state"]["status"] == "failing"
    assert document["state"]["pipeline"] == {"label": BASELINE_LABEL, "spec_hash": bundle.spec_hash}
    validate_snapshot(media_root / snapshot.file.name)

    uploads = AuditEvent.objects.filter(action="artifact.uploaded")
    assert sorted(uploads.values_list("actor_kind", "actor_name")) == [("agent", SOURCE_AGENT)] * 2
    assert audit_verify().ok


def test_it_builds_the_same_bytes_from_the_same_plan():
    plan = build_plan(seed=DEFAULT_SEED, heartbeat_minutes=1)

    assert demo_bundle(plan) == demo_bundle(build_plan(seed=DEFAULT_SEED))
    assert demo_snapshot(plan) == demo_snapshot(build_plan(seed=DEFAULT_SEED))
    assert demo_bundle(plan).sha256 != demo_bundle(build_plan(seed=DEFAULT_SEED + 1)).sha256


def test_it_stores_what_the_engines_make_sample_writes_for_the_demo_window(tmp_path, capsys):
    spec_file = tmp_path / "baseline-v2.14.3.json"
    spec_file.write_text(json.dumps(baseline_spec()), encoding="utf-8")
    out = tmp_path / f"{INCIDENT_REF}.tar.gz"

    code = engine_main([
        "make-sample", "--seed", str(DEFAULT_SEED), "--out", str(out), "--ref", INCIDENT_REF,
        "--environment", "prod", "--agent", SOURCE_AGENT, "--spec", str(spec_file),
    ])

    assert code == 0
    made = json.loads(capsys.readouterr().out)
    assert made["spec_hash"] == spec_hash(baseline_spec()) and made["spec"] is True
    assert made["sha256"] == demo_bundle(build_plan(seed=DEFAULT_SEED)).sha256
    info = validate_bundle(out)
    assert (info.window_start, info.window_end) == (datetime(2026, 2, 26, 14, 0, tzinfo=UTC),
                                                    datetime(2026, 2, 26, 14, 4, tzinfo=UTC))
    assert (info.environment, info.agent) == ("prod", SOURCE_AGENT)
    assert info.scope == {"service": "edge-gw", "region": "us-east-1", "pop": "POP-12"}


@pytest.mark.django_db
def test_it_refuses_a_heartbeat_history_out_of_range_and_stores_nothing(media_root):
    with pytest.raises(CommandError, match="heartbeat_minutes must be between 1 and 1440, not 0"):
        seed(heartbeat_minutes=0)

    assert not Environment.objects.exists() and not Artifact.objects.exists()
    assert files(media_root) == {}
