"""Shared format machinery: limits, RFC 3339 timestamps, strict JSON documents and the JSON Schemas.

The schemas in `schemas/` are the documented contract (shipped as docs/formats/*.schema.json). Small documents
(manifest, baseline, snapshot) are checked against them with jsonschema; signal lines use a hand-written check that
agrees with signal.schema.json (tests hold both to the same verdicts) because per-line jsonschema is too slow.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match

from .errors import Invalid, TooLarge
from .windows import MAX_WINDOW

KiB = 1024
MiB = 1024 * KiB

BUNDLE_FORMAT = "traceflux.incident-bundle/v1"
SNAPSHOT_FORMAT = "traceflux.snapshot/v1"
SCHEMA_NAMES = ("manifest", "signal", "baseline", "snapshot", "policy")


@dataclass(frozen=True)
class Limits:
    """What an upload may cost us. The API passes its own instance when settings override a default."""

    max_members: int = 16  # archive entries, directories included
    max_uncompressed: int = 512 * MiB  # bytes actually decompressed (tar: the whole tar stream; zip: member data)
    max_ratio: float = 200.0  # uncompressed / compressed: above this it is a decompression bomb
    ratio_floor: int = 1 * MiB  # the ratio is judged only past this many uncompressed bytes: tiny files compress oddly
    max_window: timedelta = MAX_WINDOW  # the longest capture window; the upload does not enforce a minimum
    max_json_bytes: int = 4 * MiB  # manifest.json, baseline.json, spec.json, a snapshot
    max_line_bytes: int = 64 * KiB  # one line of signals.jsonl, without its line break


DEFAULT_LIMITS = Limits()


def format_bytes(size: float) -> str:
    for unit, scale in (("GiB", 1024 * MiB), ("MiB", MiB), ("KiB", KiB)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{int(size)} bytes"


def format_duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def short_repr(value: Any, limit: int = 80) -> str:
    """repr() cut to `limit` characters: error messages quote values, and a value can be a megabyte long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- timestamps -------------------------------------------------------------------------------------------------------

# RFC 3339 section 5.6 with the time zone required. fromisoformat alone would also take dates without a time or a zone.
RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_timestamp(text: Any) -> datetime:
    """An RFC 3339 timestamp with a time zone, as an aware UTC datetime. Raises ValueError otherwise.

    Fractions beyond microseconds are truncated; a leap second (:60) is refused because datetime cannot hold it.
    """
    if not isinstance(text, str) or RFC3339.fullmatch(text) is None:
        raise ValueError(f"{short_repr(text)} is not an RFC 3339 timestamp with a time zone")
    if "t" in text or "z" in text:
        text = text.upper()
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{short_repr(text)} is not a valid timestamp: {exc}") from None


def format_timestamp(value: datetime) -> str:
    """The RFC 3339 form this package writes: UTC with `Z`; milliseconds or microseconds only when there are any."""
    value = value.astimezone(UTC)
    micro = value.microsecond
    if not micro:
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    fraction = f"{micro // 1000:03d}" if micro % 1000 == 0 else f"{micro:06d}"
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + fraction + "Z"


# --- strict JSON documents --------------------------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {short_repr(key)}")
            seen.add(key)
    return result


_STRICT = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_refuse_constant)


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def load_json_document(data: bytes, *, name: str) -> Any:
    """Parse a whole JSON document strictly: UTF-8, no NaN or Infinity, no duplicate keys, finite numbers.

    Raises Invalid naming `name` (for example `manifest.json`) and where the JSON broke.
    """
    try:
        text = data.decode("utf-8-sig")  # a leading BOM is tolerated; RFC 8259 lets parsers ignore it
    except UnicodeDecodeError as exc:
        raise Invalid(f"{name}: not UTF-8 text (byte {exc.start})") from None
    try:
        value = _STRICT.decode(text)
    except json.JSONDecodeError as exc:
        raise Invalid(f"{name}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:  # duplicate keys, NaN, integers over Python's digit limit
        raise Invalid(f"{name}: malformed JSON: {exc}") from None
    except RecursionError:
        raise Invalid(f"{name}: JSON nested too deeply") from None
    problem = text_problem(value)
    if problem is not None:
        where, message = problem
        raise Invalid(f"{name}: {where}: {message}", field=name.removesuffix(".json") + where[1:])
    return value


def text_problem(value: Any) -> tuple[str, str] | None:
    """(JSON path, problem) of the first string or key that is not acceptable text, else None: one holding a NUL
    character (PostgreSQL stores none, in text or jsonb), or a lone surrogate (JSON can spell "\\ud800", UTF-8
    cannot). Iterative, so any depth the JSON parser took is fine."""
    pending: list[tuple[Any, str, str]] = [(value, "$", "holds")]
    while pending:
        item, where, holds = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return where, f"{holds} a NUL character (\\u0000), which is not accepted in text"
            try:
                item.encode()
            except UnicodeEncodeError:
                return where, f"{holds} a lone surrogate (\\ud800-\\udfff), which is not UTF-8 text"
        elif isinstance(item, dict):
            for key, child in item.items():
                pending.append((key, where, "has a key holding"))
                pending.append((child, f"{where}.{key}", "holds"))
        elif isinstance(item, list):
            pending.extend((child, f"{where}[{index}]", "holds") for index, child in enumerate(item))
    return None


def read_limited(stream: Any, *, name: str, limit: int) -> bytes:
    """Read a whole member, refusing with TooLarge as soon as it passes `limit` bytes (never reading much more)."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{name}: larger than the {format_bytes(limit)} limit for a JSON document")
    return data


# --- schemas ----------------------------------------------------------------------------------------------------------


def schema_bytes(name: str) -> bytes:
    """The exact bytes of a packaged schema (`manifest`, `signal`, `baseline`, `snapshot` or `policy`)."""
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}")
    return (resources.files(__package__) / "schemas" / f"{name}.schema.json").read_bytes()


@cache
def schema(name: str) -> dict[str, Any]:
    return json.loads(schema_bytes(name))


def write_schema_docs(directory: str | Path) -> list[Path]:
    """Copy the packaged schemas to `directory` (docs/formats): the documentation ships the very same bytes."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SCHEMA_NAMES:
        path = target / f"{name}.schema.json"
        path.write_bytes(schema_bytes(name))
        written.append(path)
    return written


def _is_timestamp(value: Any) -> bool:
    if not isinstance(value, str):
        return True  # "format" only judges strings; "type" reports the rest
    parse_timestamp(value)
    return True


# Only date-time is asserted: the default checker's other formats depend on optional packages being installed.
_FORMATS = FormatChecker(formats=())
_FORMATS.checks("date-time", raises=ValueError)(_is_timestamp)


@cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema(name), format_checker=_FORMATS)


def _describe(error: ValidationError) -> tuple[str, str]:
    """(JSON path, message) for one schema error, phrased for a person and pointing at the offending field."""
    path = error.json_path
    instance = error.instance
    kind = error.validator
    if kind == "required":
        missing = [key for key in error.validator_value if key not in instance]
        if not missing:
            return path, "is required"
        rest = missing[1:]
        also = f" (as {'is' if len(rest) == 1 else 'are'} {', '.join(rest)})" if rest else ""
        return f"{path}.{missing[0]}", "is required" + also
    if kind == "additionalProperties" and isinstance(instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(key for key in instance if key not in allowed)
        if extra:
            return f"{path}.{extra[0]}", "is not an allowed field" + (
                f" (nor are {len(extra) - 1} more)" if len(extra) > 1 else ""
            )
    if kind == "type":
        wanted = error.validator_value if isinstance(error.validator_value, str) else " or ".join(error.validator_value)
        return path, f"must be {'an' if wanted[0] in 'aeiou' else 'a'} {wanted}, got {json_type(instance)}"
    if kind == "format":
        return path, f"{short_repr(instance)} is not an RFC 3339 timestamp with a time zone (e.g. 2026-02-26T14:03:00Z)"
    if kind == "pattern":
        if isinstance(instance, str) and "[Tt]" in error.validator_value:
            return (
                path,
                f"{short_repr(instance)} is not an RFC 3339 timestamp with a time zone (e.g. 2026-02-26T14:03:00Z)",
            )
        return path, f"{short_repr(instance)} does not match {error.validator_value}"
    if kind == "const":
        return path, f"must be {error.validator_value!r}, got {short_repr(instance)}"
    if kind == "enum":
        return path, f"must be one of {', '.join(map(str, error.validator_value))}; got {short_repr(instance)}"
    if kind == "minLength" and error.validator_value == 1:
        return path, "must not be empty"
    if kind == "maxLength":
        return path, f"must be at most {error.validator_value} characters long"
    if kind == "minItems":
        return path, f"must hold at least {error.validator_value} item(s)"
    if kind in ("maxItems", "maxProperties"):
        return path, f"must hold at most {error.validator_value} items"
    return path, error.message if len(error.message) <= 200 else error.message[:197] + "..."


def field_name(root: str, json_path: str) -> str:
    """`$.window.end` under root `manifest` is the field `manifest.window.end`."""
    return root + json_path[1:]


def schema_problem(name: str, document: Any, *, member: str, root: str) -> Invalid | None:
    """The first schema violation of `document` as an Invalid, or None when it conforms.

    `member` prefixes the message (`manifest.json`), `root` the field (`manifest`).
    """
    errors = list(validator(name).iter_errors(document))
    if not errors:
        return None
    path, message = _describe(best_match(errors))
    # A bad timestamp breaks both "format" and "pattern": count problems, not keywords.
    others = len({_describe(error) for error in errors} - {(path, message)})
    more = f" (and {others} more problem{'s' if others > 1 else ''})" if others else ""
    return Invalid(f"{member}: {path}: {message}{more}", field=field_name(root, path))


def finite_number(value: Any) -> bool:
    return type(value) is int or (type(value) is float and math.isfinite(value))
