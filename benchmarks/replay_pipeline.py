#!/usr/bin/env python3
"""TraceFlux replay-pipeline benchmark: N dry runs of the demo incident's window through real Celery workers.

Run with `make bench` (after replay_engine.py) or `.venv/bin/python benchmarks/replay_pipeline.py [--count N]
[--workers N] [--postgres URL] [--broker URL]`. Prints a plain table; nothing here asserts on speed. What each figure
means is in benchmarks/README.md.

It needs PostgreSQL and RabbitMQ, and prints one `skipped: …` line (exit 0) when either does not answer. The database
is its own (traceflux_bench_replays by default): dropped if an earlier run left it, created, migrated, seeded with
`manage.py seed_demo`, and dropped at the end. The workers (`celery -A traceflux worker --concurrency=1`, one process
each) consume a private queue, so they never take tasks of anything else on the same broker, and the queue is deleted
at the end. MEDIA_ROOT and TRACEFLUX_VAR_DIR are in a temporary directory, removed on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from harness import (
    FOREIGN,
    load_average,
    percentile,
    postgres_create,
    postgres_drop,
    redacted,
    say,
    setup_django,
    unreachable,
)
from run import Row, print_table

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/traceflux_bench_replays"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"

METHOD = """\
Method:
- the world: `manage.py seed_demo` on a fresh PostgreSQL database (its own demo dry run runs eagerly, in the seeding
  process, and is not counted).
- requests: replays.services.replay_request_dry_run, one transaction each, as the demo's operator, in this process
  (CELERY_BROKER_URL set, so the task is published to RabbitMQ when the request commits); the same inputs as the demo's
  dry run: the incident's bundle under the tightened candidate, compared with the baseline.
- latency: finished_at - created_at of each run: created_at by the requesting process, finished_at by the worker,
  both timezone.now() on this machine; queue wait: started_at - created_at (a worker took it); run: finished_at -
  started_at (validation, the four stages, the report stored, the status moved and audited).
- throughput: runs finished / (last finished_at - first created_at). The requests are made as fast as the service
  allows, so the queue fills at once and the workers are never idle until it is empty.
- this process, the workers and PostgreSQL share the machine's CPUs: while the requests are made, the workers run
  slower than alone."""


# --- services ----------------------------------------------------------------------------------------------------


def broker_problem(url: str) -> str | None:
    """None when RabbitMQ accepts a connection with these credentials, else why not."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        return f"{redacted(url)}: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return None


# --- workers -----------------------------------------------------------------------------------------------------


@dataclass
class Worker:
    node: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_workers(count: int, *, queue: str, env: dict[str, str], work: Path, run: str) -> list[Worker]:
    workers = []
    for number in range(1, count + 1):
        node = f"bench-{run}-{number}@{socket.gethostname()}"
        log_path = work / f"worker-{number}.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                # Prefork with one child, as deployed (docs/operations.md), rather than solo: the figures include the
                # hand-over from the consumer process to its child.
                [sys.executable, "-m", "celery", "-A", "traceflux", "worker", "--concurrency=1", "-Q", queue,
                 "-n", node, "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "INFO"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: the pool child is stopped with it
            )
        workers.append(Worker(node, process, log_path))
    return workers


def wait_ready(app: Any, workers: list[Worker], timeout: float = 60) -> None:
    """Until every worker answers a ping: only then does it consume its queue."""
    waiting = {worker.node: worker for worker in workers}
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for worker in waiting.values():
            if worker.process.poll() is not None:
                raise RuntimeError(f"worker {worker.node} exited with {worker.process.returncode}:\n{worker.log()}")
        for reply in app.control.ping(destination=list(waiting), timeout=1.0):
            for node in reply:
                waiting.pop(node, None)
    if waiting:
        raise RuntimeError(f"no answer from {', '.join(waiting)} within {timeout:g} s")


def stop_workers(app: Any, workers: list[Worker]) -> None:
    """A remote shutdown ends an idle worker at once (warm: it finishes a task it holds); the process group is
    terminated, then killed, for any that is still there."""
    alive = [worker for worker in workers if worker.process.poll() is None]
    if alive:
        with contextlib.suppress(Exception):
            app.control.shutdown(destination=[worker.node for worker in alive])
    for worker in workers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.process.wait(timeout=10)
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            if worker.process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=wait)


def log_problems(worker: Worker) -> list[str]:
    markers = ("Traceback", "ERROR", "CRITICAL", "WorkerLostError", "Hard time limit")
    return [line for line in worker.log().splitlines() if any(marker in line for marker in markers)]


# --- measuring ---------------------------------------------------------------------------------------------------


def seconds(delta: timedelta) -> float:
    return delta.total_seconds()


def request_dry_runs(count: int) -> list[int]:
    from django.contrib.auth import get_user_model

    from artifacts.models import Artifact, ArtifactKind
    from incidents.demo import BASELINE_LABEL, CANDIDATE_LABEL, INCIDENT_REF
    from incidents.models import Incident, PipelineVersion
    from replays.models import ReplayStatus
    from replays.services import replay_request_dry_run

    incident = Incident.objects.get(ref=INCIDENT_REF)
    bundle = Artifact.objects.get(incident=incident, kind=ArtifactKind.INCIDENT_BUNDLE)
    operator = get_user_model().objects.get(username="operator")
    candidate = PipelineVersion.objects.get(label=CANDIDATE_LABEL)
    baseline = PipelineVersion.objects.get(label=BASELINE_LABEL)
    ids = []
    for _ in range(count):
        # Each request is its own transaction (the service is atomic, and nothing wraps it here): on commit, the task
        # is published to RabbitMQ and a worker may take it at once.
        execution = replay_request_dry_run(incident=incident, artifact=bundle, user=operator,
                                           pipeline_version=candidate, compare_version=baseline)
        if execution.status != ReplayStatus.QUEUED:
            raise RuntimeError(f"replay #{execution.pk} was {execution.status}, not queued: {execution.checks}")
        ids.append(execution.pk)
    return ids


def wait_final(ids: list[int], timeout: float) -> bool:
    from replays.models import FINAL_STATUSES, ReplayExecution

    deadline = time.monotonic() + timeout
    reported = time.monotonic()
    while time.monotonic() < deadline:
        open_ = ReplayExecution.objects.filter(pk__in=ids).exclude(status__in=FINAL_STATUSES).count()
        if open_ == 0:
            return True
        if time.monotonic() - reported > 10:
            say(f"  {len(ids) - open_} of {len(ids)} final")
            reported = time.monotonic()
        time.sleep(0.1)
    return False


def measure(rows: list[Row], ids: list[int], workers: list[Worker], *, request_s: float, wall_s: float) -> list[str]:
    from replays.models import FINAL_STATUSES, ReplayExecution, ReplayStatus

    runs = list(ReplayExecution.objects.filter(pk__in=ids).order_by("pk"))
    statuses = Counter(run.status for run in runs)
    final = [run for run in runs if run.status in FINAL_STATUSES and run.finished_at]
    problems = []
    count = len(ids)
    rows.append(("requests, in this process", f"{count / request_s:,.1f} req/s",
                 f"{count} x replay_request_dry_run (row, audit event, publish on commit) in {request_s:.2f} s"))
    if final:
        span = seconds(max(run.finished_at for run in final) - min(run.created_at for run in final))
        rows.append(("throughput", f"{len(final) / span:,.2f} replays/s",
                     f"{len(final)} final in {span:.2f} s, first created_at to last finished_at; {len(workers)} "
                     f"workers, concurrency 1 each; {wall_s:.2f} s wall from the first request to all final"))
        latency = [seconds(run.finished_at - run.created_at) for run in final]
        rows.append(("latency p50, queued to done", f"{percentile(latency, 0.5):.2f} s",
                     f"finished_at - created_at; min {min(latency):.2f} s, max {max(latency):.2f} s"))
        rows.append(("latency p95, queued to done", f"{percentile(latency, 0.95):.2f} s",
                     "mostly the wait in the queue: the requests outrun the workers"))
        started = [run for run in final if run.started_at]
        if started:
            waits = [seconds(run.started_at - run.created_at) for run in started]
            runs_s = [seconds(run.finished_at - run.started_at) for run in started]
            rows.append(("  queue wait p50", f"{percentile(waits, 0.5):.2f} s",
                         f"started_at - created_at; p95 {percentile(waits, 0.95):.2f} s"))
            signals = ((started[0].stages or {}).get("ingest") or {}).get("counts", {}).get("signals_in")
            rows.append(("  run on a worker p50", f"{percentile(runs_s, 0.5):.2f} s",
                         f"finished_at - started_at: validate, 4 stages, report; p95 "
                         f"{percentile(runs_s, 0.95):.2f} s, max {max(runs_s):.2f} s; "
                         f"{f'{signals:,}' if signals else '?'} signals a run"))
    by_status = ", ".join(f"{status}: {statuses[status]}" for status in sorted(statuses))
    rows.append(("final status", f"{statuses[ReplayStatus.SUCCEEDED]}/{count} ok", by_status))
    task_ids = {run.task_id for run in runs if run.task_id}
    taken = []
    for worker in workers:
        received = set(re.findall(r"replays\.tasks\.run_replay\[([0-9a-f-]+)\] received", worker.log()))
        taken.append(f"{worker.node.split('@')[0]}: {len(received & task_ids)}")
    rows.append(("  taken per worker", str(len(task_ids)), "; ".join(taken) + " (task ids in each worker's log)"))
    for run in runs:
        if run.status != ReplayStatus.SUCCEEDED:
            problems.append(f"replay #{run.pk} {run.status}: {run.error or run.checks}")
    return problems


# --- main --------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50, help="dry runs to request (default 50)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes, concurrency 1 each (default 2)")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES,
                        help=f"database URL (default {DEFAULT_POSTGRES}); the database is dropped, created and "
                        "dropped again by the benchmark")
    parser.add_argument("--broker", default=DEFAULT_BROKER, help=f"RabbitMQ URL (default {DEFAULT_BROKER})")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for all runs to be final")
    args = parser.parse_args()

    for what, url, port in (("PostgreSQL", args.postgres, 5432), ("RabbitMQ", args.broker, 5672)):
        problem = unreachable(url, port)
        if problem:
            say(f"skipped: replay-pipeline benchmark needs {what}: {problem}")
            return 0
    problem = broker_problem(args.broker)
    if problem:
        say(f"skipped: replay-pipeline benchmark needs RabbitMQ: {problem}")
        return 0
    problem = postgres_create(args.postgres)
    if problem:
        say(f"skipped: replay-pipeline benchmark needs PostgreSQL: {problem}")
        return 0

    run = uuid.uuid4().hex[:8]
    queue = f"traceflux-bench-{run}"
    base = {name: value for name, value in os.environ.items() if name not in FOREIGN}
    try:
        with tempfile.TemporaryDirectory(prefix="traceflux-pipeline-bench-") as tmp:
            work = Path(tmp)
            env = {**base, "TRACEFLUX_VAR_DIR": str(work / "var"), "MEDIA_ROOT": str(work / "media"),
                   "DATABASE_URL": args.postgres, "DEBUG": "false"}
            say(f"TraceFlux replay-pipeline benchmark: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load "
                f"average {load_average()}; {args.count} dry runs, {args.workers} workers; database "
                f"{redacted(args.postgres)}, broker {redacted(args.broker)}")
            quiet = {**env, "LOG_LEVEL": "WARNING"}
            subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=quiet,
                           check=True)
            # Without a broker here, so the demo's own dry run runs eagerly in the seeding process.
            seeded = subprocess.run([sys.executable, "manage.py", "seed_demo"], cwd=ROOT, env=quiet, check=True,
                                    capture_output=True, text=True)
            # The console email backend prints the approval request's email there too: show the summary line only.
            say(next((line for line in seeded.stdout.splitlines() if line.startswith("Demo")), "demo seeded"))

            worker_env = {**env, "CELERY_BROKER_URL": args.broker}
            setup_django({**worker_env, "LOG_LEVEL": "WARNING"})
            from django.db import connections

            from traceflux.celery import app

            # Route run_replay to the private queue (the settings' route says `replays`).
            app.conf.update(task_routes={"replays.tasks.run_replay": {"queue": queue}})
            workers = start_workers(args.workers, queue=queue, env=worker_env, work=work, run=run)
            try:
                wait_ready(app, workers)
                say(f"{len(workers)} workers ready on queue {queue}; requesting {args.count} dry runs")
                start = time.monotonic()
                ids = request_dry_runs(args.count)
                request_s = time.monotonic() - start
                done = wait_final(ids, args.timeout)
                wall_s = time.monotonic() - start
                rows: list[Row] = []
                problems = measure(rows, ids, workers, request_s=request_s, wall_s=wall_s)
                if not done:
                    problems.insert(0, f"not all runs were final after {args.timeout:g} s")
            finally:
                stop_workers(app, workers)
                with contextlib.suppress(Exception), app.connection_for_write() as conn:
                    conn.default_channel.queue_delete(queue)
                connections.close_all()
            for worker in workers:
                lines = log_problems(worker)
                if lines:
                    problems.append(f"{worker.node} log:")
                    problems += [f"  {line}" for line in lines[:20]]
            print_table(rows)
            say(f"Load average at the end: {load_average()} (other work on the machine makes every figure noisier).")
            say(METHOD)
            if problems:
                say("\nPROBLEMS:")
                for line in problems:
                    say(line)
                return 1
    finally:
        postgres_drop(args.postgres)
    return 0


if __name__ == "__main__":
    sys.exit(main())
