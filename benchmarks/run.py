#!/usr/bin/env python3
"""TraceFlux micro-benchmarks: audit append and verify, spec hashing, agent key checks. Prints a plain table.

Run with `make bench` or `.venv/bin/python benchmarks/run.py [--quick]`. It uses a throw-away SQLite database in a
temporary directory (TRACEFLUX_VAR_DIR) and never touches var/ or a configured DATABASE_URL. Figures depend on the
machine; the ratios are what the design decisions rest on. Nothing here asserts on speed.
"""

from __future__ import annotations

import argparse
import gc
import hmac
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_django(var_dir: str) -> None:
    for name in ("TRACEFLUX_MODE", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        os.environ.pop(name, None)
    os.environ["TRACEFLUX_VAR_DIR"] = var_dir
    os.environ["DJANGO_SETTINGS_MODULE"] = "traceflux.settings"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


Row = tuple[str, str, str]


def timed(func: Callable[[], object], repeat: int) -> float:
    """Best-of-3 seconds per call."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            func()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def append_events(count: int, *, per_transaction: int) -> float:
    """Append `count` events, `per_transaction` to a transaction. Returns the elapsed seconds."""
    from django.db import transaction

    from traceflux import audit
    from traceflux.audit import AuditActor

    actor = AuditActor(kind="system", id="bench", name="benchmark")
    start = time.perf_counter()
    done = 0
    while done < count:
        with transaction.atomic():
            for _ in range(min(per_transaction, count - done)):
                done += 1
                audit.record(action="bench.appended", actor=actor, target=("bench.item", done, f"item {done}"),
                             environment="bench", data={"n": done, "note": "benchmark event", "tags": ["a", "b"]})
    return time.perf_counter() - start


def verify_chain() -> tuple[int, float, int]:
    """(events verified, seconds, peak traced bytes). Speed and memory are measured in separate passes."""
    from traceflux.audit.services import audit_verify

    start = time.perf_counter()
    result = audit_verify()
    seconds = time.perf_counter() - start
    assert result.ok, result.problem
    gc.collect()
    tracemalloc.start()
    audit_verify()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result.count, seconds, peak


def bench_audit(rows: list[Row], *, appends: int, sizes: tuple[int, ...]) -> None:
    from traceflux.audit.models import AuditEvent

    seconds = append_events(appends, per_transaction=1)
    rows.append(("audit append, 1 event per transaction", f"{appends / seconds:,.0f} events/s",
                 f"N={appends}, SQLite, one commit per event"))

    # Grow the chain size by size; bulk transactions here only to save set-up time.
    peaks = {}
    for size in sizes:
        append_events(size - AuditEvent.objects.count(), per_transaction=500)
        count, seconds, peaks[size] = verify_chain()
        rows.append((f"audit_verify, {count:,} events", f"{count / seconds:,.0f} events/s",
                     f"peak Python heap {peaks[size] / 2**20:.2f} MiB (tracemalloc)"))
    small, middle, large = sizes
    rows.append((f"  peak ratio {large // 1000}k/{middle // 1000}k", f"{peaks[large] / peaks[middle]:.2f}x",
                 f"for {large / middle:g}x the events: ~1 means memory stays flat"))
    rows.append((f"  peak ratio {large // 1000}k/{small // 1000}k", f"{peaks[large] / peaks[small]:.2f}x",
                 "streamed in chunks of 5,000 rows: the peak is bounded by about two chunks"))


def make_spec(target_bytes: int) -> dict:
    from replays.engine import canonical_json

    rules = []
    spec = {"version": "v9.9.9", "fingerprint": {"fields": ["source", "name", "region"]}, "rules": rules}
    while len(canonical_json(spec)) < target_bytes:
        n = len(rules)
        rules.append({
            "id": f"rule-{n:05d}", "match": {"service": f"svc-{n % 37}", "status": [500, 502, 503]},
            "window_s": 120 + n % 480, "weight": round(0.5 + (n % 10) / 20, 2), "note": "Zürich edge ✓",
        })
    return spec


def bench_spec_hash(rows: list[Row]) -> None:
    from replays.engine import canonical_json, spec_hash

    spec = make_spec(100 * 1024)
    size = len(canonical_json(spec))
    per_call = timed(lambda: spec_hash(spec), repeat=20)
    rows.append(("spec_hash, ~100 KiB spec", f"{per_call * 1000:.2f} ms",
                 f"{size / 1024:.0f} KiB canonical, {size / per_call / 2**20:.0f} MiB/s"))


def bench_key_check(rows: list[Row]) -> None:
    from django.contrib.auth.hashers import check_password, get_hasher, make_password

    from incidents.services import agent_key_digest

    secret = "x" * 43  # the length of secrets.token_urlsafe(32), the secret part of tfk_<prefix>_<secret>
    stored_hmac = agent_key_digest(secret)
    stored_password = make_password(secret)
    hasher = get_hasher()

    hmac_s = timed(lambda: hmac.compare_digest(agent_key_digest(secret), stored_hmac), repeat=5000)
    hasher_s = timed(lambda: check_password(secret, stored_password), repeat=3)
    rows.append(("agent key check, HMAC-SHA256", f"{hmac_s * 1e6:.1f} µs", "incidents.services.agent_key_digest"))
    rows.append(("agent key check, check_password", f"{hasher_s * 1000:.1f} ms",
                 f"{hasher.algorithm}, {getattr(hasher, 'iterations', '?'):,} iterations"))
    rows.append(("  ratio check_password/HMAC", f"{hasher_s / hmac_s:,.0f}x", "cost per authenticated API request"))


def print_table(rows: list[Row]) -> None:
    header = ("measurement", "result", "notes")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    line = "  ".join("-" * w for w in widths)
    print(line)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print(line)
    for row in rows:
        print("  ".join((cell.rjust(w) if i == 1 else cell.ljust(w)) for i, (cell, w) in
                        enumerate(zip(row, widths, strict=True))).rstrip())
    print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    appends, sizes = (200, (5000, 10000, 15000)) if args.quick else (2000, (5000, 10000, 20000))

    with tempfile.TemporaryDirectory(prefix="traceflux-bench-") as var_dir:
        setup_django(var_dir)
        import django

        print(f"TraceFlux benchmarks: Python {sys.version.split()[0]}, Django {django.get_version()}, "
              f"SQLite in {var_dir}")
        rows: list[Row] = []
        bench_audit(rows, appends=appends, sizes=sizes)
        bench_spec_hash(rows)
        bench_key_check(rows)
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
