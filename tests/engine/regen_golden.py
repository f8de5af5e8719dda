"""The golden reports of the demo window, and how to regenerate them.

    python -m tests.engine.regen_golden            rewrite tests/engine/golden/*.report.json
    UPDATE_GOLDEN=1 pytest tests/engine -k golden  the same, from the test run

The window is the demo incident's (incidents.demo / artifacts.demo: INC-2026-0226-001 in prod, captured by
edge-use1-pop12-a, 2026-02-26T14:00:00Z for 4 minutes, seed 20260226, 5000 signals), built with the engine's own
sample generator so these tests need no Django. It is replayed under replays.engine.demo_policies: the baseline
policy against the bundle's baseline.json, and the tightened policy against the baseline.json and, as the reference
version, the baseline policy. Regenerate after a deliberate change to the engine, the demo policies or the report
format, and read the diff of the golden files before committing it.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from replays.engine.canonical import spec_hash
from replays.engine.correlate import replay
from replays.engine.demo_policies import baseline_policy, tightened_policy
from replays.engine.formats import parse_timestamp
from replays.engine.report import build_report
from replays.engine.samples import sample_bundle
from replays.engine.signals import Signal, parse_signal

GOLDEN = Path(__file__).resolve().parent / "golden"
DEMO_WINDOW = {
    "seed": 20260226,
    "ref": "INC-2026-0226-001",
    "title": "edge-gw 5xx burst at POP-12",
    "severity": "sev2",
    "environment": "prod",
    "agent": "edge-use1-pop12-a",
    "window_start": datetime(2026, 2, 26, 14, 0, tzinfo=UTC),
    "minutes": 4,
    "signals": 5000,
    "service": "edge-gw",
    "region": "us-east-1",
    "pop": "POP-12",
}


def demo_window() -> tuple[dict[str, Any], list[Signal], dict[str, Any]]:
    """(manifest, signals, baseline) of the demo incident's bundle."""
    manifest, lines, baseline = sample_bundle(**DEMO_WINDOW, spec_hash=spec_hash(baseline_policy()))
    return manifest, [parse_signal(line, number) for number, line in enumerate(lines, 1)], baseline


def demo_reports() -> dict[str, dict[str, Any]]:
    """Golden file name -> the report it holds."""
    manifest, signals, baseline = demo_window()
    window = (parse_timestamp(manifest["window"]["start"]), parse_timestamp(manifest["window"]["end"]))
    base_spec, tight_spec = baseline_policy(), tightened_policy()
    base = replay(base_spec, signals, window=window)
    tight = replay(tight_spec, signals, window=window)
    return {
        "demo_baseline.report.json": build_report(base, policy_spec=base_spec, baseline=baseline, signals=signals),
        "demo_tightened.report.json": build_report(
            tight, policy_spec=tight_spec, baseline=baseline, compare=base, compare_spec=base_spec, signals=signals
        ),
    }


def golden_text(report: dict[str, Any]) -> str:
    """Indented, so a change reads as a small diff in review; tests compare the parsed JSON."""
    return json.dumps(report, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write_golden() -> list[Path]:
    GOLDEN.mkdir(exist_ok=True)
    written = []
    for name, report in demo_reports().items():
        path = GOLDEN / name
        path.write_text(golden_text(report), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_golden():
        print(path)
    sys.exit(0)
