"""`python -m replays.engine --policy … --signals …`: the replay command line, its outputs and its errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from replays.engine import spec_hash, write_bundle
from replays.engine.__main__ import main
from replays.engine.demo_policies import baseline_policy, tightened_policy
from replays.engine.evidence import read_evidence
from replays.engine.report import verify_report

from .regen_golden import GOLDEN, demo_window

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The demo bundle, the two demo policies, and its first 600 signals as a bare signals.jsonl with their baseline."""
    where = tmp_path_factory.mktemp("cli")
    manifest, signals, baseline = demo_window()
    write_bundle(where / "demo.tar.gz", manifest=manifest, signals=signals, baseline=baseline, spec=baseline_policy())
    (where / "signals.jsonl").write_text("".join(json.dumps(s.as_json()) + "\n" for s in signals[:600]))
    (where / "baseline.json").write_text(json.dumps(baseline))
    first = {s.id for s in signals[:600]}
    kept = [
        {
            **i,
            "members": [m for m in i["members"] if m in first],
            "suppressed": [m for m in i["suppressed"] if m in first],
        }
        for i in baseline["incidents"]
    ]
    (where / "baseline-600.json").write_text(json.dumps({"incidents": [i for i in kept if i["members"]]}))
    (where / "baseline-policy.json").write_text(json.dumps(baseline_policy()))
    (where / "tightened-policy.json").write_text(json.dumps(tightened_policy()))
    return where


def run(capsys, *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_of(err: str) -> dict:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, never a traceback
    return json.loads(lines[0])


# --- replaying --------------------------------------------------------------------------------------------------------


def test_it_prints_the_report_of_a_bundle_to_stdout(files, capsys):
    code, out, err = run(capsys, "--policy", files / "baseline-policy.json", "--signals", files / "demo.tar.gz")

    assert code == 0 and err == ""
    report = json.loads(out)
    assert verify_report(report)
    assert report["policy"]["spec_hash"] == spec_hash(baseline_policy())
    assert report["input"]["window"] == {"start": "2026-02-26T14:00:00Z", "end": "2026-02-26T14:04:00Z"}
    assert report["parity"]["baseline_incidents"] == 12  # the bundle's own baseline.json


def test_it_writes_the_golden_reports_of_the_demo_bundle(files, capsys, tmp_path):
    code, _, _ = run(
        capsys,
        "--policy",
        files / "tightened-policy.json",
        "--compare-policy",
        files / "baseline-policy.json",
        "--signals",
        files / "demo.tar.gz",
        "--output",
        tmp_path / "tightened.json",
    )
    assert code == 0
    code, _, _ = run(
        capsys,
        "--policy",
        files / "baseline-policy.json",
        "--signals",
        files / "demo.tar.gz",
        "--output",
        tmp_path / "baseline.json",
    )
    assert code == 0

    for produced, golden in (("baseline.json", "demo_baseline"), ("tightened.json", "demo_tightened")):
        expected = json.loads((GOLDEN / f"{golden}.report.json").read_text(encoding="utf-8"))
        assert json.loads((tmp_path / produced).read_text(encoding="utf-8")) == expected, golden


def test_it_writes_the_report_and_the_evidence_and_prints_a_summary(files, capsys, tmp_path):
    code, out, _ = run(
        capsys,
        "--policy",
        files / "tightened-policy.json",
        "--signals",
        files / "demo.tar.gz",
        "--output",
        tmp_path / "report.json",
        "--evidence",
        tmp_path / "evidence.tar.gz",
    )

    assert code == 0
    summary = json.loads(out)
    report = json.loads((tmp_path / "report.json").read_bytes())
    assert summary["report_sha256"] == report["report_sha256"]
    assert summary["stats"]["alerts_in_incidents_out"] == report["stats"]["alerts_in_incidents_out"]
    documents = read_evidence(tmp_path / "evidence.tar.gz")
    assert documents["report.json"] == report
    assert documents["policy.json"]["spec"] == tightened_policy()
    assert documents["selection.json"]["source"]["name"] == "demo.tar.gz"
    assert documents["selection.json"]["signals_digest"] == report["input"]["signals_digest"]


def test_it_replays_a_signals_jsonl_file_with_a_baseline_scope_and_window(files, capsys):
    code, out, _ = run(
        capsys,
        "--policy",
        files / "baseline-policy.json",
        "--signals",
        files / "signals.jsonl",
        "--baseline",
        files / "baseline-600.json",
        "--scope",
        "service=edge-gw,pop=POP-12",
        "--window",
        "2026-02-26T14:00:00Z/2026-02-26T14:02:00Z",
    )

    assert code == 0
    report = json.loads(out)
    assert report["input"]["scope"] == {"pop": "POP-12", "service": "edge-gw"}
    assert report["input"]["window"] == {"start": "2026-02-26T14:00:00Z", "end": "2026-02-26T14:02:00Z"}
    assert report["input"]["signals_selected"] < report["input"]["signals"] == 600
    assert report["parity"]["baseline_coverage"] < 1


def test_it_imports_an_alertmanager_configuration_with_its_silences(files, capsys, tmp_path):
    config = tmp_path / "alertmanager.yml"
    config.write_text("route:\n  receiver: netops\n  group_by: [alertname, pop]\nreceivers:\n  - name: netops\n")
    silence = tmp_path / "silence.json"  # one silence as POSTed, not GET's list
    silence.write_text(
        json.dumps(
            {
                "matchers": [{"name": "pop", "value": "POP-31", "isRegex": False, "isEqual": True}],
                "startsAt": "2026-02-26T13:00:00Z",
                "endsAt": "2026-02-26T15:00:00Z",
                "createdBy": "ops",
                "comment": "maint",
            }
        )
    )

    code, out, _ = run(
        capsys, "--alertmanager-config", config, "--silences", silence, "--signals", files / "demo.tar.gz"
    )

    assert code == 0
    report = json.loads(out)
    assert {incident["receiver"] for incident in report["incidents"]} == {"netops"}
    assert [rule["reason"] for rule in report["suppressed_by_rule"]] == ["silence"]


def test_it_prints_progress_events_on_stderr(files, capsys):
    code, _, err = run(
        capsys, "--policy", files / "baseline-policy.json", "--signals", files / "signals.jsonl", "--progress"
    )

    assert code == 0
    events = [json.loads(line) for line in err.splitlines()]
    assert [(e["stage"], e["status"]) for e in events][:2] == [("ingest", "started"), ("ingest", "finished")]
    assert {e["replay"] for e in events} == {"policy"}


def test_it_keeps_the_format_subcommands(files, capsys):
    code, out, _ = run(capsys, "spec-hash", files / "baseline-policy.json")

    assert code == 0 and out.strip() == spec_hash(baseline_policy())
    code, out, _ = run(capsys, "validate", files / "demo.tar.gz")
    assert code == 0 and json.loads(out)["valid"] is True


# --- errors: one line of JSON on stderr, exit status 2 ----------------------------------------------------------------


def test_it_names_a_missing_file(files, capsys):
    code, out, err = run(capsys, "--policy", files / "nope.json", "--signals", files / "demo.tar.gz")

    assert (code, out) == (2, "")
    assert error_of(err) == {"error": "not_found", "detail": f"{files / 'nope.json'}: no such policy file"}
    code, _, err = run(capsys, "--policy", files / "baseline-policy.json", "--signals", files / "nope.jsonl")
    assert code == 2 and error_of(err)["detail"].endswith("nope.jsonl: no such signals file")


def test_it_names_the_malformed_signal_lines(files, capsys, tmp_path):
    lines = (files / "signals.jsonl").read_text().splitlines()[:5]
    lines[2] = "{not json"
    lines[4] = json.dumps({"id": "x", "ts": "yesterday", "source": "bgp", "name": "n", "labels": {}})
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")

    code, out, err = run(capsys, "--policy", files / "baseline-policy.json", "--signals", bad)

    assert (code, out) == (2, "")
    problem = error_of(err)
    assert problem["lines"] == [3, 5]
    assert problem["detail"].startswith(f"{bad}: 1 line is not valid JSON and 1 line is not a valid signal (line 3:")


def test_it_names_the_file_and_field_of_a_bad_policy(files, capsys, tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({**baseline_policy(), "bogus": 1}))

    code, _, err = run(
        capsys,
        "--policy",
        files / "baseline-policy.json",
        "--compare-policy",
        policy,
        "--signals",
        files / "signals.jsonl",
    )

    assert code == 2
    problem = error_of(err)
    assert problem["detail"].startswith(f"{policy}: ") and problem["field"] == "policy.bogus"


@pytest.mark.parametrize(
    ("content", "expected"),
    [("{", "malformed JSON"), ("[1]", "a policy is a JSON object"), ('{"a": NaN}', "NaN")],
)
def test_it_refuses_a_policy_file_that_is_not_a_json_object(files, capsys, tmp_path, content, expected):
    policy = tmp_path / "policy.json"
    policy.write_text(content)

    code, _, err = run(capsys, "--policy", policy, "--signals", files / "signals.jsonl")

    assert code == 2 and expected in error_of(err)["detail"]


def test_it_refuses_a_baseline_naming_signals_that_are_not_there(files, capsys, tmp_path):
    baseline = tmp_path / "baseline.json"
    baseline.write_text(
        json.dumps({"incidents": [{"id": "b", "fingerprint": "f", "members": ["ghost"], "suppressed": []}]})
    )

    code, _, err = run(
        capsys, "--policy", files / "baseline-policy.json", "--signals", files / "signals.jsonl", "--baseline", baseline
    )

    assert code == 2 and "'ghost' is not a signal id" in error_of(err)["detail"]


def test_it_refuses_a_signals_file_that_is_neither_a_bundle_nor_jsonl(files, capsys, tmp_path):
    gz = tmp_path / "signals.jsonl.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00" + b"\0" * 20)

    code, _, err = run(capsys, "--policy", files / "baseline-policy.json", "--signals", gz)

    assert code == 2 and error_of(err)["error"] in ("wrong_type", "invalid")


def test_it_refuses_silences_without_an_alertmanager_configuration(files, capsys):
    code, _, err = run(
        capsys,
        "--policy",
        files / "baseline-policy.json",
        "--silences",
        files / "baseline.json",
        "--signals",
        files / "signals.jsonl",
    )

    assert code == 2 and "--silences goes with --alertmanager-config" in error_of(err)["detail"]


@pytest.mark.parametrize(
    "extra",
    [
        ["--scope", "pop"],
        ["--scope", "pop=POP-12,pop=POP-14"],
        ["--window", "2026-02-26T14:02:00Z/2026-02-26T14:00:00Z"],
        ["--window", "soon/later"],
    ],
)
def test_it_refuses_bad_options_with_a_usage_error(files, capsys, extra):
    with pytest.raises(SystemExit) as exited:
        main(["--policy", str(files / "baseline-policy.json"), "--signals", str(files / "signals.jsonl"), *extra])

    assert exited.value.code == 2
    assert "error: argument" in capsys.readouterr().err


# --- determinism ------------------------------------------------------------------------------------------------------


def test_it_writes_identical_bytes_under_any_hash_seed_and_time_zone(files, tmp_path):
    outputs = []
    for seed, zone in (("0", "UTC"), ("4242", "Asia/Kolkata"), ("random", "America/Los_Angeles")):
        out = tmp_path / seed
        out.mkdir()
        env = {**os.environ, "PYTHONHASHSEED": seed, "TZ": zone, "PYTHONPATH": str(ROOT)}
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "replays.engine",
                "--policy",
                str(files / "tightened-policy.json"),
                "--compare-policy",
                str(files / "baseline-policy.json"),
                "--signals",
                str(files / "demo.tar.gz"),
                "--output",
                str(out / "report.json"),
                "--evidence",
                str(out / "evidence.tar.gz"),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr.decode()
        outputs.append(((out / "report.json").read_bytes(), (out / "evidence.tar.gz").read_bytes()))

    assert outputs[0] == outputs[1] == outputs[2]
