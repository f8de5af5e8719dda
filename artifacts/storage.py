"""Where uploaded bytes rest: a content-addressed name in the artifacts storage, written through Django's storage API.

The same bytes always get the same name, so placing a file is idempotent: when the name exists, the upload's
temporary copy is simply dropped. A name is removed only when no committed Artifact row references its hash.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from django.core.files import File

from .models import Artifact, artifact_storage

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def content_name(sha256: str) -> str:
    """artifacts/sha256/ab/cd/abcd…: two levels of fan-out keep directories small."""
    if not SHA256_HEX.match(sha256):
        raise ValueError(f"{sha256!r} is not a hex SHA-256")
    return f"artifacts/sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


class _TemporaryFile(File):
    """A file on local disk that FileSystemStorage may move (rename) into place instead of copying."""

    def __init__(self, path: Path) -> None:
        super().__init__(open(path, "rb"), name=path.name)  # noqa: SIM115 - closed by place()
        self._path = path

    def temporary_file_path(self) -> str:
        return str(self._path)


def place(*, temp_path: Path, sha256: str) -> tuple[str, bool]:
    """Put the bytes at their content-addressed name. Returns (name, moved): moved is False when it already existed.

    A temporary file that was moved is gone afterwards; one that was not is left for the caller to drop.
    """
    storage = artifact_storage()
    name = content_name(sha256)
    if storage.exists(name):
        return name, False
    content = _TemporaryFile(temp_path)
    try:
        stored = storage.save(name, content)
    finally:
        content.close()
    if stored != name:  # a storage that renames on collision: the bytes are identical, keep the canonical name only
        storage.delete(stored)
    return name, True


def remove_if_unreferenced(*, sha256: str) -> bool:
    """Delete the stored bytes unless a committed row still references the hash. Returns whether it deleted."""
    if Artifact.objects.filter(sha256=sha256).exists():
        return False
    artifact_storage().delete(content_name(sha256))
    return True


def ensure_placed(*, temp_path: Path, sha256: str) -> None:
    """After a commit that relied on existing bytes: put them back if a failed upload removed them meanwhile."""
    if not artifact_storage().exists(content_name(sha256)) and os.path.exists(temp_path):
        place(temp_path=temp_path, sha256=sha256)
