"""The investigation page's agent-health chart: a server-rendered SVG of an agent's heartbeat status over time.

One lane per status (ok, degraded, failing) over one time axis that ends now; each heartbeat is a tick in its
status's lane and colour, so a change of status, a gap and a silence up to now are all visible at a glance. When the
agent is stale, the time since its heartbeats went stale is shaded. No JavaScript; built with ElementTree (through
timeline_svg's _Svg), so the output is well-formed XML with every label escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from django.utils.safestring import SafeString

from incidents.models import HeartbeatStatus

from .timeline_svg import _Svg

WIDTH = 720
LABEL_W = 78
RIGHT_PAD = 16
PLOT_W = WIDTH - LABEL_W - RIGHT_PAD
TOP = 12
LANE_H = 20
TICK_W = 3.0
TICKS = 5

# The page's own ok / warn / bad colours (templates/base.html).
COLOURS = {
    HeartbeatStatus.OK: "#1d7a3e",
    HeartbeatStatus.DEGRADED: "#9a6400",
    HeartbeatStatus.FAILING: "#b42318",
}
LANES = (HeartbeatStatus.OK, HeartbeatStatus.DEGRADED, HeartbeatStatus.FAILING)
STALE_FILL = "#fde7e5"


def heartbeat_svg(
    beats: Sequence[tuple[datetime, str]],
    *,
    now: datetime,
    stale_after: timedelta,
    agent_name: str = "",
    ident: str = "heartbeats",
) -> SafeString | None:
    """The chart of `beats` ((received_at, status) pairs, any order) from the oldest up to `now`; None without any."""
    points = sorted((moment, str(status)) for moment, status in beats if moment is not None)
    if not points:
        return None
    start = min(points[0][0], now - stale_after)
    end = max(now, points[-1][0])
    span = max((end - start).total_seconds(), 1.0)
    counts = {status: sum(1 for _, s in points if s == status) for status in LANES}

    axis_y = TOP + LANE_H * len(LANES)
    height = axis_y + 30
    svg = _Svg(
        WIDTH, height, ident=ident,
        title=f"Heartbeats of {agent_name or 'the agent'}, {start:%Y-%m-%d %H:%M:%S} to {end:%H:%M:%S} UTC",
        description=(f"{len(points)} heartbeats: {counts[HeartbeatStatus.OK]} ok, "
                     f"{counts[HeartbeatStatus.DEGRADED]} degraded, {counts[HeartbeatStatus.FAILING]} failing; "
                     f"last at {points[-1][0]:%Y-%m-%d %H:%M:%S} UTC ({points[-1][1]})."),
    )
    svg.root.set("class", "heartbeats")
    svg.add(None, "rect", x=0, y=0, width=WIDTH, height=height, fill="#ffffff")

    def x_at(moment: datetime) -> float:
        return LABEL_W + max(0.0, min(span, (moment - start).total_seconds())) / span * PLOT_W

    stale_from = points[-1][0] + stale_after
    if stale_from < end:
        x = x_at(stale_from)
        svg.add(None, "rect", tip=f"no heartbeat since {points[-1][0]:%Y-%m-%d %H:%M:%S} UTC: stale",
                class_="stale", x=x, y=TOP, width=max(LABEL_W + PLOT_W - x, 1.0), height=axis_y - TOP,
                fill=STALE_FILL)
        svg.add(None, "text", "stale", x=LABEL_W + PLOT_W - 4, y=TOP + 10, text_anchor="end", fill="#b42318")

    lanes = svg.add(None, "g", class_="lanes")
    for index, status in enumerate(LANES):
        y = TOP + index * LANE_H
        svg.add(lanes, "line", x1=LABEL_W, y1=y + LANE_H / 2, x2=LABEL_W + PLOT_W, y2=y + LANE_H / 2,
                stroke="#dfe3e8")
        svg.add(lanes, "text", f"{status} ({counts[status]})", x=LABEL_W - 6, y=y + LANE_H / 2 + 4,
                text_anchor="end", fill=COLOURS[status])

    marks = svg.add(None, "g", class_="beats")
    for moment, status in points:
        if status not in COLOURS:
            continue
        y = TOP + LANES.index(HeartbeatStatus(status)) * LANE_H
        svg.add(marks, "rect", tip=f"{moment:%Y-%m-%d %H:%M:%S} UTC: {status}", class_=status,
                x=x_at(moment) - TICK_W / 2, y=y + 3, width=TICK_W, height=LANE_H - 6, fill=COLOURS[status])

    axis = svg.add(None, "g", class_="axis", fill="#5f6b7a")
    svg.add(axis, "line", x1=LABEL_W, y1=axis_y, x2=LABEL_W + PLOT_W, y2=axis_y, stroke="#5f6b7a")
    long_span = span > 86400
    for index in range(TICKS + 1):
        moment = start + timedelta(seconds=span * index / TICKS)
        x = LABEL_W + PLOT_W * index / TICKS
        anchor = "start" if index == 0 else ("end" if index == TICKS else "middle")
        svg.add(axis, "line", x1=x, y1=axis_y, x2=x, y2=axis_y + 4, stroke="#5f6b7a")
        svg.add(axis, "text", f"{moment:%m-%d %H:%M}" if long_span else f"{moment:%H:%M:%S}", x=x,
                y=axis_y + 16, text_anchor=anchor)
    svg.add(axis, "text", "UTC", x=8, y=axis_y + 16)
    return svg.markup()
