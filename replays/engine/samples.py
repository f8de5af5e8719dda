"""Seeded sample incident bundles: realistic enough to exercise dedup, thresholds and grouping, identical per seed.

The story: an edge-gw 5xx burst at one POP (default POP-12, us-east-1) a third of the way into the window, with BGP
flaps, TCP resets and DNS SERVFAILs around it, over background jitter from many hosts across regions. A few percent of
signals are re-emitted copies (new id, same content, up to 2 s later) for dedup to find. The baseline groups the
alerting signals by `fingerprint` (source, name and the service/region/pop labels) the way production would.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .canonical import canonical_json, sha256_hex
from .canonical import spec_hash as hash_of_spec
from .formats import BUNDLE_FORMAT, format_timestamp

FINGERPRINT_LABELS = ("service", "region", "pop")
ALERTING = ("warning", "error", "critical")
MIN_INCIDENT_MEMBERS = 3
DUPLICATE_SHARE = 0.03
DEFAULT_START = datetime(2026, 2, 26, 14, 0, tzinfo=UTC)

# The policy the sample baseline was "formed" under; its hash is the default manifest spec_hash.
SAMPLE_SPEC: dict[str, Any] = {
    "version": 1,
    "dedup": {"window_s": 5, "key": ["source", "name", "labels"]},
    "group_by": ["source", "name", *FINGERPRINT_LABELS],
    "min_severity": "warning",
    "min_members": MIN_INCIDENT_MEMBERS,
}

_REGIONS = {
    "us-east-1": ["POP-12", "POP-14", "POP-03"],
    "us-west-2": ["POP-21", "POP-22"],
    "eu-west-1": ["POP-31", "POP-33"],
}
_SERVICES = ["edge-gw", "api", "cdn-cache", "dns-resolver"]
_ROUTES = ["/", "/api/v1/checkout", "/api/v1/login", "/api/v1/search", "/static/app.js", "/healthz"]
_PEERS = ["AS64500", "AS64511", "AS64512", "AS65010"]


def fingerprint(source: str, name: str, labels: Mapping[str, str]) -> str:
    """The sample baseline's grouping key: source, name and the service, region and pop labels."""
    key = {"source": source, "name": name, "labels": {k: labels[k] for k in FINGERPRINT_LABELS if k in labels}}
    return "fp:" + sha256_hex(canonical_json(key))[:16]


def sample_spec() -> dict[str, Any]:
    """A fresh copy of SAMPLE_SPEC, to ship as spec.json."""
    return json.loads(canonical_json(SAMPLE_SPEC))


@dataclass
class _Event:
    offset_ms: int
    source: str
    name: str
    labels: dict[str, str]
    severity: str
    value: float | int
    copy_of: int | None = None


def _ts(start: datetime, offset_ms: int) -> str:
    return format_timestamp(start + timedelta(milliseconds=offset_ms))


def _host(service: str, pop: str, index: int) -> str:
    return f"{service}-{pop.lower().replace('-', '')}-{index:02d}"


class _Generator:
    def __init__(self, rng: random.Random, length_ms: int, service: str, region: str, pop: str) -> None:
        self.rng = rng
        self.length_ms = length_ms
        self.scope = (service, region, pop)
        regions = {name: list(pops) for name, pops in _REGIONS.items()}
        regions.setdefault(region, [])
        if pop not in regions[region]:
            regions[region].insert(0, pop)
        self.places = [(r, p) for r, pops in regions.items() for p in pops]
        services = list(_SERVICES) if service in _SERVICES else [service, *_SERVICES]
        self.services = services
        # The burst: a third of the way in, a quarter of the window long.
        self.burst_start = int(length_ms * rng.uniform(0.30, 0.38))
        self.burst_end = min(length_ms, self.burst_start + int(length_ms * 0.25))

    def anywhere(self) -> int:
        return self.rng.randrange(self.length_ms + 1)

    def in_burst(self, lead_ms: int = 0) -> int:
        return self.rng.randint(max(0, self.burst_start - lead_ms), self.burst_end)

    def labels(self, service: str, region: str, pop: str, *, route: bool = False, hosts: int = 6) -> dict[str, str]:
        host = _host(service, pop, self.rng.randrange(hosts))
        labels = {"service": service, "region": region, "pop": pop, "host": host}
        if route:
            labels["route"] = self.rng.choice(_ROUTES)
        return labels

    def background(self) -> _Event:
        rng = self.rng
        region, pop = rng.choice(self.places)
        service = rng.choice(self.services)
        roll = rng.random()
        if roll < 0.62:  # low-value jitter: what thresholds exist to ignore
            name = rng.choice(["cpu_util", "mem_util", "http_latency_p50_ms", "conn_active"])
            value = {
                "cpu_util": round(rng.uniform(0.18, 0.42), 3),
                "mem_util": round(rng.uniform(0.50, 0.64), 3),
                "http_latency_p50_ms": round(rng.gauss(38, 4), 1),
                "conn_active": rng.randint(800, 1400),
            }[name]
            labels = self.labels(service, region, pop, route=name.startswith("http"))
            return _Event(self.anywhere(), "metrics", name, labels, "debug" if rng.random() < 0.3 else "info", value)
        if roll < 0.80:
            name = rng.choice(["flow_bytes", "flow_packets", "tcp_retransmits"])
            value = rng.randint(10_000, 5_000_000) if name != "tcp_retransmits" else rng.randint(0, 12)
            return _Event(self.anywhere(), "flow", name, self.labels(service, region, pop, route=True), "info", value)
        if roll < 0.93:
            return _Event(
                self.anywhere(),
                "dns",
                "dns_query_latency_ms",
                self.labels("dns-resolver", region, pop, hosts=3),
                "info",
                round(rng.gauss(4.0, 0.8), 2),
            )
        if roll < 0.995:
            labels = self.labels("border", region, pop, hosts=2)
            labels["peer"] = rng.choice(_PEERS)
            return _Event(self.anywhere(), "bgp", "bgp_update", labels, "info", rng.randint(1, 40))
        # A stray warning somewhere: mostly too lonely to form an incident, sometimes a small false positive.
        return _Event(
            self.anywhere(),
            "metrics",
            "disk_io_wait",
            self.labels(service, region, pop),
            "warning",
            round(rng.uniform(0.2, 0.5), 3),
        )

    def incident(self) -> _Event:
        rng = self.rng
        service, region, pop = self.scope
        roll = rng.random()
        if roll < 0.55:
            rate = round(min(0.95, rng.lognormvariate(-1.7, 0.6)), 3)
            severity = "critical" if rate > 0.3 else "error" if rate > 0.08 else "warning"
            return _Event(
                self.in_burst(),
                "metrics",
                "http_5xx_rate",
                self.labels(service, region, pop, route=True, hosts=8),
                severity,
                rate,
            )
        if roll < 0.75:
            return _Event(
                self.in_burst(),
                "metrics",
                "http_latency_p99_ms",
                self.labels(service, region, pop, route=True, hosts=8),
                "warning",
                round(rng.uniform(450, 2400), 1),
            )
        if roll < 0.88:
            return _Event(
                self.in_burst(),
                "flow",
                "tcp_resets",
                self.labels(service, region, pop, route=True, hosts=8),
                "warning",
                rng.randint(200, 9000),
            )
        if roll < 0.96:
            return _Event(
                self.in_burst(),
                "dns",
                "dns_servfail",
                self.labels("dns-resolver", region, pop, hosts=3),
                "warning",
                rng.randint(5, 400),
            )
        labels = self.labels("border", region, pop, hosts=2)
        labels["peer"] = rng.choice(_PEERS)
        name = rng.choice(["bgp_session_flap", "bgp_prefix_withdrawn"])
        # BGP trouble leads the 5xx burst by up to 20 s: the likely cause shows up first.
        return _Event(self.in_burst(lead_ms=20_000), "bgp", name, labels, "error", rng.randint(1, 60))


def sample_bundle(
    *,
    seed: int,
    ref: str = "INC-2026-0226-001",
    title: str = "edge-gw 5xx burst at POP-12",
    severity: str = "sev2",
    environment: str = "staging",
    agent: str = "edge-agent-01",
    window_start: datetime = DEFAULT_START,
    minutes: float = 4,
    signals: int = 5000,
    spec_hash: str | None = None,
    service: str = "edge-gw",
    region: str = "us-east-1",
    pop: str = "POP-12",
    incident_share: float = 0.25,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """(manifest, signals, baseline) for a window of `minutes` from `window_start`; the same seed, the same output.

    `signals` is the exact number of lines, duplicates included; signals are in timestamp order with ids sig-0000001
    and up. spec_hash defaults to the hash of SAMPLE_SPEC, so `spec=sample_spec()` can ship alongside.
    """
    if signals < 1:
        raise ValueError("a sample needs at least one signal")
    rng = random.Random(seed)
    start = window_start.astimezone(UTC)
    length_ms = int(minutes * 60_000)
    end = start + timedelta(milliseconds=length_ms)
    generator = _Generator(rng, length_ms, service, region, pop)

    copies = int(signals * DUPLICATE_SHARE)
    events = [
        generator.incident() if rng.random() < incident_share else generator.background()
        for _ in range(signals - copies)
    ]
    originals = len(events)
    for _ in range(copies):
        # Re-emissions cluster where the trouble is: two in three copy an alerting signal.
        index = rng.randrange(originals)
        for _attempt in range(3):
            if events[index].severity in ALERTING:
                break
            index = rng.randrange(originals)
        event = events[index]
        events.append(
            _Event(
                min(length_ms, event.offset_ms + rng.randint(0, 2000)),
                event.source,
                event.name,
                dict(event.labels),
                event.severity,
                event.value,
                copy_of=index,
            )
        )

    order = sorted(range(len(events)), key=lambda i: (events[i].offset_ms, i))
    ids = {index: f"sig-{position + 1:07d}" for position, index in enumerate(order)}
    lines = []
    for index in order:
        event = events[index]
        lines.append(
            {
                "id": ids[index],
                "ts": _ts(start, event.offset_ms),
                "source": event.source,
                "name": event.name,
                "severity": event.severity,
                "value": event.value,
                "labels": event.labels,
            }
        )

    baseline = _baseline(events, order, ids)
    manifest = {
        "format": BUNDLE_FORMAT,
        "incident": {"ref": ref, "title": title, "severity": severity},
        "environment": environment,
        "agent": agent,
        "captured_at": format_timestamp(end + timedelta(seconds=30)),
        "window": {"start": format_timestamp(start), "end": format_timestamp(end)},
        "scope": {"service": service, "region": region, "pop": pop},
        "spec_hash": spec_hash if spec_hash is not None else hash_of_spec(SAMPLE_SPEC),
    }
    return manifest, lines, baseline


def _baseline(events: list[_Event], order: list[int], ids: dict[int, str]) -> dict[str, Any]:
    """Production's incidents: alerting originals grouped by fingerprint (at least MIN_INCIDENT_MEMBERS of them),
    with the re-emitted copies of their members suppressed by dedup."""
    groups: dict[str, list[int]] = {}
    for index in order:
        event = events[index]
        if event.copy_of is None and event.severity in ALERTING:
            groups.setdefault(fingerprint(event.source, event.name, event.labels), []).append(index)
    incidents = []
    formed = {fp: members for fp, members in groups.items() if len(members) >= MIN_INCIDENT_MEMBERS}
    group_of = {index: fp for fp, members in formed.items() for index in members}
    suppressed: dict[str, list[int]] = {fp: [] for fp in formed}
    for index in order:
        original = events[index].copy_of
        if original is not None and original in group_of:
            suppressed[group_of[original]].append(index)
    position = {index: n for n, index in enumerate(order)}
    for number, (fp, members) in enumerate(sorted(formed.items(), key=lambda item: position[item[1][0]]), 1):
        incidents.append(
            {
                "id": f"bl-{number:03d}",
                "fingerprint": fp,
                "members": [ids[i] for i in members],
                "suppressed": [ids[i] for i in suppressed[fp]],
            }
        )
    return {"incidents": incidents}
