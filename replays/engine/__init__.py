"""The replay engine: pure Python, no Django, no project import. Every layer may import it like a library."""

from __future__ import annotations

from .archive import detect_kind
from .bundles import Bundle, BundleInfo, SnapshotInfo, open_bundle, validate_bundle, validate_snapshot, write_bundle
from .canonical import SPEC_HASH_PREFIX, CanonicalJSONError, canonical_json, is_spec_hash, sha256_hex, spec_hash
from .correlate import Action, Incident, ReplayResult, Suppressed, replay, replay_file
from .errors import FormatError, Invalid, TooLarge, WrongType
from .formats import BUNDLE_FORMAT, DEFAULT_LIMITS, SNAPSHOT_FORMAT, Limits, parse_timestamp
from .policy import POLICY_SCHEMA, Policy, load_policy
from .signals import Signal, SignalReader, iter_signals, parse_signal
from .windows import MAX_WINDOW, MIN_WINDOW, window_problem

__all__ = [
    "BUNDLE_FORMAT",
    "DEFAULT_LIMITS",
    "MAX_WINDOW",
    "MIN_WINDOW",
    "POLICY_SCHEMA",
    "SNAPSHOT_FORMAT",
    "SPEC_HASH_PREFIX",
    "Action",
    "Bundle",
    "BundleInfo",
    "CanonicalJSONError",
    "FormatError",
    "Incident",
    "Invalid",
    "Limits",
    "Policy",
    "ReplayResult",
    "Signal",
    "SignalReader",
    "SnapshotInfo",
    "Suppressed",
    "TooLarge",
    "WrongType",
    "canonical_json",
    "detect_kind",
    "is_spec_hash",
    "iter_signals",
    "load_policy",
    "open_bundle",
    "parse_signal",
    "parse_timestamp",
    "replay",
    "replay_file",
    "sha256_hex",
    "spec_hash",
    "validate_bundle",
    "validate_snapshot",
    "window_problem",
    "write_bundle",
]
