"""The chain arithmetic: what is hashed, and how a stored chain is verified. No writes here."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from replays.engine import canonical_json

GENESIS = "0" * 64
HASHED_FIELDS = (
    "seq",
    "created_at",
    "actor_kind",
    "actor_id",
    "actor_name",
    "action",
    "target_type",
    "target_id",
    "target_repr",
    "environment",
    "outcome",
    "reason",
    "request_id",
    "ip",
    "data",
)


def _key() -> bytes:
    return settings.AUDIT_HMAC_KEY.encode()


def canonical_event(fields: Mapping[str, Any]) -> bytes:
    body = {name: fields[name] for name in HASHED_FIELDS}
    body["created_at"] = body["created_at"].isoformat(timespec="microseconds")
    body["ip"] = body["ip"] or ""
    return canonical_json(body)


def event_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    return hmac.new(_key(), prev_hash.encode() + canonical_event(fields), hashlib.sha256).hexdigest()


def normalise_data(data: Any) -> Any:
    """Round-trip through JSON so the value hashed is exactly the value the database will give back."""
    return json.loads(json.dumps(data if data is not None else {}, sort_keys=True, default=str))


@dataclass(frozen=True)
class Verification:
    ok: bool
    count: int
    broken_seq: int | None = None
    problem: str = ""
    anchor: str = ""  # what the check against the latest anchor found (traceflux.audit.anchor); "" when not checked


def verify(events: Iterable[Any], head: Any | None) -> Verification:
    """Walk events in seq order; report the first seq whose link or content does not check out."""
    prev_hash = GENESIS
    expected_seq = 1
    count = 0
    for event in events:
        fields = {name: getattr(event, name) for name in HASHED_FIELDS}
        if event.seq != expected_seq:
            return Verification(
                False, count, expected_seq, f"seq {expected_seq} is missing (next stored is {event.seq})"
            )
        if not hmac.compare_digest(event.prev_hash, prev_hash):
            return Verification(False, count, event.seq, "prev_hash does not link to the event before it")
        if not hmac.compare_digest(event.hash, event_hash(prev_hash, fields)):
            return Verification(False, count, event.seq, "content does not match its hash")
        prev_hash = event.hash
        expected_seq += 1
        count += 1
    if head is not None and (head.seq != count or (count and head.hash != prev_hash)):
        return Verification(False, count, count + 1, f"chain head says #{head.seq} but the log ends at #{count}")
    return Verification(True, count)
