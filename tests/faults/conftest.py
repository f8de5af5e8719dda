"""Fault fixtures: the replay world (a prod incident with its bundle, the two demo pipeline versions, a media root and
a signing key of the test's own), reused from tests/replays, and a large bundle for replays that must last long
enough to be interrupted.

Every module here marks its tests `faults` (selected by `make stress`) and puts them in the xdist group "faults": with
`--dist loadgroup` (pyproject's addopts) they run one at a time on one xdist worker, never beside each other.
"""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from replays.engine import write_bundle
from replays.engine.samples import sample_bundle
from tests.net import free_port

# The replay fixtures, imported so they apply here too (media_root and signing_key are autouse).
from tests.replays.conftest import WINDOW_START, World, media_root, prod, signing_key, upload  # noqa: F401

# A few tenths of a second of replay for a worker (parse, correlate, report, evidence), and a little over 1 MiB: the
# worker-killed tests hold each stage (slow_stages.py) rather than rely on the replay being slow.
BIG_SIGNALS = 60_000


@cache
def big_bundle_bytes(*, environment: str, agent: str, ref: str, spec_hash: str) -> bytes:
    """A second, larger capture of the world's incident window: the same story as its 600-signal bundle, 100 times
    the signals. Built once per process (the same arguments give the same bytes)."""
    manifest, lines, baseline = sample_bundle(
        seed=8, ref=ref, environment=environment, agent=agent, window_start=WINDOW_START, minutes=4,
        signals=BIG_SIGNALS, spec_hash=spec_hash,
    )
    buffer = io.BytesIO()
    write_bundle(buffer, manifest=manifest, signals=lines, baseline=baseline, fmt="tar.gz")
    return buffer.getvalue()


def upload_big_bundle(world: World):
    """Upload the large bundle as the incident's source agent; returns the Artifact."""
    content = big_bundle_bytes(environment=world.environment.slug, agent=world.agent.name, ref=world.incident.ref,
                               spec_hash=world.baseline.spec_hash)
    artifact = upload(world.agent, content)
    assert artifact.incident_id == world.incident.pk
    return artifact


@pytest.fixture
def figure(request) -> Callable[[str, object], None]:
    """Record a figure of this fault run on the test item (item.user_properties, as record_property does, without its
    junit-family warning): --junitxml writes them, and `make stress` can print them."""

    def record(name: str, value: object) -> None:
        request.node.user_properties.append((name, value))

    return record


# --- a private Redis ---------------------------------------------------------------------------------------------


@dataclass
class PrivateRedis:
    """A redis-server of the test's own on a free port, without persistence: killing it loses everything, as a
    restarted cache does. The shared Redis (6379) is never touched."""

    port: int
    workdir: Path
    process: subprocess.Popen | None = None
    starts: int = 0

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        assert self.process is None, "already running"
        self.starts += 1
        log = (self.workdir / f"redis-{self.starts}.log").open("w")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 10
        while not self.answers():
            assert self.process.poll() is None, (self.workdir / f"redis-{self.starts}.log").read_text()
            assert time.monotonic() < deadline, f"redis-server on {self.port} did not answer in 10 s"
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown, connections drop, every key is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = PrivateRedis(port=free_port(), workdir=workdir)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.kill()
