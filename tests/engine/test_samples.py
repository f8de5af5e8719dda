"""The seeded sample generator: deterministic, realistic in shape, and always a valid bundle."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import pytest

from replays.engine import parse_signal, parse_timestamp, spec_hash, validate_bundle, write_bundle
from replays.engine.__main__ import main
from replays.engine.formats import validator
from replays.engine.samples import SAMPLE_SPEC, fingerprint, sample_bundle, sample_spec


@pytest.fixture(scope="module")
def sample():
    return sample_bundle(seed=42, signals=3000)


def test_it_generates_the_same_sample_for_the_same_seed(sample):
    assert sample_bundle(seed=42, signals=3000) == sample
    assert sample_bundle(seed=43, signals=3000) != sample


def test_it_writes_a_sample_bundle_that_validates(tmp_path, sample):
    manifest, signals, baseline = sample
    path = tmp_path / "sample.tar.gz"
    digest = write_bundle(path, manifest=manifest, signals=signals, baseline=baseline, spec=sample_spec())
    info = validate_bundle(path)
    assert info.signal_count == 3000
    assert set(info.counts_by_source) == {"flow", "bgp", "dns", "metrics"}
    assert info.baseline_incidents == len(baseline["incidents"]) > 0
    assert info.spec_hash == spec_hash(SAMPLE_SPEC)
    again = write_bundle(
        tmp_path / "again.tar.gz", manifest=manifest, signals=signals, baseline=baseline, spec=sample_spec()
    )
    assert again == digest


def test_it_keeps_every_signal_inside_the_window_and_in_time_order(sample):
    manifest, signals, _ = sample
    start, end = (parse_timestamp(manifest["window"][k]) for k in ("start", "end"))
    stamps = [parse_timestamp(s["ts"]) for s in signals]
    assert all(start <= ts <= end for ts in stamps)
    assert stamps == sorted(stamps)
    assert len({s["id"] for s in signals}) == len(signals) == 3000
    assert end - start == (parse_timestamp("2026-02-26T14:04:00Z") - parse_timestamp("2026-02-26T14:00:00Z"))


def test_it_puts_a_burst_at_the_incident_scope(sample):
    manifest, signals, _ = sample
    scope = manifest["scope"]
    burst = [s for s in signals if s["name"] == "http_5xx_rate"]
    assert len(burst) > 300
    assert all(
        (s["labels"]["service"], s["labels"]["region"], s["labels"]["pop"])
        == (scope["service"], scope["region"], scope["pop"])
        for s in burst
    )
    assert {"service", "region", "pop", "host", "route"} <= set(burst[0]["labels"])
    jitter = [s for s in signals if s["name"] in ("cpu_util", "mem_util")]
    assert jitter and all(s["severity"] in ("debug", "info") for s in jitter)


def test_it_includes_duplicates_for_dedup_to_find(sample):
    _, signals, _ = sample
    content = Counter(
        json.dumps({k: v for k, v in s.items() if k not in ("id", "ts")}, sort_keys=True) for s in signals
    )
    assert sum(n - 1 for n in content.values() if n > 1) >= 80  # about 3 % of 3000 are re-emitted copies


def test_it_forms_a_baseline_consistent_with_the_fingerprint(sample):
    _, signals, baseline = sample
    by_id = {s["id"]: s for s in signals}
    seen: set[str] = set()
    for incident in baseline["incidents"]:
        members = [by_id[i] for i in incident["members"]]
        assert len(members) >= SAMPLE_SPEC["min_members"]
        for s in members + [by_id[i] for i in incident["suppressed"]]:
            assert fingerprint(s["source"], s["name"], s["labels"]) == incident["fingerprint"]
            assert s["severity"] in ("warning", "error", "critical")
        ids = incident["members"] + incident["suppressed"]
        assert not seen & set(ids)
        seen.update(ids)
    assert validator("baseline").is_valid(baseline)
    biggest = max(baseline["incidents"], key=lambda i: len(i["members"]))
    assert by_id[biggest["members"][0]]["name"] == "http_5xx_rate"
    assert biggest["suppressed"]


def test_it_satisfies_the_schemas_and_the_hand_written_check_alike(sample):
    manifest, signals, _ = sample
    assert validator("manifest").is_valid(manifest)
    signal_schema = validator("signal")
    for line in signals[:500]:
        assert signal_schema.is_valid(line)
        assert parse_signal(line).as_json() == line


def test_it_honours_the_window_scope_and_count_it_is_given():
    start = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    manifest, signals, _ = sample_bundle(
        seed=1,
        signals=50,
        minutes=2.5,
        pop="POP-99",
        region="eu-west-1",
        window_start=start,
        spec_hash="sha256:" + "0" * 64,
    )
    assert len(signals) == 50
    assert manifest["window"] == {"start": "2026-03-01T09:30:00Z", "end": "2026-03-01T09:32:30Z"}
    assert manifest["scope"]["pop"] == "POP-99" and manifest["spec_hash"] == "sha256:" + "0" * 64


def test_it_makes_and_validates_a_sample_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "cli.zip"
    assert main(["make-sample", "--seed", "5", "--out", str(out), "--format", "zip", "--signals", "400"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["signals"] == 400 and made["format"] == "zip"
    assert main(["validate", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] and report["kind"] == "zip" and report["signal_count"] == 400
    assert main(["validate", str(out), "--kind", "snapshot"]) == 2
    refused = json.loads(capsys.readouterr().out)
    assert refused == {
        "valid": False,
        "error": "wrong_type",
        "status": 415,
        "detail": "expected a snapshot (a JSON object), got a zip",
    }
