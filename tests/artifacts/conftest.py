"""Fixtures for the upload tests: a tmp MEDIA_ROOT and bundles built by the engine (the uploading agent and its key,
staging, agent and agent_key, are in tests/conftest.py for every test that uploads)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from replays.engine import write_bundle
from replays.engine.samples import sample_bundle, sample_spec
from tests.conftest import AGENT_NAME

UPLOAD_URL = "/api/v1/agent/artifacts/"


@pytest.fixture(autouse=True)
def media_root(artifact_store) -> Path:
    """Every upload test stores under its own MEDIA_ROOT, so the filesystem can be walked and asserted on."""
    return artifact_store


def bundle_bytes(*, fmt: str = "tar.gz", seed: int = 1, signals: int = 60, with_spec: bool = True,
                 manifest_changes: dict[str, Any] | None = None, drop_keys: tuple[str, ...] = (),
                 signal_changes: Callable | None = None, **sample: Any) -> bytes:
    """A bundle from the engine's seeded sample generator, written deterministically (same arguments, same bytes)."""
    manifest, lines, baseline = sample_bundle(seed=seed, signals=signals, **sample)
    manifest.update(manifest_changes or {})
    for key in drop_keys:
        manifest.pop(key, None)
    if signal_changes is not None:
        lines = signal_changes(lines)
    buffer = io.BytesIO()
    write_bundle(buffer, manifest=manifest, signals=lines, baseline=baseline if signal_changes is None else None,
                 spec=sample_spec() if with_spec else None, fmt=fmt)
    return buffer.getvalue()


def snapshot_bytes(*, agent: str = AGENT_NAME, captured_at: str = "2026-02-26T14:05:00Z") -> bytes:
    return json.dumps({"format": "traceflux.snapshot/v1", "agent": agent, "captured_at": captured_at,
                       "state": {"routes": 12, "peers": ["AS64500"]}}).encode()


def post_upload(client: Client, key: str | None, content: bytes, *, kind: str = "incident_bundle",
                filename: str = "bundle.tar.gz", content_type: str = "application/octet-stream", **extra: Any):
    """A real multipart POST to the real URL, as an agent sends it."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = {"file": SimpleUploadedFile(filename, content, content_type=content_type), "kind": kind}
    return client.post(UPLOAD_URL, data, headers=headers, **extra)


def files_under(root: Path) -> list[str]:
    """Every file under MEDIA_ROOT (temporary files included), relative to it."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def content_path(root: Path, sha256: str) -> Path:
    return root / "artifacts" / "sha256" / sha256[:2] / sha256[2:4] / sha256


def assert_nothing_stored(root: Path) -> None:
    """A refused or failed upload leaves no row, no stored file and no temporary file."""
    from artifacts.models import Artifact

    assert not Artifact.objects.exists()
    assert files_under(root) == []


class CountingInput(io.BytesIO):
    """A wsgi.input that counts the bytes the server side actually read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(size)
        self.bytes_read += len(line)
        return line


def multipart_body(content: bytes, *, kind: str = "incident_bundle", filename: str = "bundle.tar.gz") -> bytes:
    from django.test.client import BOUNDARY, encode_multipart

    return encode_multipart(BOUNDARY, {"file": SimpleUploadedFile(filename, content), "kind": kind})


def post_raw(client: Client, key: str, body: bytes, *, content_length: int | None = None,
             content_type: str | None = None) -> tuple[Any, CountingInput]:
    """POST exact bytes with a chosen Content-Length, reading from a stream that counts what was read."""
    from django.test.client import MULTIPART_CONTENT

    stream = CountingInput(body)
    response = client.generic(
        "POST",
        UPLOAD_URL,
        data=body,
        content_type=content_type or MULTIPART_CONTENT,
        headers={"Authorization": f"Bearer {key}"},
        **{"wsgi.input": stream, "CONTENT_LENGTH": str(len(body) if content_length is None else content_length)},
    )
    return response, stream
