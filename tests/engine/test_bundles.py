"""Incident bundles and snapshots: what an upload may be, and how each refusal is worded."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replays.engine import (
    FormatError,
    Invalid,
    Limits,
    TooLarge,
    WrongType,
    detect_kind,
    iter_signals,
    open_bundle,
    parse_signal,
    spec_hash,
    validate_bundle,
    validate_snapshot,
    write_bundle,
)
from replays.engine.bundles import baseline_conforms
from replays.engine.formats import SCHEMA_NAMES, schema_bytes, validator
from replays.engine.signals import SignalProblem

ROOT = Path(__file__).resolve().parents[2]
SPEC = {"dedup": {"window_s": 5}, "min_members": 3}
START = "2026-02-26T14:00:00Z"


def manifest(**changes):
    base = {
        "format": "traceflux.incident-bundle/v1",
        "incident": {"ref": "INC-2026-0226-001", "title": "edge-gw 5xx burst", "severity": "sev2"},
        "environment": "staging",
        "agent": "edge-agent-01",
        "captured_at": "2026-02-26T14:05:00Z",
        "window": {"start": START, "end": "2026-02-26T14:04:00Z"},
        "scope": {"service": "edge-gw", "region": "us-east-1", "pop": "POP-12"},
        "spec_hash": spec_hash(SPEC),
    }
    base.update(changes)
    return base


def signal(n, *, ts=None, **changes):
    base = {
        "id": f"sig-{n:05d}",
        "ts": ts or f"2026-02-26T14:01:{n % 60:02d}.250Z",
        "source": ["flow", "bgp", "dns", "metrics"][n % 4],
        "name": "http_5xx_rate",
        "severity": "error",
        "value": 0.25,
        "labels": {"service": "edge-gw", "region": "us-east-1", "pop": "POP-12", "host": f"gw-{n % 3}"},
    }
    base.update(changes)
    return base


SIGNALS = [signal(n) for n in range(1, 41)]
BASELINE = {
    "incidents": [
        {"id": "bl-001", "fingerprint": "fp:1", "members": ["sig-00001", "sig-00002"], "suppressed": ["sig-00003"]}
    ]
}


def bundle(tmp_path, name="bundle", *, fmt="tar.gz", **members):
    members.setdefault("manifest", manifest())
    members.setdefault("signals", SIGNALS)
    path = tmp_path / f"{name}.{fmt}"
    write_bundle(path, fmt=fmt, **members)
    return path


def lines_bundle(tmp_path, lines: list[bytes], *, name="lines"):
    """A tar.gz whose signals.jsonl is exactly these raw lines."""
    return tar_gz(
        tmp_path / f"{name}.tar.gz",
        [
            ("manifest.json", json.dumps(manifest()).encode()),
            ("signals.jsonl", b"".join(lines)),
        ],
    )


def _tarinfo(name, data=b"", kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = linkname
    return info


def tar_gz(path, entries, *, trailing=b""):
    """Write a tar.gz from (name, data) or (TarInfo, data) pairs, plus optional bytes after the tar in the gzip."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for entry, data in entries:
            info = entry if isinstance(entry, tarfile.TarInfo) else _tarinfo(entry, data)
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    path.write_bytes(gzip.compress(raw.getvalue() + trailing))
    return path


def zip_file(path, entries, *, compression=zipfile.ZIP_DEFLATED):
    """Write a zip from (name or ZipInfo, data) pairs; duplicate names are allowed on purpose."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for entry, data in entries:
            archive.writestr(entry, data)
    return path


def good_members():
    return [
        ("manifest.json", json.dumps(manifest()).encode()),
        ("signals.jsonl", b"".join(json.dumps(s).encode() + b"\n" for s in SIGNALS)),
    ]


# --- round trips ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_it_round_trips_a_valid_bundle(tmp_path, fmt):
    path = bundle(tmp_path, fmt=fmt, baseline=BASELINE, spec=SPEC)
    info = validate_bundle(path)
    assert info.kind == fmt
    assert detect_kind(path) == fmt
    assert info.signal_count == 40
    assert info.counts_by_source == {"flow": 10, "bgp": 10, "dns": 10, "metrics": 10}
    assert info.has_baseline and info.has_spec and info.baseline_incidents == 1
    assert info.window_start.isoformat() == "2026-02-26T14:00:00+00:00"
    assert info.window_end - info.window_start == timedelta(minutes=4)
    assert info.spec_hash == spec_hash(SPEC)
    assert info.scope == {"service": "edge-gw", "region": "us-east-1", "pop": "POP-12"}
    assert info.incident["ref"] == "INC-2026-0226-001" and info.environment == "staging"
    assert info.uncompressed_bytes > 0
    json.dumps(info.as_dict())  # the API stores it as JSON
    with open_bundle(path) as opened:
        assert opened.baseline == BASELINE and opened.spec == SPEC
        read = [s.as_json() for s in opened.signals()]
        assert read == SIGNALS
        assert [s.as_json() for s in opened.signals()] == SIGNALS  # again: each call streams afresh


def test_it_accepts_members_under_one_top_level_directory(tmp_path):
    members = [(_tarinfo("bundle-1/", kind=tarfile.DIRTYPE), b"")]
    members += [(f"bundle-1/{name}", data) for name, data in good_members()]
    assert validate_bundle(tar_gz(tmp_path / "nested.tar.gz", members)).signal_count == 40
    dotted = [(_tarinfo("./", kind=tarfile.DIRTYPE), b"")] + [(f"./{n}", d) for n, d in good_members()]
    assert validate_bundle(tar_gz(tmp_path / "dotted.tar.gz", dotted)).signal_count == 40
    zipped = zip_file(tmp_path / "nested.zip", [(f"b/{n}", d) for n, d in good_members()])
    assert validate_bundle(zipped).signal_count == 40


def test_it_accepts_manifest_after_signals_in_a_tar(tmp_path):
    path = tar_gz(tmp_path / "reversed.tar.gz", list(reversed(good_members())))
    assert validate_bundle(path).signal_count == 40


def test_it_refuses_members_split_between_root_and_a_directory(tmp_path):
    name, data = good_members()[1]
    path = tar_gz(tmp_path / "mixed.tar.gz", [good_members()[0], (f"sub/{name}", data)])
    with pytest.raises(Invalid, match="all be at the root or all under one top-level directory"):
        validate_bundle(path)


# --- archive safety ---------------------------------------------------------------------------------------------------


UNSAFE_TAR_ENTRIES = {
    "absolute path": (_tarinfo("/etc/manifest.json", b"{}"), "has an absolute path"),
    "dot-dot": (_tarinfo("bundle/../../manifest.json", b"{}"), "has a '..' path component"),
    "symlink": (_tarinfo("spec.json", kind=tarfile.SYMTYPE, linkname="/etc/passwd"), "is a symbolic link"),
    "hardlink": (_tarinfo("spec.json", kind=tarfile.LNKTYPE, linkname="manifest.json"), "is a hard link"),
    "character device": (_tarinfo("spec.json", kind=tarfile.CHRTYPE), "is a character device"),
    "block device": (_tarinfo("spec.json", kind=tarfile.BLKTYPE), "is a block device"),
    "fifo": (_tarinfo("spec.json", kind=tarfile.FIFOTYPE), "is a fifo"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE_TAR_ENTRIES))
def test_it_refuses_unsafe_tar_members(tmp_path, case):
    info, reason = UNSAFE_TAR_ENTRIES[case]
    data = b"{}" if info.isreg() else b""
    path = tar_gz(tmp_path / "unsafe.tar.gz", [*good_members(), (info, data)])
    with pytest.raises(Invalid, match=reason) as caught:
        validate_bundle(path)
    assert caught.value.status == 400
    assert caught.value.as_dict() == {"detail": caught.value.detail}


def _zip_info(name, mode):
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("/manifest.json", "has an absolute path"),
        ("C:/bundle/manifest.json", "has an absolute path"),
        ("../spec.json", "has a '..' path component"),
        ("bundle\\spec.json", "contains a backslash"),
        (_zip_info("spec.json", 0o120777), "is a symbolic link"),
        (_zip_info("spec.json", 0o010644), "is a fifo"),
        (_zip_info("spec.json", 0o020644), "is a character device"),
    ],
)
def test_it_refuses_unsafe_zip_members(tmp_path, entry, reason):
    path = zip_file(tmp_path / "unsafe.zip", [*good_members(), (entry, b"/etc/passwd")])
    with pytest.raises(Invalid, match=reason):
        validate_bundle(path)


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_it_refuses_duplicate_members(tmp_path, fmt):
    entries = [*good_members(), ("manifest.json", b"{}")]
    path = tar_gz(tmp_path / "dup.tar.gz", entries) if fmt == "tar.gz" else zip_file(tmp_path / "dup.zip", entries)
    with pytest.raises(Invalid, match=r"'manifest.json' appears more than once"):
        validate_bundle(path)


def test_it_refuses_more_members_than_the_limit(tmp_path):
    # zip: the central directory's entry count is checked before zipfile reads it.
    many = zip_file(tmp_path / "many.zip", [*good_members()] + [(f"d{n}/", b"") for n in range(20)])
    with pytest.raises(TooLarge, match="archive has 22 members, more than the limit of 16") as caught:
        validate_bundle(many)
    assert caught.value.status == 413
    # tar: counted as the stream goes by.
    path = bundle(tmp_path, baseline=BASELINE, spec=SPEC)
    with pytest.raises(TooLarge, match="archive has more than 3 members"):
        validate_bundle(path, limits=Limits(max_members=3))


@pytest.mark.parametrize(
    ("missing", "message"),
    [("manifest.json", "manifest.json is missing"), ("signals.jsonl", "signals.jsonl is missing")],
)
@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_it_refuses_a_bundle_without_a_required_member(tmp_path, fmt, missing, message):
    entries = [(n, d) for n, d in good_members() if n != missing]
    path = tar_gz(tmp_path / "m.tar.gz", entries) if fmt == "tar.gz" else zip_file(tmp_path / "m.zip", entries)
    with pytest.raises(Invalid, match=message):
        validate_bundle(path)


def test_it_refuses_members_that_are_not_part_of_a_bundle(tmp_path):
    path = tar_gz(tmp_path / "extra.tar.gz", [*good_members(), ("notes.txt", b"hi")])
    with pytest.raises(Invalid, match=r"'notes.txt' is not part of a bundle \(a bundle holds only manifest.json"):
        validate_bundle(path)
    nested = tar_gz(tmp_path / "deep.tar.gz", [(f"a/b/{n}", d) for n, d in good_members()])
    with pytest.raises(Invalid, match="is not part of a bundle"):
        validate_bundle(nested)


def test_it_refuses_a_zip_bomb_by_its_compression_ratio(tmp_path):
    zeros = b"\n" * (8 * 1024 * 1024)  # 8 MiB of blank lines deflate to about 8 KiB
    path = zip_file(tmp_path / "bomb.zip", [good_members()[0], ("signals.jsonl", zeros)])
    with pytest.raises(TooLarge, match=r"compression ratio is over 200:1 .* decompression bomb") as caught:
        validate_bundle(path)
    assert caught.value.as_dict()["detail"].startswith("archive compression ratio")


def test_it_refuses_a_tar_bomb_while_decompressing(tmp_path):
    path = tar_gz(tmp_path / "bomb.tar.gz", [good_members()[0], ("signals.jsonl", b"\n" * (16 * 1024 * 1024))])
    with pytest.raises(TooLarge, match="decompression bomb"):
        validate_bundle(path)


def test_it_counts_bytes_hidden_after_the_end_of_the_tar(tmp_path):
    # The tar headers are honest and small; 64 MiB of zeros follow the end-of-archive marker inside the gzip.
    path = tar_gz(tmp_path / "hidden.tar.gz", good_members(), trailing=bytes(64 * 1024 * 1024))
    with pytest.raises(TooLarge, match="decompression bomb"):
        validate_bundle(path)


def test_it_refuses_more_uncompressed_bytes_than_the_limit(tmp_path):
    path = bundle(tmp_path)
    with pytest.raises(TooLarge, match="decompresses to more than the 4 KiB limit"):
        validate_bundle(path, limits=Limits(max_uncompressed=4096))
    zipped = bundle(tmp_path, fmt="zip")
    with pytest.raises(TooLarge, match="over the 4 KiB limit"):
        validate_bundle(zipped, limits=Limits(max_uncompressed=4096))


def test_it_refuses_an_oversized_json_member(tmp_path):
    path = bundle(tmp_path, spec=SPEC)
    with pytest.raises(TooLarge, match=r"manifest.json: .* over the 64 bytes limit for a JSON document"):
        validate_bundle(path, limits=Limits(max_json_bytes=64))


def test_it_refuses_encrypted_or_exotically_compressed_zip_members(tmp_path):
    path = zip_file(tmp_path / "bz.zip", good_members(), compression=zipfile.ZIP_BZIP2)
    with pytest.raises(Invalid, match="uses compression method 12; only stored and deflate"):
        validate_bundle(path)


def test_it_refuses_a_truncated_archive(tmp_path):
    data = bundle(tmp_path).read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(Invalid, match="archive: "):
        validate_bundle(cut)


# --- wrong type -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "described"),
    [
        (b'{"format": "traceflux.snapshot/v1"}', "got JSON"),
        (random.Random(1).randbytes(4096), "got unrecognised data"),
        (gzip.compress(b"just some text, no tar here" * 40, mtime=0), "got gzip data that is not a tar"),
        (b"", "got an empty file"),
        (b"BZh91AY&SY", "got bzip2 data"),
        (b"col1,col2\n1,2\n", "got text that is not JSON"),
    ],
)
def test_it_refuses_files_that_are_not_bundles_as_the_wrong_type(tmp_path, content, described):
    path = tmp_path / "upload.tar.gz"  # the name says tar.gz; only the bytes count
    path.write_bytes(content)
    with pytest.raises(WrongType, match=f"^expected an incident bundle \\(gzip'd tar or zip\\), {described}") as caught:
        validate_bundle(path)
    assert caught.value.status == 415


def test_it_detects_kinds_by_content_not_name(tmp_path):
    tgz = bundle(tmp_path)
    renamed = tmp_path / "bundle.zip"
    renamed.write_bytes(tgz.read_bytes())
    assert detect_kind(renamed) == "tar.gz"
    assert detect_kind(bundle(tmp_path, fmt="zip")) == "zip"
    plain_tar = tmp_path / "plain.tar"
    plain_tar.write_bytes(gzip.decompress(tgz.read_bytes()))
    assert detect_kind(plain_tar) == "unknown"
    with pytest.raises(WrongType, match="got an uncompressed tar"):
        validate_bundle(plain_tar)
    js = tmp_path / "x.bin"
    js.write_bytes(b"  \n[1, 2]")
    assert detect_kind(js) == "json"
    js.write_bytes(b'{"broken": ')
    assert detect_kind(js) == "unknown"


# --- manifest ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (
            {"window": {"start": START, "end": "yesterday"}},
            "manifest.window.end",
            "manifest.json: $.window.end: 'yesterday' is not an RFC 3339 timestamp",
        ),
        (
            {"window": {"start": START, "end": "2026-02-26T14:04:00"}},
            "manifest.window.end",
            "is not an RFC 3339 timestamp with a time zone",
        ),
        (
            {"scope": {"service": "edge-gw", "region": "us-east-1"}},
            "manifest.scope.pop",
            "manifest.json: $.scope.pop: is required",
        ),
        ({"spec_hash": "sha256:ABC"}, "manifest.spec_hash", "manifest.json: $.spec_hash: 'sha256:ABC' does not match"),
        ({"format": "traceflux.incident-bundle/v2"}, "manifest.format", "must be 'traceflux.incident-bundle/v1'"),
        (
            {"incident": {"ref": "INC-1", "title": "t", "severity": "huge"}},
            "manifest.incident.severity",
            "must be one of sev1, sev2, sev3, sev4",
        ),
        ({"agent": 7}, "manifest.agent", "manifest.json: $.agent: must be a string, got number"),
        ({"colour": "red"}, "manifest.colour", "manifest.json: $.colour: is not an allowed field"),
    ],
)
def test_it_names_the_json_path_of_a_manifest_error(tmp_path, changes, field, message):
    path = bundle(tmp_path, manifest=manifest(**changes))
    with pytest.raises(Invalid) as caught:
        validate_bundle(path)
    assert caught.value.field == field
    assert message in caught.value.detail
    assert caught.value.as_dict() == {"detail": caught.value.detail, "field": field}


def test_it_refuses_a_manifest_that_is_not_json(tmp_path):
    path = tar_gz(tmp_path / "bad.tar.gz", [("manifest.json", b'{"format": '), good_members()[1]])
    with pytest.raises(Invalid, match=r"manifest.json: malformed JSON at line 1 column 12"):
        validate_bundle(path)
    repeated = tar_gz(tmp_path / "rep.tar.gz", [("manifest.json", b'{"agent": "a", "agent": "b"}'), good_members()[1]])
    with pytest.raises(Invalid, match="duplicate key 'agent'"):
        validate_bundle(repeated)


def test_it_refuses_a_window_that_ends_before_it_starts(tmp_path):
    path = bundle(tmp_path, manifest=manifest(window={"start": START, "end": "2026-02-26T13:59:00Z"}))
    with pytest.raises(Invalid) as caught:
        validate_bundle(path)
    assert caught.value.as_dict() == {
        "detail": "manifest.json: $.window.end: must be after window.start "
        "(2026-02-26T13:59:00Z is not after 2026-02-26T14:00:00Z)",
        "field": "manifest.window.end",
    }


def test_it_refuses_a_window_longer_than_the_maximum(tmp_path):
    path = bundle(tmp_path, manifest=manifest(window={"start": START, "end": "2026-02-26T14:10:01Z"}))
    with pytest.raises(Invalid, match=r"\$.window: lasts 601 s; the longest window accepted is 10 min") as caught:
        validate_bundle(path)
    assert caught.value.field == "manifest.window"
    assert validate_bundle(path, limits=Limits(max_window=timedelta(minutes=15))).signal_count == 40


def test_it_accepts_a_short_window_at_upload(tmp_path):
    # windows.py wants 2-10 minutes for incidents; an upload only needs end > start and <= max_window.
    signals = [signal(1, ts="2026-02-26T14:00:10Z")]
    path = bundle(tmp_path, manifest=manifest(window={"start": START, "end": "2026-02-26T14:00:30Z"}), signals=signals)
    assert validate_bundle(path).signal_count == 1


def test_it_requires_spec_json_to_hash_to_the_manifests_spec_hash(tmp_path):
    path = bundle(tmp_path, spec={"dedup": {"window_s": 6}})
    with pytest.raises(Invalid, match=r"manifest.json: \$.spec_hash: is sha256:\w+, but spec.json hashes to") as caught:
        validate_bundle(path)
    assert caught.value.field == "manifest.spec_hash"


# --- signals ----------------------------------------------------------------------------------------------------------


def test_it_lists_the_first_twenty_lines_outside_the_window_and_counts_the_rest(tmp_path):
    signals = list(SIGNALS)
    for n in range(25):
        signals.append(signal(100 + n, ts="2026-02-26T14:04:00.001Z"))
    signals.insert(16, signal(99, ts="2026-02-26T13:59:59.999Z"))  # line 17
    path = bundle(tmp_path, signals=signals)
    with pytest.raises(Invalid) as caught:
        validate_bundle(path)
    error = caught.value
    assert error.detail.startswith("signals.jsonl: 26 lines have timestamps outside the window (line 17: ts ")
    assert "is before window.start 2026-02-26T14:00:00Z" in error.detail
    assert error.lines == [17, *range(42, 61)]
    assert error.more == 6
    assert error.as_dict() == {"detail": error.detail, "lines": error.lines, "more_lines": 6}


def test_it_includes_both_ends_of_the_window(tmp_path):
    signals = [signal(1, ts=START), signal(2, ts="2026-02-26T14:04:00Z"), signal(3, ts="2026-02-26T15:03:00+01:00")]
    assert validate_bundle(bundle(tmp_path, signals=signals)).signal_count == 3


def test_it_names_the_line_of_malformed_json(tmp_path):
    lines = [json.dumps(s).encode() + b"\n" for s in SIGNALS[:5]]
    lines.insert(2, b'{"id": "x", "ts": \n')
    lines.append(b"\n")  # a blank line is tolerated
    lines.append(b'{"id": NaN}\n')
    with pytest.raises(Invalid) as caught:
        validate_bundle(lines_bundle(tmp_path, lines))
    assert caught.value.detail == "signals.jsonl: 2 lines are not valid JSON (line 3: Expecting value at column 19)"
    assert caught.value.lines == [3, 8]
    assert caught.value.more == 0


def test_it_words_several_kinds_of_bad_line_in_one_error(tmp_path):
    lines = [json.dumps(s).encode() + b"\n" for s in SIGNALS[:4]]
    lines.append(json.dumps(SIGNALS[0]).encode() + b"\n")  # line 5: a repeated id
    lines.append(json.dumps(signal(50, labels={"pop": 12})).encode() + b"\n")  # line 6
    lines.append(b"[1, 2]\n")  # line 7
    lines.append(json.dumps(signal(51, ts="2026-02-26T15:00:00Z")).encode() + b"\n")  # line 8
    with pytest.raises(Invalid) as caught:
        validate_bundle(lines_bundle(tmp_path, lines))
    assert caught.value.detail == (
        "signals.jsonl: 2 lines are not valid signals, 1 line repeats an earlier signal id and 1 line has a "
        "timestamp outside the window (line 5: id 'sig-00001' was used on an earlier line)"
    )
    assert caught.value.lines == [5, 6, 7, 8]


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        ({**signal(1), "ts": 1772114400}, "$.ts: must be a string, got number"),
        ({**signal(1), "ts": "2026-02-26 14:00:00"}, "$.ts: '2026-02-26 14:00:00' is not an RFC 3339 timestamp"),
        ({**signal(1), "ts": "2026-02-30T14:00:00Z"}, "$.ts: '2026-02-30T14:00:00Z' is not a valid timestamp"),
        ({**signal(1), "source": ""}, "$.source: must not be empty"),
        ({**signal(1), "labels": {"pop": 12}}, "$.labels.pop: must be a string, got number"),
        ({**signal(1), "severity": "fatal"}, "$.severity: must be one of debug, info, warning, error, critical"),
        ({**signal(1), "value": True}, "$.value: must be a finite number, got boolean"),
        ({**signal(1), "value": 1e999}, "$.value: must be a finite number, got number"),
        ({**signal(1), "colour": "red"}, "$.colour: is not an allowed field"),
        ({k: v for k, v in signal(1).items() if k != "labels"}, "$.labels: is required"),
        ([1], "$: must be an object, got array"),
    ],
)
def test_it_words_what_is_wrong_with_a_signal(obj, problem):
    with pytest.raises(SignalProblem) as caught:
        parse_signal(obj)
    assert str(caught.value).startswith(problem)
    assert not validator("signal").is_valid(obj) or obj["value"] == 1e999  # the schema cannot say "finite"


def test_it_refuses_overlong_lines_without_reading_them_whole(tmp_path):
    long_line = json.dumps(signal(2, labels={"junk": "x" * 1000})).encode() + b"\n"
    lines = [json.dumps(signal(1)).encode() + b"\n", long_line, json.dumps(signal(3)).encode() + b"\n"]
    with pytest.raises(Invalid, match=r"1 line is longer than the 512 bytes limit") as caught:
        validate_bundle(lines_bundle(tmp_path, lines), limits=Limits(max_line_bytes=512))
    assert caught.value.lines == [2]


def test_it_refuses_a_bundle_without_signals(tmp_path):
    with pytest.raises(Invalid, match=r"signals.jsonl: holds no signals"):
        validate_bundle(lines_bundle(tmp_path, [b"\n"]))


def test_it_reads_signals_through_the_shared_parser():
    stream = io.BytesIO(b"".join(json.dumps(s).encode() + b"\n" for s in SIGNALS[:3]) + b"{}\n")
    read = []
    with pytest.raises(Invalid, match=r"1 line is not a valid signal \(line 4: \$.id: is required\)"):
        read.extend(iter_signals(stream))
    assert [s.id for s in read] == ["sig-00001", "sig-00002", "sig-00003"]
    assert read[0].ts.isoformat() == "2026-02-26T14:01:01.250000+00:00" and read[0].line == 1


# --- baseline ---------------------------------------------------------------------------------------------------------


def test_it_refuses_a_baseline_naming_signals_that_are_not_in_the_bundle(tmp_path):
    baseline = {"incidents": [{"id": "bl-1", "fingerprint": "fp", "members": ["sig-00001", "nope"], "suppressed": []}]}
    with pytest.raises(Invalid) as caught:
        validate_bundle(bundle(tmp_path, baseline=baseline))
    assert caught.value.as_dict() == {
        "detail": "baseline.json: $.incidents[0].members[1]: 'nope' is not a signal id in signals.jsonl",
        "field": "baseline.incidents[0].members[1]",
    }


@pytest.mark.parametrize(
    ("baseline", "field", "message"),
    [
        (
            {"incidents": [{"id": "a", "fingerprint": "f", "members": []}]},
            "baseline.incidents[0].suppressed",
            "is required",
        ),
        (
            {"incidents": [{"id": "a", "fingerprint": "f", "members": [], "suppressed": []}]},
            "baseline.incidents[0].members",
            "must hold at least 1 item",
        ),
        (
            {"incidents": [{"id": "a", "fingerprint": "f", "members": ["sig-00001"], "suppressed": ["sig-00001"]}]},
            "baseline.incidents[0].suppressed[0]",
            "is already listed at $.incidents[0].members[0]",
        ),
        (
            {
                "incidents": [
                    {"id": "a", "fingerprint": "f", "members": ["sig-00001"], "suppressed": []},
                    {"id": "a", "fingerprint": "f", "members": ["sig-00002"], "suppressed": []},
                ]
            },
            "baseline.incidents[1].id",
            "repeats incident id 'a'",
        ),
    ],
)
def test_it_names_the_json_path_of_a_baseline_error(tmp_path, baseline, field, message):
    with pytest.raises(Invalid) as caught:
        validate_bundle(bundle(tmp_path, baseline=baseline))
    assert caught.value.field == field
    assert message in caught.value.detail


# --- snapshots --------------------------------------------------------------------------------------------------------


def snapshot(tmp_path, value, name="snapshot.json"):
    path = tmp_path / name
    path.write_bytes(value if isinstance(value, bytes) else json.dumps(value).encode())
    return path


SNAPSHOT = {
    "format": "traceflux.snapshot/v1",
    "agent": "edge-agent-01",
    "captured_at": "2026-02-26T14:05:00Z",
    "state": {"routes": 12, "peers": ["AS64500"]},
}


def test_it_accepts_a_valid_snapshot(tmp_path):
    info = validate_snapshot(snapshot(tmp_path, SNAPSHOT))
    assert info.agent == "edge-agent-01" and info.state == SNAPSHOT["state"]
    assert info.captured_at.isoformat() == "2026-02-26T14:05:00+00:00"
    assert info.as_dict()["state_keys"] == ["peers", "routes"]


@pytest.mark.parametrize(
    ("value", "error", "message", "field"),
    [
        ({**SNAPSHOT, "state": []}, Invalid, "snapshot: $.state: must be an object, got array", "snapshot.state"),
        (
            {**SNAPSHOT, "captured_at": "now"},
            Invalid,
            "snapshot: $.captured_at: 'now' is not an RFC 3339",
            "snapshot.captured_at",
        ),
        ([SNAPSHOT], Invalid, "snapshot: $: must be an object, got array", "snapshot"),
        (b'{"format": "traceflux.snapshot/v1",', Invalid, "snapshot: malformed JSON at line 1", None),
        (
            gzip.compress(b"x", mtime=0),
            WrongType,
            "expected a snapshot (a JSON object), got gzip data that is not a tar",
            None,
        ),
    ],
)
def test_it_names_what_is_wrong_with_a_snapshot(tmp_path, value, error, message, field):
    with pytest.raises(error) as caught:
        validate_snapshot(snapshot(tmp_path, value))
    assert type(caught.value) is error
    assert caught.value.detail.startswith(message)
    assert caught.value.field == field


def test_it_refuses_a_snapshot_over_the_size_limit(tmp_path):
    big = {**SNAPSHOT, "state": {"blob": "x" * 5000}}
    with pytest.raises(TooLarge, match="snapshot: 5 KiB is over the 4 KiB limit"):
        validate_snapshot(snapshot(tmp_path, big), limits=Limits(max_json_bytes=4096))


def test_it_refuses_a_bundle_given_as_a_snapshot(tmp_path):
    with pytest.raises(WrongType, match=r"expected a snapshot \(a JSON object\), got a gzip'd tar"):
        validate_snapshot(bundle(tmp_path))


# --- the writer -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_it_writes_the_same_bytes_for_the_same_inputs(tmp_path, fmt):
    first = write_bundle(tmp_path / "a", manifest=manifest(), signals=SIGNALS, baseline=BASELINE, spec=SPEC, fmt=fmt)
    again = io.BytesIO()
    second = write_bundle(again, manifest=manifest(), signals=iter(SIGNALS), baseline=BASELINE, spec=SPEC, fmt=fmt)
    assert first == second == hashlib.sha256((tmp_path / "a").read_bytes()).hexdigest()
    assert again.getvalue() == (tmp_path / "a").read_bytes()
    other = write_bundle(io.BytesIO(), manifest=manifest(agent="other"), signals=SIGNALS, fmt=fmt)
    assert other != first


def test_it_writes_spec_json_in_canonical_form_so_its_file_hash_is_the_spec_hash(tmp_path):
    path = bundle(tmp_path, spec=SPEC)
    with tarfile.open(path) as tar:
        data = tar.extractfile("spec.json").read()
        infos = tar.getmembers()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == spec_hash(SPEC)
    assert [i.name for i in infos] == ["manifest.json", "spec.json", "signals.jsonl"]
    assert {(i.uid, i.gid, i.uname, i.mode, i.mtime) for i in infos} == {(0, 0, "", 0o644, 315532800)}


def test_it_refuses_an_unknown_output_format(tmp_path):
    with pytest.raises(ValueError, match="fmt must be one of"):
        write_bundle(tmp_path / "x", manifest=manifest(), signals=SIGNALS, fmt="rar")


# --- errors, schemas, purity ------------------------------------------------------------------------------------------


def test_it_shapes_errors_for_the_api():
    assert Invalid("x", field="manifest.window.end").as_dict() == {"detail": "x", "field": "manifest.window.end"}
    assert Invalid("y", lines=[1, 2], more=3).as_dict() == {"detail": "y", "lines": [1, 2], "more_lines": 3}
    assert (WrongType.status, TooLarge.status, Invalid.status) == (415, 413, 400)
    assert all(issubclass(cls, FormatError) for cls in (WrongType, TooLarge, Invalid))


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_it_ships_the_same_schemas_in_the_docs(name):
    assert (ROOT / "docs" / "formats" / f"{name}.schema.json").read_bytes() == schema_bytes(name)
    validator(name).check_schema(json.loads(schema_bytes(name)))


def test_it_imports_without_django():
    code = "import replays.engine, replays.engine.samples, sys; assert 'django' not in sys.modules, 'django'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


# --- properties -------------------------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
MANIFEST_PATHS = [
    ("format",),
    ("incident",),
    ("incident", "ref"),
    ("incident", "severity"),
    ("environment",),
    ("agent",),
    ("captured_at",),
    ("window",),
    ("window", "start"),
    ("window", "end"),
    ("scope",),
    ("scope", "pop"),
    ("spec_hash",),
]
quick = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _mutate(document, path, value, delete):
    target = json.loads(json.dumps(document))
    holder = target
    for key in path[:-1]:
        holder = holder[key]
    if delete:
        holder.pop(path[-1], None)
    else:
        holder[path[-1]] = value
    return target


def _only_format_errors(path, **kwargs):
    try:
        validate_bundle(path, **kwargs)
    except FormatError as exc:
        assert exc.detail.strip()
        assert isinstance(exc.as_dict()["detail"], str)
        return exc
    return None


@quick
@given(path=st.sampled_from(MANIFEST_PATHS), value=json_values, delete=st.booleans())
def test_it_only_ever_raises_format_errors_for_mutated_manifests(tmp_path, path, value, delete):
    bad = _mutate(manifest(), path, value, delete)
    error = _only_format_errors(bundle(tmp_path, manifest=bad))
    assert error is None or isinstance(error, Invalid)
    if error is not None and error.field is not None:
        assert error.field.startswith("manifest")


@quick
@given(
    lines=st.lists(
        st.binary(max_size=80)
        | json_values.map(lambda v: json.dumps(v).encode())
        | st.builds(lambda s: json.dumps(s).encode(), st.sampled_from(SIGNALS)),
        max_size=6,
    )
)
def test_it_only_ever_raises_format_errors_for_odd_signal_lines(tmp_path, lines):
    _only_format_errors(lines_bundle(tmp_path, [line.replace(b"\n", b" ") + b"\n" for line in lines]))


@quick
@given(
    fmt=st.sampled_from(["tar.gz", "zip"]),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 10**6),
)
def test_it_only_ever_raises_format_errors_for_damaged_archives(tmp_path, fmt, edits, cut):
    data = bytearray(bundle(tmp_path, fmt=fmt, baseline=BASELINE, spec=SPEC).read_bytes())
    for offset, byte in edits:
        data[offset % len(data)] = byte
    damaged = tmp_path / "damaged"
    damaged.write_bytes(bytes(data[: max(1, len(data) - cut % 64)]))
    _only_format_errors(damaged)


signal_fields = st.sampled_from(["id", "ts", "source", "name", "severity", "value", "labels", "extra"])
field_values = (
    json_values
    | st.sampled_from(
        [
            "",
            "x" * 200,
            "2026-02-26T14:01:00Z",
            "2026-02-26T14:01:00+02:00",
            "2026-02-26t14:01:00z",
            "2026-02-30T00:00:00Z",
            "info",
            1.5,
        ]
    )
    | st.dictionaries(st.text(max_size=3), st.text(max_size=3) | st.integers(), max_size=3)
)


@given(changes=st.lists(st.tuples(signal_fields, field_values, st.booleans()), max_size=3))
def test_it_checks_signals_exactly_as_the_schema_does(changes):
    obj = signal(1)
    for key, value, delete in changes:
        obj = _mutate(obj, (key,), value, delete)
    try:
        parse_signal(obj)
        accepted = True
    except SignalProblem:
        accepted = False
    assert accepted == validator("signal").is_valid(obj)


@given(
    incidents=st.lists(
        st.fixed_dictionaries(
            {
                "id": st.text(max_size=3),
                "fingerprint": st.text(max_size=3),
                "members": st.lists(st.text(max_size=3) | st.integers(), max_size=2),
                "suppressed": st.lists(st.text(max_size=3), max_size=2) | json_values,
            },
            optional={"extra": json_values},
        ),
        max_size=3,
    )
    | json_values
)
def test_it_never_fast_accepts_a_baseline_the_schema_refuses(incidents):
    baseline = {"incidents": incidents}
    assert baseline_conforms(baseline) == validator("baseline").is_valid(baseline)
