"""The evidence bundle: one deterministic tar.gz holding what a replay was given and what it found, for review.

Members (in this order, which is also name order): diffs.json, policy.json, report.json, selection.json,
timeline.json; each canonical JSON. Fixed metadata (mtime 1980-01-01, uid/gid 0, no owner names, mode 0644, gzip
header with no name and mtime 0) makes the same inputs give the same bytes on every run and machine with the same
zlib, so the bundle's SHA-256 identifies the evidence. docs/report-format.md, "Evidence bundle".
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Mapping
from typing import IO, Any

from .canonical import canonical_json, spec_hash
from .formats import format_timestamp, load_json_document

EVIDENCE_FORMAT = "traceflux.evidence/v1"
EVIDENCE_MEMBERS = ("diffs.json", "policy.json", "report.json", "selection.json", "timeline.json")
_FIXED_MTIME = 315532800  # 1980-01-01T00:00:00Z, as incident bundles use
_MAX_MEMBER = 256 * 1024 * 1024  # read_evidence refuses a member this large: not a bundle we wrote


def selection_document(
    result: Any, *, by_source: Mapping[str, int] | None = None, source: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """selection.json: which signals the replay read, precisely enough to find them again and check they are the same.

    `signals_digest` is the replay's digest of the selected signals; `source` optionally names the file they came from
    (its base name, kind and SHA-256; never a path, which differs between machines).
    """
    stats = result.stats
    window = result.window
    return {
        "format": EVIDENCE_FORMAT,
        "signals_digest": result.signals_digest,
        "signals_in": int(stats.get("signals_in", 0)),
        "signals_selected": int(stats.get("signals_selected", stats.get("signals_in", 0))),
        "by_source": dict(sorted(by_source.items())) if by_source is not None else None,
        "window": (
            {"start": format_timestamp(window[0]), "end": format_timestamp(window[1])} if window is not None else None
        ),
        "scope": dict(sorted(result.scope.items())) if result.scope is not None else None,
        "source": dict(source) if source is not None else None,
    }


def evidence_members(
    *,
    report: Mapping[str, Any],
    policy_spec: Mapping[str, Any],
    selection: Mapping[str, Any],
    compare_spec: Mapping[str, Any] | None = None,
) -> dict[str, bytes]:
    """The bytes of each member, by name."""
    policy: dict[str, Any] = {"spec_hash": spec_hash(policy_spec), "spec": policy_spec}
    if compare_spec is not None:
        policy["compare"] = {"spec_hash": spec_hash(compare_spec), "spec": compare_spec}
    return {
        "diffs.json": canonical_json(report.get("diffs")),
        "policy.json": canonical_json(policy),
        "report.json": canonical_json(report),
        "selection.json": canonical_json(selection),
        "timeline.json": canonical_json(report.get("timeline")),
    }


def write_evidence(
    target: str | os.PathLike[str] | IO[bytes],
    *,
    report: Mapping[str, Any],
    policy_spec: Mapping[str, Any],
    selection: Mapping[str, Any],
    compare_spec: Mapping[str, Any] | None = None,
) -> str:
    """Write the evidence bundle to a path or binary file; return the hex SHA-256 of the bytes written."""
    members = evidence_members(report=report, policy_spec=policy_spec, selection=selection, compare_spec=compare_spec)
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for name in sorted(members):
            data = members[name]
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), _FIXED_MTIME, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    content = buffer.getvalue()
    if isinstance(target, str | os.PathLike):
        with open(target, "wb") as handle:
            handle.write(content)
    else:
        target.write(content)
        target.flush()
    return hashlib.sha256(content).hexdigest()


def read_evidence(source: str | os.PathLike[str] | IO[bytes]) -> dict[str, Any]:
    """The parsed members of an evidence bundle, by name (for tests and reviewers' tools)."""
    documents: dict[str, Any] = {}
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as handle:
            return read_evidence(handle)
    with tarfile.open(fileobj=source, mode="r:gz") as tar:
        for info in tar:
            if not info.isfile() or info.name not in EVIDENCE_MEMBERS or info.size > _MAX_MEMBER:
                raise ValueError(f"{info.name!r} is not an evidence bundle member")
            stream = tar.extractfile(info)
            assert stream is not None  # a regular file always has a stream
            documents[info.name] = load_json_document(stream.read(), name=info.name)
    return documents
