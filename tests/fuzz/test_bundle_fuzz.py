"""Fuzzing the bundle parser where tests/engine/test_bundles.py does not reach: archives assembled entry by entry
(random names, entry types, link targets, modes, compression methods, gzip members), header fields rewritten with a
valid checksum, member documents drawn from their own JSON Schemas or mutated at random paths, signal lines drawn from
signal.schema.json, and snapshots. Whatever goes in, validate_bundle and validate_snapshot accept it or raise
WrongType, TooLarge or Invalid naming the problem; a bundle they accept can be opened and read to the end."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replays.engine import Invalid, Limits, detect_kind, open_bundle, validate_bundle, validate_snapshot
from replays.engine.canonical import canonical_json
from tests.fuzz.strategies import (
    json_values,
    mutate_tar_header,
    mutated,
    nested,
    schema_values,
    tar_gz_archives,
    zip_archives,
)
from tests.fuzz.support import FUZZ, archive, good_documents, member_bytes, only_format_errors

# zipfile warns when an archive repeats a name; repeating names is one of the things these archives do on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")

GOOD = good_documents()
MEMBERS = member_bytes(GOOD)
FORMATS = st.sampled_from(["tar.gz", "zip"])
# Small limits, so sizes, counts and ratios are crossed by archives a few KiB long.
SMALL = Limits(max_members=6, max_uncompressed=64 * 1024, ratio_floor=4 * 1024, max_ratio=20, max_json_bytes=4096,
               max_line_bytes=512)
LIMITS = st.sampled_from([Limits(), SMALL])


DEFAULT = Limits()


def judge(tmp_path, content: bytes, limits: Limits = DEFAULT):
    """Validate `content` as a bundle; when accepted, it must also open and stream every signal."""
    path = tmp_path / "upload"
    path.write_bytes(content)
    assert detect_kind(path, limits=limits) in ("tar.gz", "zip", "json", "unknown")
    info, error = only_format_errors(lambda: validate_bundle(path, limits=limits))
    if info is not None:
        with open_bundle(path, limits=limits) as bundle:
            assert sum(1 for _ in bundle.signals()) == info.signal_count
        json.dumps(info.as_dict())
    return info, error


def with_members(fmt: str, **replacements: bytes | None) -> bytes:
    """The good bundle with some members replaced (None: left out)."""
    members = dict(MEMBERS)
    for key, data in replacements.items():
        name = {"manifest": "manifest.json", "signals": "signals.jsonl", "baseline": "baseline.json",
                "spec": "spec.json"}[key]
        if data is None:
            members.pop(name)
        else:
            members[name] = data
    return archive(members, fmt)


def test_it_accepts_the_good_bundle_these_fuzzers_start_from(tmp_path):
    for fmt in ("tar.gz", "zip"):
        info, error = judge(tmp_path, archive(MEMBERS, fmt))
        assert error is None and info.signal_count == 20


# --- the container -------------------------------------------------------------------------------------------------


@FUZZ
@given(content=tar_gz_archives(MEMBERS), limits=LIMITS)
def test_it_judges_any_tar_built_entry_by_entry(tmp_path, content, limits):
    judge(tmp_path, content, limits)


@FUZZ
@given(content=zip_archives(MEMBERS), limits=LIMITS)
def test_it_judges_any_zip_built_entry_by_entry(tmp_path, content, limits):
    judge(tmp_path, content, limits)


@FUZZ
@given(data=st.data())
def test_it_judges_a_good_tar_whose_header_fields_were_rewritten(tmp_path, data):
    import gzip

    tar = gzip.decompress(archive(MEMBERS, "tar.gz"))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        tar = mutate_tar_header(tar, data.draw)
    judge(tmp_path, gzip.compress(tar, mtime=0))


@FUZZ
@given(data=st.data())
def test_it_judges_a_good_zip_whose_directory_fields_were_rewritten(tmp_path, data):
    from tests.fuzz.strategies import mutate_zip_structure

    content = archive(MEMBERS, "zip")
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        content = mutate_zip_structure(content, data.draw)
    judge(tmp_path, content)


@FUZZ
@given(prefix=st.sampled_from([b"\x1f\x8b", b"PK\x03\x04", b"PK\x05\x06", b"{", b"[", b"\xef\xbb\xbf{", b" \n"]),
       rest=st.binary(max_size=600))
def test_it_judges_noise_behind_each_magic_number(tmp_path, prefix, rest):
    judge(tmp_path, prefix + rest)


# --- the members ---------------------------------------------------------------------------------------------------


@FUZZ
@given(fmt=FORMATS, document=schema_values("manifest"))
def test_it_judges_any_manifest_the_schema_accepts(tmp_path, fmt, document):
    # Spec and baseline left out: a drawn manifest names another spec hash, and its window rarely holds the signals.
    _, error = judge(tmp_path, with_members(fmt, manifest=json.dumps(document).encode(), spec=None, baseline=None))
    if error is not None:
        assert isinstance(error, Invalid)
        assert error.field is not None or error.detail.startswith("signals.jsonl: "), error.detail


@FUZZ
@given(fmt=FORMATS, member=st.sampled_from(["manifest", "baseline", "spec"]), data=st.data())
def test_it_judges_mutated_json_members(tmp_path, fmt, member, data):
    document = data.draw(mutated(GOOD[member]) | json_values, label=member)
    encoded = data.draw(st.sampled_from(["canonical", "ascii", "bom", "latin-1"]), label="encoding")
    if encoded == "canonical":
        raw = json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")
    elif encoded == "ascii":
        raw = json.dumps(document).encode()
    elif encoded == "bom":
        raw = b"\xef\xbb\xbf" + json.dumps(document).encode()
    else:
        raw = json.dumps(document, ensure_ascii=False).encode("latin-1", "replace")
    _, error = judge(tmp_path, with_members(fmt, **{member: raw}))
    if error is not None and error.field is not None:
        assert error.field.split(".")[0].split("[")[0] in ("manifest", "baseline", "spec"), error.field


@FUZZ
@given(fmt=FORMATS, member=st.sampled_from(["manifest", "baseline", "spec", "signals"]), data=st.data())
def test_it_judges_member_text_with_bytes_flipped_or_cut(tmp_path, fmt, member, data):
    raw = bytearray(with_members_raw(member))
    for _ in range(data.draw(st.integers(min_value=0, max_value=4))):
        at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        raw[at] = data.draw(st.sampled_from([0x00, 0x22, 0x5C, 0x7B, 0x7D, 0x5B, 0x5D, 0x2C, 0x3A, 0x0A, 0xFF, 0xC3]))
    cut = data.draw(st.integers(min_value=0, max_value=len(raw)))
    judge(tmp_path, with_members(fmt, **{member: bytes(raw[:cut] if data.draw(st.booleans()) else raw)}))


def with_members_raw(member: str) -> bytes:
    return MEMBERS[{"manifest": "manifest.json", "signals": "signals.jsonl", "baseline": "baseline.json",
                    "spec": "spec.json"}[member]]


@FUZZ
@given(fmt=FORMATS, document=schema_values("baseline"))
def test_it_judges_any_baseline_the_schema_accepts(tmp_path, fmt, document):
    _, error = judge(tmp_path, with_members(fmt, baseline=canonical_json(document)))
    if error is not None:
        assert isinstance(error, Invalid) and (error.field or "").startswith("baseline"), error.detail


@FUZZ
@given(fmt=FORMATS, lines=st.lists(schema_values("signal"), min_size=1, max_size=8), data=st.data())
def test_it_judges_signal_lines_the_schema_accepts(tmp_path, fmt, lines, data):
    # Schema-valid lines still break the rules the schema cannot state: the window, unique ids, finite numbers.
    good = [json.dumps(line).encode() for line in GOOD["signals"][:5]]
    drawn = [json.dumps(line, ensure_ascii=data.draw(st.booleans())).encode("utf-8", "surrogatepass") for line in lines]
    ending = data.draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    body = ending.join(good + drawn)
    _, error = judge(tmp_path, with_members(fmt, signals=body, baseline=None))
    if error is not None:
        assert error.detail.startswith("signals.jsonl: "), error.detail


@FUZZ
@given(fmt=FORMATS, depth=st.integers(min_value=0, max_value=50_000),
       member=st.sampled_from(["manifest", "baseline", "spec", "signals"]))
def test_it_refuses_deeply_nested_json_in_any_member(tmp_path, fmt, depth, member):
    deep = json.dumps(nested(depth)).encode() if depth < 500 else b"[" * depth + b"]" * depth
    raw = deep if member != "signals" else MEMBERS["signals.jsonl"] + b'{"id": ' + deep + b"}\n"
    _, error = judge(tmp_path, with_members(fmt, **{member: raw}))
    assert error is not None


# --- snapshots -----------------------------------------------------------------------------------------------------

SNAPSHOT = {"format": "traceflux.snapshot/v1", "agent": "edge-agent-01", "captured_at": "2026-02-26T14:05:00Z",
            "state": {"routes": 12, "peers": ["AS64500"]}}


@FUZZ
@given(document=schema_values("snapshot") | mutated(SNAPSHOT) | json_values)
def test_it_judges_any_snapshot(tmp_path, document):
    path = tmp_path / "snapshot"
    path.write_bytes(json.dumps(document).encode())
    info, error = only_format_errors(lambda: validate_snapshot(path))
    if info is not None:
        json.dumps(info.as_dict())
    elif error.field is not None:
        assert error.field.startswith("snapshot"), error.field

