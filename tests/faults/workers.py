"""Real Celery workers on a private RabbitMQ queue that a test may kill with SIGKILL and start again.

Each worker is `celery -A traceflux worker` (prefork, one child, as production runs it) in a process group of its own,
so a kill reaches the main process and its pool child at once, like the OOM killer or a lost host would. The workers
share the test's PostgreSQL database, media root and signing key (see tests/replays/test_worker.py, whose helpers
these reuse); this process's Celery app publishes run_replay to their queue while the fleet is open.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from replays.models import ReplayExecution
from tests.celery_workers import await_ping, celery_on_rabbitmq, worker_env
from tests.test_settings import ROOT
from traceflux.celery import app as celery_app

TIMEOUT = 60  # seconds for a replay to reach the state waited for


@dataclass
class FaultWorker:
    node: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)  # the worker leads its own group (start_new_session)

    def kill(self) -> None:
        """SIGKILL to the main process and its pool child at once: no shutdown, no ack, no goodbye to the broker."""
        self.signal_group(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if not self.alive:
            return
        with contextlib.suppress(Exception):
            celery_app.control.shutdown(destination=[self.node])
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        for signum, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            if self.alive:
                self.signal_group(signum)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=grace)
        self.signal_group(signal.SIGKILL)  # a pool child left behind by its parent


# Workers whose replay stages are held for a moment (slow_stages.py), so that a fault lands mid replay however fast
# the engine is.
SLOW_STAGES = "tests.faults.slow_stages"


@dataclass
class Fleet:
    """The workers of one test, all consuming one private queue."""

    queue: str
    env: dict[str, str]
    log_dir: Path
    app: str = "traceflux"  # the -A module: tests.faults.slow_stages holds each replay stage for a moment
    workers: list[FaultWorker] = field(default_factory=list)

    def start(self) -> FaultWorker:
        """Start one more worker and return once it answers a ping, i.e. consumes the queue."""
        node = f"{self.queue}-{len(self.workers) + 1}@{socket.gethostname()}"
        log_path = self.log_dir / f"worker-{len(self.workers) + 1}.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", self.app, "worker", "--pool=prefork", "--concurrency=1",
                 "-Q", self.queue, "-n", node, "--without-heartbeat", "--without-gossip", "--without-mingle",
                 "-l", "INFO"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        worker = FaultWorker(node=node, process=process, log_path=log_path)
        self.workers.append(worker)
        await_ping(node, alive=lambda: worker.alive, log=worker.log)
        return worker

    def logs(self) -> str:
        return "\n".join(f"--- {worker.node} ---\n{worker.log()}" for worker in self.workers)

    def wait_for(self, execution: ReplayExecution, condition: Callable[[ReplayExecution], bool], *, what: str,
                 poll: float = 0.2, timeout: float = TIMEOUT) -> ReplayExecution:
        """Poll the row until `condition` holds; fail with every worker's log when it does not in time."""
        deadline = time.monotonic() + timeout
        while True:
            execution.refresh_from_db()
            if condition(execution):
                return execution
            if time.monotonic() > deadline:
                pytest.fail(f"replay #{execution.pk} is {execution.status} after {timeout:.0f} s, waiting for {what}; "
                            f"stages {execution.stages}\n{self.logs()}", pytrace=False)
            time.sleep(poll)


@contextlib.contextmanager
def fleet(
    tmp_path: Path, media_root: Path, signing_key: Path, *, app: str = "traceflux", **env: str
) -> Iterator[Fleet]:
    """A private queue, this process publishing run_replay to it, and workers started on demand; every worker is
    stopped (or its group killed) and the queue deleted at the end. `app` is the workers' -A module; `env` adds to
    their environment."""
    queue = f"traceflux-fault-{uuid.uuid4().hex[:12]}"
    env_of_workers = worker_env(tmp_path, media_root=media_root, signing_key=signing_key, **env)
    started = Fleet(queue=queue, env=env_of_workers, log_dir=tmp_path, app=app)
    with celery_on_rabbitmq(queue):
        try:
            yield started
        finally:
            for worker in started.workers:
                worker.stop()
            with contextlib.suppress(Exception), celery_app.connection_for_write() as conn:
                conn.default_channel.queue_delete(queue)
