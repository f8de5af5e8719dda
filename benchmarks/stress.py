#!/usr/bin/env python3
"""TraceFlux stress: rate-limited agents against a production-mode gunicorn, nothing lost; then the fault tests.

Run with `make stress` (STRESS_SECONDS=60 by default; CI runs STRESS_SECONDS=15) or
`.venv/bin/python benchmarks/stress.py [--seconds N] [--agents N] [--no-faults]`. Prints one summary table and exits 1
when an invariant fails or a fault test does not pass. What is driven, checked and printed: benchmarks/README.md.

The load: `--agents` agents (default 20), each with its own key, in this process: per agent one thread uploading small
incident bundles (new ones as the agent "captures" them, re-sends of landed ones, sometimes the same new bundle twice
at once) and one sending heartbeats, both at `--pace` times their key's rate limits. Half of the agents honour
Retry-After (artifacts.client.Client sleeps it out), half ignore it. After `--seconds`, every agent uploads what has
not landed yet, honouring Retry-After, until all has landed or `--drain-seconds` have passed. Then the database, the
stored files and the answers are checked against each other.

The server: `gunicorn traceflux.wsgi` with TRACEFLUX_MODE=production (benchmarks.stress_settings: the project's
settings with a cache key prefix of their own), `--workers` sync workers on loopback, a PostgreSQL database of its own
(traceflux_stress: dropped if a run left it, created, dropped at the end), Redis database 14 under the key prefix
"tfstress" (those keys are deleted before and after), the RabbitMQ broker (nothing is published: uploads and heartbeats
enqueue no task), MEDIA_ROOT and the signing key in a temporary directory. One run at a time per machine: a second one
waits for the first (a lock file), since both would use the same names and share the same CPUs.

The fault tests: `pytest -m faults tests/faults` (when present) with the caller's environment (`make stress` sets
CI=true and the CI services), results read from --junitxml.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import math
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness import (
    ROOT,
    Server,
    create_agents,
    load_average,
    migrate,
    percentile,
    postgres_create,
    postgres_drop,
    say,
    unreachable,
)
from run import Row, print_table

sys.path.insert(0, str(ROOT))

from artifacts.client import Client, ClientError  # after the sys.path insert: it lives in the checkout

DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/traceflux_stress"
DEFAULT_REDIS = "redis://127.0.0.1:6379/14"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
CACHE_KEY_PREFIX = "tfstress"  # benchmarks/stress_settings.py: STRESS_CACHE_KEY_PREFIX
LOCK_FILE = Path(tempfile.gettempdir()) / "traceflux-stress.lock"
FAULTS_DIR = ROOT / "tests" / "faults"

ENVIRONMENT = "stress"
AGENT_VERSION = "1.0.0"
INCIDENT_REFS = 10  # bundles of every agent name one of these, so concurrent uploads race to open the same incident
SIGNALS = (600, 1600)  # per bundle: 12 to 31 KiB of tar.gz, so the CPUs go to the server rather than to gzip
SEED = 20260226

# The caller's variables that may reach the server: everything else it is given explicitly (production_env).
PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")

METHOD = """\
Method:
- agents: threads in this process (one uploading, one sending heartbeats, per agent), each request a new loopback
  connection through artifacts.client.Client; latency is from the request's first byte to its answer read, as the
  agent sees it (queueing in gunicorn's backlog and this process's GIL included). Rates count the answers of the
  load phase over its length; the drain (landing what the limits held back) is reported apart.
- pace: an agent sends at --pace times its key's limit; an agent that ignores Retry-After keeps that pace through its
  429s, one that honours it sleeps each Retry-After out. An upload re-sends a landed bundle with probability
  --duplicate-share (always when nothing new is waiting), and sends a new one twice at once with --race-share.
- checks: every answer (status, Retry-After header, the body's sha256/size/duplicate) as it arrives; after the run,
  the Artifact rows and Heartbeat counts (Django in a subprocess with the server's settings), every stored file read
  back and hashed, MEDIA_ROOT/tmp, `manage.py audit_verify`, gunicorn's log and worker pids."""


# --- options -------------------------------------------------------------------------------------------------------


RATE = re.compile(r"^(\d+)/(\d*)([smhd])$")
PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Rate:
    """A django-ratelimit rate, count/period ("30/m", "5/10s")."""

    text: str
    count: int
    period: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        match = RATE.match(text)
        if not match or int(match[1]) < 1:
            raise argparse.ArgumentTypeError(f"{text!r} is not a rate like 30/m or 5/10s")
        return cls(text, int(match[1]), int(match[2] or 1) * PERIOD_SECONDS[match[3]])

    def interval(self, pace: float) -> float:
        """Seconds between two requests sent at `pace` times this rate."""
        return self.period / self.count / pace


# --- what was asked and answered -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    endpoint: str  # "upload" or "heartbeat"
    phase: str  # "load" or "drain"
    agent: str
    status: int  # 0: no answer (connection refused, reset or timed out)
    seconds: float
    retry_after: str | None  # the Retry-After header, verbatim
    error: str = ""


class Journal:
    """Every request the agents sent, and every problem seen in an answer; shared by all the agents' threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.answers: list[Answer] = []
        self.problems: list[str] = []
        self.first_bad: dict[int, str] = {}

    def add(self, answer: Answer, body: Any = None) -> None:
        with self._lock:
            self.answers.append(answer)
            if answer.status not in (200, 201, 429) and answer.status not in self.first_bad:
                self.first_bad[answer.status] = answer.error or str(body)[:300]

    def problem(self, text: str) -> None:
        with self._lock:
            self.problems.append(text)


CUT_SHORT = -1  # Agent.upload's status when the phase ended while the client waited out a Retry-After


class RunOver(Exception):
    """Raised from a client's sleep when its phase has ended while it waited out a Retry-After."""


class RecordingClient(Client):
    """The agent's own client (artifacts.client.Client), journalling every request it sends.

    Client.attempts keeps each attempt's status and the wait it chose, but not whether the server sent a Retry-After
    header nor how long the request took; _send is the one place that sees each request with its headers.
    """

    def __init__(self, base_url: str, key: str, *, journal: Journal, agent: str, endpoint: str, phase: str,
                 max_retries: int, sleep: Callable[[float], Any]) -> None:
        super().__init__(base_url, key, max_retries=max_retries, sleep=sleep)
        self.journal, self.agent, self.endpoint, self.phase = journal, agent, endpoint, phase

    def _send(self, method: str, endpoint: str, body: Any, authenticate: bool) -> tuple[int, dict[str, str], Any]:
        start = time.perf_counter()
        try:
            status, headers, decoded = super()._send(method, endpoint, body, authenticate)
        except ClientError as exc:
            self.journal.add(Answer(self.endpoint, self.phase, self.agent, 0, time.perf_counter() - start, None,
                                    str(exc)))
            raise
        self.journal.add(Answer(self.endpoint, self.phase, self.agent, status, time.perf_counter() - start,
                                headers.get("retry-after")), decoded)
        return status, headers, decoded


@dataclass
class Bundle:
    """One incident bundle an agent means to upload, and what became of it."""

    agent: str
    path: Path
    sha256: str
    size: int
    release_at: float  # seconds into the load phase when the agent has it to send
    sent: bool = False
    created: int = 0  # 201 answers
    duplicates: int = 0  # 200 answers
    landed_in: str = ""  # the phase of its first 2xx; "" while it has not landed

    @property
    def landed(self) -> bool:
        return bool(self.landed_in)


# --- the bundles ---------------------------------------------------------------------------------------------------


def build_bundle(job: tuple[str, str, str, int, int, str]) -> tuple[str, str, int]:
    """Write one small bundle for `agent` naming incident `ref`; (path, sha256, size). Runs in a worker process."""
    from replays.engine import write_bundle
    from replays.engine.samples import DEFAULT_START, sample_bundle, sample_spec

    path, agent, ref, seed, signals, pop = job
    manifest, lines, baseline = sample_bundle(
        seed=seed, ref=ref, title=f"stress: edge-gw 5xx burst ({ref})", environment=ENVIRONMENT, agent=agent,
        window_start=DEFAULT_START + timedelta(minutes=seed % 50), minutes=4, signals=signals, pop=pop,
    )
    digest = write_bundle(path, manifest=manifest, signals=lines, baseline=baseline, spec=sample_spec())
    return path, digest, Path(path).stat().st_size


def build_bundles(directory: Path, agents: list[dict], *, per_agent: int, seconds: float) -> dict[str, list[Bundle]]:
    """`per_agent` bundles for each agent, released evenly over the first 90 % of the load phase."""
    rng = random.Random(SEED)
    jobs = []
    for index, agent in enumerate(agents):
        for n in range(per_agent):
            seed = SEED + index * 10_000 + n
            ref = f"INC-STRESS-{(index + n) % INCIDENT_REFS:03d}"
            jobs.append((str(directory / f"{agent['name']}-{n:03d}.tar.gz"), agent["name"], ref, seed,
                         rng.randint(*SIGNALS), agent["pop"]))
    bundles: dict[str, list[Bundle]] = {agent["name"]: [] for agent in agents}
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for job, (path, digest, size) in zip(jobs, pool.map(build_bundle, jobs, chunksize=8), strict=True):
            owned = bundles[job[1]]
            owned.append(Bundle(job[1], Path(path), digest, size, release_at=len(owned) * 0.9 * seconds / per_agent))
    return bundles


# --- the agents ----------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What every agent thread shares: the server, the limits, the journal, and the end of the current phase."""

    base_url: str
    journal: Journal
    uploads: Rate
    heartbeats: Rate
    pace: float
    duplicate_share: float
    race_share: float
    start: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def nap(self, seconds: float) -> None:
        """A polite agent's sleep through a Retry-After; cut short when the phase ends."""
        if self.stop.wait(seconds):
            raise RunOver

    def pause_until(self, moment: float) -> bool:
        """Wait until perf_counter() reaches `moment`; False when the phase ended meanwhile."""
        delay = moment - time.perf_counter()
        return not self.stop.wait(delay) if delay > 0 else not self.stop.is_set()


class Agent:
    """One agent with its own key: an upload loop and a heartbeat loop under load, then the drain."""

    def __init__(self, name: str, key: str, *, polite: bool, bundles: list[Bundle], run: Run, seed: int) -> None:
        self.name, self.key, self.polite, self.bundles, self.run = name, key, polite, bundles, run
        self.rng = random.Random(seed)
        self._lock = threading.Lock()  # racing uploads of one bundle land from two threads
        self.races = 0

    def client(self, endpoint: str, *, phase: str = "load", polite: bool | None = None,
               sleep: Callable[[float], Any] | None = None) -> RecordingClient:
        honour = self.polite if polite is None else polite
        # max_retries=0: a 429 comes straight back to an agent that ignores Retry-After; a polite one retries
        # (Client sleeps each Retry-After out) until the phase ends.
        return RecordingClient(self.run.base_url, self.key, journal=self.run.journal, agent=self.name,
                               endpoint=endpoint, phase=phase, max_retries=10**6 if honour else 0,
                               sleep=sleep or self.run.nap)

    # --- the load phase

    def heartbeats(self) -> None:
        interval = self.run.heartbeats.interval(self.run.pace)
        client = self.client("heartbeat")
        beat = 0
        moment = self.run.start
        while self.run.pause_until(moment):
            beat += 1
            try:
                status, body = client.heartbeat(status="ok", version=AGENT_VERSION, details={"beat": beat})
            except (ClientError, RunOver):
                status, body = 0, None
            if status not in (0, 201, 429):
                self.run.journal.problem(f"{self.name} heartbeat: {status} {str(body)[:200]}")
            # On schedule, but never in a burst to catch up after slow answers.
            moment = max(moment + interval, time.perf_counter())

    def uploads(self) -> None:
        interval = self.run.uploads.interval(self.run.pace)
        moment = self.run.start
        while self.run.pause_until(moment):
            bundle = self.pick(time.perf_counter() - self.run.start)
            if bundle is not None:
                self.send(bundle)
            moment = max(moment + interval, time.perf_counter())

    def pick(self, elapsed: float) -> Bundle | None:
        """The oldest bundle not landed yet, or (with --duplicate-share, or when none waits) a landed one again."""
        released = [bundle for bundle in self.bundles if bundle.release_at <= elapsed]
        waiting = [bundle for bundle in released if not bundle.landed]
        landed = [bundle for bundle in released if bundle.landed]
        if waiting and (not landed or self.rng.random() >= self.run.duplicate_share):
            return waiting[0]
        return self.rng.choice(landed) if landed else None

    def send(self, bundle: Bundle) -> None:
        if not bundle.sent and self.rng.random() < self.run.race_share:
            # An agent that timed out and retried while its first upload was still being handled: the same bytes twice
            # at once, each on its own connection. One row, one 201; the other is a duplicate (or a 429).
            self.races += 1
            twin = threading.Thread(target=guarded(self.upload, self.run.journal), args=(bundle, self.client("upload")),
                                    name=f"{self.name}-twin")
            twin.start()
            self.upload(bundle, self.client("upload"))
            twin.join()
        else:
            self.upload(bundle, self.client("upload"))

    def upload(self, bundle: Bundle, client: RecordingClient) -> int:
        """Send the bundle once (a polite client: until it is not rate limited); the final status, 0 when there was
        no answer (journalled by the client), CUT_SHORT when the phase ended during a Retry-After."""
        bundle.sent = True
        try:
            status, body = client.upload(bundle.path, kind="incident_bundle")
        except ClientError:
            return 0
        except RunOver:
            return CUT_SHORT
        if status in (200, 201):
            self.landed(bundle, status, body, client.phase)
        elif status != 429:
            self.run.journal.problem(f"{self.name} upload of {bundle.path.name}: {status} {str(body)[:200]}")
        return status

    def landed(self, bundle: Bundle, status: int, body: Any, phase: str) -> None:
        body = body if isinstance(body, dict) else {}
        expected = {"sha256": bundle.sha256, "size": bundle.size, "duplicate": status == 200}
        wrong = {name: body.get(name) for name, value in expected.items() if body.get(name) != value}
        if wrong:
            self.run.journal.problem(f"{self.name} upload of {bundle.path.name}: {status} with {wrong}, expected "
                                     f"{ {name: expected[name] for name in wrong} }")
        with self._lock:
            if status == 201:
                bundle.created += 1
            else:
                bundle.duplicates += 1
            bundle.landed_in = bundle.landed_in or phase

    # --- after the load: land what is left, honouring Retry-After

    def drain(self, deadline: float) -> None:
        def sleep(seconds: float) -> None:
            if time.monotonic() + seconds > deadline:
                raise RunOver
            time.sleep(seconds)

        client = self.client("upload", phase="drain", polite=True, sleep=sleep)
        for bundle in self.bundles:
            while not bundle.landed and time.monotonic() < deadline:
                status = self.upload(bundle, client)
                if status == CUT_SHORT:
                    return  # the next Retry-After ends past the deadline: what is left is reported as not landed
                if status not in (0, 200, 201):
                    break  # refused: a problem already, and retrying would not change the answer
                if status == 0:
                    time.sleep(1)  # no answer at all (already a failure): retry once the server may be back


def guarded(work: Callable[..., None], journal: Journal) -> Callable[..., None]:
    """A thread's target whose crash is a problem of the run, not a traceback that the checks would never see."""
    def target(*args: Any) -> None:
        try:
            work(*args)
        except Exception as exc:
            journal.problem(f"{threading.current_thread().name}: {exc!r}")

    return target


def run_load(agents: list[Agent], run: Run, seconds: float) -> float:
    """The load phase: every agent's two threads for `seconds`; returns how long it lasted, last answer included."""
    threads = [threading.Thread(target=guarded(work, run.journal), name=f"{agent.name}-{work.__name__}", daemon=True)
               for agent in agents for work in (agent.uploads, agent.heartbeats)]
    run.start = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    run.stop.set()
    for thread in threads:
        thread.join()
    return time.perf_counter() - run.start


def run_drain(agents: list[Agent], seconds: float) -> float:
    deadline = time.monotonic() + seconds
    start = time.perf_counter()
    threads = [threading.Thread(target=guarded(agent.drain, agent.run.journal), args=(deadline,),
                                name=f"{agent.name}-drain", daemon=True) for agent in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


# --- the server's side ---------------------------------------------------------------------------------------------


def production_env(work: Path, *, database_url: str, redis_url: str, broker_url: str, uploads: Rate,
                   heartbeats: Rate) -> dict[str, str]:
    """TRACEFLUX_MODE=production with everything it requires, pointed at this run's own database, key prefix,
    temporary directory and signing key; nothing else of the caller's environment."""
    from traceflux.signing import write_private_key

    signing_key = work / "secrets" / "signing.pem"
    write_private_key(signing_key)
    (work / "prometheus").mkdir()
    # STATIC_ROOT, where collectstatic would write: the agent API serves no static file, but WhiteNoise warns in every
    # worker when the directory is missing.
    (work / "var" / "static").mkdir(parents=True)
    env = {name: os.environ[name] for name in PASSED_THROUGH if name in os.environ}
    env.update({
        "TRACEFLUX_MODE": "production",
        "DJANGO_SETTINGS_MODULE": "benchmarks.stress_settings",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": broker_url,
        "TRACEFLUX_SIGNING_KEY_FILES": str(signing_key),
        "TRACEFLUX_VAR_DIR": str(work / "var"),
        "MEDIA_ROOT": str(work / "media"),
        "TRACEFLUX_AUDIT_ANCHOR_FILE": str(work / "audit" / "anchors.jsonl"),
        # Several workers: one registry on disk (docs/operations.md, Metrics); gunicorn.conf.py cleans up after them.
        "PROMETHEUS_MULTIPROC_DIR": str(work / "prometheus"),
        # Loopback, without the TLS proxy that would set X-Forwarded-Proto: a redirect to https would answer 301.
        "SECURE_SSL_REDIRECT": "false",
        "TRACEFLUX_RATE_UPLOADS": uploads.text,
        "TRACEFLUX_RATE_HEARTBEATS": heartbeats.text,
        "LOG_LEVEL": "WARNING",
    })
    return env


# Run with the server's environment: what the database holds after the run, as JSON on the last line.
INSPECT_SNIPPET = """
import json, sys
import django
django.setup()
from django.db.models import Count
from artifacts.models import Artifact
from incidents.models import Heartbeat
slug = sys.argv[1]
rows = Artifact.objects.filter(environment__slug=slug).values_list(
    "agent__name", "sha256", "size", "file", "duplicate_count", "kind")
repeats = Artifact.objects.values("environment_id", "sha256").annotate(n=Count("id")).filter(n__gt=1)
beats = Heartbeat.objects.filter(agent__environment__slug=slug).values("agent__name").annotate(n=Count("id"))
print(json.dumps({
    "artifacts": [dict(zip(["agent", "sha256", "size", "file", "duplicate_count", "kind"], row)) for row in rows],
    "repeats": [[r["environment_id"], r["sha256"], r["n"]] for r in repeats],
    "heartbeats": {b["agent__name"]: b["n"] for b in beats},
}))
"""


def inspect_database(env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", INSPECT_SNIPPET, ENVIRONMENT], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def audit_verify(env: dict[str, str]) -> tuple[bool, str]:
    done = subprocess.run([sys.executable, "manage.py", "audit_verify"], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    text = (done.stdout.strip() or done.stderr.strip()).splitlines()
    return done.returncode == 0, text[-1] if text else f"exit {done.returncode}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def redis_forget(url: str) -> int:
    """Delete this run's keys (the stress prefix) from the Redis database; how many there were."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{CACHE_KEY_PREFIX}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])
        return len(keys)
    finally:
        client.close()


@contextlib.contextmanager
def machine_lock(timeout: float) -> Iterator[None]:
    """One stress run at a time on this machine: they would share the database name, the key prefix and the CPUs."""
    with LOCK_FILE.open("a") as handle:
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"another stress run still holds {LOCK_FILE} after {timeout:g} s") from None
                if not announced:
                    say(f"waiting for another stress run on this machine to finish ({LOCK_FILE})")
                    announced = True
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- the checks ----------------------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    notes: str
    details: list[str] = field(default_factory=list)


def check_answers(journal: Journal, period: float) -> list[Check]:
    statuses = Counter(answer.status for answer in journal.answers)
    unexpected = {status: n for status, n in statuses.items() if status not in (200, 201, 429)}
    limited = [answer for answer in journal.answers if answer.status == 429]
    bad_waits = [answer for answer in limited
                 if not (answer.retry_after or "").isdigit() or not 1 <= int(answer.retry_after or 0) <= period]
    waits = [int(answer.retry_after) for answer in limited if (answer.retry_after or "").isdigit()]
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    no_answer = statuses.get(0, 0)
    details = [f"first {status}: {text}" for status, text in sorted(journal.first_bad.items())]
    details += [f"429 with Retry-After {answer.retry_after!r} ({answer.endpoint}, {answer.agent})"
                for answer in bad_waits[:5]]
    return [
        Check("every answer 2xx, or 429 + Retry-After", not unexpected and not bad_waits,
              f"{sum(statuses.values()):,} answers; {len(limited):,} 429s"
              + (f", each with Retry-After {min(waits)}-{max(waits)} s" if waits and not bad_waits else "")
              + (f"; UNEXPECTED {dict(sorted(unexpected.items()))}" if unexpected else "")
              + (f"; {len(bad_waits)} 429s without a valid Retry-After" if bad_waits else ""), details),
        Check("no 5xx, no connection errors", server_errors == 0 and no_answer == 0,
              f"5xx: {server_errors}, no answer: {no_answer}"),
    ]


def check_storage(bundles: list[Bundle], inspected: dict[str, Any], media_root: Path) -> list[Check]:
    by_sha = {bundle.sha256: bundle for bundle in bundles}
    rows = {row["sha256"]: row for row in inspected["artifacts"]}
    landed = [bundle for bundle in bundles if bundle.landed]
    problems: list[str] = []
    if inspected["repeats"]:
        problems.append(f"(environment, sha256) stored more than once: {inspected['repeats'][:5]}")
    if len(rows) != len(inspected["artifacts"]):
        problems.append("the same sha256 twice in the stress environment")
    for bundle in landed:
        row = rows.get(bundle.sha256)
        if row is None:
            problems.append(f"{bundle.path.name}: answered 2xx but no row")
            continue
        if bundle.created != 1:
            problems.append(f"{bundle.path.name}: {bundle.created} answers 201 (one expected)")
        if row["agent"] != bundle.agent or row["size"] != bundle.size or row["kind"] != "incident_bundle":
            problems.append(f"{bundle.path.name}: row {row} does not match the upload")
        if row["duplicate_count"] != bundle.duplicates:
            problems.append(f"{bundle.path.name}: duplicate_count {row['duplicate_count']}, but {bundle.duplicates} "
                            "answers 200")
    problems += [f"row {sha[:12]} for bytes no agent had answered 2xx" for sha in rows
                 if sha not in by_sha or not by_sha[sha].landed]
    stored = Check("stored exactly once", not problems,
                   f"{len(rows):,} rows, one per (environment, sha256); one 201 per bundle; duplicate_count = its "
                   "200 answers", problems[:10])

    unreadable: list[str] = []
    for sha, row in rows.items():
        path = media_root / row["file"]
        if not path.is_file():
            unreadable.append(f"{row['file']}: missing")
        elif sha256_of(path) != sha or path.stat().st_size != row["size"]:
            unreadable.append(f"{row['file']}: the bytes do not hash to the row's sha256")
    leftovers = [str(p.relative_to(media_root)) for p in (media_root / "tmp").rglob("*") if p.is_file()] \
        if (media_root / "tmp").exists() else []
    read_back = Check("read back, hash matches", not unreadable and not leftovers,
                      f"{len(rows):,} stored files re-read and hashed; {len(leftovers)} temporary files left",
                      (unreadable + [f"temporary file left: {name}" for name in leftovers])[:10])

    lost = [bundle for bundle in bundles if not bundle.landed]
    nothing_lost = Check("nothing lost", not lost, f"{len(bundles) - len(lost):,} of {len(bundles):,} bundles landed",
                         [f"{bundle.path.name} never landed" for bundle in lost[:10]])
    return [stored, read_back, nothing_lost]


def check_heartbeats(journal: Journal, inspected: dict[str, Any]) -> Check:
    answered = Counter(answer.agent for answer in journal.answers
                       if answer.endpoint == "heartbeat" and answer.status == 201)
    stored = Counter(inspected["heartbeats"])
    wrong = [f"{agent}: {stored.get(agent, 0)} rows, {answered.get(agent, 0)} answers 201"
             for agent in sorted(set(answered) | set(stored)) if answered.get(agent, 0) != stored.get(agent, 0)]
    return Check("heartbeats stored once each", not wrong,
                 f"{sum(stored.values()):,} rows = {sum(answered.values()):,} answers 201", wrong[:10])


# --- the figures ---------------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}" if seconds >= 0.1 else f"{seconds * 1000:.1f}"


def latency(answers: list[Answer]) -> str:
    times = [answer.seconds for answer in answers if answer.status]
    if not times:
        return "no answers"
    return (f"p50 {ms(percentile(times, 0.50))} / p95 {ms(percentile(times, 0.95))} / "
            f"p99 {ms(percentile(times, 0.99))} ms")


def shares(answers: list[Answer]) -> str:
    statuses = Counter(answer.status for answer in answers)
    if not statuses:
        return "none"
    total = sum(statuses.values())
    return ", ".join(f"{status or 'no answer'} {n / total:.1%}" for status, n in sorted(statuses.items()))


def share_429(answers: list[Answer]) -> str:
    return f"{sum(a.status == 429 for a in answers) / len(answers):.0%}" if answers else "n/a"


def load_rows(journal: Journal, seconds: float, polite: set[str]) -> list[Row]:
    load = [answer for answer in journal.answers if answer.phase == "load"]
    rows: list[Row] = [("all requests", f"{len(load) / seconds:,.0f} req/s",
                        f"{len(load):,} in {seconds:.1f} s: {shares(load)}; {latency(load)}")]
    for endpoint, label in (("upload", "uploads"), ("heartbeat", "heartbeats")):
        mine = [answer for answer in load if answer.endpoint == endpoint]
        rows.append((f"  {label}", f"{len(mine) / seconds:,.0f} req/s",
                     f"{len(mine):,}: {shares(mine)}; {latency(mine)}"))
        for name, subset in (("answered 2xx", [a for a in mine if 200 <= a.status < 300]),
                             ("answered 429", [a for a in mine if a.status == 429])):
            rows.append((f"    {name}", f"{len(subset) / seconds:,.1f} /s", latency(subset)))
        honouring = [a for a in mine if a.agent in polite]
        ignoring = [a for a in mine if a.agent not in polite]
        rows.append(("    429 share", f"{share_429(honouring)} / {share_429(ignoring)}",
                     "of the agents that honour Retry-After / that ignore it"))
    return rows


def check_over_limits(journal: Journal) -> Check:
    """Without 429s on both endpoints the run proved nothing about rate limiting (a limit not applied, say)."""
    limited = Counter(answer.endpoint for answer in journal.answers if answer.status == 429)
    missing = [endpoint for endpoint in ("upload", "heartbeat") if not limited[endpoint]]
    return Check("agents went over their limits", not missing,
                 f"429s: uploads {limited['upload']:,}, heartbeats {limited['heartbeat']:,}"
                 + (f"; none for {', '.join(missing)}" if missing else ""))


# --- the fault tests -----------------------------------------------------------------------------------------------


@dataclass
class Fault:
    module: str  # tests.faults.test_redis_restarted
    name: str  # test_it_..., with its parameters
    outcome: str  # passed, failed, error, skipped
    seconds: float
    message: str = ""
    figures: list[tuple[str, str]] = field(default_factory=list)  # what the test recorded (user_properties)

    def row(self) -> Row:
        """The module and parameters as the measurement (short, so the table stays narrow), the sentence in notes."""
        base, _, params = self.name.partition("[")
        label = f"fault: {self.module.rsplit('.', 1)[-1].removeprefix('test_')}" + (f"[{params}" if params else "")
        outcome = self.outcome if self.outcome in ("passed", "skipped") else self.outcome.upper()
        sentence = base.removeprefix("test_").removeprefix("it_").replace("_", " ")
        return label, outcome, f"{self.seconds:.1f} s: {sentence}" + (f"; {self.message}" if self.message else "")


def run_faults(work: Path, timeout: float) -> tuple[list[Fault], str | None]:
    """`pytest -m faults tests/faults` in the caller's environment; (each test's result, a problem with the run)."""
    if not FAULTS_DIR.is_dir():
        return [], None
    report = work / "faults.xml"
    command = [sys.executable, "-m", "pytest", "-m", "faults", "-p", "no:cacheprovider", f"--junitxml={report}",
               str(FAULTS_DIR.relative_to(ROOT))]
    say(f"\n$ {' '.join(command[2:])}")
    try:
        done = subprocess.run(command, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return read_junit(report), f"pytest did not finish within {timeout:g} s"
    faults = read_junit(report)
    if done.returncode == 5:
        return faults, None  # nothing marked `faults` collected: reported as such, not a failure
    if done.returncode != 0 and not any(fault.outcome in ("failed", "error") for fault in faults):
        return faults, f"pytest exited with {done.returncode}"
    return faults, None


def read_junit(report: Path) -> list[Fault]:
    if not report.exists():
        return []
    faults = []
    for case in ET.parse(report).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = " ".join((found.get("message") or "").split())[:160]
                break
        figures = [(prop.get("name", ""), prop.get("value", "")) for prop in case.iter("property")]
        faults.append(Fault(case.get("classname", ""), case.get("name", ""), outcome, float(case.get("time") or 0),
                            message, figures))
    return faults


# --- main ----------------------------------------------------------------------------------------------------------


def stress(args: argparse.Namespace, work: Path) -> tuple[list[Row], bool]:
    """Set up, drive, drain and check; the summary's rows and whether every invariant held."""
    rows: list[Row] = []
    for url, port in ((args.postgres, 5432), (args.redis, 6379), (args.broker, 5672)):
        problem = unreachable(url, port)
        if problem:
            rows.append(("services", "FAILS", problem))
            return rows, False
    database = urlsplit(args.postgres).path.lstrip("/")
    problem = postgres_create(args.postgres)
    if problem:
        rows.append(("services", "FAILS", f"createdb {database}: {problem.splitlines()[-1]}"))
        return rows, False
    try:
        redis_forget(args.redis)
        return drive(args, work, rows, database)
    finally:
        postgres_drop(args.postgres)
        with contextlib.suppress(Exception):
            redis_forget(args.redis)


def drive(args: argparse.Namespace, work: Path, rows: list[Row], database: str) -> tuple[list[Row], bool]:
    env = production_env(work, database_url=args.postgres, redis_url=args.redis, broker_url=args.broker,
                         uploads=args.rate_uploads, heartbeats=args.rate_heartbeats)
    started = time.perf_counter()
    migrate(env)
    specs = [{"name": f"stress-agent-{n:02d}", "hostname": f"stress-{n:02d}.invalid", "version": AGENT_VERSION,
              "region": "us-east-1", "pop": f"POP-{n:02d}", "services": ["edge-gw"]} for n in range(1, args.agents + 1)]
    keys = create_agents(env, environment={"slug": ENVIRONMENT, "name": "Stress"}, agents=specs)
    per_agent = args.bundles or max(1, math.ceil(args.rate_uploads.count * args.seconds / args.rate_uploads.period))
    (work / "bundles").mkdir()
    bundles = build_bundles(work / "bundles", specs, per_agent=per_agent, seconds=args.seconds)
    everything = [bundle for owned in bundles.values() for bundle in owned]
    sizes = [bundle.size for bundle in everything]
    say(f"database {database} migrated, {args.agents} agents with keys, {len(everything):,} bundles of "
        f"{min(sizes) / 1024:.0f}-{max(sizes) / 1024:.0f} KiB built in {time.perf_counter() - started:.1f} s")

    journal = Journal()
    log = work / "gunicorn.log"
    with Server(env, log, workers=args.workers) as server:
        run = Run(f"http://127.0.0.1:{server.port}", journal, args.rate_uploads, args.rate_heartbeats, args.pace,
                  args.duplicate_share, args.race_share)
        agents = [Agent(spec["name"], keys[spec["name"]], polite=n % 2 == 0, bundles=bundles[spec["name"]], run=run,
                        seed=SEED + n) for n, spec in enumerate(specs)]
        workers = server.worker_pids()
        say(f"load: {args.agents} agents for {args.seconds:g} s against gunicorn on port {server.port} "
            f"({args.workers} workers), load average {load_average()}")
        seconds = run_load(agents, run, args.seconds)
        held = sum(not bundle.landed for bundle in everything)
        say(f"load done in {seconds:.1f} s: {len(journal.answers):,} answers; {held} bundles not landed yet, "
            "landing them honouring Retry-After")
        drained = run_drain(agents, args.drain_seconds)
        after = server.worker_pids()
        problems = server.problems()
    say(f"drain done in {drained:.1f} s; checking")

    inspected = inspect_database(env)
    chain_ok, chain = audit_verify(env)
    checks = [check_over_limits(journal)]
    checks += check_answers(journal, max(args.rate_uploads.period, args.rate_heartbeats.period))
    checks += check_storage(everything, inspected, Path(env["MEDIA_ROOT"]))
    checks.append(check_heartbeats(journal, inspected))
    checks.append(Check("answers as expected", not journal.problems,
                        "201/200 bodies name the bundle's sha256 and size, duplicate as the status says",
                        journal.problems[:10]))
    checks.append(Check("audit chain intact", chain_ok, chain))
    checks.append(Check("gunicorn: no error, no worker lost", not problems and workers == after,
                        f"workers {workers}" + ("" if workers == after else f" became {after}"), problems[:20]))

    polite = sum(agent.polite for agent in agents)
    rows.append((f"load: {args.agents} agents x {args.seconds:g} s", f"{seconds:.1f} s",
                 f"{args.pace:g}x the limits (uploads {args.rate_uploads.text}, heartbeats {args.rate_heartbeats.text} "
                 f"per key); {polite} honour Retry-After, {args.agents - polite} ignore it; gunicorn {args.workers} "
                 "sync workers, TRACEFLUX_MODE=production"))
    rows += load_rows(journal, seconds, {agent.name for agent in agents if agent.polite})
    created = sum(bundle.created for bundle in everything)
    duplicates = sum(bundle.duplicates for bundle in everything)
    in_load = sum(bundle.landed_in == "load" for bundle in everything)
    in_drain = sum(bundle.landed_in == "drain" for bundle in everything)
    drain = [answer for answer in journal.answers if answer.phase == "drain"]
    rows.append(("bundles meant", f"{len(everything):,}",
                 f"{per_agent} per agent, {min(sizes) / 1024:.0f}-{max(sizes) / 1024:.0f} KiB; "
                 f"{sum(agent.races for agent in agents)} sent twice at once"))
    rows.append(("  accepted: new / duplicates", f"{created:,} / {duplicates:,}", "answers 201 / 200"))
    rows.append(("  landed under load", f"{in_load:,}", ""))
    rows.append(("  landed after it", f"{in_drain:,}",
                 f"honouring Retry-After, in {drained:.1f} s: {len(drain):,} requests: {shares(drain)}"))
    for check in checks:
        rows.append((check.name, "holds" if check.ok else "FAILS", check.notes))
        rows += [("", "", f"  {line}") for line in check.details]
    return rows, all(check.ok for check in checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="length of the load phase (default 60)")
    parser.add_argument("--agents", type=int, default=20, help="concurrent agents, each with its own key (default 20)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers (default 4)")
    parser.add_argument("--pace", type=float, default=4.0,
                        help="how many times its limits each agent sends at (default 4)")
    # The deployed averages (30/m, 120/m) over 10-second windows: with minute windows, a 15-second run at 4x would end
    # before any agent had used up its first window, and the drain would wait up to a minute for the next.
    parser.add_argument("--rate-uploads", type=Rate.parse, default=Rate.parse("5/10s"),
                        help="TRACEFLUX_RATE_UPLOADS of the server (default 5/10s: the deployed 30/m in 10 s windows)")
    parser.add_argument("--rate-heartbeats", type=Rate.parse, default=Rate.parse("20/10s"),
                        help="TRACEFLUX_RATE_HEARTBEATS of the server (default 20/10s: the deployed 120/m in 10 s "
                        "windows)")
    parser.add_argument("--bundles", type=int, default=0,
                        help="new bundles per agent (default: what its upload limit admits in --seconds)")
    parser.add_argument("--duplicate-share", type=float, default=0.25,
                        help="share of uploads that re-send a landed bundle while new ones wait (default 0.25)")
    parser.add_argument("--race-share", type=float, default=0.05,
                        help="share of new bundles sent twice at once (default 0.05)")
    parser.add_argument("--drain-seconds", type=float, default=0,
                        help="how long to keep landing the bundles left after the load (default: two upload "
                        "periods plus 30 s)")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES,
                        help=f"the run's own database, created and dropped here (default {DEFAULT_POSTGRES})")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help=f"cache and rate limits (default {DEFAULT_REDIS})")
    parser.add_argument("--broker", default=DEFAULT_BROKER, help=f"Celery broker (default {DEFAULT_BROKER})")
    parser.add_argument("--no-faults", action="store_true", help="skip the fault tests")
    parser.add_argument("--faults-timeout", type=float, default=1800, help="seconds the fault tests may take")
    args = parser.parse_args()
    args.drain_seconds = args.drain_seconds or 2 * args.rate_uploads.period + 30
    if args.agents < 1 or args.seconds <= 0 or args.pace <= 0 or args.workers < 1:
        parser.error("--agents, --seconds, --pace and --workers must be positive")

    # A CI timeout or Ctrl-C ends with SIGTERM or SIGINT: unwind, so the server stops and the database is dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    lock = machine_lock(timeout=args.faults_timeout + 600)
    with lock, tempfile.TemporaryDirectory(prefix="traceflux-stress-") as tmp:
        work = Path(tmp)
        say(f"TraceFlux stress: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
            f"{load_average()}, in {work}")
        rows, held = stress(args, work)
        faults: list[Fault] = []
        faults_problem = None
        if not args.no_faults:
            faults, faults_problem = run_faults(work, args.faults_timeout)

    if args.no_faults:
        rows.append(("fault tests", "skipped", "--no-faults"))
    elif not FAULTS_DIR.is_dir():
        rows.append(("fault tests", "none", f"{FAULTS_DIR.relative_to(ROOT)}/ does not exist yet"))
    elif not faults and not faults_problem:
        rows.append(("fault tests", "none", f"nothing marked `faults` in {FAULTS_DIR.relative_to(ROOT)}/"))
    for fault in faults:
        rows.append(fault.row())
        rows += [("", "", f"  {name}: {value}") for name, value in fault.figures]
    if faults_problem:
        rows.append(("fault tests", "FAILS", faults_problem))
    faults_ok = not faults_problem and all(fault.outcome in ("passed", "skipped") for fault in faults)

    say("")
    print_table(rows)
    say(f"{time.perf_counter() - started:.0f} s in all; load average at the end {load_average()}.")
    say(METHOD)
    if not (held and faults_ok):
        say("\nSTRESS FAILED: " + ", ".join(
            part for part, ok in (("an invariant of the load", held), ("a fault test", faults_ok)) if not ok))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
