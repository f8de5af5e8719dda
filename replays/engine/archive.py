"""Reading an uploaded archive without trusting it: kind detection by content, member rules, bomb-proof counting.

Nothing here extracts to disk. Every byte decompressed passes a `Meter`, so the size and ratio limits hold against the
bytes actually produced, whatever the headers claim.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .errors import Invalid, TooLarge
from .formats import DEFAULT_LIMITS, Limits, format_bytes, load_json_document, short_repr

KIND_TAR_GZ = "tar.gz"
KIND_ZIP = "zip"
KIND_JSON = "json"
KIND_UNKNOWN = "unknown"

MANIFEST = "manifest.json"
SIGNALS = "signals.jsonl"
BASELINE = "baseline.json"
SPEC = "spec.json"
BUNDLE_MEMBERS = (MANIFEST, SIGNALS, BASELINE, SPEC)

_CHUNK = 64 * 1024
_BUFFER = 256 * 1024
_SNIFF = 64 * 1024
_TAR_BLOCK = 512

# Magic numbers of formats people upload by mistake, so the 415 says what we got.
_OTHER_MAGIC = (
    (b"BZh", "bzip2 data"),
    (b"\xfd7zXZ\x00", "xz data"),
    (b"\x28\xb5\x2f\xfd", "zstd data"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"Rar!", "a RAR archive"),
    (b"%PDF", "a PDF document"),
)


# --- kind detection ---------------------------------------------------------------------------------------------------


def _is_tar_header(block: bytes) -> bool:
    if len(block) < _TAR_BLOCK:
        return False
    if block[:_TAR_BLOCK] == bytes(_TAR_BLOCK):
        return True  # an empty tar: the end-of-archive marker only
    try:
        tarfile.TarInfo.frombuf(block[:_TAR_BLOCK], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _gunzip_head(head: bytes) -> tuple[bytes, bool] | None:
    """(the first tar block's worth of a gzip stream, whether the stream stopped short of it mid-member), or None
    when the gzip data is corrupt. A multi-member gzip may end its first member before a whole block: the members
    after it are read too, as the validator reads them."""
    out = b""
    data = head
    try:
        while data and len(out) < _TAR_BLOCK:
            z = zlib.decompressobj(31)
            out += z.decompress(data, _TAR_BLOCK - len(out))
            if not z.eof:
                return out, len(out) < _TAR_BLOCK and not z.unconsumed_tail
            data = z.unused_data.lstrip(b"\x00")
    except zlib.error:
        return None
    return out, False


def json_start(head: bytes) -> bool:
    """Whether the file starts like a JSON object or array (after an optional BOM and whitespace)."""
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    stripped = head.lstrip(b" \t\r\n")
    return stripped[:1] in (b"{", b"[")


def sniff(path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS) -> tuple[str, str]:
    """(kind, description) of a file from its bytes alone. kind is tar.gz, zip, json or unknown; the description
    ("a gzip'd tar", "gzip data that is not a tar", "JSON", "an empty file") is what a 415 tells the caller."""
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF)
        size = os.fstat(handle.fileno()).st_size
    if not head:
        return KIND_UNKNOWN, "an empty file"
    if head[:2] == b"\x1f\x8b":
        unzipped = _gunzip_head(head)
        if unzipped is None:
            return KIND_UNKNOWN, "corrupt gzip data"
        block, cut_short = unzipped
        if _is_tar_header(block):
            return KIND_TAR_GZ, "a gzip'd tar"
        if cut_short and size <= len(head):
            return KIND_UNKNOWN, "gzip data that ends before its first tar header (a truncated upload?)"
        return KIND_UNKNOWN, "gzip data that is not a tar"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return KIND_ZIP, "a zip"
    if _is_tar_header(head):
        return KIND_UNKNOWN, "an uncompressed tar"
    for magic, description in _OTHER_MAGIC:
        if head.startswith(magic):
            return KIND_UNKNOWN, description
    if json_start(head):
        if size > limits.max_json_bytes:
            return KIND_JSON, "JSON"  # too big to parse just to name it; the snapshot check reports the size
        with open(path, "rb") as handle:
            data = handle.read()
        try:
            load_json_document(data, name="file")
        except Invalid:
            return KIND_UNKNOWN, "text that starts like JSON but does not parse"
        return KIND_JSON, "JSON"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return KIND_UNKNOWN, f"unrecognised data (starting {head[:8].hex(' ')})"
    return KIND_UNKNOWN, "text that is not JSON"


def detect_kind(path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS) -> str:
    """ "tar.gz", "zip", "json" or "unknown", by magic bytes and parsing, never by file name.

    tar.gz: gzip magic and the decompressed stream starts with a tar header. zip: PK\\x03\\x04 (or an empty zip's
    PK\\x05\\x06). json: the first non-blank byte is { or [ and the file parses (files over max_json_bytes are
    not parsed here).
    """
    return sniff(path, limits=limits)[0]


# --- counting ---------------------------------------------------------------------------------------------------------


class Meter:
    """Counts compressed bytes in and uncompressed bytes out; raises TooLarge the moment a limit is passed."""

    def __init__(self, limits: Limits, *, compressed: int = 0) -> None:
        self.limits = limits
        self.compressed = compressed
        self.uncompressed = 0

    def add_compressed(self, count: int) -> None:
        self.compressed += count

    def add(self, count: int) -> None:
        self.uncompressed += count
        limits = self.limits
        if self.uncompressed > limits.max_uncompressed:
            raise TooLarge(f"archive decompresses to more than the {format_bytes(limits.max_uncompressed)} limit")
        if self.uncompressed > limits.ratio_floor and self.uncompressed > limits.max_ratio * max(self.compressed, 1):
            raise TooLarge(
                f"archive compression ratio is over {limits.max_ratio:g}:1 ({format_bytes(self.uncompressed)} from "
                f"{format_bytes(self.compressed)}): refused as a decompression bomb"
            )


class _GunzipRaw(io.RawIOBase):
    """A gzip decompressing reader that meters every byte it produces (multi-member gzip, zero padding allowed)."""

    def __init__(self, source: IO[bytes], meter: Meter) -> None:
        self._source = source
        self._meter = meter
        self._z = zlib.decompressobj(31)

    def readable(self) -> bool:
        return True

    def _chunk(self) -> bytes:
        data = self._source.read(_CHUNK)
        self._meter.add_compressed(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        want = len(buffer)
        if want == 0:
            return 0
        while True:
            if self._z.eof:
                pending = self._z.unused_data.lstrip(b"\x00")
                while not pending:
                    chunk = self._chunk()
                    if not chunk:
                        return 0  # the end of the last gzip member (and any zero padding after it)
                    pending = chunk.lstrip(b"\x00")
                self._z = zlib.decompressobj(31)
            elif self._z.unconsumed_tail:
                pending = self._z.unconsumed_tail
            else:
                pending = self._chunk()
                if not pending:
                    raise Invalid("archive: the gzip stream ends early (a truncated upload?)")
            try:
                data = self._z.decompress(pending, want)
            except zlib.error as exc:
                raise Invalid(f"archive: corrupt gzip data ({exc})") from None
            if data:
                count = len(data)
                buffer[:count] = data
                self._meter.add(count)
                return count


class _MeteredRaw(io.RawIOBase):
    """Meters the bytes read from a zip member (zipfile already stops at the declared size; this counts them)."""

    def __init__(self, inner: IO[bytes], meter: Meter) -> None:
        self._inner = inner
        self._meter = meter

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        count = len(data)
        buffer[:count] = data
        self._meter.add(count)
        return count

    def close(self) -> None:
        self._inner.close()
        super().close()


# Exceptions the standard library raises on corrupt archives. They become Invalid only around library calls that
# parse archive bytes; anywhere else they are bugs and must stay 500s.
_CORRUPT = (
    tarfile.TarError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    struct.error,
    UnicodeDecodeError,
    NotImplementedError,
)


@contextmanager
def corrupt_archive_errors(kind: str) -> Iterator[None]:
    try:
        yield
    except _CORRUPT as exc:
        raise Invalid(f"archive: corrupt {kind} ({short_repr(str(exc), 160)})") from None


# --- member rules -----------------------------------------------------------------------------------------------------


@dataclass
class MemberRules:
    """What a bundle archive may hold: at most `max_members` entries, regular files named like bundle members, all at
    the root or all under one top-level directory; no absolute paths, `..`, links, devices, fifos or duplicates."""

    limits: Limits
    count: int = 0
    prefix: str | None = None  # None: not known yet; "": members at the root; else the one top-level directory

    def __post_init__(self) -> None:
        self.seen: set[str] = set()

    def admit(self, raw_name: str, what: str, size: int) -> str | None:
        """Check one entry; return its bundle member name (manifest.json, ...) or None for an admitted directory."""
        self.count += 1
        if self.count > self.limits.max_members:
            raise TooLarge(f"archive has more than {self.limits.max_members} members")
        shown = short_repr(raw_name)
        if not raw_name or "\x00" in raw_name:
            raise Invalid(f"archive member {shown} has no usable name")
        if raw_name.startswith(("/", "\\")) or (len(raw_name) > 1 and raw_name[1] == ":"):
            raise Invalid(f"archive member {shown} has an absolute path")
        if "\\" in raw_name:
            raise Invalid(f"archive member {shown} contains a backslash; use / between path components")
        parts = [part for part in raw_name.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise Invalid(f"archive member {shown} has a '..' path component")
        if what != "file" and what != "directory":
            raise Invalid(f"archive member {shown} is a {what}; a bundle holds only regular files")
        key = "/".join(parts)
        if key in self.seen:
            raise Invalid(f"archive member {shown} appears more than once")
        self.seen.add(key)
        if size > self.limits.max_uncompressed:
            raise TooLarge(
                f"archive member {shown} is {format_bytes(size)}, over the "
                f"{format_bytes(self.limits.max_uncompressed)} limit"
            )
        return self._place(parts, what == "directory", shown)

    def _place(self, parts: list[str], is_dir: bool, shown: str) -> str | None:
        mixed = Invalid(
            f"archive members must all be at the root or all under one top-level directory (member {shown} is not)"
        )
        if is_dir:
            if not parts:
                return None  # "./": the root itself
            if len(parts) == 1 and self.prefix in (None, parts[0]):
                self.prefix = parts[0]
                return None
            raise mixed if len(parts) == 1 else self._unexpected(shown)
        if len(parts) == 1:
            top, name = "", parts[0]
        elif len(parts) == 2:
            top, name = parts
        else:
            raise self._unexpected(shown)
        if self.prefix is None:
            self.prefix = top
        elif self.prefix != top:
            raise mixed
        if name not in BUNDLE_MEMBERS:
            raise self._unexpected(shown)
        return name

    @staticmethod
    def _unexpected(shown: str) -> Invalid:
        return Invalid(
            f"archive member {shown} is not part of a bundle "
            f"(a bundle holds only {', '.join(BUNDLE_MEMBERS[:-1])} and {BUNDLE_MEMBERS[-1]})"
        )


_TAR_TYPES = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.DIRTYPE: "directory",
    tarfile.SYMTYPE: "symbolic link",
    tarfile.LNKTYPE: "hard link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "fifo",
}


def _zip_entry_type(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if info.create_system == 3 and mode:  # Unix attributes; other systems can only mark directories, by the name
        kind = stat.S_IFMT(mode)
        if stat.S_ISLNK(mode):
            return "symbolic link"
        if stat.S_ISCHR(mode):
            return "character device"
        if stat.S_ISBLK(mode):
            return "block device"
        if stat.S_ISFIFO(mode):
            return "fifo"
        if stat.S_ISSOCK(mode):
            return "socket"
        if stat.S_ISDIR(mode):
            return "directory"
        if kind not in (0, stat.S_IFREG):
            return "special file"
    return "directory" if info.filename.endswith("/") else "file"


# --- the two archive kinds --------------------------------------------------------------------------------------------


@dataclass
class Member:
    name: str  # the bundle member name: manifest.json, signals.jsonl, baseline.json or spec.json
    size: int  # as declared by the archive; reads are metered regardless
    stream: IO[bytes]


class TarGzArchive:
    """A gzip'd tar read strictly front to back (no seeking, so a pass costs one decompression)."""

    kind = KIND_TAR_GZ

    def __init__(self, path: str | os.PathLike[str], limits: Limits) -> None:
        self.path = Path(path)
        self.limits = limits
        self.uncompressed_bytes = 0
        self.compressed_bytes = self.path.stat().st_size

    def members(self) -> Iterator[Member]:
        """Yield each file member once, in archive order, after its entry passed the rules. A member's stream is
        good only until the next one is requested. Draining the generator also drains the gzip stream, so data
        hidden after the tar's end is decompressed and metered too."""
        rules = MemberRules(self.limits)
        meter = Meter(self.limits)
        with open(self.path, "rb") as raw, corrupt_archive_errors("gzip'd tar"):
            stream = io.BufferedReader(_GunzipRaw(raw, meter), buffer_size=_BUFFER)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                while True:
                    info = tar.next()
                    if info is None:
                        break
                    name = rules.admit(info.name, _TAR_TYPES.get(info.type, "special file"), info.size)
                    if name is not None:
                        handle = tar.extractfile(info)
                        assert handle is not None  # a regular file always has a stream
                        yield Member(name, info.size, handle)
            while stream.read(_BUFFER):
                pass
            self.uncompressed_bytes = meter.uncompressed

    def close(self) -> None:
        pass


class ZipArchive:
    """A zip read through its central directory, which is checked whole before any member is opened."""

    kind = KIND_ZIP

    def __init__(self, path: str | os.PathLike[str], limits: Limits) -> None:
        self.path = Path(path)
        self.limits = limits
        self.compressed_bytes = self.path.stat().st_size
        self.meter = Meter(limits, compressed=self.compressed_bytes)
        self._check_directory_size()
        with corrupt_archive_errors("zip"):
            self._zip = zipfile.ZipFile(self.path)
        try:
            self._infos = self._admit_all()
        except BaseException:
            self._zip.close()
            raise
        self.uncompressed_bytes = sum(info.file_size for info in self._infos.values())

    def _check_directory_size(self) -> None:
        # zipfile loads the whole central directory into memory; a forged one could hold a million entries.
        with open(self.path, "rb") as handle, corrupt_archive_errors("zip"):
            record = zipfile._EndRecData(handle)  # private, but the stdlib's own end-of-directory parser since 2.x
        if record is None:
            raise Invalid("archive: corrupt zip (no end of central directory record)")
        entries, directory_size = record[zipfile._ECD_ENTRIES_TOTAL], record[zipfile._ECD_SIZE]
        if entries > self.limits.max_members:
            raise TooLarge(f"archive has {entries} members, more than the limit of {self.limits.max_members}")
        if directory_size > (self.limits.max_members + 1) * 4096:
            raise TooLarge(
                f"archive: the zip central directory is {format_bytes(directory_size)}, too large for "
                f"{self.limits.max_members} members"
            )

    def _admit_all(self) -> dict[str, zipfile.ZipInfo]:
        rules = MemberRules(self.limits)
        infos: dict[str, zipfile.ZipInfo] = {}
        declared = 0
        for info in self._zip.infolist():
            name = rules.admit(info.filename, _zip_entry_type(info), info.file_size)
            if name is None:
                continue
            shown = short_repr(info.filename)
            # Offsets are checked here because zipfile would seek to them: a negative one is an OSError, not a 400.
            if not 0 <= info.header_offset < self.compressed_bytes or info.compress_size > self.compressed_bytes:
                raise Invalid(f"archive: corrupt zip (member {shown} points outside the file)")
            if info.flag_bits & 0x1:
                raise Invalid(f"archive member {shown} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise Invalid(
                    f"archive member {shown} uses compression method {info.compress_type}; "
                    "only stored and deflate are accepted"
                )
            declared += info.file_size
            infos[name] = info
        limits = self.limits
        if declared > limits.max_uncompressed:
            raise TooLarge(
                f"archive declares {format_bytes(declared)} uncompressed, over the "
                f"{format_bytes(limits.max_uncompressed)} limit"
            )
        if declared > limits.ratio_floor and declared > limits.max_ratio * max(self.compressed_bytes, 1):
            raise TooLarge(
                f"archive compression ratio is over {limits.max_ratio:g}:1 ({format_bytes(declared)} from "
                f"{format_bytes(self.compressed_bytes)}): refused as a decompression bomb"
            )
        return infos

    def names(self) -> list[str]:
        return list(self._infos)

    def open(self, name: str) -> Member:
        info = self._infos[name]
        with corrupt_archive_errors("zip"):
            inner = self._zip.open(info)
        return Member(name, info.file_size, io.BufferedReader(_MeteredRaw(inner, self.meter), buffer_size=_BUFFER))

    def close(self) -> None:
        self._zip.close()


def open_archive(path: str | os.PathLike[str], kind: str, limits: Limits) -> TarGzArchive | ZipArchive:
    if kind == KIND_TAR_GZ:
        return TarGzArchive(path, limits)
    if kind == KIND_ZIP:
        return ZipArchive(path, limits)
    raise ValueError(f"not an archive kind: {kind!r}")
