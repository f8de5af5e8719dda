"""The run view's timeline: a server-rendered SVG built from a replay report's `timeline` (docs/report-format.md).

Three bands over one time axis, no JavaScript:

- signals per bucket, stacked by source, with a legend;
- one lane per incident the replay formed, a bar from its first to its last busy bucket, shaded by how busy;
- one lane per suppression rule, from the first to the last signal it suppressed.

The document is built with ElementTree, so every label is escaped and the output is well-formed XML; characters XML
cannot carry at all (control characters) are dropped from labels first.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils.safestring import SafeString, mark_safe

SVG_NS = "http://www.w3.org/2000/svg"

WIDTH = 960
LABEL_W = 270
RIGHT_PAD = 24
PLOT_W = WIDTH - LABEL_W - RIGHT_PAD
LEGEND_Y = 16
BARS_TOP = 34
BARS_H = 140
LANE_H = 18
BAR_H = 11
MAX_INCIDENT_LANES = 15
MAX_SUPPRESSED_LANES = 8
MAX_TICKS = 8
LABEL_CHARS = 42

# Colour-blind-friendly enough, and distinct from the page's ok/warn/bad tags.
PALETTE = ("#d97706", "#0f766e", "#7c3aed", "#be185d", "#4d7c0f", "#0891b2", "#9a3412", "#a16207")
INCIDENT_FILL = "#1f5fbf"
SUPPRESSED_FILL = "#9aa4b2"

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def clean_text(value: Any, limit: int | None = None) -> str:
    """Text an XML document can hold: control characters dropped, cut to `limit` characters with an ellipsis."""
    text = _NOT_XML.sub("", str(value if value is not None else ""))
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def incident_name(key: Any, titles: Mapping[str, str] | None = None) -> str:
    """Words for an incident key: its title and first timestamp for a replay's incident ("root|labels|ts"), "baseline
    bl-002" for a baseline incident, "(no incident)" for None. The full key stays available to show on hover."""
    if key is None or key == "":
        return "(no incident)"
    text = str(key)
    parts = text.split("|")
    if len(parts) == 3 and parts[0] == "root":
        labels = dict(pair.split("=", 1) for pair in parts[1].split(",") if "=" in pair)
        title = (titles or {}).get(text)
        if not title:
            name = labels.get("alertname") or labels.get("service") or "incident"
            where = labels.get("pop") or labels.get("region")
            title = f"{name} at {where}" if where else name
        moment = parse_ts(parts[2])
        return f"{title} · {moment:%H:%M:%S}" if moment else title
    if (titles or {}).get(text):
        return str(titles[text])  # type: ignore[index]
    return f"baseline {text}" if text.startswith("bl-") else text


def parse_ts(value: Any) -> datetime | None:
    """A report timestamp ("2026-02-26T14:00:00.015Z") as an aware datetime, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _num(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def _counts(item: Mapping[str, Any], buckets: int) -> list[int]:
    counts = item.get("counts") if isinstance(item, Mapping) else None
    if not isinstance(counts, Sequence):
        return [0] * buckets
    values = [int(c) if isinstance(c, int | float) and c > 0 else 0 for c in list(counts)[:buckets]]
    return values + [0] * (buckets - len(values))


def _items(section: Any) -> tuple[list[Mapping[str, Any]], int]:
    """The items of a {count, items} list and its exact count (or a plain list)."""
    if isinstance(section, Mapping):
        items = [i for i in section.get("items") or [] if isinstance(i, Mapping)]
        count = section.get("count")
        return items, count if isinstance(count, int) else len(items)
    if isinstance(section, list):
        items = [i for i in section if isinstance(i, Mapping)]
        return items, len(items)
    return [], 0


class _Svg:
    def __init__(self, width: int, height: int, *, title: str, description: str, ident: str) -> None:
        self.root = ET.Element(
            "svg",
            {
                "xmlns": SVG_NS,
                "viewBox": f"0 0 {width} {height}",
                "width": str(width),
                "height": str(height),
                "role": "img",
                "aria-labelledby": f"{ident}-title {ident}-desc",
                "class": "timeline",
                "font-family": "system-ui, -apple-system, 'Segoe UI', sans-serif",
                "font-size": "11",
            },
        )
        ET.SubElement(self.root, "title", {"id": f"{ident}-title"}).text = clean_text(title)
        ET.SubElement(self.root, "desc", {"id": f"{ident}-desc"}).text = clean_text(description)

    def add(self, parent: ET.Element | None, tag: str, text: str | None = None, tip: str | None = None,
            **attrs: Any) -> ET.Element:
        # Python names → SVG attribute names: class_ → class, font_weight → font-weight.
        values = {key.rstrip("_").replace("_", "-"): _num(v) if isinstance(v, float) else str(v)
                  for key, v in attrs.items()}
        element = ET.SubElement(self.root if parent is None else parent, tag, values)
        if text is not None:
            element.text = clean_text(text)
        if tip:
            ET.SubElement(element, "title").text = clean_text(tip)
        return element

    def markup(self) -> SafeString:
        # Safe to put in a page as is: ElementTree escaped every text and attribute value it serialised.
        return mark_safe(ET.tostring(self.root, encoding="unicode", short_empty_elements=True))  # noqa: S308


def timeline_svg(
    timeline: Mapping[str, Any] | None,
    *,
    incident_label: Callable[[str], str] | None = None,
    ident: str = "timeline",
) -> SafeString | None:
    """The SVG markup for a report's `timeline`, or None when the report has none (or an empty one).

    `incident_label` turns an incident key into the words shown on its lane (the key itself by default).
    """
    if not isinstance(timeline, Mapping):
        return None
    bucket_s = timeline.get("bucket_s")
    buckets = timeline.get("buckets")
    start = parse_ts(timeline.get("start"))
    if not isinstance(bucket_s, int) or not isinstance(buckets, int) or bucket_s <= 0 or buckets <= 0 or not start:
        return None
    label_of = incident_label or incident_name
    span_s = bucket_s * buckets
    end = start + timedelta(seconds=span_s)
    step = PLOT_W / buckets

    sources, _ = _items(timeline.get("by_source"))
    incidents, incident_count = _items(timeline.get("by_incident"))
    suppressed, suppressed_count = _items(timeline.get("suppressed"))
    shown_incidents = incidents[:MAX_INCIDENT_LANES]
    shown_suppressed = suppressed[:MAX_SUPPRESSED_LANES]
    hidden_incidents = incident_count - len(shown_incidents)
    hidden_suppressed = suppressed_count - len(shown_suppressed)

    axis_y = BARS_TOP + BARS_H
    incidents_top = axis_y + 40
    incidents_h = LANE_H * max(1, len(shown_incidents)) + (LANE_H if hidden_incidents > 0 else 0)
    suppressed_top = incidents_top + incidents_h + 26
    suppressed_h = LANE_H * max(1, len(shown_suppressed)) + (LANE_H if hidden_suppressed > 0 else 0)
    height = suppressed_top + suppressed_h + 8

    total_signals = sum(int(s.get("signals") or 0) for s in sources)
    svg = _Svg(
        WIDTH, height, ident=ident,
        title=f"Timeline {start:%Y-%m-%d %H:%M:%S} to {end:%H:%M:%S} UTC",
        description=(f"{total_signals} signals in {buckets} buckets of {bucket_s} s by source; "
                     f"{incident_count} incidents; {suppressed_count} suppression rules."),
    )
    svg.add(None, "rect", x=0, y=0, width=WIDTH, height=height, fill="#ffffff")

    def x_at(moment: datetime) -> float:
        seconds = (moment - start).total_seconds()
        return LABEL_W + max(0.0, min(float(span_s), seconds)) / span_s * PLOT_W

    # --- legend and stacked bars by source ----------------------------------------------------------------------
    colours = {name: PALETTE[i % len(PALETTE)]
               for i, name in enumerate(sorted({clean_text(s.get("source")) for s in sources}))}
    legend = svg.add(None, "g", class_="legend")
    svg.add(legend, "text", "Signals per bucket", x=8, y=LEGEND_Y, font_weight="600")
    legend_x = float(LABEL_W)
    for item in sources:
        name = clean_text(item.get("source"))
        svg.add(legend, "rect", x=legend_x, y=LEGEND_Y - 9, width=10, height=10, fill=colours[name])
        caption = f"{clean_text(name, 20)} ({int(item.get('signals') or 0)})"
        svg.add(legend, "text", caption, x=legend_x + 14, y=LEGEND_Y)
        legend_x += 22 + 7 * len(caption)

    series = [(clean_text(item.get("source")), _counts(item, buckets)) for item in sources]
    totals = [sum(values[i] for _, values in series) for i in range(buckets)]
    peak = max(totals, default=0) or 1
    bars = svg.add(None, "g", class_="bars")
    for index in range(buckets):
        y = float(axis_y)
        moment = start + timedelta(seconds=index * bucket_s)
        for name, values in series:
            count = values[index]
            if not count:
                continue
            h = count / peak * BARS_H
            y -= h
            svg.add(bars, "rect", tip=f"{moment:%H:%M:%S} +{bucket_s} s: {count} {name}",
                    x=LABEL_W + index * step + 0.5, y=y, width=max(step - 1.0, 0.5), height=h, fill=colours[name])
    axis = svg.add(None, "g", class_="axis", stroke="#5f6b7a")
    svg.add(axis, "line", x1=LABEL_W, y1=axis_y, x2=LABEL_W + PLOT_W, y2=axis_y)
    svg.add(axis, "line", x1=LABEL_W, y1=BARS_TOP, x2=LABEL_W, y2=axis_y)
    svg.add(None, "text", str(peak if any(totals) else 0), x=LABEL_W - 6, y=BARS_TOP + 8, text_anchor="end",
            fill="#5f6b7a")
    svg.add(None, "text", "0", x=LABEL_W - 6, y=axis_y, text_anchor="end", fill="#5f6b7a")
    svg.add(None, "text", "signals / bucket", x=8, y=BARS_TOP + BARS_H / 2, fill="#5f6b7a")

    every = max(1, math.ceil(buckets / MAX_TICKS))
    long_span = span_s > 86400
    ticks = svg.add(None, "g", class_="ticks", fill="#5f6b7a")
    for index in range(0, buckets + 1, every):
        x = LABEL_W + index * step
        moment = start + timedelta(seconds=index * bucket_s)
        svg.add(ticks, "line", x1=x, y1=axis_y, x2=x, y2=axis_y + 4, stroke="#5f6b7a")
        anchor = "start" if index == 0 else ("end" if index == buckets else "middle")
        svg.add(ticks, "text", f"{moment:%m-%d %H:%M}" if long_span else f"{moment:%H:%M:%S}", x=x, y=axis_y + 16,
                text_anchor=anchor)
    svg.add(None, "text", "UTC", x=8, y=axis_y + 16, fill="#5f6b7a")

    # --- incidents ----------------------------------------------------------------------------------------------
    lanes = svg.add(None, "g", class_="incidents")
    svg.add(lanes, "text", f"Incidents formed ({incident_count})", x=8, y=incidents_top - 10, font_weight="600")
    if not shown_incidents:
        svg.add(lanes, "text", "none", x=LABEL_W, y=incidents_top + BAR_H, fill="#5f6b7a", font_style="italic")
    for lane, item in enumerate(shown_incidents):
        key = clean_text(item.get("incident"))
        counts = _counts(item, buckets)
        busy = [i for i, c in enumerate(counts) if c]
        y = incidents_top + lane * LANE_H
        label = clean_text(label_of(key), LABEL_CHARS)
        signals = int(item.get("signals") or sum(counts))
        svg.add(lanes, "text", label, tip=f"{key} ({signals} signals)", x=LABEL_W - 8, y=y + BAR_H - 1,
                text_anchor="end")
        if not busy:
            continue
        first, last = busy[0], busy[-1]
        span = svg.add(lanes, "g", class_="incident")
        svg.add(span, "rect", tip=f"{label}: {signals} signals", x=LABEL_W + first * step, y=y,
                width=(last - first + 1) * step, height=BAR_H, fill=INCIDENT_FILL, fill_opacity="0.18",
                stroke=INCIDENT_FILL, stroke_width="0.6", rx=2)
        busiest = max(counts) or 1
        for index in busy:
            svg.add(span, "rect", x=LABEL_W + index * step + 0.5, y=y + 1, width=max(step - 1.0, 0.5),
                    height=BAR_H - 2, fill=INCIDENT_FILL, fill_opacity=0.25 + 0.75 * counts[index] / busiest)
    if hidden_incidents > 0:
        y = incidents_top + len(shown_incidents) * LANE_H
        svg.add(lanes, "text", f"… and {hidden_incidents} more incidents (see the report)", x=LABEL_W,
                y=y + BAR_H, fill="#5f6b7a", font_style="italic")

    # --- suppression --------------------------------------------------------------------------------------------
    marks = svg.add(None, "g", class_="suppressed")
    svg.add(marks, "text", f"Suppressed, by rule ({suppressed_count})", x=8, y=suppressed_top - 10,
            font_weight="600")
    if not shown_suppressed:
        svg.add(marks, "text", "nothing suppressed", x=LABEL_W, y=suppressed_top + BAR_H, fill="#5f6b7a",
                font_style="italic")
    for lane, item in enumerate(shown_suppressed):
        y = suppressed_top + lane * LANE_H
        reason, rule = clean_text(item.get("reason") or "?"), clean_text(item.get("rule") or "-")
        signals = int(item.get("signals") or 0)
        label = clean_text(f"{reason} · {rule}", LABEL_CHARS - 8) + f" ({signals})"
        svg.add(marks, "text", label, tip=f"{reason} by rule {rule}: {signals} signals", x=LABEL_W - 8,
                y=y + BAR_H - 1, text_anchor="end")
        first_ts, last_ts = parse_ts(item.get("first_ts")), parse_ts(item.get("last_ts"))
        if first_ts is None or last_ts is None:
            continue
        x1, x2 = x_at(first_ts), x_at(last_ts)
        tip = f"{reason} by rule {rule}: {signals} signals, {first_ts:%H:%M:%S} to {last_ts:%H:%M:%S} UTC"
        mark = svg.add(marks, "g", class_="suppression")
        svg.add(mark, "rect", tip=tip, x=x1, y=y + 3, width=max(x2 - x1, 1.5), height=BAR_H - 6,
                fill=SUPPRESSED_FILL, fill_opacity="0.55")
        for x in (x1, x2):
            svg.add(mark, "path", d=f"M{_num(x)} {y} l-4 -0 l4 {BAR_H} l4 -{BAR_H} z", fill="#5f6b7a")
    if hidden_suppressed > 0:
        y = suppressed_top + len(shown_suppressed) * LANE_H
        svg.add(marks, "text", f"… and {hidden_suppressed} more rules", x=LABEL_W, y=y + BAR_H, fill="#5f6b7a",
                font_style="italic")
    return svg.markup()
