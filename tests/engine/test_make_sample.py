"""`python -m replays.engine make-sample` for any incident: its manifest options, and the spec.json it ships."""

from __future__ import annotations

import json

from replays.engine import spec_hash, validate_bundle
from replays.engine.__main__ import main
from replays.engine.samples import SAMPLE_SPEC

OTHER_HASH = "sha256:" + "ab" * 32


def test_it_names_the_incident_scope_and_spec_hash_it_is_given_and_leaves_out_a_spec_that_would_not_match(
    tmp_path, capsys
):
    out = tmp_path / "b.tar.gz"
    code = main([
        "make-sample", "--seed", "2", "--out", str(out), "--signals", "300", "--ref", "INC-2026-0301-007",
        "--title", "dns SERVFAILs at POP-31", "--severity", "sev3", "--environment", "prod", "--agent", "edge-a",
        "--service", "dns-resolver", "--region", "eu-west-1", "--pop", "POP-31", "--spec-hash", OTHER_HASH,
    ])

    assert code == 0
    made = json.loads(capsys.readouterr().out)
    assert (made["spec_hash"], made["spec"]) == (OTHER_HASH, False)
    info = validate_bundle(out)
    assert info.incident == {"ref": "INC-2026-0301-007", "title": "dns SERVFAILs at POP-31", "severity": "sev3"}
    assert info.scope == {"service": "dns-resolver", "region": "eu-west-1", "pop": "POP-31"}
    assert (info.environment, info.agent, info.spec_hash, info.has_spec) == ("prod", "edge-a", OTHER_HASH, False)


def test_it_ships_a_spec_file_under_its_own_hash_and_refuses_a_hash_that_disagrees(tmp_path, capsys):
    spec_file = tmp_path / "spec.json"
    spec = {"schema": 1, "dedup_window_s": 60}
    spec_file.write_text(json.dumps(spec))
    out = tmp_path / "b.zip"

    assert main(["make-sample", "--seed", "2", "--out", str(out), "--signals", "50", "--format", "zip",
                 "--spec", str(spec_file)]) == 0
    capsys.readouterr()
    info = validate_bundle(out)
    assert info.spec_hash == spec_hash(spec) and info.has_spec

    code = main(["make-sample", "--seed", "2", "--out", str(tmp_path / "c.zip"), "--spec", str(spec_file),
                 "--spec-hash", OTHER_HASH])
    assert code == 2
    assert f"--spec-hash is {OTHER_HASH}, but {spec_file} hashes to {spec_hash(spec)}" in capsys.readouterr().err
    assert not (tmp_path / "c.zip").exists()


def test_it_still_ships_the_sample_spec_by_default(tmp_path, capsys):
    out = tmp_path / "b.tar.gz"
    assert main(["make-sample", "--seed", "2", "--out", str(out), "--signals", "50"]) == 0
    assert json.loads(capsys.readouterr().out)["spec_hash"] == spec_hash(SAMPLE_SPEC)
    assert validate_bundle(out).has_spec
