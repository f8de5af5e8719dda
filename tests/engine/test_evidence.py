"""The evidence bundle: a deterministic tar.gz of selection, policy, report, diffs and timeline."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from replays.engine.canonical import canonical_json, spec_hash
from replays.engine.evidence import EVIDENCE_MEMBERS, read_evidence, selection_document, write_evidence
from replays.engine.report import build_report, verify_report

from .replay_fixtures import OTHER_SPEC, SPEC, baseline, result, signal


@pytest.fixture
def evidence_inputs():
    replayed = result({"r-1": ["s1", "s2"]}, suppressed={"s3": ("dedup", "dedup")})
    signals = [signal("s1", at=1), signal("s2", at=2), signal("s3", at=3)]
    report = build_report(replayed, policy_spec=SPEC, baseline=baseline({"bl-1": ["s1", "s2"]}), signals=signals)
    selection = selection_document(
        replayed, by_source={"metrics": 3}, source={"name": "b.tar.gz", "kind": "tar.gz", "sha256": "a" * 64}
    )
    return {"report": report, "policy_spec": SPEC, "selection": selection}


def test_it_writes_the_same_bytes_for_the_same_inputs(tmp_path, evidence_inputs):
    first = write_evidence(tmp_path / "one.tar.gz", **evidence_inputs)
    buffer = io.BytesIO()
    second = write_evidence(buffer, **evidence_inputs)

    assert first == second
    assert (tmp_path / "one.tar.gz").read_bytes() == buffer.getvalue()


def test_it_stores_sorted_members_with_fixed_metadata(tmp_path, evidence_inputs):
    path = tmp_path / "evidence.tar.gz"
    write_evidence(path, **evidence_inputs)

    raw = path.read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip header mtime 0
    with tarfile.open(path, "r:gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(EVIDENCE_MEMBERS) == list(EVIDENCE_MEMBERS)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(315532800, 0, 0, "", "", 0o644)}


def test_it_holds_the_selection_policy_report_diffs_and_timeline(tmp_path, evidence_inputs):
    path = tmp_path / "evidence.tar.gz"
    write_evidence(path, **evidence_inputs, compare_spec=OTHER_SPEC)

    documents = read_evidence(path)

    report = documents["report.json"]
    assert verify_report(report) and report == evidence_inputs["report"]
    assert documents["diffs.json"] == report["diffs"] and documents["timeline.json"] == report["timeline"]
    assert documents["policy.json"] == {
        "spec": SPEC,
        "spec_hash": spec_hash(SPEC),
        "compare": {"spec": OTHER_SPEC, "spec_hash": spec_hash(OTHER_SPEC)},
    }
    selection = documents["selection.json"]
    assert selection["signals_digest"] == report["input"]["signals_digest"]
    assert (selection["signals_selected"], selection["by_source"], selection["source"]["name"]) == (
        3,
        {"metrics": 3},
        "b.tar.gz",
    )
    with tarfile.open(path, "r:gz") as tar:
        stream = tar.extractfile("report.json")
        assert stream is not None
        assert stream.read() == canonical_json(report)


def test_it_writes_different_bytes_when_any_input_changes(tmp_path, evidence_inputs):
    digest = write_evidence(io.BytesIO(), **evidence_inputs)
    other_selection = {**evidence_inputs["selection"], "scope": {"pop": "POP-31"}}

    assert write_evidence(io.BytesIO(), **{**evidence_inputs, "selection": other_selection}) != digest
    assert write_evidence(io.BytesIO(), **{**evidence_inputs, "policy_spec": OTHER_SPEC}) != digest


def test_it_refuses_to_read_an_archive_that_is_not_an_evidence_bundle(tmp_path):
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        info = tarfile.TarInfo("notes.txt")
        tar.addfile(info, io.BytesIO(b""))
    buffer.seek(0)

    with pytest.raises(ValueError, match=r"notes\.txt"):
        read_evidence(buffer)
