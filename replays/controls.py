"""Run inputs other than the policy: scope, sub-window and controls, and what the controls do to planned actions.

Controls can only narrow a run: they turn named actions off or lower a blast-radius bound, never raise one. Plain
Python over the report's JSON, so the rules are easy to test and the HTML, the API and the pipeline agree.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

SCOPE_KEYS = ("service", "region", "pop")
CONTROL_KEYS = ("disabled_actions", "max_pops", "max_regions")
_BOUND_TARGETS = {"max_pops": "pops", "max_regions": "regions"}


class InputProblem(ValueError):
    """One bad run input: `field` names it (scope, window, controls.max_pops …), the message says what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def clean_scope(scope: Any) -> dict[str, str]:
    """{} for the whole window, else label → value for a subset of service, region and pop."""
    if scope is None or scope == {}:
        return {}
    if not isinstance(scope, Mapping):
        raise InputProblem("scope", "the scope is an object whose keys are some of: " + ", ".join(SCOPE_KEYS))
    cleaned: dict[str, str] = {}
    for key, value in scope.items():
        if key not in SCOPE_KEYS:
            raise InputProblem(f"scope.{key}", f"{key!r} is not a scope key; use {', '.join(SCOPE_KEYS)}")
        if value in (None, ""):
            continue  # an empty form field means "any"
        if not isinstance(value, str) or len(value) > 100 or "\x00" in value:
            raise InputProblem(f"scope.{key}", "a scope value is a string of at most 100 characters, without NUL")
        cleaned[key] = value.strip()
    return dict(sorted(cleaned.items()))


def clean_window(
    start: datetime | None, end: datetime | None, *, captured: tuple[datetime | None, datetime | None]
) -> tuple[datetime | None, datetime | None]:
    """(None, None) for the whole captured window, else a sub-window inside it."""
    if start is None and end is None:
        return None, None
    if start is None or end is None:
        raise InputProblem("window", "a sub-window needs both start and end")
    if start.tzinfo is None or end.tzinfo is None:
        raise InputProblem("window", "window times need a time zone (for example 2026-02-26T14:00:00Z)")
    if end <= start:
        raise InputProblem("window.end", "the window's end must be after its start")
    first, last = captured
    if first is not None and last is not None and (start < first or end > last):
        raise InputProblem(
            "window",
            f"the sub-window must lie inside the captured window {first.isoformat()} to {last.isoformat()}",
        )
    return start, end


def clean_controls(controls: Any) -> dict[str, Any]:
    """{"disabled_actions": [names], "max_pops": n, "max_regions": n}, each optional."""
    if controls is None or controls == {}:
        return {}
    if not isinstance(controls, Mapping):
        raise InputProblem("controls", "controls are an object with some of: " + ", ".join(CONTROL_KEYS))
    cleaned: dict[str, Any] = {}
    for key, value in controls.items():
        if key not in CONTROL_KEYS:
            raise InputProblem(f"controls.{key}", f"{key!r} is not a control; use {', '.join(CONTROL_KEYS)}")
        if key == "disabled_actions":
            if value in (None, "", []):
                continue
            if not isinstance(value, list) or not all(
                isinstance(v, str) and v.strip() and "\x00" not in v and len(v) <= 100 for v in value
            ):
                raise InputProblem("controls.disabled_actions", "disabled_actions is a list of action names")
            cleaned[key] = sorted({v.strip() for v in value})
        else:
            if value in (None, ""):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputProblem(f"controls.{key}", f"{key} is a whole number, 0 or more")
            cleaned[key] = value
    return dict(sorted(cleaned.items()))


def report_actions(report: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """(incident, action) for every action every incident of the report plans, in the report's order."""
    for incident in report.get("incidents", []):
        for action in incident.get("actions", []):
            yield incident, action


def action_plan(report: Mapping[str, Any], controls: Mapping[str, Any], *, execute: bool) -> list[dict[str, Any]]:
    """Every action with its decision: allowed (execute) or dry_run (a dry run would have allowed it), or blocked.

    An action is blocked when the policy's own blast-radius bound blocked it, when a control turns it off, or when
    its targets exceed a bound a control lowered. `index` is stable: the execute's command keys use it.
    """
    disabled = set(controls.get("disabled_actions", ()))
    plan = []
    for index, (incident, action) in enumerate(report_actions(report)):
        targets = {key: list(values) for key, values in sorted(action.get("targets", {}).items())}
        reason = action.get("reason")
        blocked = action.get("status") == "blocked"
        if not blocked and action.get("name") in disabled:
            blocked, reason = True, "turned off by the run's controls"
        if not blocked:
            for control, target in _BOUND_TARGETS.items():
                bound = controls.get(control)
                if bound is not None and len(targets.get(target, [])) > bound:
                    blocked = True
                    reason = f"touches {len(targets[target])} {target}; the run's controls allow at most {bound}"
                    break
        plan.append(
            {
                "index": index,
                "incident": incident.get("key"),
                "action": action.get("name"),
                "capability": action.get("capability"),
                "target": targets,
                "decision": "blocked" if blocked else ("allowed" if execute else "dry_run"),
                "reason": reason if blocked else None,
            }
        )
    return plan
