"""What a report needs from the signals themselves, gathered in one streaming pass: the timeline and group names.

A ReplayResult says which signals formed which incident and which were suppressed, but not when each signal arrived
or what it was called. `SignalProfile.collect` reads the selected signals once more (a second pass over the bundle
costs less than holding a million signals) and keeps only counts per second, the spans of suppressed signals, and the
(source, name, pop, region) of the few signals highlights describe. docs/report-format.md, "Timeline".
"""

from __future__ import annotations

import bisect
import math
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import compress, islice
from typing import Any, NamedTuple

from .diffs import bounded
from .formats import format_timestamp

# (longest window, bucket seconds): the first row whose length the window fits. A 2-10 minute incident window gets
# 10 s buckets, 12 to 60 of them: fine enough to see a burst lead another, few enough to read.
BUCKET_STEPS = (
    (timedelta(minutes=10), 10),
    (timedelta(hours=1), 60),
    (timedelta(hours=6), 300),
    (timedelta(days=2), 3600),
)
DAY_S = 86400
_CHUNK = 8192
_ID, _TS, _SOURCE = operator.attrgetter("id"), operator.attrgetter("ts"), operator.attrgetter("source")
_REASON_RULE = operator.itemgetter(1, 2)  # of a correlate.Suppressed


def _chunks(signals: Iterable[Any]) -> Iterator[list[Any]]:
    iterator = iter(signals)
    while chunk := list(islice(iterator, _CHUNK)):
        yield chunk


def bucket_seconds(length: timedelta) -> int:
    for longest, seconds in BUCKET_STEPS:
        if length <= longest:
            return seconds
    return DAY_S


class Traits(NamedTuple):
    """What a highlight says about a signal: its source and name, where it happened. (A NamedTuple: an incident's
    members each get one, tens of thousands in a big window.)"""

    source: str
    name: str
    pop: str | None
    region: str | None


@dataclass
class SignalProfile:
    """Counts per second (by source, by replay incident), suppressed spans, and the traits of wanted signals."""

    by_source: Counter[str] = field(default_factory=Counter)
    per_second_source: Counter[tuple[str, int]] = field(default_factory=Counter)
    per_second_incident: Counter[tuple[str, int]] = field(default_factory=Counter)
    suppressed_spans: dict[tuple[str | None, str | None], list[Any]] = field(default_factory=dict)  # [first, last, n]
    traits: dict[str, Traits] = field(default_factory=dict)
    first: datetime | None = None
    last: datetime | None = None
    signals: int = 0

    @classmethod
    def collect(
        cls,
        signals: Iterable[Any],
        *,
        selected: AbstractSet[str] | None,
        incident_of: Mapping[str, str],
        suppressed: Mapping[str, tuple[str | None, str | None]],
        wanted: AbstractSet[str],
    ) -> SignalProfile:
        """One pass. `selected`: the ids the replay saw (None: all of them), so a scoped replay's timeline counts
        only its selection. `wanted`: the ids whose traits highlights will quote.

        Signals are taken a chunk at a time and counted with map/zip into Counters, so the per-signal work runs in C;
        at a few hundred thousand signals a plain loop cost more than the replay itself.
        """
        profile = cls()
        interned: dict[Traits, Traits] = {}  # thousands of members share a handful of trait tuples
        for chunk in _chunks(signals):
            ids = list(map(_ID, chunk))
            if selected is not None:
                keep = list(map(selected.__contains__, ids))
                if not all(keep):
                    chunk, ids = list(compress(chunk, keep)), list(compress(ids, keep))
                if not chunk:
                    continue
            stamps = list(map(_TS, chunk))
            in_order = all(map(operator.le, stamps, islice(stamps, 1, None)))  # as agents write
            profile._count(ids, stamps, list(map(_SOURCE, chunk)), incident_of, in_order=in_order)
            whys = list(map(suppressed.get, ids))
            if in_order:
                profile._add_spans_in_order(whys, stamps)
            else:
                for why, ts in zip(whys, stamps, strict=True):
                    if why is not None:
                        profile._add_span(why, ts, ts, 1)
            hits = wanted.intersection(ids) if wanted else ()
            if hits:
                index = dict(zip(ids, chunk, strict=True))
                profile._note_traits(map(index.__getitem__, hits), interned)
        return profile

    @classmethod
    def collect_replayed(
        cls,
        signals: list[Any],
        *,
        suppressed: list[Any],
        suppressed_at: Sequence[int],
        incident_of: Mapping[str, str],
        wanted: AbstractSet[str],
    ) -> SignalProfile:
        """collect() for a replay's own selection (correlate.Basis): `signals` are exactly the selected signals in
        (ts, id) order, and `suppressed_at` gives the position in them of each item of `suppressed` (the result's
        Suppressed list). Each signal's suppression is found by position, never looked up by id, and first and last
        times fall out of the order. Gives what collect() gives for the same signals in any order."""
        profile = cls()
        if not signals:
            return profile
        stamps = list(map(_TS, signals))
        ids = list(map(_ID, signals))
        profile._count(ids, stamps, list(map(_SOURCE, signals)), incident_of, in_order=True)
        when = list(map(stamps.__getitem__, suppressed_at))  # in time order, as suppressed_at is ascending
        # (reason, rule) pairs made as they are consumed, each dropped unless it is a new key: no list of a million.
        profile._add_spans_in_order(suppressed, when, why=_REASON_RULE)
        if wanted:
            profile._note_traits(compress(signals, map(wanted.__contains__, ids)), {})
        return profile

    # --- what collect and collect_replayed share ----------------------------------------------------------------------

    def _count(
        self,
        ids: list[str],
        stamps: list[datetime],
        sources: list[str],
        incident_of: Mapping[str, str],
        *,
        in_order: bool,
    ) -> None:
        """Count one batch of signals (their ids, times and sources, in step): in all, per second by source, and per
        second by incident for the members of one. Signals `in_order` of time are counted a second at a time, each
        second's slice found by bisection and counted in C, with no time converted and no (key, second) pair built per
        signal; others signal by signal."""
        self.signals += len(stamps)
        low, high = (stamps[0], stamps[-1]) if in_order else (min(stamps), max(stamps))
        self.first = low if self.first is None else min(self.first, low)
        self.last = high if self.last is None else max(self.last, high)
        self.by_source.update(sources)
        incidents = list(map(incident_of.get, ids))
        per_source, per_incident = self.per_second_source, self.per_second_incident
        if not in_order:
            seconds = list(map(math.floor, map(datetime.timestamp, stamps)))
            per_source.update(zip(sources, seconds, strict=True))
            per_incident.update(compress(zip(incidents, seconds, strict=True), incidents))
            return
        members = incidents.count(None) < len(incidents)
        start, total = 0, len(stamps)
        while start < total:
            second = math.floor(stamps[start].timestamp())
            end = bisect.bisect_left(stamps, datetime.fromtimestamp(second + 1, UTC), start)
            for source, n in Counter(sources[start:end]).items():
                per_source[source, second] += n
            if members:
                for incident, n in Counter(incidents[start:end]).items():
                    if incident is not None:
                        per_incident[incident, second] += n
            start = end

    def _add_span(self, why: tuple[str | None, str | None], first: datetime, last: datetime, count: int) -> None:
        span = self.suppressed_spans.get(why)
        if span is None:
            self.suppressed_spans[why] = [first, last, count]
        else:
            span[0], span[1], span[2] = min(span[0], first), max(span[1], last), span[2] + count

    def _add_spans_in_order(
        self, items: Sequence[Any], stamps: Sequence[datetime], why: Callable[[Any], Any] | None = None
    ) -> None:
        """Add to the suppressed spans the items whose why (`why(item)`, else the item itself: a (reason, rule) or
        None) is not None. `stamps`, one per item, are in time order, so each rule's first and last time fall out of
        two dicts, in C."""

        def whys(sequence: Iterable[Any]) -> Iterable[Any]:
            return sequence if why is None else map(why, sequence)

        firsts = dict(zip(whys(reversed(items)), reversed(stamps), strict=True))
        lasts = dict(zip(whys(items), stamps, strict=True))
        for key, n in Counter(whys(items)).items():
            if key is not None:
                self._add_span(key, firsts[key], lasts[key], n)

    def _note_traits(self, signals: Iterable[Any], interned: dict[Traits, Traits]) -> None:
        for signal in signals:
            labels = signal.labels
            found = Traits(signal.source, signal.name, labels.get("pop"), labels.get("region"))
            self.traits[signal.id] = interned.setdefault(found, found)

    # --- the timeline -------------------------------------------------------------------------------------------------

    def timeline(self, window: tuple[datetime, datetime] | None) -> dict[str, Any]:
        """Counts per bucket by source and by incident (largest incidents first), and suppressed spans per rule.

        Buckets start at the window's start (rounded down to the second) and are `bucket_s` long; a signal exactly at
        the window's end falls in the last bucket. Without a window, the first and last signal bound it.
        """
        if window is None:
            if self.first is None or self.last is None:
                return {
                    "bucket_s": None,
                    "start": None,
                    "end": None,
                    "buckets": 0,
                    "by_source": bounded([]),
                    "by_incident": bounded([]),
                    "suppressed": bounded([]),
                }
            window = (self.first, self.last)
        start, end = window
        size = bucket_seconds(end - start)
        origin = math.floor(start.timestamp())
        buckets = max(1, math.ceil((math.ceil(end.timestamp()) - origin) / size))

        def series(counter: Counter[tuple[Any, int]]) -> dict[str, list[int]]:
            rows: dict[str, list[int]] = {}
            for (key, second), n in counter.items():
                if key is None:
                    continue
                index = min(max((second - origin) // size, 0), buckets - 1)
                rows.setdefault(key, [0] * buckets)[index] += n
            return rows

        sources = series(self.per_second_source)
        incidents = series(self.per_second_incident)
        spans = sorted(self.suppressed_spans.items(), key=lambda kv: (-kv[1][2], kv[0][0] or "", kv[0][1] or ""))
        return {
            "bucket_s": size,
            "start": format_timestamp(datetime.fromtimestamp(origin, UTC)),
            "end": format_timestamp(end),
            "buckets": buckets,
            "by_source": bounded(
                {"source": key, "signals": sum(counts), "counts": counts}
                for key, counts in sorted(sources.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
            ),
            "by_incident": bounded(
                {"incident": key, "signals": sum(counts), "counts": counts}
                for key, counts in sorted(incidents.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
            ),
            "suppressed": bounded(
                {
                    "reason": reason or None,
                    "rule": rule or None,
                    "signals": n,
                    "first_ts": format_timestamp(first),
                    "last_ts": format_timestamp(last),
                }
                for (reason, rule), (first, last, n) in spans
            ),
        }

    # --- naming groups of signals -------------------------------------------------------------------------------------

    def describe(self, signals: Iterable[str], *, names: int = 2) -> str | None:
        """A few words for a group of signals: its most common names and, when they share one, the POP or region
        ("bgp_session_flap + dns_servfail at POP-12"). None when no signal of the group was profiled."""
        counts: Counter[str] = Counter()
        pops: set[str | None] = set()
        regions: set[str | None] = set()
        for signal_id in signals:
            found = self.traits.get(signal_id)
            if found is None:
                continue
            counts[found.name] += 1
            pops.add(found.pop)
            regions.add(found.region)
        return _words(counts, pops, regions, names)

    def describe_groups(self, groups: Iterable[Iterable[str]], *, names: int = 3) -> str | None:
        """Words for several groups at once, naming each group by its most common name (largest group first): the
        merged incidents of "bgp_session_flap + dns_servfail at POP-12 now form one episode"."""
        counts: Counter[str] = Counter()
        pops: set[str | None] = set()
        regions: set[str | None] = set()
        for group in groups:
            own: Counter[str] = Counter()
            for signal_id in group:
                found = self.traits.get(signal_id)
                if found is None:
                    continue
                own[found.name] += 1
                pops.add(found.pop)
                regions.add(found.region)
            if own:
                top, _count = min(own.items(), key=lambda kv: (-kv[1], kv[0]))
                counts[top] += sum(own.values())
        return _words(counts, pops, regions, names)


def _words(counts: Counter[str], pops: set[str | None], regions: set[str | None], names: int) -> str | None:
    if not counts:
        return None
    ranked = [name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    text = " + ".join(ranked[:names])
    if len(ranked) > names:
        text += f" + {len(ranked) - names} more"
    if len(pops) == 1 and None not in pops:
        text += f" at {next(iter(pops))}"
    elif len(regions) == 1 and None not in regions:
        text += f" in {next(iter(regions))}"
    return text
