#!/usr/bin/env python3
"""TraceFlux replay-engine benchmarks: a full replay (parse → report) of a 1M-signal window against orjson alone.

Run with `make bench` (after run.py and agent_api.py) or `.venv/bin/python benchmarks/replay_engine.py [--quick]
[--profile]`. Prints a plain table; nothing here asserts on speed. What each figure means, and the goals, are in
benchmarks/README.md.

The windows are generated here (seeded: the same seed, the same bytes) into one temporary directory, removed on exit.
Each full replay runs the engine's command line in a child process, in process there (`replays.engine.__main__.main`
with --output), so that its peak RSS is its own: `--policy tightened --compare-policy baseline` (the demo policies)
over a bare signals.jsonl, with the report written to a file and no evidence bundle.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import io
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import orjson
from run import Row, print_table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEED = 20260226
BIG, SMALL, PROFILED = 1_000_000, 100_000, 300_000
SPEED_GOAL = 3.0  # full replay / orjson.loads of the same file, at 1M
MEMORY_GOAL = 1_500_000_000  # bytes of peak RSS of the full replay at 1M (1.5 GB)
MiB = 1024 * 1024

# --- the window generator ---------------------------------------------------------------------------------------------

WINDOW_START = datetime(2026, 2, 26, 14, 0, tzinfo=UTC)
WINDOW_MS = 600_000  # 10 minutes, the longest capture window (replays.engine.windows.MAX_WINDOW)
WINDOW_END = WINDOW_START + timedelta(milliseconds=WINDOW_MS)
POPS_PER_REGION = {
    "us-east-1": 8, "us-east-2": 5, "us-west-2": 7, "ca-central-1": 3, "sa-east-1": 3,
    "eu-west-1": 8, "eu-central-1": 6, "eu-north-1": 3, "ap-southeast-1": 6, "ap-northeast-1": 5,
}
LEGACY_REGIONS = ("ca-central-1", "sa-east-1")  # older agents there say `dc` and `svc` (the policy renames them)
SERVICES = ("edge-gw", "api", "cdn-cache", "auth")
ROUTES = ("/", "/api/v1/checkout", "/api/v1/login", "/api/v1/search", "/static/app.js", "/healthz")
PEERS = ("AS64500", "AS64511", "AS64512", "AS65010", "AS65020", "AS65101")
TENANTS = tuple(f"tenant-{n:02d}" for n in range(24))
BURSTS = 10  # incident stories in one window, whatever its size
INCIDENT_SHARE = 0.04  # of the originals, spread over the bursts
COPY_SHARE = 0.03  # re-emitted copies (new id, same content, 0-2 s later): what dedup removes


def _places() -> list[tuple[str, str]]:
    places, number = [], 0
    for region, pops in POPS_PER_REGION.items():
        for _ in range(pops):
            number += 1
            places.append((region, f"POP-{number:02d}"))
    return places


PLACES = _places()
REGION_OF = {pop: region for region, pop in PLACES}


@dataclass
class _Burst:
    kind: str  # "edge": edge-gw 5xx with BGP and DNS trouble; "dns": SERVFAIL storm; "regional": p99 latency
    region: str
    pop: str
    start_ms: int
    end_ms: int
    weight: float


class WindowGenerator:
    """Signals of one 10-minute window over PLACES (54 POPs in 10 regions), seeded.

    Background (about 93 %): metrics jitter (cpu, memory, p50 latency, connections, auth per tenant), flow records
    (`site` for the POP, usually no severity, now and then a `request_id` the policy drops), DNS query latency, BGP
    updates, and stray warnings. Bursts (4 %): BURSTS incident stories at random POPs and times (an edge-gw 5xx burst
    led by BGP flaps with TCP resets and DNS SERVFAILs, a SERVFAIL storm, a region-wide p99 latency rise). Copies (3 %):
    re-emissions of earlier signals, two in three of them alerting ones. Lines are valid for schemas/signal.schema.json
    and sorted by timestamp, with ids sig-00000001 and up.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.labels_json: dict[tuple[str, ...], str] = {}
        rng = self.rng
        kinds = ["edge", "edge", "edge", "dns", "dns", "regional"]
        self.bursts = []
        for number in range(BURSTS):
            region, pop = rng.choice(PLACES)
            length = rng.randint(40_000, 180_000)
            start = rng.randint(0, WINDOW_MS - length)
            kind = kinds[number % len(kinds)]
            self.bursts.append(_Burst(kind, region, pop, start, start + length, rng.uniform(0.5, 1.5)))
        total = sum(burst.weight for burst in self.bursts)
        self.cumulative = []
        running = 0.0
        for burst in self.bursts:
            running += burst.weight / total
            self.cumulative.append(running)

    def _labels(self, *pairs: str) -> str:
        """The labels object as JSON text, cached per label set (a window repeats a few thousand)."""
        text = self.labels_json.get(pairs)
        if text is None:
            text = self.labels_json[pairs] = orjson.dumps(dict(zip(pairs[::2], pairs[1::2], strict=True))).decode()
        return text

    @staticmethod
    def _rest(source: str, name: str, severity: str | None, value: float, labels: str) -> str:
        """The line after "ts": in the agent's field order."""
        sev = f'"severity":"{severity}",' if severity is not None else ""
        return f'"source":"{source}","name":"{name}",{sev}"value":{value},"labels":{labels}}}'

    def background(self) -> tuple[int, str, bool]:
        rng = self.rng
        at = rng.randrange(WINDOW_MS + 1)
        region, pop = rng.choice(PLACES)
        legacy = region in LEGACY_REGIONS
        roll = rng.random()
        if roll < 0.55:
            service = rng.choice(SERVICES)
            host = f"{service}-{pop.lower()}-{rng.randrange(6):02d}"
            place = ("dc", region, "pop", pop, "svc", service) if legacy else ("region", region, "pop", pop,
                                                                                "service", service)
            severity = "debug" if rng.random() < 0.3 else "info"
            if service == "auth" and roll < 0.08:
                labels = self._labels(*place, "host", host, "tenant", rng.choice(TENANTS))
                return at, self._rest("metrics", "auth_failures", severity, rng.randint(0, 9), labels), False
            kind = rng.randrange(4)
            if kind == 0:
                labels = self._labels(*place, "host", host)
                return at, self._rest("metrics", "cpu_util", severity, round(rng.uniform(0.18, 0.42), 3), labels), False
            if kind == 1:
                labels = self._labels(*place, "host", host)
                return at, self._rest("metrics", "mem_util", severity, round(rng.uniform(0.5, 0.64), 3), labels), False
            if kind == 2:
                route = rng.choice(ROUTES) if rng.random() > 0.003 else ""  # an empty label: no label, the rule says
                labels = self._labels(*place, "host", host, "route", route)
                value = round(rng.gauss(38, 4), 1)
                return at, self._rest("metrics", "http_latency_p50_ms", severity, value, labels), False
            labels = self._labels(*place, "host", host)
            return at, self._rest("metrics", "conn_active", severity, rng.randint(800, 1400), labels), False
        if roll < 0.77:
            service = rng.choice(SERVICES)
            host = f"{service}-{pop.lower()}-{rng.randrange(6):02d}"
            pairs = ["service", service, "region", region, "site", pop, "host", host, "route", rng.choice(ROUTES)]
            if rng.random() < 0.01:  # a tracing exporter's extra label: unique per record, dropped by normalize
                pairs += ["request_id", f"{rng.getrandbits(64):016x}"]
            name = ("flow_bytes", "flow_packets", "tcp_retransmits")[rng.randrange(3)]
            value = rng.randint(0, 12) if name == "tcp_retransmits" else rng.randint(10_000, 5_000_000)
            severity = None if rng.random() < 0.85 else "info"
            return at, self._rest("flow", name, severity, value, self._labels(*pairs)), False
        if roll < 0.90:
            labels = self._labels("service", "dns-resolver", "region", region, "pop", pop,
                                  "host", f"dns-resolver-{pop.lower()}-{rng.randrange(3):02d}")
            return at, self._rest("dns", "dns_query_latency_ms", "info", round(rng.gauss(4.0, 0.8), 2), labels), False
        if roll < 0.995:
            labels = self._labels("service", "border", "region", region, "pop", pop,
                                  "host", f"border-{pop.lower()}-{rng.randrange(2):02d}", "peer", rng.choice(PEERS))
            return at, self._rest("bgp", "bgp_update", "info", rng.randint(1, 40), labels), False
        # A stray warning: mostly too lonely to page, sometimes a small false positive.
        service = rng.choice(SERVICES)
        labels = self._labels("service", service, "region", region, "pop", pop,
                              "host", f"{service}-{pop.lower()}-{rng.randrange(6):02d}")
        return at, self._rest("metrics", "disk_io_wait", "warning", round(rng.uniform(0.2, 0.5), 3), labels), True

    def incident(self) -> tuple[int, str, bool]:
        rng = self.rng
        roll = rng.random()
        burst = self.bursts[next(i for i, share in enumerate(self.cumulative) if roll <= share or i == BURSTS - 1)]
        region, pop = burst.region, burst.pop
        at = rng.randint(burst.start_ms, burst.end_ms)
        roll = rng.random()
        if burst.kind == "edge":
            host = f"edge-gw-{pop.lower()}-{rng.randrange(8):02d}"
            if roll < 0.55:
                rate = round(min(0.95, rng.lognormvariate(-1.7, 0.6)), 3)
                severity = "critical" if rate > 0.3 else "error" if rate > 0.08 else "warning"
                labels = self._labels("service", "edge-gw", "region", region, "pop", pop, "host", host,
                                      "route", rng.choice(ROUTES))
                return at, self._rest("metrics", "http_5xx_rate", severity, rate, labels), True
            if roll < 0.75:
                labels = self._labels("service", "edge-gw", "region", region, "pop", pop, "host", host,
                                      "route", rng.choice(ROUTES))
                value = round(rng.uniform(450, 2400), 1)
                return at, self._rest("metrics", "http_latency_p99_ms", "warning", value, labels), True
            if roll < 0.88:
                labels = self._labels("service", "edge-gw", "region", region, "site", pop, "host", host,
                                      "route", rng.choice(ROUTES))
                return at, self._rest("flow", "tcp_resets", "warning", rng.randint(200, 9000), labels), True
            if roll < 0.96:
                labels = self._labels("service", "dns-resolver", "region", region, "pop", pop,
                                      "host", f"dns-resolver-{pop.lower()}-{rng.randrange(3):02d}")
                return at, self._rest("dns", "dns_servfail", "warning", rng.randint(5, 400), labels), True
            labels = self._labels("service", "border", "region", region, "pop", pop,
                                  "host", f"border-{pop.lower()}-{rng.randrange(2):02d}", "peer", rng.choice(PEERS))
            name = "bgp_session_flap" if rng.random() < 0.5 else "bgp_prefix_withdrawn"
            lead = max(0, at - rng.randint(0, 20_000))  # BGP trouble shows up first
            return lead, self._rest("bgp", name, "error", rng.randint(1, 60), labels), True
        if burst.kind == "dns":
            if roll < 0.8:
                labels = self._labels("service", "dns-resolver", "region", region, "pop", pop,
                                      "host", f"dns-resolver-{pop.lower()}-{rng.randrange(3):02d}")
                severity = "error" if roll < 0.3 else "warning"
                return at, self._rest("dns", "dns_servfail", severity, rng.randint(5, 900), labels), True
            labels = self._labels("service", "border", "region", region, "pop", pop,
                                  "host", f"border-{pop.lower()}-{rng.randrange(2):02d}", "peer", rng.choice(PEERS))
            return at, self._rest("bgp", "bgp_prefix_withdrawn", "error", rng.randint(1, 60), labels), True
        # Regional: p99 latency up at every POP of the region, for the api and the cache.
        pop = rng.choice([p for r, p in PLACES if r == region])
        service = "api" if roll < 0.6 else "cdn-cache"
        labels = self._labels("service", service, "region", region, "pop", pop,
                              "host", f"{service}-{pop.lower()}-{rng.randrange(6):02d}", "route", rng.choice(ROUTES))
        value = round(rng.uniform(400, 1800), 1)
        return at, self._rest("metrics", "http_latency_p99_ms", "warning", value, labels), True

    def events(self, count: int) -> list[tuple[int, str]]:
        """`count` (ms offset, line after "ts") pairs in timestamp order, copies included."""
        rng = self.rng
        copies = int(count * COPY_SHARE)
        originals = count - copies
        incidents = int(originals * INCIDENT_SHARE)
        events: list[tuple[int, str]] = []
        alerting: list[int] = []
        for number in range(originals):
            at, rest, alert = self.incident() if number < incidents else self.background()
            if alert:
                alerting.append(len(events))
            events.append((at, rest))
        for _ in range(copies):
            pool = alerting if alerting and rng.random() < 2 / 3 else None
            at, rest = events[rng.choice(pool)] if pool else events[rng.randrange(originals)]
            events.append((min(WINDOW_MS, at + rng.randint(0, 2000)), rest))
        events.sort()
        return events


def _ts(offset_ms: int) -> str:
    """RFC 3339 with milliseconds, for the fixed window start 14:00:00Z (offsets up to 10 minutes)."""
    minute, rest = divmod(offset_ms, 60_000)
    second, milli = divmod(rest, 1000)
    return f"2026-02-26T14:{minute:02d}:{second:02d}.{milli:03d}Z"


@dataclass
class Window:
    path: Path
    count: int
    size: int
    seconds: float
    label_sets: int


def write_window(path: Path, count: int, *, seed: int = SEED) -> Window:
    """Write `count` signal lines to `path` (signals.jsonl), all inside [WINDOW_START, WINDOW_END]."""
    start = time.perf_counter()
    generator = WindowGenerator(seed)
    events = generator.events(count)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for first in range(0, count, 65536):
            handle.write("".join(
                f'{{"id":"sig-{first + n + 1:08d}","ts":"{_ts(at)}",{rest}\n'
                for n, (at, rest) in enumerate(events[first : first + 65536])
            ))
    del events
    gc.collect()
    return Window(path, count, path.stat().st_size, time.perf_counter() - start, len(generator.labels_json))


# --- measurements in this process -------------------------------------------------------------------------------------


def orjson_parse(path: Path, rounds: int = 3) -> float:
    """Best-of-`rounds` seconds to read the file line by line and orjson.loads each line, keeping nothing."""
    loads = orjson.loads
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        with open(path, "rb") as handle:
            for line in handle:
                loads(line)
        best = min(best, time.perf_counter() - start)
    return best


def reader_pass(path: Path) -> float:
    """Seconds for one pass of the engine's own reader as the upload validator runs it (SignalReader: parse, check,
    unique ids in the compact digest set, no pool), keeping nothing."""
    from replays.engine.signals import SignalReader

    reader = SignalReader(member=str(path))
    start = time.perf_counter()
    with open(path, "rb") as handle:
        for _ in reader.read(handle):
            pass
    seconds = time.perf_counter() - start
    assert reader.error() is None, reader.error()
    return seconds


class FloorWire(msgspec.Struct, gc=False):
    """A signal line as floors() decodes it: no checks, the labels as raw JSON text."""

    id: str
    ts: datetime
    source: str
    name: str
    labels: msgspec.Raw
    severity: str | None = None
    value: float | int | None = None


def floors(path: Path) -> list[tuple[str, float, str]]:
    """The per-signal work every replay does before it correlates anything, in plain form, measured step by step in
    this process with the collector paused (as the engine runs): decode every line (msgspec structs as the engine's
    bulk path decodes them, the labels as raw text, in the same pieces), take the columns out, number each distinct
    content, order by (ts, id) and hash the selection. No step checks, filters or normalizes, and none builds a
    per-signal object beyond the decoded struct and its columns. It shows how much of the speed goal's budget goes
    before any policy runs."""
    import hashlib
    from operator import attrgetter

    from replays.engine.gcpause import paused_gc

    decode = msgspec.json.Decoder(list[FloorWire]).decode
    data = path.read_bytes()
    steps: list[tuple[str, float, str]] = []
    with paused_gc():
        clock = time.perf_counter()

        def lap(name: str, note: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            steps.append((name, now - clock, note))
            clock = now

        wires: list[FloorWire] = []
        start = 0
        while start < len(data):
            end = data.rfind(b"\n", start, start + MiB) + 1 or len(data)
            wires += decode(b"[" + data[start : end - 1].replace(b"\n", b",") + b"]")
            start = end
        lap("decode", "msgspec, 1 MiB pieces as one JSON array each (the engine's bulk path)")
        ids, stamps, sources, names, labels, severities, values = (
            list(map(attrgetter(name), wires)) for name in ("id", "ts", "source", "name", "labels", "severity", "value")
        )
        labels = list(map(bytes, labels))
        del wires
        lap("columns", "seven map() passes over the structs, in C")
        contents: dict[tuple[Any, ...], int] = {}
        numbers = list(map(contents.setdefault, zip(sources, names, severities, labels, strict=True), range(len(ids))))
        lap("content numbers", f"one dict.setdefault per signal: {len(contents):,} distinct (source, name, severity, "
            "labels)")
        order = sorted(range(len(ids)), key=list(zip(stamps, ids, strict=True)).__getitem__)
        lap("order by (ts, id)", "positions sorted by a key list of (ts, id) pairs")
        hashlib.sha256(orjson.dumps([(ids[i], stamps[i], numbers[i], values[i]) for i in order])).hexdigest()
        lap("selection digest", "one orjson.dumps of (id, ts, content, value) rows in order, sha256")
    del ids, stamps, sources, names, labels, severities, values, numbers, order
    return steps


def columnar_reads(path: Path) -> list[tuple[str, float | None]]:
    """Best-of-2 seconds for the columnar readers to read the file (None when not installed: not dependencies)."""
    reads: list[tuple[str, float | None]] = []
    for name, module_name, function in (("polars.read_ndjson", "polars", "read_ndjson"),
                                        ("pyarrow.json.read_json", "pyarrow.json", "read_json")):
        try:
            reader = getattr(importlib.import_module(module_name), function)
        except ImportError:
            reads.append((name, None))
            continue
        best = math.inf
        for _ in range(2):
            begin = time.perf_counter()
            reader(str(path))
            best = min(best, time.perf_counter() - begin)
        reads.append((name, best))
    return reads


def floor_rows(rows: list[Row], window: Window, steps: list[tuple[str, float, str]],
               reads: list[tuple[str, float | None]], parse: float) -> None:
    total = 0.0
    rows.append((f"bare per-signal steps, {count_name(window.count)}", "",
                 "what every replay must do per signal before it correlates, in plain form with no checks; each row "
                 "adds one step (in process, collector paused)"))
    for name, seconds, note in steps:
        total += seconds
        rows.append((f"  + {name}", f"{seconds:.2f} s", f"{note}; {total / parse:.2f}x orjson so far"))
    for name, seconds in reads:
        if seconds is None:
            rows.append((f"  {name}", "-", "not installed (not a dependency: pip install it into .venv to see it)"))
        else:
            rows.append((f"  {name}", f"{seconds:.2f} s",
                         f"{seconds / parse:.2f}x orjson; columnar, every core, the read alone (best of 2)"))
    rows.append(("  bare steps, of the 3x budget", f"{total / (SPEED_GOAL * parse):.0%}",
                 f"{total:.2f} s of {SPEED_GOAL * parse:.2f} s, before dedup, suppression, grouping, the timeline "
                 "and the report"))


# --- the full replay, in a child process ------------------------------------------------------------------------------


def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM, … of this process, in bytes."""
    values = {}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                values[key] = int(rest.split()[0]) * 1024
    return values


class _StampedLines(io.TextIOBase):
    """A text stream that keeps each complete line with the perf_counter time it was finished."""

    def __init__(self) -> None:
        self.partial = ""
        self.lines: list[tuple[float, str]] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        now = time.perf_counter()
        self.partial += text
        while "\n" in self.partial:
            line, self.partial = self.partial.split("\n", 1)
            self.lines.append((now, line))
        return len(text)


def _hot_spots(profiler: Any, limit: int = 20) -> dict[str, Any]:
    """Self and inclusive time per Python function (file:line of its def) from a pyinstrument session. The time of a
    built-in (dict.get, orjson.loads, list.sort) counts as its caller's self time: that is the line to change."""
    root = profiler.last_session.root_frame()
    own: dict[tuple[str, str, int], float] = {}
    inclusive: dict[tuple[str, str, int], float] = {}

    def visit(frame: Any, owner: tuple[str, str, int] | None, above: frozenset[tuple[str, str, int]]) -> None:
        if frame.is_synthetic:
            return
        builtin = (frame.file_path_short or "").startswith("<") and owner is not None
        key = owner if builtin else (frame.function, frame.file_path_short or "?", frame.line_no or 0)
        assert key is not None
        own[key] = own.get(key, 0.0) + frame.total_self_time
        if not builtin and key not in above:  # recursion counts once
            inclusive[key] = inclusive.get(key, 0.0) + frame.time
        for child in frame.children:
            visit(child, key, above | {key})

    visit(root, None, frozenset())
    total = root.time or 1.0

    def top(table: dict[tuple[str, str, int], float]) -> list[dict[str, Any]]:
        ranked = sorted(table.items(), key=lambda item: -item[1])[:limit]
        return [{"function": f, "where": f"{path}:{line}", "seconds": s, "share": s / total}
                for (f, path, line), s in ranked]

    return {"total": total, "self": top(own), "inclusive": top(inclusive)}


def child_main(spec: dict[str, Any]) -> int:
    """Run the engine's command line in this process and print one JSON line: time, memory, stage times, stats."""
    from replays.engine import cli  # noqa: F401 - everything the replay needs is loaded before the clock starts
    from replays.engine.__main__ import main as engine_main

    argv = [
        "--policy", spec["policy"], "--signals", spec["signals"],
        "--window", spec["window"], "--output", spec["output"], "--progress",
    ]
    if spec.get("compare"):
        argv += ["--compare-policy", spec["compare"]]
    profiler = None
    if spec.get("profile"):
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
    gc.collect()
    before = proc_status()
    stdout, stderr = io.StringIO(), _StampedLines()
    if profiler is not None:
        profiler.start()
    start = time.perf_counter()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = engine_main(argv)
    seconds = time.perf_counter() - start
    if profiler is not None:
        profiler.stop()
    after = proc_status()
    events, errors = [], []
    for stamp, line in stderr.lines:
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if isinstance(event, dict) and event.get("event") == "progress":
            events.append({"at": stamp - start, **event})
        else:
            errors.append(line)
    result = {
        "status": status,
        "seconds": seconds,
        "rss_before": before["VmRSS"],
        "peak_rss": after["VmHWM"],
        "events": events,
        "errors": errors,
        "summary": json.loads(stdout.getvalue()) if status == 0 else None,
        "hot_spots": _hot_spots(profiler) if profiler is not None else None,
    }
    print(json.dumps(result))
    return 0


@dataclass
class Replay:
    compare: bool
    count: int
    seconds: float
    peak_rss: int
    rss_before: int
    report_size: int
    stats: dict[str, Any]
    stages: dict[str, float]
    hot_spots: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def _stages(events: list[dict[str, Any]], total: float) -> dict[str, float]:
    """Seconds per part of the run from the progress events. Each replay runs from its ingest's start (reading and
    parsing the file is streamed into ingest) to the next part's start; `report` is what follows the compare
    replay's last stage: its result, the third read of the file (the timeline), the diffs, the canonical JSON, the
    sha256 and the write."""
    at = {(e["replay"], e["stage"], e["status"]): e["at"] for e in events}
    stages = {}
    for replay in ("policy", "compare"):
        for stage in ("ingest", "correlate", "aggregate"):
            began, ended = at.get((replay, stage, "started")), at.get((replay, stage, "finished"))
            if began is not None and ended is not None:
                stages[f"{replay}.{stage}"] = ended - began
    first = at.get(("policy", "ingest", "started"))
    policy_done = at.get(("policy", "aggregate", "finished"))
    second, last = at.get(("compare", "ingest", "started")), at.get(("compare", "aggregate", "finished"))
    if first is not None and second is not None and last is not None:
        stages.update({"setup": first, "policy": second - first, "compare": last - second, "report": total - last})
    elif first is not None and policy_done is not None:
        stages.update({"setup": first, "policy": policy_done - first, "report": total - policy_done})
    return stages


def full_replay(window: Window, work: Path, *, profile: bool = False, compare: bool = False) -> Replay:
    """The whole pipeline in a child: read and replay under the tightened demo policy (and, with `compare`, the
    baseline as well, diffing the two), build and write the report."""
    from replays.engine.demo_policies import baseline_policy, tightened_policy

    policy, compare_path = work / "tightened.json", work / "baseline.json"
    policy.write_bytes(orjson.dumps(tightened_policy()))
    compare_path.write_bytes(orjson.dumps(baseline_policy()))
    output = work / f"report-{window.count}.json"
    spec = {
        "signals": str(window.path),
        "policy": str(policy),
        "compare": str(compare_path) if compare else None,
        "window": f"{WINDOW_START:%Y-%m-%dT%H:%M:%SZ}/{WINDOW_END:%Y-%m-%dT%H:%M:%SZ}",
        "output": str(output),
        "profile": profile,
    }
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, cwd=ROOT, check=False
    )
    problems = []
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        result = None
    if done.returncode != 0 or result is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise SystemExit(f"the replay child failed (exit {done.returncode}):\n" + "\n".join(tail))
    if result["status"] != 0:
        problems.append(f"the engine exited {result['status']} at {window.count:,}: {'; '.join(result['errors'])}")
    size = output.stat().st_size if output.exists() else 0
    output.unlink(missing_ok=True)
    summary = result["summary"] or {}
    return Replay(
        compare=compare,
        count=window.count,
        seconds=result["seconds"],
        peak_rss=result["peak_rss"],
        rss_before=result["rss_before"],
        report_size=size,
        stats=summary.get("stats", {}),
        stages=_stages(result["events"], result["seconds"]),
        hot_spots=result["hot_spots"],
        problems=problems,
    )


# --- the table --------------------------------------------------------------------------------------------------------


def say(message: str) -> None:
    print(message, flush=True)


def mib(size: float) -> str:
    return f"{size / MiB:,.1f} MiB"


def count_name(count: int) -> str:
    return f"{count // 1_000_000}M" if count % 1_000_000 == 0 else f"{count // 1000}k"


def window_row(rows: list[Row], window: Window) -> None:
    rows.append((f"window, {count_name(window.count)} signals", mib(window.size),
                 f"{window.count:,} lines, 10 min, {len(PLACES)} POPs in {len(POPS_PER_REGION)} regions, "
                 f"{window.label_sets:,} label sets, {COPY_SHARE:.0%} copies; generated in {window.seconds:.1f} s"))


def replay_rows(rows: list[Row], window: Window, replay: Replay, parse: float, reader: float | None, *,
                goals: bool) -> None:
    """Rows of one full replay. The speed goal is judged on the single-policy replay (parse → report, as the issue
    defines it); the replay with a compare policy does the work twice and diffs, and is shown for information."""
    name = count_name(window.count)
    if reader is not None:
        rows.append((f"orjson.loads per line, {name}", f"{parse:.2f} s",
                     f"best of 3: {window.count / parse:,.0f} lines/s, {window.size / parse / MiB:,.0f} MiB/s"))
        rows.append((f"  one SignalReader pass, {name}", f"{reader:.2f} s",
                     f"{reader / parse:.2f}x orjson: as the upload validator reads (checks, digest id set)"))
    stats = replay.stats
    suppressed = stats.get("signals_suppressed", 0)
    what = "tightened vs baseline (two replays + diffs)" if replay.compare else "tightened, one policy"
    kind = "with compare" if replay.compare else "one policy"
    rows.append((f"full replay, {name}, {kind}", f"{replay.seconds:.2f} s",
                 f"{replay.rate:,.0f} signals/s; {what}: {stats.get('signals_in', 0):,} in -> "
                 f"{stats.get('incidents_formed', 0):,} incidents, {suppressed / max(1, window.count):.1%} suppressed, "
                 f"report {replay.report_size / 1024:,.0f} KiB"))
    stages = replay.stages
    if "report" in stages:
        rows.append(("  read", f"{stages['setup']:.2f} s",
                     "the policies loaded, the file read once: SignalReader into a pooled list (bulk msgspec path)"))
        for label, policy in (("policy", "tightened"), ("compare", "baseline")):
            if label not in stages:
                continue
            parts = [stages[f"{label}.{stage}"] for stage in ("ingest", "correlate", "aggregate")]
            rows.append((f"  {label} replay ({policy})", f"{stages[label]:.2f} s",
                         f"ingest {parts[0]:.2f}, correlate {parts[1]:.2f}, aggregate {parts[2]:.2f}"))
        rows.append(("  report", f"{stages['report']:.2f} s",
                     "the result, the timeline over the held signals, diffs, canonical JSON, sha256s, write"))
    ratio = replay.seconds / parse
    judged = goals and not replay.compare
    verdict = ("meets" if ratio <= SPEED_GOAL else "FAILS") if judged else "for information; the goal is judged " \
        "on the one-policy replay at 1M"
    rows.append(("  ratio to orjson parse", f"{ratio:.2f}x",
                 f"goal <= {SPEED_GOAL:g}x ({SPEED_GOAL * parse:.2f} s here): {verdict}"))
    verdict = ("meets" if replay.peak_rss <= MEMORY_GOAL else "FAILS") if goals else "goal is judged at 1M"
    rows.append(("  peak RSS", mib(replay.peak_rss),
                 f"goal <= {MEMORY_GOAL / 1e9:g} GB: {verdict}; VmHWM of the child, {mib(replay.rss_before)} before "
                 f"the run ({replay.peak_rss / window.count:,.0f} bytes a signal in all)"))


def print_hot_spots(hot: dict[str, Any], count: int) -> None:
    print(f"\nHot spots of a profiled full replay of {count:,} signals (pyinstrument, 1 ms samples, "
          f"{hot['total']:.1f} s profiled; its per-call overhead inflates call-heavy code, so read shares, not "
          "seconds; file:line of the def):")
    for title, key in (("self time (the function's own code and the built-ins it calls)", "self"),
                       ("inclusive time (with all it calls; the command line's wrappers left out)", "inclusive")):
        print(f"  by {title}:")
        for item in [item for item in hot[key] if item["share"] < 0.99][:12]:
            print(f"    {item['share']:6.1%}  {item['seconds']:6.2f} s  {item['function']}  {item['where']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {SMALL:,} signals, for a smoke run")
    parser.add_argument("--profile", action="store_true",
                        help=f"also profile a full replay of {PROFILED:,} signals (pyinstrument) and print hot spots")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return child_main(json.loads(args.child))

    print(f"TraceFlux replay-engine benchmarks: Python {sys.version.split()[0]}, orjson {orjson.__version__}, "
          f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows: list[Row] = []
    problems: list[str] = []
    hot: tuple[int, dict[str, Any]] | None = None
    with tempfile.TemporaryDirectory(prefix="traceflux-replay-bench-") as tmp:
        work = Path(tmp)
        say(f"{SMALL:,} signals: generating, parsing with orjson, one reader pass, two full replays")
        small = write_window(work / "signals-100k.jsonl", SMALL)
        window_row(rows, small)
        small_parse = orjson_parse(small.path)
        reader_s = reader_pass(small.path)
        small_replay = min((full_replay(small, work) for _ in range(2)), key=lambda r: r.seconds)
        small_compare = full_replay(small, work, compare=True)
        problems += small_replay.problems + small_compare.problems
        replay_rows(rows, small, small_replay, small_parse, reader_s, goals=args.quick)
        replay_rows(rows, small, small_compare, small_parse, None, goals=args.quick)
        if args.quick:
            floor_rows(rows, small, floors(small.path), columnar_reads(small.path), small_parse)
        small.path.unlink()
        if not args.quick:
            say(f"{BIG:,} signals: generating, parsing with orjson, one reader pass, one full replay (about a minute)")
            big = write_window(work / "signals-1m.jsonl", BIG)
            window_row(rows, big)
            big_parse = orjson_parse(big.path)
            reader_s = reader_pass(big.path)
            big_replay = full_replay(big, work)
            big_compare = full_replay(big, work, compare=True)
            # In this process, after the children: what it leaves on the heap would count in their ru_maxrss.
            big_floors = floors(big.path), columnar_reads(big.path)
            problems += big_replay.problems + big_compare.problems
            replay_rows(rows, big, big_replay, big_parse, reader_s, goals=True)
            replay_rows(rows, big, big_compare, big_parse, None, goals=True)
            floor_rows(rows, big, *big_floors, big_parse)
            rows.append(("scaling, signals/s 1M / 100k", f"{big_replay.rate / small_replay.rate:.2f}x",
                         f"{small_replay.rate:,.0f} -> {big_replay.rate:,.0f} signals/s: ~1 means linear "
                         f"(under 1: slower per signal at 1M)"))
            children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
            rows.append(("  largest child ru_maxrss", mib(children), "getrusage(RUSAGE_CHILDREN): cross-checks VmHWM"))
            big.path.unlink()
        if args.profile:
            count = SMALL if args.quick else PROFILED
            say(f"{count:,} signals: a full replay under pyinstrument")
            profiled = write_window(work / "signals-profiled.jsonl", count)
            result = full_replay(profiled, work, profile=True)
            problems += result.problems
            if result.hot_spots is not None:
                hot = (count, result.hot_spots)
    print_table(rows)
    if hot is not None:
        print_hot_spots(hot[1], hot[0])
    print(f"Load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          "(other work on the machine makes every figure noisier).")
    if problems:
        print("PROBLEMS:\n  " + "\n  ".join(problems))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
