#!/usr/bin/env python3
"""TraceFlux agent-API benchmarks through a real gunicorn on loopback: a 64 MiB bundle upload, heartbeats per second.

Run with `make bench` (after benchmarks/run.py) or `.venv/bin/python benchmarks/agent_api.py [--quick]`. Prints a plain
table; nothing here asserts on speed. What each figure means, and the goals, are in benchmarks/README.md.

Everything lives in one temporary directory (TRACEFLUX_VAR_DIR: SQLite, MEDIA_ROOT, the bundle, gunicorn's log), removed
on exit; the servers are stopped on every path. PostgreSQL is used only for a second heartbeat run, in a database of
its own (traceflux_bench, created and dropped here), and only when it answers.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import hashlib
import http.client
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from harness import (
    Server,
    create_agents,
    load_average,
    migrate,
    percentile,
    postgres_create,
    postgres_drop,
    redacted,
    say,
)
from run import Row, print_table

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024

# Variables that would point the server or the in-process Django elsewhere than the throw-away database.
FOREIGN = ("TRACEFLUX_MODE", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND",
           "DJANGO_SETTINGS_MODULE", "MEDIA_ROOT", "FILE_UPLOAD_TEMP_DIR", "TRACEFLUX_VAR_DIR")
BENCH_ENV = {
    # High enough that the server measures work, not 429s (the embedded cache is per worker process anyway).
    "TRACEFLUX_RATE_UPLOADS": "100000/m",
    "TRACEFLUX_RATE_HEARTBEATS": "100000000/m",
    "DEBUG": "false",  # as deployed: no query log, no debug pages
    "LOG_LEVEL": "WARNING",
}
DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/traceflux_bench"

UPLOAD_PATH = "/api/v1/agent/artifacts/"
HEARTBEAT_PATH = "/api/v1/agent/heartbeats/"
NOOP_PATH = "/__bench__/noop/"  # benchmarks/bench_urls.py
ENVIRONMENT, AGENT, AGENT_VERSION = "bench", "bench-agent", "1.0.0"
SEED = 20260226
BUNDLE_REF = "INC-2026-0226-001"


METHOD = """\
Method:
- bundle: replays.engine.write_bundle over seeded signals shaped like the sample generator's, with random hex in
  their ids and labels so that they compress about 4:1 (the sample's 14:1 would unpack past the 512 MiB limit).
- receive+hash+store, in process: the upload view's own receiving code, Django's MultiPartParser with
  ArtifactUploadHandler (SHA-256 while writing the temporary file), then artifacts.storage.place, on the multipart
  body streamed from disk. The goal compares it with sha256sum on the same file.
- receive+hash via gunicorn: the same bytes posted as kind=snapshot; the worker reads and hashes the whole body,
  then refuses it (415) by its first bytes, without validating it.
- upload through gunicorn: http.client streams the body from disk in 1 MiB chunks; 'minus in-process validation'
  subtracts validate_bundle's time from it, leaving the receiving, the rows and the audit event (rough: it also
  holds any difference in validation speed between the worker and this process).
- worker memory: VmHWM in /proc/<pid>/status of each gunicorn worker, reset to VmRSS just before the upload.
- load: closed loops of http.client threads in this process, which shares the CPUs with the server; gunicorn's
  sync worker closes the connection after every answer, so every request is a new loopback connection."""


def mib(size: float) -> str:
    return f"{size / MiB:.1f} MiB"


# --- the bundle ----------------------------------------------------------------------------------------------------


def bench_signals(
    template: list[dict], count: int, *, window_start: datetime, length_ms: int, rng: random.Random
) -> Iterator[dict]:
    """`count` signals shaped like the sample generator's (cycled), with unique ids, ts spread evenly over the window,
    and random hex in the ids and labels (trace and span ids, a payload digest): such a bundle compresses about 4:1
    where the sample's compresses 14:1, so 64 MiB of it unpacks well under the engine's 512 MiB."""
    from replays.engine.formats import format_timestamp

    step = length_ms / count
    for n in range(count):
        base = template[n % len(template)]
        labels = dict(base["labels"])
        labels["trace_id"] = f"{rng.getrandbits(128):032x}"
        labels["span_id"] = f"{rng.getrandbits(64):016x}"
        labels["digest"] = f"{rng.getrandbits(256):064x}"
        yield {
            "id": f"sig-{n + 1:08d}-{rng.getrandbits(32):08x}",
            "ts": format_timestamp(window_start + timedelta(milliseconds=int(n * step))),
            "source": base["source"],
            "name": base["name"],
            "severity": base["severity"],
            "value": base["value"],
            "labels": labels,
        }


def write_bench_bundle(target, count: int, *, ref: str = BUNDLE_REF, seed: int = SEED) -> str:
    """A valid bundle of `count` signals over a 10-minute window (the longest accepted), with spec.json."""
    from replays.engine import write_bundle
    from replays.engine.samples import DEFAULT_START, sample_bundle, sample_spec

    manifest, template, _ = sample_bundle(seed=seed, ref=ref, environment=ENVIRONMENT, agent=AGENT, minutes=10,
                                          signals=2000, window_start=DEFAULT_START)
    signals = bench_signals(template, count, window_start=DEFAULT_START, length_ms=10 * 60_000,
                            rng=random.Random(seed))
    return write_bundle(target, manifest=manifest, signals=signals, spec=sample_spec())


def build_bundle(path: Path, *, target: int, limit: int) -> int:
    """Write a bundle of about `target` bytes (never over `limit`) to `path`; return its signal count. Sized from a
    20,000-signal calibration: the signals are statistically alike, so bytes per signal hardly vary."""
    calibration = 20_000
    probe = io.BytesIO()
    write_bench_bundle(probe, calibration)
    per_signal = probe.tell() / calibration
    count = int(target / per_signal)
    for _ in range(3):
        write_bench_bundle(path, count)
        size = path.stat().st_size
        if size <= limit:
            return count
        count = int(count * target / size)
    raise RuntimeError(f"could not size a bundle under {limit} bytes")


@dataclass
class Multipart:
    """A multipart/form-data body (`kind`, then `file`) whose file part streams from disk."""

    path: Path
    kind: str = "incident_bundle"
    boundary: str = field(default_factory=lambda: f"traceflux-bench-{random.Random(SEED).getrandbits(96):024x}")

    def __post_init__(self) -> None:
        b = self.boundary.encode()
        self.head = (
            b"--" + b + b'\r\nContent-Disposition: form-data; name="kind"\r\n\r\n' + self.kind.encode() + b"\r\n"
            b"--" + b + b'\r\nContent-Disposition: form-data; name="file"; filename="' + self.path.name.encode() +
            b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        self.tail = b"\r\n--" + b + b"--\r\n"
        self.size = self.path.stat().st_size
        self.length = len(self.head) + self.size + len(self.tail)
        self.content_type = f"multipart/form-data; boundary={self.boundary}"

    def chunks(self, chunk: int = MiB) -> Iterator[bytes]:
        yield self.head
        with open(self.path, "rb") as handle:
            while data := handle.read(chunk):
                yield data
        yield self.tail


class ChunkReader(io.RawIOBase):
    """A read()-able stream over Multipart.chunks(), for Django's MultiPartParser in-process."""

    def __init__(self, body: Multipart) -> None:
        self._chunks = body.chunks()
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            piece = next(self._chunks, None)
            if piece is None:
                break
            self._buffer += piece
        if size < 0:
            size = len(self._buffer)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


# --- process memory ------------------------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the resident high-water mark) of a process, in bytes."""
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) * 1024
    return values


def reset_peak(pid: int) -> bool:
    """Reset a process's VmHWM to its current RSS (Linux: write 5 to clear_refs). False when not permitted."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def id_set_bytes(count: int, id_length: int) -> int:
    """What the SignalReader's id set (replays.engine.idset.IdSet: 64-bit digests) holds for `count` distinct ids."""
    from replays.engine.idset import IdSet

    width = id_length - 4
    ids = IdSet()
    for n in range(count):
        ids.add(f"sig-{n:0{width}x}")
    return ids.nbytes


# --- the server ----------------------------------------------------------------------------------------------------


def server_env(base: dict[str, str], *, var_dir: Path, database_url: str | None = None) -> dict[str, str]:
    env = dict(base)
    env.update(BENCH_ENV)
    env["TRACEFLUX_VAR_DIR"] = str(var_dir)
    env["MEDIA_ROOT"] = str(var_dir / "media")
    env["DJANGO_SETTINGS_MODULE"] = "benchmarks.bench_settings"
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def prepare_database(env: dict[str, str]) -> str:
    """Migrate, create the environment, agent and key; return the key."""
    migrate(env)
    keys = create_agents(env, environment={"slug": ENVIRONMENT, "name": "Benchmark"},
                         agents=[{"name": AGENT, "hostname": "bench.invalid", "version": AGENT_VERSION,
                                  "region": "us-east-1", "pop": "POP-12", "services": ["edge-gw"]}])
    return keys[AGENT]


# --- clients -------------------------------------------------------------------------------------------------------


@dataclass
class Upload:
    status: int
    body: dict
    sent_s: float  # the whole body handed to the kernel
    total_s: float  # the answer read


def receive_via_gunicorn(port: int, key: str, bundle: Path, rounds: int = 3) -> tuple[float, int]:
    """Best-of-`rounds` seconds to POST the bundle's bytes as kind=snapshot: the view receives and hashes the whole
    file through the handler, then refuses it (415) from its first bytes, without validating it. (status, seconds)"""
    best, status = float("inf"), 0
    for _ in range(rounds):
        answer = upload(port, key, Multipart(bundle, kind="snapshot"))
        status = answer.status
        best = min(best, answer.total_s)
    return best, status


def upload(port: int, key: str, body: Multipart) -> Upload:
    """POST the multipart body, streamed from disk in 1 MiB chunks, and read the answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    start = time.perf_counter()
    conn.putrequest("POST", UPLOAD_PATH)
    conn.putheader("Authorization", f"Bearer {key}")
    conn.putheader("Content-Type", body.content_type)
    conn.putheader("Content-Length", str(body.length))
    conn.endheaders()
    try:
        for chunk in body.chunks():
            conn.send(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered early (a refusal): read what it said
    sent = time.perf_counter() - start
    try:
        response = conn.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException) as exc:  # the worker died or was killed (a timeout): no answer
        conn.close()
        return Upload(0, {"error": f"no answer: {exc!r}"}, sent, time.perf_counter() - start)
    total = time.perf_counter() - start
    conn.close()
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = {"raw": raw[:500].decode(errors="replace")}
    return Upload(response.status, parsed, sent, total)


@dataclass
class Load:
    """One closed-loop run: `clients` threads, each sending its next request when the last one was answered."""

    requests: int = 0
    seconds: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    client_cpu_s: float = 0.0
    first_bad: dict[int, str] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def classes(self) -> str:
        by_class = Counter(f"{status // 100}xx" for status in self.statuses.elements())
        parts = [f"{name}: {by_class.get(name, 0):,}" for name in ("2xx", "4xx", "5xx")]
        if self.errors:
            parts.append("connection errors: " + ", ".join(f"{k} {v}" for k, v in self.errors.items()))
        return ", ".join(parts)

    def percentile(self, share: float) -> float:
        return percentile(self.latencies, share)


def drive(port: int, path: str, body: bytes, headers: dict[str, str], *, clients: int, seconds: float,
          per_client: int) -> Load:
    """Closed-loop load from `clients` threads with http.client (which reconnects whenever the server closes, as
    gunicorn's sync worker does after every answer), for `seconds` or `per_client` requests each, whichever first."""
    result = Load()
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        statuses: Counter = Counter()
        errors: Counter = Counter()
        latencies: list[float] = []
        bad: dict[int, str] = {}
        barrier.wait()
        for _ in range(per_client):
            if time.perf_counter() >= stop_at[0]:
                break
            start = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException) as exc:
                errors[type(exc).__name__] += 1
                conn.close()
                continue
            latencies.append(time.perf_counter() - start)
            statuses[response.status] += 1
            if response.status >= 400 and response.status not in bad:
                bad[response.status] = answer[:300].decode(errors="replace")
        conn.close()
        with lock:
            result.statuses.update(statuses)
            result.errors.update(errors)
            result.latencies.extend(latencies)
            for status, text in bad.items():
                result.first_bad.setdefault(status, text)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    cpu = time.process_time()
    start = time.perf_counter()
    stop_at[0] = start + seconds
    barrier.wait()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - start
    result.client_cpu_s = time.process_time() - cpu
    result.requests = sum(result.statuses.values())
    return result


# --- the measurements ----------------------------------------------------------------------------------------------


def timed_sha256sum(path: Path) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(["sha256sum", str(path)], check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - start)
    return best


def timed_hashlib(path: Path) -> tuple[float, str]:
    """Best-of-3 seconds for hashlib.sha256 over the file in 1 MiB reads (the handler's hash, without the rest)."""
    best, digest = float("inf"), ""
    for _ in range(3):
        start = time.perf_counter()
        hasher = hashlib.sha256()
        with open(path, "rb") as handle:
            while data := handle.read(MiB):
                hasher.update(data)
        digest = hasher.hexdigest()
        best = min(best, time.perf_counter() - start)
    return best, digest


def receive_in_process(body: Multipart, *, expected_sha256: str, rounds: int = 3) -> float:
    """Best-of-`rounds` seconds for what the upload view does with the body before validation, and the placing after
    it: Django's MultiPartParser with ArtifactUploadHandler (hash while writing the temporary file), then
    artifacts.storage.place (the move to the content-addressed name)."""
    from django.http.multipartparser import MultiPartParser

    from artifacts import storage
    from artifacts.models import artifact_storage
    from artifacts.uploads import ArtifactUploadHandler, max_upload_bytes, upload_temp_dir

    best = float("inf")
    for _ in range(rounds):
        handler = ArtifactUploadHandler(None, max_bytes=max_upload_bytes(), temp_dir=upload_temp_dir())
        meta = {"CONTENT_TYPE": body.content_type, "CONTENT_LENGTH": str(body.length)}
        start = time.perf_counter()
        MultiPartParser(meta, ChunkReader(body), [handler]).parse()
        received = handler.received
        assert received is not None, "the handler received no file"
        name, moved = storage.place(temp_path=received.path, sha256=received.sha256)
        seconds = time.perf_counter() - start
        assert received.sha256 == expected_sha256 and received.size == body.size and moved
        artifact_storage().delete(name)
        handler.discard()
        best = min(best, seconds)
    return best


@dataclass
class Validation:
    seconds: float
    uncompressed: int
    compressed: int
    signals: int
    peak_growth: int | None


def validate_in_process(path: Path) -> Validation:
    from artifacts.services import engine_limits
    from replays.engine import validate_bundle

    pid = os.getpid()
    gc.collect()
    # Hand freed heap back to the system, so that reusing it does not hide the validation's own growth.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    can_reset = reset_peak(pid)
    before = proc_status(pid)
    start = time.perf_counter()
    info = validate_bundle(path, limits=engine_limits())
    seconds = time.perf_counter() - start
    after = proc_status(pid)
    growth = after["VmHWM"] - before["VmRSS"] if can_reset else None
    return Validation(seconds, info.uncompressed_bytes, info.compressed_bytes, info.signal_count, growth)


def warm_up(port: int, key: str, work: Path) -> None:
    """Small distinct bundles and heartbeats from two threads at once, so both workers have loaded every module and
    written once before their memory is read."""
    def one(index: int) -> None:
        path = work / f"warm-{index}.tar.gz"
        write_bench_bundle(path, 300, ref=f"INC-2026-0226-{900 + index}", seed=SEED + index)
        answer = upload(port, key, Multipart(path))
        if answer.status != 201:
            say(f"  warm-up upload {index}: {answer.status} {answer.body}")
        path.unlink()

    def many(start: int) -> None:
        for index in range(start, start + 3):
            one(index)

    threads = [threading.Thread(target=many, args=(n * 3,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    heartbeat_load(port, key, clients=4, seconds=2, per_client=10)


def settle() -> None:
    """Write dirty pages out before a load run, so SQLite's per-commit fsync does not pay for the upload's writes."""
    os.sync()


def heartbeat_body() -> bytes:
    return json.dumps({"status": "ok", "version": AGENT_VERSION, "details": {"queue_depth": 12}}).encode()


def heartbeat_load(port: int, key: str, *, clients: int, seconds: float, per_client: int = 1_000_000) -> Load:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return drive(port, HEARTBEAT_PATH, heartbeat_body(), headers, clients=clients, seconds=seconds,
                 per_client=per_client)


def noop_load(port: int, key: str, *, clients: int, seconds: float, per_client: int = 1_000_000) -> Load:
    # The same body and headers as a heartbeat; the no-op ignores the Authorization header.
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return drive(port, NOOP_PATH, heartbeat_body(), headers, clients=clients, seconds=seconds, per_client=per_client)


def load_rows(rows: list[Row], label: str, heartbeats: Load, noop: Load, *, clients: int) -> list[str]:
    """Append the rows for one database; return the lines that say something went wrong."""
    def notes(load: Load) -> str:
        return (f"{load.classes()}; p50 {load.percentile(0.5) * 1000:.1f} ms, p99 {load.percentile(0.99) * 1000:.1f} "
                f"ms; client CPU {load.client_cpu_s / load.seconds:.0%} of a core")

    rows.append((f"heartbeats, {label}", f"{heartbeats.rate:,.0f} req/s",
                 f"{clients} clients, {heartbeats.seconds:.1f} s: {notes(heartbeats)}"))
    rows.append(("  no-op DRF view, same server", f"{noop.rate:,.0f} req/s", notes(noop)))
    rows.append(("  ratio heartbeat/no-op", f"{heartbeats.rate / noop.rate:.2f}x" if noop.rate else "n/a",
                 "the share of the framework floor a heartbeat reaches"))
    trouble = []
    for name, load, expected in (("heartbeats", heartbeats, 201), ("no-op", noop, 200)):
        unexpected = {status: n for status, n in load.statuses.items() if status != expected}
        if unexpected or load.errors:
            trouble.append(f"{label} {name}: expected only {expected}, got {dict(load.statuses)}"
                           f"{'; connection errors ' + str(dict(load.errors)) if load.errors else ''}")
            for status, text in sorted(load.first_bad.items()):
                trouble.append(f"  first {status} body: {text}")
    return trouble


# --- main ----------------------------------------------------------------------------------------------------------


def setup_django(var_dir: Path) -> None:
    """Django in this process, for the in-process measurements: a settings module with its own MEDIA_ROOT."""
    for name in FOREIGN:
        os.environ.pop(name, None)
    os.environ["TRACEFLUX_VAR_DIR"] = str(var_dir)
    os.environ["MEDIA_ROOT"] = str(var_dir / "media")
    os.environ["DJANGO_SETTINGS_MODULE"] = "traceflux.settings"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="an 8 MiB bundle and 3-second load runs, for a smoke run")
    parser.add_argument("--seconds", type=float, help="length of each load run (default 10, --quick 3)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent load clients (default 8)")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES,
                        help=f"database URL for the PostgreSQL heartbeat run (default {DEFAULT_POSTGRES}); the "
                        "database is created and dropped by the benchmark")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL heartbeat run")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 10.0)

    base_env = {name: value for name, value in os.environ.items() if name not in FOREIGN}
    with tempfile.TemporaryDirectory(prefix="traceflux-agent-bench-") as tmp:
        work = Path(tmp)
        setup_django(work / "inproc")
        import django
        import gunicorn
        from django.conf import settings

        limit = settings.TRACEFLUX_MAX_UPLOAD_BYTES
        target = 8 * MiB if args.quick else int(limit * 0.985)
        say(f"TraceFlux agent-API benchmarks: Python {sys.version.split()[0]}, Django {django.get_version()}, "
            f"gunicorn {gunicorn.__version__} (2 sync workers on loopback), {os.cpu_count()} CPUs, load average "
            f"{load_average()}, in {work}")
        rows: list[Row] = []
        trouble: list[str] = []

        # The bundle, and what hashing and validating it costs in this process.
        bundle = work / "bundle.tar.gz"
        start = time.perf_counter()
        count = build_bundle(bundle, target=target, limit=limit)
        size = bundle.stat().st_size
        say(f"built a {mib(size)} bundle of {count:,} signals in {time.perf_counter() - start:.1f} s "
            f"(upload limit {mib(limit)})")
        hashlib_s, digest = timed_hashlib(bundle)
        body = Multipart(bundle)
        assert body.boundary.encode() not in bundle.read_bytes(), "the multipart boundary occurs in the bundle"

        validation = validate_in_process(bundle)
        ratio = validation.uncompressed / size
        rows.append(("bundle", mib(size), f"{count:,} signals, {mib(validation.uncompressed)} uncompressed "
                     f"({ratio:.1f}:1), 10 min window, tar.gz"))
        sha_s = timed_sha256sum(bundle)
        sha_rate = size / sha_s
        rows.append(("sha256sum, same file", f"{sha_rate / MiB:,.0f} MiB/s", f"best of 3, {sha_s * 1000:.0f} ms"))
        rows.append(("  hashlib.sha256, same file", f"{size / hashlib_s / MiB:,.0f} MiB/s",
                     f"best of 3, {hashlib_s * 1000:.0f} ms: the hash the upload handler uses (OpenSSL)"))
        receive_s = receive_in_process(body, expected_sha256=digest)
        receive_rate = size / receive_s
        goal = "meets" if receive_rate >= 0.5 * sha_rate else "MISSES"
        rows.append(("receive+hash+store, in process", f"{receive_rate / MiB:,.0f} MiB/s",
                     f"MultiPartParser + ArtifactUploadHandler + storage.place, best of 3, {receive_s * 1000:.0f} ms"))
        rows.append(("  ratio to sha256sum", f"{receive_rate / sha_rate:.2f}x", f"goal >= 0.5x: {goal}"))
        rows.append(("validate_bundle, in process", f"{validation.uncompressed / validation.seconds / MiB:,.0f} MiB/s",
                     f"uncompressed; {validation.signals / validation.seconds:,.0f} signals/s, "
                     f"{validation.seconds:.2f} s"))
        id_length = len(f"sig-{1:08d}-{0:08x}")
        ids_bytes = id_set_bytes(validation.signals, id_length)
        if validation.peak_growth is not None:
            rows.append(("  peak RSS growth, in process", mib(validation.peak_growth),
                         "VmHWM after validate_bundle minus VmRSS before"))
        rows.append(("  of which the set of seen ids", mib(ids_bytes),
                     f"{validation.signals:,} ids of {id_length} chars: IdSet digest table "
                     f"({ids_bytes / validation.signals:.0f} bytes an id)"))

        # The server on SQLite: the upload, its duplicate, then heartbeats against the no-op.
        env = server_env(base_env, var_dir=work / "sqlite")
        key = prepare_database(env)
        with Server(env, work / "gunicorn-sqlite.log") as server:
            warm_up(server.port, key, work)
            workers = server.worker_pids()
            can_reset = all(reset_peak(pid) for pid in workers)
            before = {pid: proc_status(pid) for pid in workers}
            first = upload(server.port, key, body)
            after_first = {pid: proc_status(pid) for pid in server.worker_pids()}
            second = upload(server.port, key, body)
            after_second = {pid: proc_status(pid) for pid in server.worker_pids()}

            refused_s, refused_status = receive_via_gunicorn(server.port, key, bundle)
            refused_rate = size / refused_s
            rows.append(("receive+hash via gunicorn", f"{refused_rate / MiB:,.0f} MiB/s",
                         f"the same bytes as kind=snapshot: read and hashed whole, then {refused_status} (best of 3, "
                         f"{refused_s * 1000:.0f} ms); {refused_rate / sha_rate:.2f}x sha256sum"))
            if refused_status != 415:
                trouble.append(f"kind=snapshot upload of a bundle: expected 415, got {refused_status}")

            ok = first.status == 201 and first.body.get("sha256") == digest and first.body.get("size") == size
            rows.append(("upload through gunicorn", f"{first.total_s:.2f} s",
                         f"{first.status} {'as expected' if ok else 'UNEXPECTED'}; body sent after "
                         f"{first.sent_s:.2f} s, answer {first.total_s - first.sent_s:.2f} s later"))
            if not ok:
                trouble.append(f"first upload: {first.status} {first.body}")
            network_s = first.total_s - validation.seconds
            if network_s > 0:
                network_rate = size / network_s
                rows.append(("  minus in-process validation", f"{network_rate / MiB:,.0f} MiB/s",
                             f"size / (upload - validate_bundle = {network_s:.2f} s), {network_rate / sha_rate:.2f}x "
                             "sha256sum: receive, hash, store, rows; rough"))
            duplicate = second.status == 200 and second.body.get("duplicate") is True
            rows.append(("duplicate upload, same bytes", f"{second.total_s:.2f} s",
                         f"{second.status}, duplicate: {second.body.get('duplicate')} "
                         f"{'as expected' if duplicate else 'UNEXPECTED'}"))
            if not duplicate:
                trouble.append(f"duplicate upload: {second.status} {second.body}")

            growth = {}
            for pid, status in before.items():
                if pid in after_second:
                    baseline = status["VmRSS"] if can_reset else status["VmHWM"]
                    growth[pid] = (after_first[pid]["VmHWM"] - baseline, after_second[pid]["VmHWM"] - baseline,
                                   after_second[pid]["VmRSS"] - status["VmRSS"])
            if set(before) != set(after_second):
                trouble.append(f"gunicorn workers changed during the upload: {sorted(before)} -> "
                               f"{sorted(after_second)} (a worker was killed: timeout or crash)")
            if growth:
                worst = max(growth, key=lambda pid: growth[pid][1])
                peak_first, peak_both, kept = growth[worst]
                verdict = "holds" if peak_both <= 32 * MiB else "FAILS"
                rows.append(("peak RSS growth of a worker", mib(peak_both),
                             f"goal <= 32 MiB: {verdict}; {mib(peak_first)} after the first upload; VmHWM "
                             f"{'after reset' if can_reset else 'growth'}, max over workers"))
                rows.append(("  RSS kept after both uploads", mib(kept), "VmRSS after minus before, same worker"))
                if peak_first > 32 * MiB and ids_bytes > peak_first / 2:
                    rows.append(("  share of the seen-id set", f"{ids_bytes / peak_first:.0%}",
                                 "of the first upload's growth: validation runs in the request, its id set dominates"))

            settle()
            heartbeats = heartbeat_load(server.port, key, clients=args.clients, seconds=seconds)
            noop_load(server.port, key, clients=args.clients, seconds=1, per_client=20)  # load the URLconf's view
            settle()
            noop = noop_load(server.port, key, clients=args.clients, seconds=seconds)
            trouble += load_rows(rows, "SQLite", heartbeats, noop, clients=args.clients)
            problems = server.problems()
        if problems:
            trouble.append("gunicorn log (SQLite server):")
            trouble += [f"  {line}" for line in problems[:40]]

        # The heartbeats again on PostgreSQL, when it answers.
        if args.no_postgres:
            rows.append(("heartbeats, PostgreSQL", "skipped", "--no-postgres"))
        else:
            why_not = postgres_create(args.postgres)
            if why_not:
                rows.append(("heartbeats, PostgreSQL", "skipped", why_not.splitlines()[-1][:100]))
            else:
                try:
                    env = server_env(base_env, var_dir=work / "postgres", database_url=args.postgres)
                    key = prepare_database(env)
                    with Server(env, work / "gunicorn-postgres.log") as server:
                        heartbeat_load(server.port, key, clients=args.clients, seconds=1, per_client=20)
                        settle()
                        heartbeats = heartbeat_load(server.port, key, clients=args.clients, seconds=seconds)
                        noop_load(server.port, key, clients=args.clients, seconds=1, per_client=20)
                        settle()
                        noop = noop_load(server.port, key, clients=args.clients, seconds=seconds)
                        trouble += load_rows(rows, "PostgreSQL", heartbeats, noop, clients=args.clients)
                        problems = server.problems()
                    if problems:
                        trouble.append(f"gunicorn log (PostgreSQL server, {redacted(args.postgres)}):")
                        trouble += [f"  {line}" for line in problems[:40]]
                finally:
                    postgres_drop(args.postgres)

        print_table(rows)
        say(f"Load average at the end: {load_average()} (other work on the machine makes every figure noisier).")
        say(METHOD)
        if trouble:
            say("\nPROBLEMS:")
            for line in trouble:
                say(line)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
