"""A real Celery worker on RabbitMQ takes replays from request to their final status, in the test's PostgreSQL database.

The worker is `celery -A traceflux worker` in a subprocess, consuming a queue of its own. It must see what this process
committed, so these tests run with transaction=True (no test transaction wrapping them) and the worker gets the test
database's name, this test's MEDIA_ROOT (where the bundle was stored and where it writes the report) and signing key.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from celery.signals import after_task_publish

from artifacts.models import artifact_storage
from replays.models import FINAL_STATUSES, STAGES_DRY_RUN, STAGES_EXECUTE, ReplayExecution, ReplayStatus
from replays.services import replay_commands, replay_request_dry_run, replay_request_execute
from replays.tasks import run_replay
from tests.celery_workers import await_ping, celery_on_rabbitmq, worker_env
from tests.test_settings import ROOT, stop_worker
from traceflux.celery import app as celery_app

from .conftest import World, acknowledge_all, approve_execute

TIMEOUT = 60  # seconds for one replay to reach the status waited for; a dry run of the fixture takes well under 1 s

needs_services = pytest.mark.needs("postgresql", "rabbitmq")
# Committed for real: the worker is another process, and rows inside a test transaction are invisible to it.
committed = pytest.mark.django_db(transaction=True)


@dataclass
class Worker:
    queue: str
    node: str
    process: subprocess.Popen
    log_path: Path
    published: list[dict[str, str]] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"

    def wait(self, execution: ReplayExecution, *, until: tuple[str, ...] = FINAL_STATUSES) -> ReplayExecution:
        """Poll the row until its status is one of `until`; fail with the worker's log when it is not in time."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            execution.refresh_from_db()
            if execution.status in until:
                return execution
            assert self.process.poll() is None, (
                f"the worker exited with {self.process.returncode} while replay #{execution.pk} was "
                f"{execution.status}:\n{self.log()}"
            )
            if time.monotonic() > deadline:
                pytest.fail(f"replay #{execution.pk} still {execution.status} after {TIMEOUT} s (waiting for "
                            f"{', '.join(until)}); worker log:\n{self.log()}", pytrace=False)
            time.sleep(0.2)


@pytest.fixture
def worker(prod: World, tmp_path: Path, media_root: Path, signing_key: Path) -> Iterator[Worker]:
    """A solo worker on a private queue, with the test's database, media root and signing key, and this process's
    Celery app publishing run_replay to that queue."""
    run = uuid.uuid4().hex[:12]
    queue = f"traceflux-test-{run}"  # a queue of its own, so concurrent runs never take each other's tasks
    node = f"test-replays-{run}@{socket.gethostname()}"
    env = worker_env(tmp_path, media_root=media_root, signing_key=signing_key)
    log_path = tmp_path / "worker.log"
    published: list[dict[str, str]] = []

    def record(sender: str | None = None, headers: dict[str, Any] | None = None, routing_key: str = "",
               **kwargs: Any) -> None:
        if sender == run_replay.name and headers:
            published.append({"id": headers["id"], "routing_key": routing_key})

    with celery_on_rabbitmq(queue):
        after_task_publish.connect(record, weak=False)
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "traceflux", "worker", "--pool=solo", "--concurrency=1",
                 "-Q", queue, "-n", node, "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "INFO"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        started = Worker(queue=queue, node=node, process=process, log_path=log_path, published=published)
        try:
            await_ping(node, alive=lambda: process.poll() is None, log=started.log)
            yield started
        finally:
            after_task_publish.disconnect(record)
            stop_worker(celery_app, process, node)
            with contextlib.suppress(Exception), celery_app.connection_for_write() as conn:
                conn.default_channel.queue_delete(queue)


def request_dry_run(world: World, user) -> ReplayExecution:
    # No test transaction here (transaction=True): the service's own atomic block commits, its on_commit publishes.
    execution = replay_request_dry_run(incident=world.incident, artifact=world.bundle, user=user)
    assert execution.status == ReplayStatus.QUEUED, execution.checks
    return execution


def assert_taken_by_the_worker(execution: ReplayExecution, worker: Worker) -> None:
    published = [item for item in worker.published if item["id"] == execution.task_id]
    assert published, f"task id {execution.task_id!r} was not published from here: {worker.published}"
    assert published[0]["routing_key"] == worker.queue
    assert f"replays.tasks.run_replay[{execution.task_id}] received" in worker.log(), worker.log()


# --- without a worker --------------------------------------------------------------------------------------------


def test_it_routes_run_replay_by_the_task_routes_setting():
    """The worker tests (and operators) re-route run_replay through task_routes: nothing on the task may override it."""

    def queue_of() -> str:
        return celery_app.amqp.router.route(dict(run_replay._get_exec_options()), run_replay.name)["queue"].name

    assert queue_of() == "replays"
    saved = celery_app.conf["task_routes"]
    celery_app.conf.update(task_routes={run_replay.name: {"queue": "elsewhere"}})
    try:
        assert queue_of() == "elsewhere"
    finally:
        celery_app.conf.update(task_routes=saved)
    assert queue_of() == "replays"


# --- a real worker -----------------------------------------------------------------------------------------------


@needs_services
@committed
def test_it_runs_a_dry_run_on_a_real_worker_from_request_to_succeeded(prod, operator, media_root, worker):
    execution = worker.wait(request_dry_run(prod, operator))

    assert execution.status == ReplayStatus.SUCCEEDED, f"{execution.error}\nworker log:\n{worker.log()}"
    assert {name: execution.stages[name]["status"] for name in STAGES_DRY_RUN} == dict.fromkeys(STAGES_DRY_RUN, "done")
    assert execution.stages["ingest"]["counts"]["signals_in"] == 600
    assert execution.enqueue_count == 1
    assert_taken_by_the_worker(execution, worker)
    assert execution.started_at and execution.finished_at and execution.finished_at >= execution.started_at
    # The worker wrote the report into this test's media root: both processes use one artifact store.
    assert len(execution.report_sha256) == 64
    stored = Path(artifact_storage().path(execution.report_name))
    assert stored.is_file() and stored.is_relative_to(media_root)


@needs_services
@committed
def test_it_executes_on_a_real_worker_and_settles_when_the_agents_acknowledge(
    prod, operator, approver1, approver2, worker
):

    dry_run = worker.wait(request_dry_run(prod, operator))
    assert dry_run.status == ReplayStatus.SUCCEEDED, f"{dry_run.error}\nworker log:\n{worker.log()}"
    approve_execute(dry_run, operator, approver1, approver2)

    execution = replay_request_execute(dry_run=dry_run, user=operator)
    assert execution.status == ReplayStatus.QUEUED, execution.checks
    execution = worker.wait(execution, until=(ReplayStatus.DISPATCHING, *FINAL_STATUSES))
    assert execution.status == ReplayStatus.DISPATCHING, f"{execution.error}\nworker log:\n{worker.log()}"
    assert_taken_by_the_worker(execution, worker)
    commands = list(replay_commands(execution=execution).select_related("agent"))
    assert commands, execution.audit_record

    # The agents' side, in this process: each leases its commands, checks the worker's signature, acknowledges.
    assert acknowledge_all(execution) == len(commands)

    execution.refresh_from_db()
    assert execution.status == ReplayStatus.SUCCEEDED, execution.error
    assert {name: execution.stages[name]["status"] for name in STAGES_EXECUTE} == dict.fromkeys(STAGES_EXECUTE, "done")
    assert {item["status"] for item in execution.summary["dispatch"]} == {"succeeded"}
