"""Hypothesis strategies the fuzz tests share: JSON values with the awkward characters in them, documents valid under
one of the engine's JSON Schemas, archives built entry by entry with tarfile and zipfile, and structural mutations of
their headers (a size, an offset, a type flag, with the tar checksum recomputed so the damage reaches the reader)."""

from __future__ import annotations

import gzip
import io
import json
import stat
import struct
import tarfile
import zipfile
from collections.abc import Callable
from functools import cache
from typing import Any

from hypothesis import strategies as st

from replays.engine.formats import schema

# Characters that break something somewhere: NUL (PostgreSQL text), lone surrogates (UTF-8, jsonb), a BOM, line and
# paragraph separators, a right-to-left override, and a combining mark.
AWKWARD_CHARACTERS = ["\x00", "\ud800", "\udfff", "\ufeff", "\u2028", "\u2029", "\u202e", "\u0301", "\n", "\r", "\\"]

awkward_text = st.tuples(st.text(max_size=4), st.sampled_from(AWKWARD_CHARACTERS), st.text(max_size=4)).map("".join)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | awkward_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | awkward_text, inner, max_size=4),
    max_leaves=12,
)


def nested(depth: int, leaf: Any = 1) -> Any:
    """A value nested `depth` lists deep, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


# --- documents a JSON Schema accepts -------------------------------------------------------------------------------


@cache
def schema_values(name: str) -> st.SearchStrategy[Any]:
    """Documents that conform to the engine's `name` schema (manifest, signal, baseline, snapshot, policy).

    Built by schemathesis's JSON Schema engine, the one it uses for request bodies (schemathesis is pinned in
    requirements-dev.txt); timestamps are drawn from a few RFC 3339 spellings.
    """
    import jsonschema_rs
    from schemathesis.generation.jsonschema.builder import build

    timestamps = st.sampled_from(
        ["2026-02-26T14:00:00Z", "2026-02-26T14:01:30.125+02:00", "2026-02-26t14:03:00z",
         "2026-02-26T14:02:00.123456789Z"]
    )
    return build(schema(name), draft=jsonschema_rs.Draft202012, formats={"date-time": timestamps})


# --- mutating a JSON document at a path ----------------------------------------------------------------------------


def json_paths(document: Any) -> list[tuple[Any, ...]]:
    """Every path (tuple of keys and indexes) inside `document`, the root `()` included."""
    found: list[tuple[Any, ...]] = []
    pending: list[tuple[tuple[Any, ...], Any]] = [((), document)]
    while pending:
        path, value = pending.pop()
        found.append(path)
        if isinstance(value, dict):
            pending.extend(((*path, key), child) for key, child in value.items())
        elif isinstance(value, list):
            pending.extend(((*path, index), child) for index, child in enumerate(value))
    return sorted(found, key=lambda p: [str(part) for part in p])


def mutate_at(document: Any, path: tuple[Any, ...], how: str, value: Any) -> Any:
    """A copy of `document` with the value at `path` replaced, removed, given an unknown key, or retyped."""
    copy = json.loads(json.dumps(document))
    if not path:
        return value if how != "add" or not isinstance(copy, dict) else {**copy, "zz_unknown": value}
    holder = copy
    for key in path[:-1]:
        holder = holder[key]
    last = path[-1]
    if how == "drop":
        holder.pop(last)
    elif how == "add" and isinstance(holder[last], dict):
        holder[last]["zz_unknown"] = value
    elif how == "wrap":
        holder[last] = [holder[last]]
    elif how == "stringify":
        holder[last] = json.dumps(holder[last])
    else:
        holder[last] = value
    return copy


MUTATIONS = st.sampled_from(["replace", "drop", "add", "wrap", "stringify"])


@st.composite
def mutated(draw: Callable, document: Any) -> Any:
    """`document` after one to three mutations at random paths."""
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = json_paths(document)
        path = draw(st.sampled_from(paths))
        how = draw(MUTATIONS)
        if how == "drop" and not path:
            how = "replace"
        document = mutate_at(document, path, how, draw(json_values))
    return document


# --- archives built entry by entry ---------------------------------------------------------------------------------

BUNDLE_NAMES = ["manifest.json", "signals.jsonl", "baseline.json", "spec.json"]
member_names = st.one_of(
    st.sampled_from(BUNDLE_NAMES),
    st.sampled_from(BUNDLE_NAMES),
    st.sampled_from([f"bundle/{name}" for name in BUNDLE_NAMES]),
    st.tuples(
        st.sampled_from(["", "./", "bundle/", "bundle/./", "a/b/", "/", "../", "bundle/../", "C:", "\\", "//",
                         "./../"]),
        st.sampled_from([*BUNDLE_NAMES, "", ".", "..", "notes.txt", "__MACOSX/._manifest.json", "x" * 300]),
    ).map("".join),
    st.text(min_size=1, max_size=20).filter(lambda name: "\x00" not in name),
)
TAR_TYPES = [
    *[tarfile.REGTYPE] * 8, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
    tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE, b"Z", b"x", b"g",
]


@st.composite
def member_data(draw: Callable, good: dict[str, bytes]) -> bytes:
    """What an entry holds: a good member's bytes (perhaps cut), random JSON, random bytes, or nothing."""
    return draw(
        st.one_of(
            st.sampled_from(sorted(good.values())),
            st.tuples(st.sampled_from(sorted(good.values())), st.integers(min_value=0, max_value=400)).map(
                lambda pair: pair[0][: pair[1]]
            ),
            json_values.map(lambda value: json.dumps(value).encode()),
            st.binary(max_size=300),
            st.just(b""),
        )
    )


@st.composite
def tar_gz_archives(draw: Callable, good: dict[str, bytes]) -> bytes:
    """A gzip'd tar of random entries: names, types, link targets, modes and contents all drawn."""
    raw = io.BytesIO()
    tar_format = draw(st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]))
    with tarfile.open(fileobj=raw, mode="w", format=tar_format) as tar:
        if draw(st.booleans()):  # start from the good members, so the entries drawn next reach the later checks
            for name in draw(st.permutations(sorted(good))):
                info = tarfile.TarInfo(name)
                info.size = len(good[name])
                tar.addfile(info, io.BytesIO(good[name]))
        for _ in range(draw(st.integers(min_value=0, max_value=4))):
            info = tarfile.TarInfo(draw(member_names))
            info.type = draw(st.sampled_from(TAR_TYPES))
            info.mode = draw(st.integers(min_value=0, max_value=0o7777))
            info.linkname = draw(st.sampled_from(["", "manifest.json", "/etc/passwd", "../../x"]))
            regular = info.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
            data = draw(member_data(good)) if regular else b""
            info.size = len(data)
            try:
                tar.addfile(info, io.BytesIO(data) if data else None)
            except (ValueError, UnicodeError):
                continue  # a name this format cannot write: the entry is left out
    stream = raw.getvalue()
    if draw(st.booleans()):
        stream = mutate_tar_header(stream, draw)
    trailing = draw(st.sampled_from([b"", b"\x00" * 1024, b"garbage after the tar"]))
    return gzip_members(stream + trailing, draw)


def gzip_members(data: bytes, draw: Callable) -> bytes:
    """gzip in one member, or split into several, perhaps with zero padding or junk after the last."""
    cut = draw(st.integers(min_value=0, max_value=len(data)))
    parts = [data] if draw(st.booleans()) else [data[:cut], data[cut:]]
    compressed = b"".join(gzip.compress(part, compresslevel=draw(st.integers(0, 9)), mtime=0) for part in parts)
    return compressed + draw(st.sampled_from([b"", b"\x00" * 16, b"\x1f\x8b", b"trailing junk"]))


# (offset, width, kind) of ustar header fields worth damaging; "octal" fields get a number, "text" ones text.
_TAR_FIELDS = [(0, 100, "text"), (100, 8, "octal"), (124, 12, "octal"), (156, 1, "type"), (157, 100, "text"),
               (257, 6, "text"), (345, 155, "text")]


def mutate_tar_header(stream: bytes, draw: Callable) -> bytes:
    """Rewrite one field of one 512-byte header block, then fix its checksum so tarfile reads on."""
    blocks = [offset for offset in range(0, len(stream) - 511, 512) if stream[offset + 257: offset + 262] == b"ustar"]
    if not blocks:
        return stream
    block = draw(st.sampled_from(blocks))
    offset, width, kind = draw(st.sampled_from(_TAR_FIELDS))
    if kind == "octal":
        number = draw(st.integers(min_value=0, max_value=8 ** (width - 1) - 1) | st.sampled_from([-1, 8**11]))
        value = (b"%o" % number if number >= 0 else b"-1").rjust(width - 1, b"0")[: width - 1] + b"\x00"
    elif kind == "type":
        value = draw(st.sampled_from([bytes([code]) for code in range(256)]))
    else:
        value = draw(st.binary(max_size=width)).ljust(width, b"\x00")
    header = bytearray(stream[block: block + 512])
    header[offset: offset + width] = value[:width]
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % (sum(header) & 0o777777)
    return stream[:block] + bytes(header) + stream[block + 512:]


ZIP_MODES = [stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755, stat.S_IFLNK | 0o777, stat.S_IFCHR | 0o600,
             stat.S_IFBLK | 0o600, stat.S_IFIFO | 0o600, stat.S_IFSOCK | 0o600, 0o170000, 0]


@st.composite
def zip_archives(draw: Callable, good: dict[str, bytes]) -> bytes:
    """A zip of random entries: names, Unix modes, creating systems, compression methods and flags drawn."""
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as archive:
        if draw(st.booleans()):
            for name in draw(st.permutations(sorted(good))):
                archive.writestr(name, good[name], compress_type=zipfile.ZIP_DEFLATED)
        for _ in range(draw(st.integers(min_value=0, max_value=4))):
            info = zipfile.ZipInfo(draw(member_names), date_time=(2026, 2, 26, 14, 0, 0))
            info.create_system = draw(st.sampled_from([0, 3, 3, 3, 11]))
            mode = draw(st.sampled_from([ZIP_MODES[0]] * 6 + ZIP_MODES))
            info.external_attr = mode << 16 | draw(st.sampled_from([0, 0x10]))
            info.compress_type = draw(
                st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED] * 4 + [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
            )
            try:
                archive.writestr(info, draw(member_data(good)))
            except (ValueError, UnicodeError):
                continue
    data = raw.getvalue()
    if draw(st.booleans()):
        data = mutate_zip_structure(data, draw)
    return data


# (signature, offset from it, struct format) of zip fields worth damaging: general purpose flags, compression method,
# sizes, the disk and entry counts, the central directory's size and offset, a local header's offset.
_ZIP_FIELDS = [
    (b"PK\x03\x04", 6, "<H"), (b"PK\x03\x04", 8, "<H"), (b"PK\x03\x04", 18, "<I"), (b"PK\x03\x04", 22, "<I"),
    (b"PK\x03\x04", 26, "<H"), (b"PK\x03\x04", 28, "<H"),
    (b"PK\x01\x02", 8, "<H"), (b"PK\x01\x02", 10, "<H"), (b"PK\x01\x02", 20, "<I"), (b"PK\x01\x02", 24, "<I"),
    (b"PK\x01\x02", 28, "<H"), (b"PK\x01\x02", 30, "<H"), (b"PK\x01\x02", 38, "<I"), (b"PK\x01\x02", 42, "<I"),
    (b"PK\x05\x06", 4, "<H"), (b"PK\x05\x06", 8, "<H"), (b"PK\x05\x06", 10, "<H"), (b"PK\x05\x06", 12, "<I"),
    (b"PK\x05\x06", 16, "<I"), (b"PK\x05\x06", 20, "<H"),
]


def mutate_zip_structure(data: bytes, draw: Callable) -> bytes:
    """Set one field of a local header, a central directory entry or the end record to a drawn number."""
    signature, offset, fmt = draw(st.sampled_from(_ZIP_FIELDS))
    places = [at for at in range(len(data)) if data.startswith(signature, at)]
    if not places:
        return data
    at = draw(st.sampled_from(places)) + offset
    width = struct.calcsize(fmt)
    if at + width > len(data):
        return data
    largest = 2 ** (8 * width) - 1
    number = draw(st.sampled_from([0, 1, largest, largest - 1, len(data), len(data) + 1]) | st.integers(0, largest))
    return data[:at] + struct.pack(fmt, number) + data[at + width:]
