"""Canonical JSON and the spec hash: the byte-exact forms agents and the server both compute."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import orjson

SPEC_HASH_PREFIX = "sha256:"


class CanonicalJSONError(ValueError):
    """The value cannot be written as canonical JSON (NaN, infinity, non-string keys, unknown types, lone
    surrogates)."""


def _check(value: Any, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise CanonicalJSONError(f"{path}: {value!r} is not a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalJSONError(f"{path}: object key {key!r} is not a string")
            _check(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]")
    elif not (value is None or isinstance(value, str | int | float | bool)):
        raise CanonicalJSONError(f"{path}: {type(value).__name__} is not a JSON value")


def unencodable_path(value: Any, path: str = "$") -> str | None:
    """The path of the first string (or key) that has no UTF-8 form: one holding a lone surrogate such as \\ud800,
    which JSON's \\u escapes can spell but UTF-8 cannot."""
    pending: list[tuple[Any, str]] = [(value, path)]
    while pending:
        item, where = pending.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return where
        elif isinstance(item, dict):
            for key, child in item.items():
                pending.append((key, f"{where} (a key)"))
                pending.append((child, f"{where}.{key}"))
        elif isinstance(item, list | tuple):
            pending.extend((child, f"{where}[{index}]") for index, child in enumerate(item))
    return None


def canonical_json(value: Any) -> bytes:
    """UTF-8 JSON with keys sorted, separators ',' and ':', no insignificant whitespace, non-ASCII kept as is."""
    _check(value, "$")
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        where = unencodable_path(value) or "$"
        raise CanonicalJSONError(f"{where}: a string holds a lone surrogate, which UTF-8 cannot encode") from None


def canonical_text_json(value: str | dict[str, Any]) -> bytes:
    """canonical_json of a value made of strings only: a str, or a dict whose values are strs or such dicts (a
    signal's identity). For those orjson with sorted keys writes exactly canonical_json's bytes, several times faster;
    numbers are left to canonical_json because the two spell exponents differently (1e+16 against 1e16). The caller
    vouches for the shape; a lone surrogate, which orjson refuses, goes to canonical_json to be worded."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return canonical_json(value)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def spec_hash(spec: Any) -> str:
    """`sha256:` plus the hex SHA-256 of the canonical JSON of a pipeline spec."""
    return SPEC_HASH_PREFIX + sha256_hex(canonical_json(spec))


def is_spec_hash(value: str) -> bool:
    if not isinstance(value, str) or not value.startswith(SPEC_HASH_PREFIX):
        return False
    digest = value[len(SPEC_HASH_PREFIX) :]
    return len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
