"""Anchoring the chain outside the database: the head (seq, hash, time) appended to a file, one JSON line each.

The chain alone cannot see its newest events deleted together with a matching rewind of the head row. An anchor
written earlier can: `audit_verify()` fails when the anchored seq is beyond the log's end, or when the event at the
anchored seq no longer has the anchored hash. The file is only ever appended to (O_APPEND, one write per line, an
exclusive lock, fsync), never rewritten, so an old anchor stays where it was.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.utils import timezone

from .models import AuditChainHead

logger = logging.getLogger(__name__)

_HASH = re.compile(r"^[0-9a-f]{64}$")
_BLOCK = 8192


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    anchored_at: str  # ISO 8601, UTC

    def line(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode() + b"\n"


def anchor_path() -> Path:
    return Path(settings.TRACEFLUX_AUDIT_ANCHOR_FILE)


def _parse(raw: bytes) -> Anchor | None:
    try:
        fields = json.loads(raw)
        anchor = Anchor(seq=fields["seq"], hash=fields["hash"], anchored_at=fields["anchored_at"])
    except (ValueError, TypeError, KeyError):
        return None
    valid = (
        type(anchor.seq) is int and anchor.seq >= 1 and isinstance(anchor.hash, str) and bool(_HASH.match(anchor.hash))
        and isinstance(anchor.anchored_at, str)
    )
    return anchor if valid else None


def _reverse_lines(handle: BinaryIO) -> Iterator[bytes]:
    """The file's newline-separated segments, last first, read backwards a block at a time."""
    position = handle.seek(0, os.SEEK_END)
    carry = b""
    while position > 0:
        step = min(_BLOCK, position)
        position -= step
        handle.seek(position)
        parts = (handle.read(step) + carry).split(b"\n")
        carry = parts.pop(0)  # may continue in the block before
        yield from reversed(parts)
    yield carry


def read_latest_anchor(path: Path | None = None) -> Anchor | None:
    """The last complete, well-formed line of the anchor file, read from its end; None when there is none.

    A line a crash cut short (no newline after it) is ignored; a complete line that does not parse is skipped with a
    warning, so the anchor before it still counts.
    """
    path = path or anchor_path()
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return None
    with handle:
        segments = _reverse_lines(handle)
        next(segments, b"")  # what follows the last newline: nothing, or a line cut short
        for raw in segments:
            if not raw.strip():
                continue
            anchor = _parse(raw)
            if anchor is not None:
                return anchor
            logger.warning("%s: skipping a line that is not an audit anchor: %r", path, raw[:200])
    return None


def _append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a line a crash cut short stays alone on its line, and is skipped when read
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)  # also releases the lock
    if created:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the new file's name survives a crash too
        finally:
            os.close(directory)


def audit_anchor_write(*, only_if_moved: bool = False) -> Anchor | None:
    """Append the chain head to the anchor file and return it; None when the chain is empty (nothing to anchor), or
    with `only_if_moved` when the latest anchor already records this head (the beat task: no line per idle minute).
    """
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is None or head.seq == 0 or not head.hash:
        return None
    path = anchor_path()
    if only_if_moved:
        latest = read_latest_anchor(path)
        if latest is not None and (latest.seq, latest.hash) == (head.seq, head.hash):
            return None
    anchor = Anchor(seq=head.seq, hash=head.hash, anchored_at=timezone.now().isoformat(timespec="seconds"))
    _append(path, anchor.line())
    return anchor
