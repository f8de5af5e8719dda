"""The bounds of a captured telemetry window, shared by incidents, uploads and the engine."""

from __future__ import annotations

from datetime import datetime, timedelta

MIN_WINDOW = timedelta(minutes=2)
MAX_WINDOW = timedelta(minutes=10)


def window_problem(start: datetime, end: datetime) -> str | None:
    """Return why (start, end) is not a valid capture window, or None when it is."""
    if end <= start:
        return "window end must be after window start"
    length = end - start
    if length < MIN_WINDOW or length > MAX_WINDOW:
        return f"window must last between 2 and 10 minutes, not {length.total_seconds():g} s"
    return None
