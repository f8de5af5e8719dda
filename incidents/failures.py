"""Per-minute counters of 401, 403 and 429 answers to agents, kept in the shared cache.

A flood of bad requests must stay cheap: two cache increments each (the caller's bucket and the all-callers bucket
that /metrics reads), no database write, no lock, no audit event.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache

COUNTED = (401, 403, 429)
BUCKET_SECONDS = 60
RETENTION_MINUTES = 120
ALL = "all"  # the subject that counts every answer, whoever it went to


def _subject(*, agent_id: int | None, prefix: str | None) -> str:
    if agent_id is not None:
        return f"agent:{agent_id}"
    return f"prefix:{(prefix or '-')[:16]}"


def _key(subject: str, code: int, bucket: int) -> str:
    return f"agentfail:{subject}:{code}:{bucket}"


def failure_record(
    *, code: int, agent_id: int | None = None, prefix: str | None = None, now: float | None = None
) -> None:
    """Count one 401, 403 or 429 answer in the current minute's bucket; other codes are ignored."""
    if code not in COUNTED:
        return
    bucket = int((now if now is not None else time.time()) // BUCKET_SECONDS)
    # The subject's bucket, and the bucket of every subject together (failure_totals, the /metrics gauge).
    for subject in (_subject(agent_id=agent_id, prefix=prefix), ALL):
        _increment(_key(subject, code, bucket))


def _increment(key: str) -> None:
    # add() is a no-op when the key exists; incr() is atomic in Redis, so concurrent workers never lose a count.
    cache.add(key, 0, timeout=RETENTION_MINUTES * 60)
    try:
        cache.incr(key)
    except ValueError:  # evicted between add and incr: start again rather than fail the request
        cache.add(key, 1, timeout=RETENTION_MINUTES * 60)


def failure_counts(
    *, agent_id: int | None = None, prefix: str | None = None, minutes: int = 60, now: float | None = None
) -> dict[int, int]:
    """How many 401, 403 and 429 answers in the last `minutes` minutes, by status code."""
    return _counts(_subject(agent_id=agent_id, prefix=prefix), minutes=minutes, now=now)


def worth_escalating(counts: dict[int, int]) -> bool:
    """Have this many refused answers in an hour reached the operator guide's escalation point
    (TRACEFLUX_ESCALATE_AUTH_FAILURES)? The console's agent page and the investigation page's banner both ask here."""
    return sum(counts.values()) >= settings.TRACEFLUX_ESCALATE_AUTH_FAILURES  # at least 1 (settings)


def failure_totals(*, minutes: int = 60, now: float | None = None) -> dict[int, int]:
    """How many 401, 403 and 429 answers the agent API gave in the last `minutes` minutes, all callers together."""
    return _counts(ALL, minutes=minutes, now=now)


def _counts(subject: str, *, minutes: int, now: float | None) -> dict[int, int]:
    current = int((now if now is not None else time.time()) // BUCKET_SECONDS)
    buckets = range(current - min(minutes, RETENTION_MINUTES) + 1, current + 1)
    keys = {_key(subject, code, bucket): code for code in COUNTED for bucket in buckets}
    counts = dict.fromkeys(COUNTED, 0)
    for key, value in cache.get_many(list(keys)).items():
        counts[keys[key]] += int(value)
    return counts
