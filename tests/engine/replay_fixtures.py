"""Small hand-made replay results for the report, diff and evidence tests: a few signals, incidents named by hand."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from replays.engine.canonical import spec_hash
from replays.engine.correlate import Action, Incident, ReplayResult, Suppressed
from replays.engine.signals import Signal

T0 = datetime(2026, 2, 26, 14, 0, tzinfo=UTC)
WINDOW = (T0, T0 + timedelta(minutes=4))
SPEC: dict[str, Any] = {"schema": "traceflux.policy/v1", "name": "hand-made"}
OTHER_SPEC: dict[str, Any] = {"schema": "traceflux.policy/v1", "name": "hand-made, other"}


def signal(
    signal_id: str, *, at: float = 0, source: str = "metrics", name: str = "http_5xx_rate", pop: str = "POP-12"
) -> Signal:
    return Signal(signal_id, T0 + timedelta(seconds=at), source, name, {"pop": pop, "region": "us-east-1"}, "error", 1)


def action(name: str = "drain-pop", *, status: str = "planned", reason: str | None = None) -> Action:
    return Action(name, "traffic:drain", {"pops": ["POP-12"], "regions": ["us-east-1"], "services": []}, status, reason)


def incident(key: str, members: Iterable[str], *, actions: Sequence[Action] = (), title: str = "") -> Incident:
    members = tuple(sorted(members))
    return Incident(
        key=key,
        fingerprint="fp-" + key,
        receiver=None,
        group_labels={"pop": "POP-12"},
        signals=members,
        severity="error",
        title=title or key,
        first_ts=T0,
        last_ts=T0 + timedelta(seconds=30),
        sources={"metrics": len(members)},
        actions=tuple(actions),
    )


def result(
    incidents: Mapping[str, Iterable[str]] | Sequence[Incident],
    *,
    signals: Iterable[str] | None = None,
    suppressed: Mapping[str, tuple[str, str]] | None = None,
    fingerprints: Mapping[str, str] | None = None,
    spec: Mapping[str, Any] = SPEC,
    scope: Mapping[str, str] | None = None,
    digest: str = "d" * 64,
) -> ReplayResult:
    """A ReplayResult: `incidents` maps key -> member ids (or is a list of Incident); every member and suppressed
    signal, plus `signals`, is selected; fingerprints default to one per signal's own incident."""
    built = list(incidents) if not isinstance(incidents, Mapping) else [incident(k, m) for k, m in incidents.items()]
    suppressed = dict(suppressed or {})
    selected = set(signals or ()) | set(suppressed) | {s for i in built for s in i.signals}
    prints = dict(fingerprints) if fingerprints is not None else {}
    for item in built:
        for member in item.signals:
            prints.setdefault(member, "fp-" + item.key)
    for signal_id in sorted(selected):
        prints.setdefault(signal_id, "fp-" + signal_id)
    members = sum(len(i.signals) for i in built)
    return ReplayResult(
        incidents=built,
        suppressed=[Suppressed(s, reason, rule) for s, (reason, rule) in sorted(suppressed.items())],
        stats={
            "signals_in": len(selected),
            "signals_selected": len(selected),
            "signals_suppressed": len(suppressed),
            "signals_correlated": len(selected) - len(suppressed),
            "incidents_formed": len(built),
            "episodes": len(built),
            "members": members,
        },
        signals_digest=digest,
        window=WINDOW,
        scope=dict(scope) if scope is not None else None,
        spec_hash=spec_hash(spec),
        fingerprints=prints,
    )


def baseline(incidents: Mapping[str, Iterable[str]], *, suppressed: Mapping[str, Iterable[str]] | None = None) -> dict:
    suppressed = suppressed or {}
    return {
        "incidents": [
            {
                "id": key,
                "fingerprint": "bfp-" + key,
                "members": sorted(members),
                "suppressed": sorted(suppressed.get(key, ())),
            }
            for key, members in incidents.items()
        ]
    }


def ids(prefix: str, count: int, start: int = 0) -> list[str]:
    return [f"{prefix}{n:04d}" for n in range(start, start + count)]
