"""Receiving an upload: a streaming handler that writes the file part to a temporary file, hashing as it goes.

Installed for the artifact upload view only. It never holds the file in memory, computes the SHA-256 while writing,
and stops reading the request the moment the file passes the size limit, removing what it wrote.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler

from .errors import UploadRefused, too_large

# The only file part the upload takes.
FILE_FIELD = "file"
# A Content-Length may exceed the file limit by this much: boundaries, part headers and the `kind` field.
FORM_ALLOWANCE = 64 * 1024


def max_upload_bytes() -> int:
    return settings.TRACEFLUX_MAX_UPLOAD_BYTES


def max_request_bytes() -> int:
    """The largest Content-Length worth reading: a file at the limit plus the form around it."""
    return max_upload_bytes() + FORM_ALLOWANCE


def upload_temp_dir() -> Path:
    """FILE_UPLOAD_TEMP_DIR when set, else MEDIA_ROOT/tmp: on the artifact store's disk, so placing is a rename."""
    configured = settings.FILE_UPLOAD_TEMP_DIR
    return Path(configured) if configured else Path(settings.MEDIA_ROOT) / "tmp"


@dataclass
class ReceivedFile:
    """A completely received file part: where it is, its SHA-256 and its size. The temporary file is not ours to keep:
    whoever installed the handler removes it with ArtifactUploadHandler.discard()."""

    path: Path
    sha256: str
    size: int
    client_name: str

    def close(self) -> None:
        """Django closes every uploaded file at the end of the request; there is no open handle left to close."""


class ArtifactUploadHandler(FileUploadHandler):
    """Streams the single part named `file` to a temporary file; refuses any other file part."""

    chunk_size = 64 * 1024

    def __init__(self, request: Any = None, *, max_bytes: int, temp_dir: Path) -> None:
        super().__init__(request)
        self.max_bytes = max_bytes
        self.temp_dir = temp_dir
        self.received: ReceivedFile | None = None
        self._path: Path | None = None
        self._out: BinaryIO | None = None
        self._hash: Any = None
        self._size = 0

    @property
    def temp_path(self) -> Path | None:
        return self._path

    def new_file(
        self,
        field_name: str,
        file_name: str,
        content_type: str,
        content_length: int | None,
        charset: str | None = None,
        content_type_extra: dict | None = None,
    ) -> None:
        super().new_file(field_name, file_name, content_type, content_length, charset, content_type_extra)
        if field_name != FILE_FIELD:
            self.discard()
            raise UploadRefused(
                f"{field_name}: unexpected file part; send the upload as the one file part named {FILE_FIELD!r}",
                status=400,
                field=field_name,
            )
        if self._path is not None:
            self.discard()
            raise UploadRefused(f"{FILE_FIELD}: send exactly one file part", status=400, field=FILE_FIELD)
        # A part that declares its own length is not trusted, but one that admits being too large is refused at once.
        if content_length is not None and content_length > self.max_bytes:
            raise too_large(self.max_bytes)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=self.temp_dir)
        self._path = Path(name)
        self._out = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._size = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        assert self._out is not None, "receive_data_chunk before new_file"
        self._size += len(raw_data)
        if self._size > self.max_bytes:
            # Raising (rather than StopUpload) leaves the rest of the request unread and reaches the view as 413.
            self.discard()
            raise too_large(self.max_bytes)
        self._out.write(raw_data)
        self._hash.update(raw_data)
        return None  # no later handler sees the bytes

    def file_complete(self, file_size: int) -> ReceivedFile | None:
        if self._out is None or self._path is None:
            return None
        self._out.close()
        self._out = None
        self.received = ReceivedFile(
            path=self._path, sha256=self._hash.hexdigest(), size=self._size, client_name=self.file_name or ""
        )
        return self.received

    def upload_interrupted(self) -> None:
        self.discard()

    def discard(self) -> None:
        """Close and remove the temporary file, if there is one. Safe to call any number of times."""
        if self._out is not None:
            self._out.close()
            self._out = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)
