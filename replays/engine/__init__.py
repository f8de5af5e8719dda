"""The replay engine: pure Python, no Django, no project import. Every layer may import it like a library."""

from __future__ import annotations

from .canonical import SPEC_HASH_PREFIX, CanonicalJSONError, canonical_json, is_spec_hash, sha256_hex, spec_hash
from .windows import MAX_WINDOW, MIN_WINDOW, window_problem

__all__ = [
    "MAX_WINDOW",
    "MIN_WINDOW",
    "SPEC_HASH_PREFIX",
    "CanonicalJSONError",
    "canonical_json",
    "is_spec_hash",
    "sha256_hex",
    "spec_hash",
    "window_problem",
]
