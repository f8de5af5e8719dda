"""A corpus of nasty artifacts, built in code so that nothing large is ever committed: bombs that are tens of KiB on
disk and expand to hundreds of MiB, path traversal, links and devices, wrong magic numbers, truncated streams, an
overlong line, invalid UTF-8, a manifest naming another environment, and their relatives.

Each entry says what the upload API must answer: its status, and words the `detail` must contain. tests/fuzz/
test_corpus.py posts every one through the real upload URL. To look at the files, or to seed a fuzzer with them:

    python -m tests.fuzz.corpus /tmp/corpus        # writes one file per entry (the bombs are small on disk too)
"""

from __future__ import annotations

import gzip
import io
import json
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from replays.engine.canonical import canonical_json
from replays.engine.samples import sample_bundle, sample_spec

MiB = 1024 * 1024
AGENT = "edge-agent-01"  # the sample bundle's agent and environment (staging), as in tests/artifacts
ENVIRONMENT = "staging"


@dataclass(frozen=True)
class Nasty:
    name: str
    build: Callable[[], bytes]
    status: int
    mentions: tuple[str, ...]  # words the refusal's detail must contain, case-insensitive
    kind: str = "incident_bundle"
    field: str | None = None  # the `field` of the refusal, when it names one


# --- the good members everything starts from --------------------------------------------------------------------


@cache
def members() -> dict[str, bytes]:
    manifest, lines, baseline = sample_bundle(seed=11, signals=30, environment=ENVIRONMENT, agent=AGENT)
    return {
        "manifest.json": json.dumps(manifest, indent=2).encode(),
        "spec.json": canonical_json(sample_spec()),
        "baseline.json": canonical_json(baseline),
        "signals.jsonl": b"".join(canonical_json(line) + b"\n" for line in lines),
    }


def manifest() -> dict:
    return json.loads(members()["manifest.json"])


def tar_entries(entries: list[tuple[tarfile.TarInfo | str, bytes]]) -> bytes:
    """An uncompressed tar of (name or TarInfo, data) entries."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for entry, data in entries:
            info = entry if isinstance(entry, tarfile.TarInfo) else tarfile.TarInfo(entry)
            if info.isreg():
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return raw.getvalue()


def tar_gz(entries: list[tuple[tarfile.TarInfo | str, bytes]]) -> bytes:
    return gzip.compress(tar_entries(entries), mtime=0)


def good_tar_gz(**replace: bytes) -> bytes:
    return tar_gz(list({**members(), **replace}.items()))


def zip_of(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for entry, data in entries:
            archive.writestr(entry, data)
    return raw.getvalue()


def link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def special(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info


def zip_info(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(2026, 2, 26, 14, 0, 0))
    info.create_system = 3
    info.external_attr = mode << 16
    return info


# --- bombs: small on disk, huge once expanded -------------------------------------------------------------------


class _Zeros(io.RawIOBase):
    """`size` zero bytes, produced as read: a bomb is built without holding it."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


@cache
def zip_bomb() -> bytes:
    """signals.jsonl of 256 MiB of zeros, deflated to about 250 KiB: a ratio of about 1000:1."""
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("manifest.json", members()["manifest.json"])
        info = zipfile.ZipInfo("signals.jsonl", date_time=(2026, 2, 26, 14, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as out:
            chunk = bytes(MiB)
            for _ in range(256):
                out.write(chunk)
    return raw.getvalue()


@cache
def tar_bomb() -> bytes:
    """A gzip'd tar whose signals.jsonl is 256 MiB of zeros: about 250 KiB on disk."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = io.BytesIO()

    class _Sink:
        def write(self, data: bytes) -> int:
            out.write(compressor.compress(data))
            return len(data)

    with tarfile.open(fileobj=_Sink(), mode="w|", format=tarfile.GNU_FORMAT) as tar:  # type: ignore[call-overload]
        data = members()["manifest.json"]
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("signals.jsonl")
        info.size = 256 * MiB
        tar.addfile(info, io.BufferedReader(_Zeros(info.size), buffer_size=MiB))
    out.write(compressor.flush())
    return out.getvalue()


def zip_declaring_too_much() -> bytes:
    """A zip whose central directory declares a member of 4 GiB (the bytes are not there): refused unread."""
    data = bytearray(zip_of(list(members().items())))
    at = data.rfind(b"PK\x01\x02")  # the last central directory entry: signals.jsonl
    data[at + 24: at + 28] = (0xFFFFFFFE).to_bytes(4, "little")
    return bytes(data)


def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# --- the corpus -------------------------------------------------------------------------------------------------


def _manifest_with(**changes) -> bytes:
    return json.dumps({**manifest(), **changes}).encode()


CORPUS: list[Nasty] = [
    # bombs
    Nasty("zip-bomb.zip", zip_bomb, 413, ("decompression bomb",)),
    Nasty("tar-bomb.tar.gz", tar_bomb, 413, ("decompression bomb",)),
    Nasty("zip-declaring-4-GiB.zip", zip_declaring_too_much, 413, ("over the", "limit")),
    Nasty("too-many-members.zip", lambda: zip_of([*members().items()] + [(f"x{i}", b"") for i in range(20)]),
          413, ("24 members", "more than the limit of 16")),
    # path traversal, absolute paths
    Nasty("dotdot.tar.gz", lambda: tar_gz([("../manifest.json", members()["manifest.json"])]), 400,
          ("'..' path component", "../manifest.json")),
    Nasty("dotdot-inside.tar.gz", lambda: tar_gz([("bundle/../../etc/manifest.json", b"{}")]), 400,
          ("'..' path component",)),
    Nasty("absolute.tar.gz", lambda: tar_gz([("/etc/manifest.json", members()["manifest.json"])]), 400,
          ("absolute path", "/etc/manifest.json")),
    Nasty("dotdot.zip", lambda: zip_of([("../../signals.jsonl", b"")]), 400, ("'..' path component",)),
    Nasty("absolute.zip", lambda: zip_of([("/tmp/manifest.json", b"{}")]), 400, ("absolute path",)),
    Nasty("windows-drive.zip", lambda: zip_of([("C:/manifest.json", b"{}")]), 400, ("absolute path",)),
    Nasty("backslash.zip", lambda: zip_of([("..\\..\\manifest.json", b"{}")]), 400, ("backslash",)),
    # links and other non-regular entries
    Nasty("symlink.tar.gz", lambda: tar_gz([(link("manifest.json", tarfile.SYMTYPE, "/etc/passwd"), b""),
                                            ("signals.jsonl", members()["signals.jsonl"])]),
          400, ("symbolic link", "manifest.json")),
    Nasty("hardlink.tar.gz", lambda: tar_gz([("manifest.json", members()["manifest.json"]),
                                             (link("signals.jsonl", tarfile.LNKTYPE, "manifest.json"), b"")]),
          400, ("hard link", "signals.jsonl")),
    Nasty("symlink.zip", lambda: zip_of([(zip_info("manifest.json", stat.S_IFLNK | 0o777), b"/etc/passwd")]), 400,
          ("symbolic link",)),
    Nasty("device.tar.gz", lambda: tar_gz([(special("manifest.json", tarfile.CHRTYPE), b"")]), 400,
          ("character device",)),
    Nasty("fifo.tar.gz", lambda: tar_gz([(special("signals.jsonl", tarfile.FIFOTYPE), b"")]), 400, ("fifo",)),
    Nasty("duplicate-member.zip", lambda: zip_of([*members().items(), ("./manifest.json", b"{}")]), 400,
          ("appears more than once",)),
    Nasty("stray-member.tar.gz", lambda: good_tar_gz(**{"notes.txt": b"hello"}), 400,
          ("not part of a bundle", "notes.txt")),
    # wrong magic numbers
    Nasty("png.tar.gz", lambda: b"\x89PNG\r\n\x1a\n" + bytes(200), 415, ("expected an incident bundle",)),
    Nasty("elf.zip", lambda: b"\x7fELF\x02\x01\x01" + bytes(200), 415, ("expected an incident bundle",)),
    Nasty("uncompressed.tar", lambda: tar_entries(list(members().items())), 415, ("uncompressed tar",)),
    Nasty("gzip-of-json.tar.gz", lambda: gzip.compress(members()["manifest.json"]), 415,
          ("gzip data that is not a tar",)),
    Nasty("json-as-bundle.tar.gz", lambda: members()["manifest.json"], 415, ("got JSON",)),
    Nasty("bundle-as-snapshot.json", lambda: good_tar_gz(), 415, ("expected a snapshot",), kind="snapshot"),
    Nasty("empty.tar.gz", lambda: b"", 415, ("empty file",)),
    Nasty("zip-magic-then-noise.zip", lambda: b"PK\x03\x04" + bytes(range(256)) * 4, 400, ("corrupt zip",)),
    # truncated streams
    Nasty("truncated.tar.gz", lambda: good_tar_gz()[: len(good_tar_gz()) // 2], 400, ("ends early",)),
    Nasty("truncated-header.tar.gz", lambda: good_tar_gz()[:40], 415, ("ends before its first tar header",)),
    Nasty("truncated.zip", lambda: zip_of(list(members().items()))[:-30], 400, ("corrupt zip",)),
    # lines and text
    Nasty("huge-line.tar.gz", lambda: good_tar_gz(**{"signals.jsonl": members()["signals.jsonl"] + b'{"id": "'
                                                     + b"x" * (70 * 1024) + b'"}\n'}),
          400, ("longer than the 64 KiB limit", "line 31")),
    Nasty("invalid-utf8-signals.tar.gz", lambda: good_tar_gz(**{"signals.jsonl": members()["signals.jsonl"].replace(
        b'"source":"', b'"source":"\xff\xfe', 1)}), 400, ("not UTF-8", "line 1")),
    Nasty("invalid-utf8-manifest.tar.gz", lambda: good_tar_gz(**{"manifest.json": members()["manifest.json"].replace(
        b"edge-gw 5xx", b"edge-gw \xc3\x28 5xx", 1)}), 400, ("manifest.json", "not UTF-8")),
    Nasty("lone-surrogate-manifest.tar.gz", lambda: good_tar_gz(**{"manifest.json": members()["manifest.json"].replace(
        b"edge-gw 5xx", b"edge-gw \\ud800 5xx", 1)}), 400, ("manifest.json", "lone surrogate")),
    Nasty("lone-surrogate-signal.zip", lambda: zip_of(list({**members(), "signals.jsonl": members()["signals.jsonl"]
                                                            .replace(b'"source":"', b'"source":"\\udc00', 1)}.items())),
          400, ("signals.jsonl", "lone surrogate")),
    Nasty("nul-in-manifest.tar.gz", lambda: good_tar_gz(**{"manifest.json": members()["manifest.json"].replace(
        b"edge-gw 5xx", b"edge-gw \\u0000 5xx", 1)}), 400, ("manifest.json", "NUL")),
    Nasty("deeply-nested-manifest.tar.gz", lambda: good_tar_gz(**{"manifest.json": deep_json(100_000)}), 400,
          ("manifest.json", "nested too deeply")),
    Nasty("nan-value.tar.gz", lambda: good_tar_gz(**{"signals.jsonl": members()["signals.jsonl"].replace(
        b'"value":', b'"value":NaN,"x":', 1)}), 400, ("signals.jsonl", "line 1")),
    # claims the key may not make
    Nasty("other-environment.tar.gz", lambda: good_tar_gz(**{"manifest.json": _manifest_with(environment="prod")}),
          403, ("manifest.environment", "'prod'", "not the environment"), field="manifest.environment"),
    Nasty("other-agent.zip", lambda: zip_of(list({**members(), "manifest.json": _manifest_with(agent="edge-prod-1")}
                                                 .items())),
          403, ("manifest.agent", "edge-prod-1"), field="manifest.agent"),
]


def write_corpus(directory: str | Path) -> list[Path]:
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for nasty in CORPUS:
        path = target / nasty.name
        path.write_bytes(nasty.build())
        written.append(path)
    return written

