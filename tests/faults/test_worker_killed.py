"""A Celery worker killed with SIGKILL in the middle of a replay.

run_replay is acks_late: RabbitMQ holds the message unacknowledged while the replay runs and, when the worker's
connection drops, delivers it again to the next worker on the queue. replay_run is idempotent: it picks the run up
where it stands (running, no report stored yet) and finishes it once. These tests kill a real prefork worker (main
process and pool child) while the replay's stages are running, start another, and check what is left behind; kill
one that is never replaced, so the reaper must end the run; and leave a half-written report where a worker killed
while writing it would have left it.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from artifacts.models import artifact_storage
from replays.engine import pipeline as engine
from replays.engine.report import report_bytes, verify_report
from replays.models import FINAL_STATUSES, STAGES_DRY_RUN, STAGES_EXECUTE, ReplayExecution, ReplayStatus
from replays.services import (
    dispatch_agents,
    replay_commands,
    replay_reap,
    replay_request_dry_run,
    replay_request_execute,
)
from replays.tasks import run_replay
from tests.replays.conftest import World, acknowledge_all, approve_execute
from traceflux.audit.models import AuditEvent
from traceflux.audit.services import audit_verify

from .conftest import upload_big_bundle
from .workers import SLOW_STAGES, TIMEOUT, FaultWorker, Fleet, fleet

pytestmark = [
    pytest.mark.faults,
    pytest.mark.xdist_group("faults"),
    pytest.mark.needs("postgresql", "rabbitmq"),
    # Committed for real: the workers are other processes.
    pytest.mark.django_db(transaction=True),
]


def running_stage(execution: ReplayExecution) -> str | None:
    """The stage a replay is in the middle of, while it has not stored its report; None otherwise."""
    if execution.status != ReplayStatus.RUNNING or execution.report_sha256:
        return None
    for name in STAGES_EXECUTE:
        if (execution.stages or {}).get(name, {}).get("status") == "running":
            return name
    return None


def kill_mid_replay(workers: Fleet, execution: ReplayExecution) -> str:
    """Start a worker, SIGKILL it as soon as the replay shows a stage running (ingest, when the poll sees it: the
    SLOW_STAGES workers hold each stage for half a second), and return that stage. The row is then left `running`,
    its report not stored: the replay was cut in the middle."""
    worker = workers.start()
    execution = workers.wait_for(execution, lambda e: running_stage(e) is not None or e.status in FINAL_STATUSES,
                                 what="a stage to run", poll=0.01)
    stage = running_stage(execution)
    assert stage is not None, (
        f"replay #{execution.pk} ended {execution.status} before a stage could be caught running, though "
        f"its worker holds each stage (slow_stages)\n{workers.logs()}"
    )
    worker.kill()
    execution.refresh_from_db()
    assert execution.status == ReplayStatus.RUNNING and not execution.report_sha256, (execution.status, stage)
    assert f"replays.tasks.run_replay[{execution.task_id}] received" in worker.log()
    return stage


def deliver_again(worker: FaultWorker, execution: ReplayExecution) -> str:
    """Publish run_replay for the execution once more, as a duplicate delivery would, and wait until `worker` has
    run it; returns what the task returned (the status it found)."""
    task_id = run_replay.delay(execution.pk).id
    pattern = re.compile(rf"run_replay\[{re.escape(task_id)}\] succeeded in [0-9.e-]+s: '?(\w+)'?")
    deadline = time.monotonic() + TIMEOUT
    while not (found := pattern.search(worker.log())):
        assert time.monotonic() < deadline, f"the duplicate delivery {task_id} did not run:\n{worker.log()}"
        time.sleep(0.1)
    return found.group(1)


def assert_report_complete(execution: ReplayExecution, media_root: Path) -> None:
    stored = Path(artifact_storage().path(execution.report_name))
    assert stored.is_file() and stored.is_relative_to(media_root)
    data = stored.read_bytes()
    document = json.loads(data)  # a report cut short would not even parse
    assert data == report_bytes(document)  # the whole canonical document, nothing after it
    assert document["report_sha256"] == execution.report_sha256
    assert verify_report(document)  # report_sha256 covers every other field
    evidence = Path(artifact_storage().path(execution.evidence_name))
    assert hashlib.sha256(evidence.read_bytes()).hexdigest() == execution.evidence_sha256
    # Nothing else was left there: every stored report and evidence bundle belongs to a run.
    runs = ReplayExecution.objects.exclude(report_name="")
    assert {p.name for p in stored.parent.iterdir()} == {Path(name).name for name in runs.values_list("report_name",
                                                                                                      flat=True)}
    assert {p.name for p in evidence.parent.iterdir()} == {Path(name).name for name in runs.values_list(
        "evidence_name", flat=True)}


def events(execution: ReplayExecution, action: str) -> int:
    return AuditEvent.objects.filter(target_type="replays.replayexecution", target_id=str(execution.pk),
                                     action=action).count()


def test_it_finishes_a_dry_run_exactly_once_when_its_worker_is_killed_mid_replay(
    prod: World, operator, tmp_path, media_root, signing_key, figure
):
    bundle = upload_big_bundle(prod)
    with fleet(tmp_path, media_root, signing_key, app=SLOW_STAGES) as workers:
        execution = replay_request_dry_run(incident=prod.incident, artifact=bundle, user=operator)
        killed_in = kill_mid_replay(workers, execution)
        figure("killed_in_stage", killed_in)

        survivor = workers.start()  # RabbitMQ delivers the unacknowledged task to it
        execution = workers.wait_for(execution, lambda e: e.status in FINAL_STATUSES, what="a final status")
        assert deliver_again(survivor, execution) == ReplayStatus.SUCCEEDED  # and once more: it changes nothing

    assert execution.status == ReplayStatus.SUCCEEDED, f"{execution.error}\n{workers.logs()}"
    assert f"replays.tasks.run_replay[{execution.task_id}] received" in survivor.log()
    assert execution.enqueue_count == 1  # the broker redelivered it; the reaper did not have to requeue it
    assert {name: execution.stages[name]["status"] for name in STAGES_DRY_RUN} == dict.fromkeys(STAGES_DRY_RUN, "done")
    assert execution.stages["ingest"]["counts"]["signals_in"] == 60_000, killed_in
    assert_report_complete(execution, media_root)
    assert (events(execution, "replay.started"), events(execution, "replay.succeeded")) == (1, 1)
    assert events(execution, "replay.failed") == 0
    assert prod.incident.notes.filter(body__contains=f"#{execution.pk} succeeded").count() == 1
    verification = audit_verify()
    assert verification.ok, verification.problem


def test_it_dispatches_an_execute_exactly_once_when_its_worker_is_killed_mid_replay(
    prod: World, operator, approver1, approver2, tmp_path, media_root, signing_key, figure
):
    bundle = upload_big_bundle(prod)
    # The dry run runs in this process (Celery is eager outside the fleet); the execute promotes it.
    dry_run = replay_request_dry_run(incident=prod.incident, artifact=bundle, user=operator)
    dry_run.refresh_from_db()
    assert dry_run.status == ReplayStatus.SUCCEEDED, dry_run.error
    approve_execute(dry_run, operator, approver1, approver2)

    with fleet(tmp_path, media_root, signing_key, app=SLOW_STAGES) as workers:
        execution = replay_request_execute(dry_run=dry_run, user=operator)
        assert execution.status == ReplayStatus.QUEUED, execution.checks
        killed_in = kill_mid_replay(workers, execution)
        figure("killed_in_stage", killed_in)

        survivor = workers.start()
        execution = workers.wait_for(execution, lambda e: e.status == ReplayStatus.DISPATCHING or e.is_final,
                                     what="dispatching")
        assert execution.status == ReplayStatus.DISPATCHING, f"{execution.error}\n{workers.logs()}"
        # A further delivery of the same task (the reaper's requeue racing the broker's redelivery) sends nothing.
        assert deliver_again(survivor, execution) == ReplayStatus.DISPATCHING

    commands = list(replay_commands(execution=execution))
    allowed = [item for item in execution.audit_record["actions"] if item["decision"] == "allowed"]
    planned = sum(len(dispatch_agents(execution, item["target"])) for item in allowed)
    assert planned and len(commands) == planned, (killed_in, planned, len(commands))
    assert len({command.idempotency_key for command in commands}) == len(commands)
    assert execution.stages["dispatch"]["counts"] == {"actions": len(allowed), "commands": planned}
    assert execution.enqueue_count == 1
    assert events(execution, "replay.dispatched") == 1

    assert acknowledge_all(execution) == planned
    execution.refresh_from_db()
    assert execution.status == ReplayStatus.SUCCEEDED, execution.error
    assert {name: execution.stages[name]["status"] for name in STAGES_EXECUTE} == dict.fromkeys(STAGES_EXECUTE, "done")
    assert_report_complete(execution, media_root)
    assert (events(execution, "replay.started"), events(execution, "replay.executed")) == (1, 1)
    assert events(execution, "replay.failed") == 0
    verification = audit_verify()
    assert verification.ok, verification.problem


def test_it_fails_a_replay_with_a_reason_when_its_killed_worker_is_never_replaced(
    prod: World, operator, tmp_path, media_root, signing_key, settings, figure
):
    bundle = upload_big_bundle(prod)
    with fleet(tmp_path, media_root, signing_key, app=SLOW_STAGES) as workers:
        execution = replay_request_dry_run(incident=prod.incident, artifact=bundle, user=operator)
        figure("killed_in_stage", kill_mid_replay(workers, execution))

        # No worker takes the queue again: the beat's reaper, once the running timeout has passed, fails the run.
        later = timezone.now() + settings.TRACEFLUX_REPLAY_RUNNING_TIMEOUT + timedelta(seconds=1)
        assert replay_reap(now=later) == {"requeued": 0, "failed": 1}
        execution.refresh_from_db()
        assert execution.status == ReplayStatus.FAILED
        timeout = int(settings.TRACEFLUX_REPLAY_RUNNING_TIMEOUT.total_seconds())
        assert execution.error == f"running for more than {timeout} s: its worker is gone"

        # A worker that comes back later gets the task the broker kept, and leaves the failed run as it is.
        late = workers.start()
        pattern = f"run_replay[{execution.task_id}] succeeded"
        deadline = time.monotonic() + TIMEOUT
        while pattern not in late.log():
            assert time.monotonic() < deadline, late.log()
            time.sleep(0.1)

    execution.refresh_from_db()
    assert execution.status == ReplayStatus.FAILED and not execution.report_sha256
    assert (events(execution, "replay.failed"), events(execution, "replay.succeeded")) == (1, 0)
    verification = audit_verify()
    assert verification.ok, verification.problem


def test_it_writes_again_a_report_cut_short_by_a_worker_killed_while_writing_it(
    prod: World, operator, tmp_path, media_root, signing_key
):
    # The storage writes a file in place, so a worker killed in the middle of writing the report leaves the first
    # part of it at its final, content-addressed name. The engine is deterministic: the same replay names the same
    # files, so the run redelivered to the next worker must not take the leftover for the finished report.
    spec = prod.baseline.spec
    expected = engine.run_replay(spec, prod.bundle.file.path, policy_spec=spec, evidence=True)
    storage = artifact_storage()
    report_name = storage.save(f"replays/reports/{expected.report['report_sha256']}.json",
                               ContentFile(expected.report_bytes[: len(expected.report_bytes) // 2]))
    evidence_name = storage.save(f"replays/evidence/{expected.evidence_sha256}.tar.gz",
                                 ContentFile(expected.evidence[:100]))

    with fleet(tmp_path, media_root, signing_key, app=SLOW_STAGES) as workers:
        workers.start()
        execution = replay_request_dry_run(incident=prod.incident, artifact=prod.bundle, user=operator)
        execution = workers.wait_for(execution, lambda e: e.status in FINAL_STATUSES, what="a final status")

    assert execution.status == ReplayStatus.SUCCEEDED, f"{execution.error}\n{workers.logs()}"
    assert (execution.report_name, execution.evidence_name) == (report_name, evidence_name)
    assert execution.report_sha256 == expected.report["report_sha256"]
    assert_report_complete(execution, media_root)
    with storage.open(evidence_name) as evidence:
        assert evidence.read() == expected.evidence
