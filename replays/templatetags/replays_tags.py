"""Template helpers of the replay pages: incident names, durations, parity figures, scopes and targets in words."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django import template

from replays.timeline_svg import incident_name

register = template.Library()


@register.filter
def incident_label(key: Any, titles: Mapping[str, str] | None = None) -> str:
    """An incident key in words ("http_5xx_rate at POP-12 · 14:01:18", "baseline bl-002")."""
    return incident_name(key, titles)


@register.filter
def duration(value: timedelta | float | int | None) -> str:
    """A duration as "0.42 s", "12.3 s", "4 min 05 s" or "2 h 03 min"; "-" when unknown."""
    if value is None or value == "":
        return "-"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@register.filter
def score(value: Any) -> str:
    """A parity score with two decimals, "-" when there is none."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value:.2f}"


@register.filter
def delta(value: Any, other: Any) -> str:
    """other - value, signed ("+0.05", "-2", "±0"), "" when either is missing."""
    if not isinstance(value, int | float) or not isinstance(other, int | float):
        return ""
    diff = other - value
    if not diff:
        return "±0"
    text = f"{diff:+.2f}" if isinstance(diff, float) else f"{diff:+d}"
    return text


@register.filter
def labels(value: Any, empty: str = "-") -> str:
    """{"service": "edge-gw", "pop": "POP-12"} as "pop=POP-12 · service=edge-gw"; `empty` when there is none."""
    if not isinstance(value, Mapping):
        return str(value) if value not in (None, "", [], ()) else empty
    if not value:
        return empty
    parts = []
    for key, item in sorted(value.items()):
        shown = ", ".join(map(str, item)) if isinstance(item, list | tuple) else str(item)
        parts.append(f"{key}={shown}")
    return " · ".join(parts)


@register.filter
def targets(value: Any) -> str:
    """An action's targets {pops: [...], regions: [...], services: [...]} in words."""
    if not isinstance(value, Mapping) or not value:
        return "-"
    return " · ".join(f"{key} {', '.join(map(str, items)) or '-'}" for key, items in sorted(value.items())
                      if isinstance(items, list | tuple))


@register.filter
def get(mapping: Any, key: Any) -> Any:
    return mapping.get(key) if isinstance(mapping, Mapping) else None


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


@register.filter
def more_than_shown(section: Any) -> int:
    """How many items of a {count, items} list the report left out (it keeps at most 100)."""
    if not isinstance(section, Mapping):
        return 0
    count, items = section.get("count"), section.get("items") or []
    return max(0, count - len(items)) if isinstance(count, int) else 0


@register.filter
def md(value: Any) -> str:
    """Text safe inside a Markdown table cell or list item: one line, pipes escaped."""
    text = "" if value is None else str(value)
    return " ".join(text.split()).replace("|", "\\|")
