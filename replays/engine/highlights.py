"""Highlights: the few sentences a person reads first, written from the parity report and the diffs.

Deterministic: the order is fixed (headline, parity, the diff against another policy, the diff against the
baseline, the action summary last) and within a kind the largest change comes first, at most PER_KIND of each.
Groups of signals are named by their most common signal names and shared POP ("bgp_session_flap + dns_servfail at
POP-12"), from the report's pass over the signals; without it, by incident title or key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .diffs import Matching
from .timeline import SignalProfile

HIGHLIGHT_LIMIT = 20
PER_KIND = 3


def arrow(before: int, after: int) -> str:
    """ "146 → 1": alerts in, incidents out."""
    return f"{before} → {after}"


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


@dataclass(frozen=True)
class Namer:
    """Names signal groups from the signal profile when there is one, else falls back to what the caller gives."""

    profile: SignalProfile | None

    def group(self, signals: Iterable[str], fallback: str) -> str:
        words = self.profile.describe(signals) if self.profile else None
        return words or fallback

    def groups(self, groups: Iterable[Iterable[str]], fallback: str) -> str:
        words = self.profile.describe_groups(groups) if self.profile else None
        return words or fallback


def headline(signals_in: int, incidents: int, baseline_incidents: int | None) -> str:
    line = f"{plural(signals_in, 'alert')} in → {plural(incidents, 'incident')} out"
    return line + (f"; the baseline formed {baseline_incidents}." if baseline_incidents is not None else ".")


def parity_summary(parity: Mapping[str, Any]) -> str:
    # Rounded down, so "1.00" is said only of perfect parity (0.996 reads 0.99).
    shown = math.floor(parity["score"] * 100) / 100
    return (
        f"Parity {shown:.2f} with the baseline ({parity['confidence']} confidence): "
        f"{parity['matched']['count']} of {plural(parity['baseline_incidents'], 'baseline incident')} matched, "
        f"{parity['split']['count']} split, {parity['merged']['count']} merged, {parity['missing']['count']} missing, "
        f"{parity['new']['count']} new."
    )


def parity_details(parity: Mapping[str, Any], matching: Matching, namer: Namer) -> list[str]:
    a, b = matching.a, matching.b
    lines = []
    for item in parity["missing"]["items"][:PER_KIND]:
        key = item["baseline"]
        words = namer.group(a.members[key], key)
        lines.append(f"Missing: {words} ({key}, {plural(item['signals'], 'alert')}) forms no incident in the replay.")
    for item in parity["new"]["items"][:PER_KIND]:
        key = item["replay"]
        words = namer.group(b.members[key], b.titles.get(key, key))
        lines.append(f"New: {words} ({plural(item['signals'], 'alert')}) forms an incident the baseline did not.")
    return lines


def correlation_lines(diff: Mapping[str, Any], matching: Matching, namer: Namer, reference: str) -> list[str]:
    """Merges and splits; against another policy also new and gone incidents (against the baseline, parity's
    missing and new sentences say that)."""
    a, b = matching.a, matching.b
    corr = diff["correlation"]
    lines = []
    for merge in corr["merges"]["items"][:PER_KIND]:
        sources = [item["incident"] for item in merge["from"]]
        words = namer.groups((a.members[key] for key in sources), " + ".join(sources))
        lines.append(
            f"Merged: {words} now form one episode ({plural(len(sources), 'incident')}, {arrow(merge['signals'], 1)})."
        )
    for split in corr["splits"]["items"][:PER_KIND]:
        parts = len(split["into"])
        words = namer.group(a.members[split["from"]], split["from"])
        lines.append(f"Split: {words} now forms {parts} incidents ({arrow(split['signals'], parts)}).")
    if diff["against"] == "replay":
        for key in sorted(matching.new, key=lambda k: (-len(b.members[k]), k))[:PER_KIND]:
            words = namer.group(b.members[key], b.titles.get(key, key))
            lines.append(
                f"New incident: {words} ({plural(len(b.members[key]), 'alert')}), not formed under {reference}."
            )
        for key in sorted(matching.missing, key=lambda k: (-len(a.members[k]), k))[:PER_KIND]:
            words = namer.group(a.members[key], a.titles.get(key, key))
            lines.append(
                f"Gone: {words} ({plural(len(a.members[key]), 'alert')}) formed an incident under {reference}."
            )
    return lines


def fingerprint_lines(diff: Mapping[str, Any], namer: Namer) -> list[str]:
    fp = diff["fingerprint"]
    lines = []
    for item in fp["tightened"]["items"][:PER_KIND]:
        words = namer.group(item["sample"], item["before"])
        lines.append(
            f"Fingerprint tightened: {plural(item['signals'], 'signal')} of {words} that shared one fingerprint "
            f"now carry {item['groups_after']}."
        )
    for item in fp["loosened"]["items"][:PER_KIND]:
        words = namer.group(item["sample"], item["after"])
        lines.append(
            f"Fingerprint loosened: {item['groups_before']} fingerprint groups of {words} now share one "
            f"({plural(item['signals'], 'signal')})."
        )
    return lines


def suppression_lines(diff: Mapping[str, Any], reference: str) -> list[str]:
    lines = []
    for item in diff["suppression"]["by_rule"]["items"][:PER_KIND]:
        rule = f"{item['reason']} rule {item['rule']}" if item["rule"] else (item["reason"] or "an unrecorded rule")
        n = plural(item["signals"], "signal")
        if item["change"] == "newly_suppressed":
            lines.append(f"Newly suppressed by {rule}: {n} that {reference} let through.")
        elif item["change"] == "newly_let_through":
            lines.append(f"Newly let through: {n} that {reference} suppressed ({rule}).")
        else:
            lines.append(f"Suppressed by a different rule, now {rule}: {n}.")
    return lines


def _gate(state: Mapping[str, Any]) -> str:
    return state["status"] + (f": {state['reason']}" if state.get("reason") else "")


def _what_changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """ "planned → blocked, services +border — touches 2 services …": status, target changes, then the new reason
    (last, since a reason may hold any punctuation)."""
    parts = []
    if before["status"] != after["status"]:
        parts.append(f"{before['status']} → {after['status']}")
    for kind in ("pops", "regions", "services"):
        old, new = set(before["targets"].get(kind, [])), set(after["targets"].get(kind, []))
        change = [f"+{value}" for value in sorted(new - old)] + [f"-{value}" for value in sorted(old - new)]
        if change:
            parts.append(f"{kind} {' '.join(change)}")
    text = ", ".join(parts) or "reason changed"
    if after.get("reason") and after["reason"] != before.get("reason"):
        text += f" — {after['reason']}"
    return text


def action_lines(diff: Mapping[str, Any], matching: Matching) -> list[str]:
    actions = diff["actions"]
    if actions is None:
        return []
    a, b = matching.a, matching.b
    lines = []
    for item in actions["added"]["items"][:PER_KIND]:
        title = b.titles.get(item["incident"], item["incident"])
        lines.append(f"Action added: {item['name']} on {title} ({_gate(item['after'])}).")
    for item in actions["removed"]["items"][:PER_KIND]:
        was = item["was_incident"]
        title = b.titles.get(item["incident"], item["incident"]) if item["incident"] else a.titles.get(was, was)
        lines.append(f"Action dropped: {item['name']} on {title} (was {_gate(item['before'])}).")
    for item in actions["changed"]["items"][:PER_KIND]:
        title = b.titles.get(item["incident"], item["incident"])
        lines.append(f"Action changed: {item['name']} on {title}: {_what_changed(item['before'], item['after'])}.")
    return lines


def action_summary(actions: Mapping[str, Any]) -> str | None:
    if not actions["items"]["count"]:
        return None
    line = f"Actions: {actions['planned']} would run, {actions['blocked']} blocked"
    reasons = sorted(
        {item["reason"] for item in actions["items"]["items"] if item["status"] == "blocked" and item["reason"]}
    )
    if reasons:
        line += f" ({'; '.join(reasons[:2])}{'; …' if len(reasons) > 2 else ''})"
    return line + "."


def build_highlights(
    *,
    signals_in: int,
    incidents: int,
    namer: Namer,
    actions: Mapping[str, Any],
    parity: Mapping[str, Any] | None = None,
    baseline: tuple[Mapping[str, Any], Matching] | None = None,
    compare: tuple[Mapping[str, Any], Matching] | None = None,
    compare_name: str | None = None,
) -> list[str]:
    """The report's highlights. `baseline` and `compare` are (diff, matching) pairs."""
    lines = [headline(signals_in, incidents, len(baseline[1].a.members) if baseline else None)]
    if parity is not None:
        lines.append(parity_summary(parity))
    if compare is not None:
        diff, matching = compare
        reference = f"policy {compare_name!r}" if compare_name else "the compare policy"
        found = [
            *correlation_lines(diff, matching, namer, reference),
            *fingerprint_lines(diff, namer),
            *suppression_lines(diff, reference),
            *action_lines(diff, matching),
        ]
        # With a baseline too, say which comparison a sentence belongs to.
        lines += [f"Vs {reference}: {line}" for line in found] if baseline is not None else found
    if baseline is not None:
        diff, matching = baseline
        lines += correlation_lines(diff, matching, namer, "the baseline")
        if parity is not None:
            lines += parity_details(parity, matching, namer)
        lines += fingerprint_lines(diff, namer)
        lines += suppression_lines(diff, "the baseline")
    summary = action_summary(actions)
    if summary is None:
        return lines[:HIGHLIGHT_LIMIT]
    return [*lines[: HIGHLIGHT_LIMIT - 1], summary]
