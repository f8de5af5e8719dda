"""What the scripts that drive a real server share: gunicorn on loopback, a PostgreSQL database of their own, agents
and their keys, percentiles.

Used by benchmarks/agent_api.py (figures) and benchmarks/stress.py (`make stress`: invariants under load). Imports
only the standard library, so it loads as `harness` next to those scripts and as `benchmarks.harness` from the checkout.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# Run with the server's environment (`python -c`): an environment and agents, each with an every-scope key, through
# the services. Reads {"environment": {...}, "agents": [{...}]} on stdin; prints {agent name: key} as JSON on its
# last line.
AGENTS_SNIPPET = """
import json, sys
import django
django.setup()
from incidents import services
from traceflux.audit import AuditActor
spec = json.load(sys.stdin)
actor = AuditActor(kind="system", id="bench", name="benchmark")
environment = services.environment_create(actor=None, **spec["environment"])
keys = {}
for fields in spec["agents"]:
    agent = services.agent_create(environment=environment, actor=actor, **fields)
    keys[agent.name] = services.agent_key_create(agent=agent, actor=actor)[1]
print(json.dumps(keys))
"""


def say(message: str) -> None:
    print(message, flush=True)


def load_average() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile of `values` (need not be sorted): the smallest value with at least `share` of the
    values at or below it; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


# Variables that would point a benchmark's workers or its own process elsewhere than its own database and broker.
FOREIGN = ("TRACEFLUX_MODE", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND",
           "DJANGO_SETTINGS_MODULE", "MEDIA_ROOT", "FILE_UPLOAD_TEMP_DIR", "TRACEFLUX_VAR_DIR",
           "TRACEFLUX_SIGNING_KEY_FILES")


def setup_django(env: dict[str, str]) -> None:
    """Django in this process, on exactly `env` (none of the caller's FOREIGN variables)."""
    for name in FOREIGN:
        os.environ.pop(name, None)
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "traceflux.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


# --- the database ----------------------------------------------------------------------------------------------------


def migrate(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)


def create_agents(env: dict[str, str], *, environment: dict, agents: list[dict]) -> dict[str, str]:
    """Create the environment (services.environment_create's fields) and the agents (agent_create's), each with an
    every-scope key, in the database `env` points at; return {agent name: key}."""
    done = subprocess.run([sys.executable, "-c", AGENTS_SNIPPET], cwd=ROOT, env=env, check=True, capture_output=True,
                          text=True, input=json.dumps({"environment": environment, "agents": agents}))
    return json.loads(done.stdout.strip().splitlines()[-1])


def unreachable(url: str, default_port: int) -> str | None:
    """None when something accepts a TCP connection at the URL's host and port, else why not."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=3):
            return None
    except OSError as exc:
        return f"{redacted(url)}: {host}:{port} does not answer ({exc.strerror or exc})"


def _maintenance_connect(url: str) -> Any:
    """A connection to the server's `postgres` database, in autocommit (CREATE/DROP DATABASE cannot run in a
    transaction)."""
    import psycopg

    parts = urlsplit(url)
    return psycopg.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 5432,
                           user=parts.username or "postgres", password=parts.password, dbname="postgres",
                           autocommit=True, connect_timeout=5)


def _database_name(url: str) -> str:
    name = urlsplit(url).path.lstrip("/")
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise SystemExit(f"refusing database name {name!r}: use lower-case letters, digits and _")
    return name


def postgres_create(url: str) -> str | None:
    """Create the benchmark's database `url` names, dropping one an interrupted run left; None when done, else why
    PostgreSQL is skipped."""
    name = _database_name(url)
    try:
        with _maintenance_connect(url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        return f"PostgreSQL at {redacted(url)}: {str(exc).strip().splitlines()[0]}"
    return None


def postgres_drop(url: str) -> None:
    with contextlib.suppress(Exception), _maintenance_connect(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{_database_name(url)}" WITH (FORCE)')


def redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


# --- the server ------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry))
    return sorted(found)


class Server:
    """gunicorn traceflux.wsgi with `workers` sync workers on a free loopback port, started from the checkout (so it
    reads gunicorn.conf.py); its own process group, stopped on exit."""

    def __init__(self, env: dict[str, str], log: Path, workers: int = 2) -> None:
        self.port = free_port()
        self.log_path = log
        self.workers = workers
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(BIN / "gunicorn"), "traceflux.wsgi", "-b", f"127.0.0.1:{self.port}", "-w", str(workers),
             "--worker-class", "sync", "--chdir", str(ROOT)],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                conn.close()
                if len(self.worker_pids()) >= self.workers:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not answer within {timeout:g} s:\n{self.log_tail()}")

    def worker_pids(self) -> list[int]:
        return children(self.process.pid)

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def problems(self) -> list[str]:
        """Lines of gunicorn's log that mean something went wrong: tracebacks, worker timeouts, 5xx logged by Django."""
        self._log.flush()
        markers = ("Traceback", "WORKER TIMEOUT", "Internal Server Error", "Worker was sent", "ERROR")
        return [line for line in self.log_path.read_text(errors="replace").splitlines()
                if any(marker in line for marker in markers)]

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        self._log.close()

    def __enter__(self) -> Server:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
