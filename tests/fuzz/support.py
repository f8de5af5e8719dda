"""What every fuzz test asserts, and the good inputs they start from."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zipfile
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings

from replays.engine import FormatError, Invalid, TooLarge, WrongType
from replays.engine.canonical import canonical_json
from replays.engine.samples import sample_bundle, sample_spec

T = TypeVar("T")

# Function-scoped fixtures (tmp_path, a client) are reused across examples on purpose: each example cleans up.
FUZZ = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.filter_too_much, HealthCheck.data_too_large])
STATUS = {WrongType: 415, TooLarge: 413, Invalid: 400}


def only_format_errors(call: Callable[[], T]) -> tuple[T | None, FormatError | None]:
    """(result, None) when `call` accepts; (None, error) when it refuses with a FormatError that names the problem.
    Any other exception is a bug and propagates, failing the test with the input that caused it."""
    try:
        return call(), None
    except FormatError as exc:
        assert type(exc) in STATUS, f"{type(exc).__name__} is not one of the three refusals"
        assert exc.status == STATUS[type(exc)]
        assert exc.detail.strip(), "a refusal must say what was wrong"
        body = exc.as_dict()
        assert body["detail"] == exc.detail
        json.dumps(body)  # the HTTP body must serialise
        return None, exc


def good_documents(signals: int = 20) -> dict[str, Any]:
    """The sample generator's manifest, signal lines, baseline and spec: a bundle the validator accepts."""
    manifest, lines, baseline = sample_bundle(seed=3, signals=signals)
    return {"manifest": manifest, "signals": lines, "baseline": baseline, "spec": sample_spec()}


def member_bytes(documents: dict[str, Any]) -> dict[str, bytes]:
    """The raw members of the good bundle, keyed by member name."""
    return {
        "manifest.json": json.dumps(documents["manifest"], indent=2).encode(),
        "signals.jsonl": b"".join(canonical_json(line) + b"\n" for line in documents["signals"]),
        "baseline.json": canonical_json(documents["baseline"]),
        "spec.json": canonical_json(documents["spec"]),
    }


def archive(members: dict[str, bytes] | list[tuple[str, bytes]], fmt: str) -> bytes:
    """A plain tar.gz or zip of exactly these members (root layout, regular files)."""
    items = list(members.items()) if isinstance(members, dict) else members
    raw = io.BytesIO()
    if fmt == "zip":
        with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as out:
            for name, data in items:
                out.writestr(name, data)
        return raw.getvalue()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in items:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def assert_names_a_path(exc: Invalid, *, prefix: str) -> None:
    """A refusal of a JSON value names where it is: the field starts with `prefix` and the detail quotes that path."""
    assert exc.field is not None and exc.field.startswith(prefix), (exc.field, exc.detail)
