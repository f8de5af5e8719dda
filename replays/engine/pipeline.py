"""One whole replay of a signals file or incident bundle: replay, optional compare replay, report and evidence bundle.

The command line (cli.py) and the portal's replay pipeline (replays.services) both run replays through run_replay,
so a replay gives the same report whichever started it. Progress goes to `on_progress(stage, status, counts)` for the
stages ingest, correlate, aggregate and report.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import Any

from .bundles import Bundle, check_baseline_refs, open_bundle
from .correlate import Pooled, ProgressCallback, ReplayResult, replay
from .evidence import selection_document, write_evidence
from .gcpause import paused_gc
from .idset import ExactIdSet
from .policy import Policy, load_policy
from .report import build_report, report_bytes
from .signals import SIGNALS_MEMBER, Signal, SignalPool, SignalReader

_GZIP, _ZIP = b"\x1f\x8b", (b"PK\x03\x04", b"PK\x05\x06")


class UsageError(Exception):
    """A problem with the command line or an input file that is not a FormatError (a missing file)."""

    def __init__(self, detail: str, *, code: str = "invalid") -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


class SignalSource:
    """The --signals file: a bundle (its window and baseline come along) or signals.jsonl. `read` streams it afresh."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with open(path, "rb") as handle:
                head = handle.read(4)
        except FileNotFoundError:
            raise UsageError(f"{path}: no such signals file", code="not_found") from None
        except IsADirectoryError:
            raise UsageError(f"{path}: is a directory, not a signals file") from None
        except OSError as exc:
            raise UsageError(f"{path}: cannot read the signals file ({exc.strerror})") from None
        self.bundle: Bundle | None = open_bundle(path) if head[:2] == _GZIP or head in _ZIP else None
        self.kind = self.bundle.kind if self.bundle is not None else "jsonl"

    @property
    def window(self) -> tuple[datetime, datetime] | None:
        return self.bundle.window if self.bundle is not None else None

    @property
    def baseline(self) -> dict[str, Any] | None:
        return self.bundle.baseline if self.bundle is not None else None

    def read(self, reader: SignalReader) -> Iterator[Signal]:
        return chain.from_iterable(self.batches(reader))

    def batches(self, reader: SignalReader) -> Iterator[list[Signal]]:
        if self.bundle is not None:
            yield from self.bundle.read_signal_batches(reader)
            return
        with open(self.path, "rb") as handle:
            yield from reader.batches(handle)

    def checked(self) -> tuple[SignalReader, Iterator[Signal]]:
        """A reader and the signals through it, shared through one pool; a bundle's signals must lie in its window, as
        the upload checks."""
        # The replay holds every signal anyway, so uniqueness uses a plain set rather than the compact digest table.
        member = SIGNALS_MEMBER if self.bundle is not None else self.path
        reader = SignalReader(window=self.window, member=member, ids=ExactIdSet(), pool=SignalPool())
        return reader, self.read(reader)

    def all(self) -> Iterator[Signal]:
        """Every good signal; raise the reader's error after the last if a line was bad."""
        reader, signals = self.checked()
        yield from signals
        error = reader.error()
        if error is not None:
            raise error

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            while chunk := handle.read(1024 * 1024):
                digest.update(chunk)
        return digest.hexdigest()

    def close(self) -> None:
        if self.bundle is not None:
            self.bundle.close()


@dataclass(frozen=True)
class ReplayOutput:
    """What run_replay produced. `evidence` is the evidence bundle's bytes when it was asked for."""

    result: ReplayResult
    compare: ReplayResult | None
    report: dict[str, Any]
    report_bytes: bytes
    selection: dict[str, Any]
    evidence: bytes | None
    evidence_sha256: str | None


def _silent(stage: str, status: str, counts: Mapping[str, int]) -> None:
    pass


def run_replay(
    policy: Policy | Mapping[str, Any],
    signals_path: str,
    *,
    policy_spec: dict[str, Any],
    compare: Policy | Mapping[str, Any] | None = None,
    compare_spec: dict[str, Any] | None = None,
    baseline: Mapping[str, Any] | None = None,
    scope: Mapping[str, str] | None = None,
    window: tuple[datetime, datetime] | None = None,
    on_progress: ProgressCallback | None = None,
    on_compare_progress: ProgressCallback | None = None,
    evidence: bool = False,
) -> ReplayOutput:
    """Replay `signals_path` (a bundle or signals.jsonl) under `policy`, compare and report.

    A bundle brings its window (unless `window` narrows it) and its baseline.json (unless `baseline` replaces it).
    Signals are parsed once and held (pooled) for the replay, the compare replay and the report's timeline. Raises
    FormatError or UsageError on bad input.
    """
    policy = load_policy(policy)
    compare_policy = load_policy(compare) if compare is not None else None
    progress = on_progress or _silent
    source = SignalSource(signals_path)
    # Reading is the part that builds the most objects: the cyclic GC is paused from it on, not only in replay().
    # The file's own sha256 (for the selection document) is hashed on the side: hashlib and file reads release the
    # GIL, so it costs the replay nothing.
    with paused_gc(), closing(source), ThreadPoolExecutor(max_workers=1) as side:
        file_sha256 = side.submit(source.sha256)
        if baseline is None:
            baseline = source.baseline
        window = window or source.window
        reader, stream = source.checked()
        signals = Pooled(stream)
        error = reader.error()
        if error is not None:
            raise error
        result = replay(policy, signals, scope=scope, window=window, on_progress=progress)
        if baseline is not None:
            check_baseline_refs(baseline, reader.ids)
        compared: ReplayResult | None = None
        if compare_policy is not None:
            compared = replay(compare_policy, signals, scope=scope, window=window, on_progress=on_compare_progress)
        progress("report", "started", {})
        report = build_report(
            result,
            policy_spec=policy_spec,
            baseline=baseline,
            compare=compared,
            compare_spec=compare_spec,
            signals=signals,
        )
        data = report_bytes(report)
        selection = selection_document(
            result,
            by_source=report["input"]["by_source"],
            source={"name": Path(signals_path).name, "kind": source.kind, "sha256": file_sha256.result()},
        )
        evidence_bytes = evidence_sha = None
        if evidence:
            buffer = io.BytesIO()
            evidence_sha = write_evidence(
                buffer, report=report, policy_spec=policy_spec, selection=selection, compare_spec=compare_spec
            )
            evidence_bytes = buffer.getvalue()
        progress("report", "finished", {"incidents": len(report.get("incidents", [])), "bytes": len(data)})
        return ReplayOutput(
            result=result,
            compare=compared,
            report=report,
            report_bytes=data,
            selection=selection,
            evidence=evidence_bytes,
            evidence_sha256=evidence_sha,
        )
