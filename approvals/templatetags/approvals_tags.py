"""Template helpers: the environments a user may promote to (pipeline version admin page) and summary rendering."""

from __future__ import annotations

import json
from typing import Any

from django import template

from incidents.selectors import OPERATE, environments_where

register = template.Library()


@register.simple_tag
def promotable_environments(user):
    """The environments where the user may operate, so may promote a pipeline version to."""
    if user is None or not user.is_authenticated:
        return []
    return list(environments_where(user=user, perm=OPERATE).order_by("slug"))


@register.filter
def pretty_json(value) -> str:
    """A summary value as indented JSON, for parts of the frozen summary the page has no dedicated place for."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _flat(value: Any) -> bool:
    return not isinstance(value, dict | list) or (
        isinstance(value, list) and not any(isinstance(item, dict | list) for item in value)
    )


def _plain(value: Any) -> str:
    if value is None or value == [] or value == "":
        return "none"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


@register.filter
def readable(value) -> str:
    """A summary value as a person reads it: a mapping of plain values as "key: value" pairs joined by " · " (lists
    comma-separated), a list of plain values comma-separated, an empty value as "none". Anything nested deeper stays
    indented JSON (pretty_json), so nothing frozen in a summary is ever hidden."""
    if value is None or value in ("", [], {}):
        return "none"
    if isinstance(value, dict):
        if all(map(_flat, value.values())):
            return " · ".join(f"{key}: {_plain(item)}" for key, item in sorted(value.items()))
        return pretty_json(value)
    if isinstance(value, list):
        return _plain(value) if _flat(value) else pretty_json(value)
    return str(value)


@register.filter
def is_mapping(value) -> bool:
    return isinstance(value, dict)


@register.filter
def duration_left(value) -> str:
    """A timedelta as '3 h 12 min' (or 'expired')."""
    seconds = int(value.total_seconds()) if value is not None else 0
    if seconds <= 0:
        return "expired"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else ""]
    if minutes or not (days or hours):
        parts.append(f"{minutes} min")
    return " ".join(part for part in parts if part)


@register.filter
def pick(value, keys: str):
    """The first of the comma-separated keys that is set in a mapping, else '-' (missing keys are not an error)."""
    if not isinstance(value, dict):
        return "-"
    for key in keys.split(","):
        found = value.get(key.strip())
        if found not in (None, "", [], {}):
            return ", ".join(map(str, found)) if isinstance(found, list) else found
    return "-"
