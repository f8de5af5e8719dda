"""Incident bundles and snapshots: validate an upload, open a bundle for the engine, write one deterministically.

An incident bundle is a gzip'd tar or a zip of manifest.json, signals.jsonl and optionally baseline.json and
spec.json (docs/bundle-format.md). The upload API calls `validate_bundle` / `validate_snapshot` on a file already on
disk and maps WrongType, TooLarge and Invalid to 415, 413 and 400.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections import deque
from collections.abc import Container, Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import IO, Any

from .archive import (
    BASELINE,
    KIND_TAR_GZ,
    KIND_ZIP,
    MANIFEST,
    SIGNALS,
    SPEC,
    TarGzArchive,
    ZipArchive,
    corrupt_archive_errors,
    json_start,
    open_archive,
    sniff,
)
from .canonical import CanonicalJSONError, canonical_json, spec_hash
from .errors import Invalid, TooLarge, WrongType
from .formats import (
    DEFAULT_LIMITS,
    Limits,
    format_bytes,
    format_duration,
    format_timestamp,
    json_type,
    load_json_document,
    parse_timestamp,
    read_limited,
    schema_problem,
)
from .signals import Signal, SignalReader

BUNDLE_KINDS = (KIND_TAR_GZ, KIND_ZIP)
_JSON_MEMBERS = (MANIFEST, BASELINE, SPEC)


# --- manifest, baseline, spec -----------------------------------------------------------------------------------------


def check_manifest(manifest: Any, *, limits: Limits = DEFAULT_LIMITS) -> tuple[datetime, datetime, datetime]:
    """Check a parsed manifest; return (captured_at, window start, window end) as aware UTC datetimes."""
    problem = schema_problem("manifest", manifest, member=MANIFEST, root="manifest")
    if problem is not None:
        raise problem
    captured_at = parse_timestamp(manifest["captured_at"])
    start = parse_timestamp(manifest["window"]["start"])
    end = parse_timestamp(manifest["window"]["end"])
    if end <= start:
        raise Invalid(
            f"{MANIFEST}: $.window.end: must be after window.start ({format_timestamp(end)} is not after "
            f"{format_timestamp(start)})",
            field="manifest.window.end",
        )
    if end - start > limits.max_window:
        raise Invalid(
            f"{MANIFEST}: $.window: lasts {format_duration(end - start)}; the longest window accepted is "
            f"{format_duration(limits.max_window)}",
            field="manifest.window",
        )
    return captured_at, start, end


def check_spec(spec: Any, *, manifest: Mapping[str, Any]) -> None:
    """spec.json must be an object whose spec hash is the manifest's spec_hash."""
    if not isinstance(spec, dict):
        raise Invalid(f"{SPEC}: $: must be an object, got {json_type(spec)}", field="spec")
    try:
        actual = spec_hash(spec)
    except (CanonicalJSONError, RecursionError) as exc:
        raise Invalid(f"{SPEC}: has no canonical form ({exc})", field="spec") from None
    if actual != manifest["spec_hash"]:
        raise Invalid(
            f"{MANIFEST}: $.spec_hash: is {manifest['spec_hash']}, but spec.json hashes to {actual}",
            field="manifest.spec_hash",
        )


_INCIDENT_KEYS = frozenset(("id", "fingerprint", "members", "suppressed"))


def _short_ids(ids: Any) -> bool:
    return type(ids) is list and all(type(item) is str and 0 < len(item) <= 128 for item in ids)


def baseline_conforms(baseline: Any) -> bool:
    """A fast yes for baseline.schema.json. jsonschema spends a third of a second on a baseline of 30,000 ids, so
    it runs only when this says no, to word the problem; tests hold this never to say yes where the schema says no."""
    if type(baseline) is not dict or baseline.keys() != {"incidents"}:
        return False
    incidents = baseline["incidents"]
    if type(incidents) is not list or len(incidents) > 100_000:
        return False
    for incident in incidents:
        if type(incident) is not dict or incident.keys() != _INCIDENT_KEYS:
            return False
        incident_id, fp, members = incident["id"], incident["fingerprint"], incident["members"]
        if not (type(incident_id) is str and 0 < len(incident_id) <= 128 and type(fp) is str and 0 < len(fp) <= 256):
            return False
        if not (_short_ids(members) and members and _short_ids(incident["suppressed"])):
            return False
    return True


def check_baseline(baseline: Any) -> None:
    """Check baseline.json on its own: its schema, unique incident ids, each signal id in at most one place."""
    if not baseline_conforms(baseline):
        problem = schema_problem("baseline", baseline, member=BASELINE, root="baseline")
        if problem is not None:
            raise problem
    incident_ids: set[str] = set()
    placed: dict[str, str] = {}
    for index, incident in enumerate(baseline["incidents"]):
        if incident["id"] in incident_ids:
            raise Invalid(
                f"{BASELINE}: $.incidents[{index}].id: repeats incident id {incident['id']!r}",
                field=f"baseline.incidents[{index}].id",
            )
        incident_ids.add(incident["id"])
        for role in ("members", "suppressed"):
            for position, signal_id in enumerate(incident[role]):
                path = f"$.incidents[{index}].{role}[{position}]"
                if signal_id in placed:
                    raise Invalid(
                        f"{BASELINE}: {path}: signal {signal_id!r} is already listed at {placed[signal_id]}",
                        field="baseline" + path[1:],
                    )
                placed[signal_id] = path


def check_baseline_refs(baseline: Mapping[str, Any], signal_ids: Container[str]) -> None:
    """Every signal id the baseline names must be a signal of signals.jsonl."""
    unknown: list[tuple[str, str]] = []
    for index, incident in enumerate(baseline["incidents"]):
        for role in ("members", "suppressed"):
            for position, signal_id in enumerate(incident[role]):
                if signal_id not in signal_ids:
                    unknown.append((f"$.incidents[{index}].{role}[{position}]", signal_id))
    if unknown:
        path, signal_id = unknown[0]
        more = f" (and {len(unknown) - 1} more unknown ids)" if len(unknown) > 1 else ""
        raise Invalid(
            f"{BASELINE}: {path}: {signal_id!r} is not a signal id in {SIGNALS}{more}", field="baseline" + path[1:]
        )


# --- opening a bundle -------------------------------------------------------------------------------------------------


def _bundle_kind(path: str | os.PathLike[str], limits: Limits) -> str:
    kind, description = sniff(path, limits=limits)
    if kind not in BUNDLE_KINDS:
        raise WrongType(f"expected an incident bundle (gzip'd tar or zip), got {description}")
    return kind


def _read_json_member(stream: IO[bytes], name: str, limits: Limits, declared: int) -> Any:
    if declared > limits.max_json_bytes:
        raise TooLarge(
            f"{name}: {format_bytes(declared)} is over the {format_bytes(limits.max_json_bytes)} limit "
            "for a JSON document"
        )
    return load_json_document(read_limited(stream, name=name, limit=limits.max_json_bytes), name=name)


class Bundle:
    """An opened incident bundle: archive rules passed, manifest, baseline and spec parsed and checked.

    Signals are streamed on demand with `signals()`; each call reads signals.jsonl afresh (tar.gz: one more
    decompression pass), so nothing holds the whole file. Use as a context manager, or call close().
    """

    def __init__(self, path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS) -> None:
        self.path = Path(path)
        self.limits = limits
        self.kind = _bundle_kind(path, limits)
        self._archive: TarGzArchive | ZipArchive = open_archive(path, self.kind, limits)
        try:
            self._load()
        except BaseException:
            self._archive.close()
            raise

    def _load(self) -> None:
        limits = self.limits
        documents: dict[str, Any] = {}
        present: set[str] = set()
        archive = self._archive
        with corrupt_archive_errors("archive"):
            if isinstance(archive, ZipArchive):
                present.update(archive.names())
                for name in _JSON_MEMBERS:
                    if name in present:
                        member = archive.open(name)
                        with member.stream:
                            documents[name] = _read_json_member(member.stream, name, limits, member.size)
            else:
                # One pass over the whole tar: every entry meets the rules before any signal is read.
                with closing(archive.members()) as members:
                    for member in members:
                        present.add(member.name)
                        if member.name in _JSON_MEMBERS:
                            documents[member.name] = _read_json_member(member.stream, member.name, limits, member.size)
        for required in (MANIFEST, SIGNALS):
            if required not in present:
                raise Invalid(f"archive: {required} is missing")
        self.uncompressed_bytes: int = archive.uncompressed_bytes
        self.compressed_bytes: int = archive.compressed_bytes
        self.manifest: dict[str, Any] = documents[MANIFEST]
        self.captured_at, self.window_start, self.window_end = check_manifest(self.manifest, limits=limits)
        self.spec: dict[str, Any] | None = documents.get(SPEC)
        if SPEC in documents:
            check_spec(documents[SPEC], manifest=self.manifest)
        self.baseline: dict[str, Any] | None = documents.get(BASELINE)
        if BASELINE in documents:
            check_baseline(documents[BASELINE])

    @property
    def window(self) -> tuple[datetime, datetime]:
        return self.window_start, self.window_end

    def read_signals(self, reader: SignalReader) -> Iterator[Signal]:
        """Stream signals.jsonl through `reader`, which tallies bad lines; the caller asks reader.error() after."""
        return chain.from_iterable(self.read_signal_batches(reader))

    def read_signal_batches(self, reader: SignalReader) -> Iterator[list[Signal]]:
        """read_signals a list at a time (SignalReader.batches)."""
        archive = self._archive
        with corrupt_archive_errors("archive"):
            if isinstance(archive, ZipArchive):
                member = archive.open(SIGNALS)
                with member.stream:
                    yield from reader.batches(member.stream)
                return
            with closing(archive.members()) as members:
                for member in members:
                    if member.name == SIGNALS:
                        yield from reader.batches(member.stream)
                        return

    def signals(self) -> Iterator[Signal]:
        """Yield every good signal in file order; after the last, raise Invalid if any line was bad."""
        reader = SignalReader(window=self.window, limits=self.limits)
        yield from self.read_signals(reader)
        error = reader.error()
        if error is not None:
            raise error

    def close(self) -> None:
        self._archive.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_bundle(path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS) -> Bundle:
    """Open a bundle for reading: kind, archive rules and the JSON members are checked now, signals as read."""
    return Bundle(path, limits=limits)


# --- validating an upload ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleInfo:
    """What an accepted bundle holds: the upload API stores it alongside the file."""

    kind: str  # tar.gz or zip
    manifest: dict[str, Any]
    captured_at: datetime
    window_start: datetime
    window_end: datetime
    scope: dict[str, str]
    spec_hash: str
    incident: dict[str, str]
    environment: str
    agent: str
    signal_count: int
    counts_by_source: dict[str, int]
    has_baseline: bool
    has_spec: bool
    uncompressed_bytes: int  # bytes decompressed: tar.gz, the whole tar stream; zip, the members' data
    compressed_bytes: int = 0
    baseline_incidents: int = 0

    @property
    def window(self) -> tuple[datetime, datetime]:
        return self.window_start, self.window_end

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: timestamps as RFC 3339 strings."""
        return {
            "kind": self.kind,
            "incident": self.incident,
            "environment": self.environment,
            "agent": self.agent,
            "captured_at": format_timestamp(self.captured_at),
            "window": {"start": format_timestamp(self.window_start), "end": format_timestamp(self.window_end)},
            "scope": self.scope,
            "spec_hash": self.spec_hash,
            "signal_count": self.signal_count,
            "counts_by_source": dict(sorted(self.counts_by_source.items())),
            "has_baseline": self.has_baseline,
            "baseline_incidents": self.baseline_incidents,
            "has_spec": self.has_spec,
            "uncompressed_bytes": self.uncompressed_bytes,
            "compressed_bytes": self.compressed_bytes,
        }


def validate_bundle(path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS) -> BundleInfo:
    """Check an uploaded incident bundle end to end, streaming; return what it holds or raise a FormatError.

    Order of checks, so the first error is the most basic: kind (415), archive rules and sizes (413/400), required
    members, manifest, spec, baseline, then every signal line (ids unique, ts inside the window), then the baseline's
    references to signal ids.
    """
    with open_bundle(path, limits=limits) as bundle:
        reader = SignalReader(window=bundle.window, limits=limits)
        deque(bundle.read_signals(reader), maxlen=0)  # consume without keeping: the reader tallies what we report
        error = reader.error()
        if error is not None:
            raise error
        if bundle.baseline is not None:
            check_baseline_refs(bundle.baseline, reader.ids)
        manifest = bundle.manifest
        return BundleInfo(
            kind=bundle.kind,
            manifest=manifest,
            captured_at=bundle.captured_at,
            window_start=bundle.window_start,
            window_end=bundle.window_end,
            scope=dict(manifest["scope"]),
            spec_hash=manifest["spec_hash"],
            incident=dict(manifest["incident"]),
            environment=manifest["environment"],
            agent=manifest["agent"],
            signal_count=reader.count,
            counts_by_source=dict(reader.counts_by_source),
            has_baseline=bundle.baseline is not None,
            has_spec=bundle.spec is not None,
            uncompressed_bytes=bundle.uncompressed_bytes,
            compressed_bytes=bundle.compressed_bytes,
            baseline_incidents=len(bundle.baseline["incidents"]) if bundle.baseline else 0,
        )


@dataclass(frozen=True)
class SnapshotInfo:
    agent: str
    captured_at: datetime
    state: dict[str, Any]
    size_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": "traceflux.snapshot/v1",
            "agent": self.agent,
            "captured_at": format_timestamp(self.captured_at),
            "state_keys": sorted(self.state)[:50],
            "size_bytes": self.size_bytes,
        }


def validate_snapshot(path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS) -> SnapshotInfo:
    """Check an uploaded snapshot: a JSON object of at most max_json_bytes matching snapshot.schema.json."""
    with open(path, "rb") as handle:
        head = handle.read(64 * 1024)
        size = os.fstat(handle.fileno()).st_size
    if not json_start(head):
        _, description = sniff(path, limits=limits)
        raise WrongType(f"expected a snapshot (a JSON object), got {description}")
    if size > limits.max_json_bytes:
        raise TooLarge(f"snapshot: {format_bytes(size)} is over the {format_bytes(limits.max_json_bytes)} limit")
    with open(path, "rb") as handle:
        snapshot = load_json_document(handle.read(limits.max_json_bytes + 1), name="snapshot")
    problem = schema_problem("snapshot", snapshot, member="snapshot", root="snapshot")
    if problem is not None:
        raise problem
    return SnapshotInfo(
        agent=snapshot["agent"],
        captured_at=parse_timestamp(snapshot["captured_at"]),
        state=snapshot["state"],
        size_bytes=size,
    )


# --- writing ----------------------------------------------------------------------------------------------------------

# Fixed metadata so the same inputs give the same bytes, and so the same content hash on every machine and run.
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can record
_FIXED_MTIME = 315532800  # 1980-01-01T00:00:00Z, the same instant for tar
_SPOOL = 8 * 1024 * 1024


class _HashingWriter(io.RawIOBase):
    """Passes writes through and hashes them; not seekable, so zip output never depends on the target's seekability."""

    def __init__(self, target: IO[bytes]) -> None:
        self._target = target
        self._hash = hashlib.sha256()
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._target.write(view)
        self._hash.update(view)
        self._written += len(view)
        return len(view)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        self._target.flush()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _signal_line(signal: Mapping[str, Any] | Signal) -> bytes:
    data = signal.as_json() if isinstance(signal, Signal) else signal
    return canonical_json(data) + b"\n"


def _members(
    manifest: Mapping[str, Any],
    signals: Iterable[Mapping[str, Any] | Signal],
    baseline: Mapping[str, Any] | None,
    spec: Mapping[str, Any] | None,
) -> Iterator[tuple[str, IO[bytes], int]]:
    # Indented for people who unpack a bundle to read it; still sorted, so still deterministic.
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    manifest_bytes = text.encode()
    yield MANIFEST, io.BytesIO(manifest_bytes), len(manifest_bytes)
    if spec is not None:
        # Canonical, so `sha256sum spec.json` prints the manifest's spec hash.
        spec_bytes = canonical_json(spec)
        yield SPEC, io.BytesIO(spec_bytes), len(spec_bytes)
    if baseline is not None:
        baseline_bytes = canonical_json(baseline) + b"\n"
        yield BASELINE, io.BytesIO(baseline_bytes), len(baseline_bytes)
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL) as spool:
        for signal in signals:
            spool.write(_signal_line(signal))
        size = spool.tell()
        spool.seek(0)
        yield SIGNALS, spool, size  # type: ignore[misc]


def write_bundle(
    target: str | os.PathLike[str] | IO[bytes],
    *,
    manifest: Mapping[str, Any],
    signals: Iterable[Mapping[str, Any] | Signal],
    baseline: Mapping[str, Any] | None = None,
    spec: Mapping[str, Any] | None = None,
    fmt: str = KIND_TAR_GZ,
) -> str:
    """Write a bundle (fmt "tar.gz" or "zip") to a path or binary file; return the hex SHA-256 of the bytes written.

    Deterministic: fixed member order (manifest.json, spec.json, baseline.json, signals.jsonl), times, owners and
    modes, canonical JSON lines; so the same inputs always give the same bytes. Nothing is validated here (tests write
    bad bundles on purpose): call validate_bundle on the result.
    """
    if fmt not in BUNDLE_KINDS:
        raise ValueError(f"fmt must be one of {', '.join(BUNDLE_KINDS)}, not {fmt!r}")
    if isinstance(target, str | os.PathLike):
        with open(target, "wb") as handle:
            return write_bundle(handle, manifest=manifest, signals=signals, baseline=baseline, spec=spec, fmt=fmt)
    out = _HashingWriter(target)
    members = _members(manifest, signals, baseline, spec)
    if fmt == KIND_TAR_GZ:
        with (
            gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz,
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.USTAR_FORMAT) as tar,
        ):
            for name, stream, size in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = size, _FIXED_MTIME, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, stream)
    else:
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
            for name, stream, size in members:
                info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3
                info.external_attr = 0o100644 << 16
                info.file_size = size
                with archive.open(info, "w", force_zip64=size > zipfile.ZIP64_LIMIT) as dst:
                    shutil.copyfileobj(stream, dst, 1024 * 1024)
    target.flush()
    return out.hexdigest()
