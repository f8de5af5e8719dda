"""The one signal parser: a line of signals.jsonl becomes a checked `Signal`, or a numbered problem.

The upload validator and the engine's ingest stage both read signals through `SignalReader`, so a signal is parsed
once, by one set of rules. The checks mirror schemas/signal.schema.json by hand: per-line jsonschema would cost several
times the parse itself, and tests hold both to the same verdicts. Pieces of lines that provably hold only good signals
are decoded at once by msgspec (SignalReader._bulk); tests hold that path to the line-by-line verdicts too.
"""

from __future__ import annotations

import io
import json
import operator
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, compress, repeat
from operator import attrgetter
from typing import IO, Annotated, Any, Literal, NamedTuple

import msgspec
import orjson

from .errors import MAX_LISTED_LINES, Invalid
from .formats import (
    DEFAULT_LIMITS,
    RFC3339,
    Limits,
    finite_number,
    format_bytes,
    format_timestamp,
    json_type,
    parse_timestamp,
    text_problem,
)
from .idset import ExactIdSet, IdSet

SIGNALS_MEMBER = "signals.jsonl"
SEVERITIES = ("debug", "info", "warning", "error", "critical")
KNOWN_SOURCES = ("flow", "bgp", "dns", "metrics")  # the usual ones; any other non-empty name is accepted too

_REQUIRED = ("id", "ts", "source", "name", "labels")
_ALLOWED = frozenset((*_REQUIRED, "severity", "value"))
_MAX_LABELS = 64
_MAX_LABEL_KEY = 128
_MAX_LABEL_VALUE = 1024
_BOM = b"\xef\xbb\xbf"


class Signal(NamedTuple):
    """One checked signal. `ts` is an aware UTC datetime; `line` is its 1-based line in signals.jsonl.

    A NamedTuple rather than a frozen dataclass: just as immutable, and four times cheaper to build per line.
    """

    id: str
    ts: datetime
    source: str
    name: str
    labels: dict[str, str]
    severity: str | None = None
    value: int | float | None = None
    line: int = 0

    def as_json(self) -> dict[str, Any]:
        """The line's JSON object again (ts in this package's RFC 3339 form)."""
        data: dict[str, Any] = {
            "id": self.id,
            "ts": format_timestamp(self.ts),
            "source": self.source,
            "name": self.name,
            "labels": dict(self.labels),
        }
        if self.severity is not None:
            data["severity"] = self.severity
        if self.value is not None:
            data["value"] = self.value
        return data


class SignalProblem(ValueError):
    """One signal object breaks the contract; `path` is the JSON path inside the line (`$.labels.pop`)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def _text(obj: dict[str, Any], key: str, longest: int) -> str:
    value = obj[key]
    if type(value) is not str:
        raise SignalProblem(f"$.{key}", f"must be a string, got {json_type(value)}")
    if not value:
        raise SignalProblem(f"$.{key}", "must not be empty")
    if len(value) > longest:
        raise SignalProblem(f"$.{key}", f"must be at most {longest} characters long")
    return value


def _parse_signal_slowly(obj: Any, line: int) -> Signal:
    """The reference check, one rule at a time, so a failure names the first broken rule."""
    if type(obj) is not dict:
        raise SignalProblem("$", f"must be an object, got {json_type(obj)}")
    if not obj.keys() <= _ALLOWED:
        extra = sorted(obj.keys() - _ALLOWED)
        raise SignalProblem(f"$.{extra[0]}", "is not an allowed field")
    for key in _REQUIRED:
        if key not in obj:
            raise SignalProblem(f"$.{key}", "is required")
    signal_id = _text(obj, "id", 128)
    source = _text(obj, "source", 64)
    name = _text(obj, "name", 256)
    raw_ts = obj["ts"]
    if type(raw_ts) is not str:
        raise SignalProblem("$.ts", f"must be a string, got {json_type(raw_ts)}")
    try:
        ts = parse_timestamp(raw_ts)
    except ValueError as exc:
        raise SignalProblem("$.ts", f"{exc} (e.g. 2026-02-26T14:03:00.125Z)") from None
    labels = obj["labels"]
    if type(labels) is not dict:
        raise SignalProblem("$.labels", f"must be an object, got {json_type(labels)}")
    if len(labels) > _MAX_LABELS:
        raise SignalProblem("$.labels", f"must hold at most {_MAX_LABELS} labels")
    for key, value in labels.items():
        if not key or len(key) > _MAX_LABEL_KEY:
            raise SignalProblem("$.labels", f"label names must be 1 to {_MAX_LABEL_KEY} characters long")
        if type(value) is not str:
            raise SignalProblem(f"$.labels.{key}", f"must be a string, got {json_type(value)}")
        if len(value) > _MAX_LABEL_VALUE:
            raise SignalProblem(f"$.labels.{key}", f"must be at most {_MAX_LABEL_VALUE} characters long")
    severity = obj.get("severity")
    if "severity" in obj and severity not in SEVERITIES:
        raise SignalProblem("$.severity", f"must be one of {', '.join(SEVERITIES)}")
    value = obj.get("value")
    if "value" in obj and not finite_number(value):
        raise SignalProblem("$.value", f"must be a finite number, got {json_type(value)}")
    return Signal(signal_id, ts, source, name, labels, severity, value, line)


_SEVERITY_SET = frozenset(SEVERITIES)
_RFC3339_MATCH = RFC3339.fullmatch
_fromisoformat = datetime.fromisoformat


def parse_signal(obj: Any, line: int = 0) -> Signal:
    """Check one decoded line against the signal contract and return it as a Signal; raise SignalProblem if not.

    The common case (a well-formed line with a Z timestamp) takes a fast path of combined checks; anything it does
    not accept goes to the reference check, which either accepts it too or names the problem. So the fast path can
    only ever be stricter, never looser, than the rules.
    """
    if type(obj) is dict and obj.keys() <= _ALLOWED:
        signal_id = obj.get("id")
        source = obj.get("source")
        name = obj.get("name")
        labels = obj.get("labels")
        raw_ts = obj.get("ts")
        if (
            type(signal_id) is str
            and 0 < len(signal_id) <= 128
            and type(source) is str
            and 0 < len(source) <= 64
            and type(name) is str
            and 0 < len(name) <= 256
            and type(labels) is dict
            and len(labels) <= _MAX_LABELS
            and type(raw_ts) is str
            and raw_ts[-1:] == "Z"
            and _RFC3339_MATCH(raw_ts) is not None
        ):
            for key, text in labels.items():
                if not (0 < len(key) <= _MAX_LABEL_KEY and type(text) is str and len(text) <= _MAX_LABEL_VALUE):
                    break
            else:
                severity = obj.get("severity")
                value = obj.get("value")
                if ((type(severity) is str and severity in _SEVERITY_SET) or "severity" not in obj) and (
                    "value" not in obj or finite_number(value)
                ):
                    try:
                        ts = _fromisoformat(raw_ts)
                    except ValueError:
                        pass  # a date like 02-30: the reference check words the error
                    else:
                        if ts.tzinfo is not UTC:
                            ts = ts.astimezone(UTC)
                        return Signal(signal_id, ts, source, name, labels, severity, value, line)
    return _parse_signal_slowly(obj, line)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("an object repeats a key")
    return result


# Strict like the JSON documents: NaN and Infinity refused, and a repeated key too (parsers disagree on which wins,
# and the agent's parser must not see a different signal from ours). The hook costs about a tenth of the parse.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
_decode = _DECODER.decode
_scan = _DECODER.scan_once  # the C scanner without decode()'s Python wrapper: the common case, no error
_LINE_ENDS = ("\n", "\r\n")
_UNPARSED = object()
_loads = orjson.loads
_OrjsonError = orjson.JSONDecodeError


def _fast_decode(raw: bytes) -> Any:
    """orjson's parse of a line when it provably equals the strict decoder's, else _UNPARSED.

    orjson is about five times faster but lets a repeated key through (the last wins). So its result is taken only
    when the line can hold no repeated key: exactly two objects (the signal and its labels, as `{` counts show, with
    no `[` at all), no whitespace before any colon, and as many `":` as parsed keys. Every key ends in `":`, so a
    repeated key would leave more `":` than keys. A `{`, `[` or `":` inside a string only sends the line to the
    strict decoder. Errors, NaN, huge integers and lone surrogates also fall back, and the strict decoder words them.
    """
    if b"\\u0000" in raw:
        return _UNPARSED  # orjson takes a NUL escape; the strict path refuses it (text_problem)
    try:
        obj = _loads(raw)
    except _OrjsonError:
        return _UNPARSED
    if type(obj) is not dict:
        return _UNPARSED
    labels = obj.get("labels")
    if (
        type(labels) is dict
        and raw.count(b"{") == 2
        and b"[" not in raw
        and raw.count(b'":') == len(obj) + len(labels)
        and b" :" not in raw
        and b"\t:" not in raw
        and b"\r:" not in raw
    ):
        # orjson reads an integer beyond 64 bits as a float, where the strict decoder keeps the int: any float that
        # large goes to the strict decoder, so both paths always see the same number.
        for item in (*obj.values(), *labels.values()):
            if type(item) is float and not -_INT64_FLOAT < item < _INT64_FLOAT:
                return _UNPARSED
        return obj
    return _UNPARSED


_INT64_FLOAT = float(2**63)


# Problem kinds in the order the error sentence lists them, with their singular and plural phrases.
_PHRASES = {
    "too_long": ("line is longer than the {limit} limit", "lines are longer than the {limit} limit"),
    "malformed": ("line is not valid JSON", "lines are not valid JSON"),
    "invalid": ("line is not a valid signal", "lines are not valid signals"),
    "duplicate": ("line repeats an earlier signal id", "lines repeat an earlier signal id"),
    "outside": ("line has a timestamp outside the window", "lines have timestamps outside the window"),
}


class SignalPool:
    """Shares equal label dicts, and equal source, name and severity strings, across the signals of one window.

    A window repeats a few thousand label sets across a million signals, and a parser gives each line its own copies:
    sharing them halves the memory a big replay holds (about 1 KB a signal to under 0.5 KB). Shared dicts are never
    changed (normalization copies before it edits). If label sets turn out to be mostly unique, the label pool would
    only cost memory, so it is dropped after a probe of the first PROBE signals.
    """

    PROBE = 50_000

    def __init__(self) -> None:
        self.labels: dict[tuple[tuple[str, str], ...], dict[str, str]] | None = {}
        self.by_text: dict[bytes, dict[str, str]] = {}  # the reader's bulk path: raw label JSON -> pooled dict
        self.strings: dict[str, str] = {}
        self.named_ts = False  # whether a label set in by_text has a label called "ts"
        self.seen = 0
        self.probed = False

    def probe(self) -> None:
        """Once PROBE signals were seen, judge once and for all whether sharing label sets pays."""
        if not self.probed and self.seen >= self.PROBE:
            self.probed = True
            if self.labels is not None and len(self.labels) > self.PROBE // 2:
                self.labels = None
                self.by_text = {}

    def labels_of(self, text: bytes) -> dict[str, str] | None:
        """The pooled labels dict of one raw labels object, decoded against the contract; None when it breaks it
        (the reader then goes line by line and words why)."""
        assert self.labels is not None
        try:
            labels = _decode_labels(text)
        except (msgspec.MsgspecError, ValueError):
            return None
        labels = self.by_text[text] = self.labels.setdefault(tuple(labels.items()), labels)
        if "ts" in labels:
            self.named_ts = True
        return labels

    def share(self, signal: Signal) -> Signal:
        """`signal` with its labels and strings replaced by the pool's equal ones."""
        if self.seen == self.PROBE:
            self.probe()
        self.seen += 1
        labels = signal.labels
        if self.labels is not None:
            labels = self.labels.setdefault(tuple(labels.items()), labels)
        share = self.strings.setdefault
        severity = signal.severity
        return Signal(
            signal.id,
            signal.ts,
            share(signal.source, signal.source),
            share(signal.name, signal.name),
            labels,
            share(severity, severity) if severity is not None else None,
            signal.value,
            signal.line,
        )

    def share_all(self, signals: Iterable[Signal]) -> list[Signal]:
        return [self.share(signal) for signal in signals]


def _text_type(shortest: int, longest: int) -> Any:
    return Annotated[str, msgspec.Meta(min_length=shortest, max_length=longest)]


_Labels = Annotated[
    dict[_text_type(1, _MAX_LABEL_KEY), _text_type(0, _MAX_LABEL_VALUE)],  # type: ignore[valid-type]
    msgspec.Meta(max_length=_MAX_LABELS),
]


class _WireSignal(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The signal contract as msgspec types, for the reader's bulk path. A line it accepts, the reference check
    (_parse_signal_slowly) accepts too; what it refuses goes line by line, where the reference check words why.
    `severity` and `value` default to None but do not accept null, as the contract says."""

    id: _text_type(1, 128)  # type: ignore[valid-type]
    ts: Annotated[datetime, msgspec.Meta(tz=True)]
    source: _text_type(1, 64)  # type: ignore[valid-type]
    name: _text_type(1, 256)  # type: ignore[valid-type]
    labels: _Labels
    severity: Literal[SEVERITIES] = None  # type: ignore[assignment,valid-type]
    value: int | float = None  # type: ignore[assignment]


class _RawLabelsWireSignal(_WireSignal, forbid_unknown_fields=True, gc=False):
    """_WireSignal with its labels left as raw JSON text, for SignalPool.labels_of to decode once per distinct text."""

    labels: msgspec.Raw  # type: ignore[assignment]


_decode_wires = msgspec.json.Decoder(list[_WireSignal]).decode
_decode_raw_wires = msgspec.json.Decoder(list[_RawLabelsWireSignal]).decode
_decode_labels = msgspec.json.Decoder(_Labels).decode
# The timestamps both readings agree on: UTC (Z) with at most six fraction digits. msgspec would also take a space
# for the T, an offset without a colon, and round (not truncate) longer fractions; such lines go line by line.
_PLAIN_TS = re.compile(rb'"ts":"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?[Zz]"')
_W_ID, _W_TS, _W_SOURCE, _W_NAME, _W_LABELS, _W_SEVERITY, _W_VALUE = map(
    attrgetter, ("id", "ts", "source", "name", "labels", "severity", "value")
)


def _join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


@dataclass
class SignalReader:
    """Reads signals.jsonl from a binary stream, yielding good signals and tallying bad lines.

    Bad lines are skipped, not yielded; once the stream is exhausted `error()` says what was wrong (first 20 line
    numbers and a count of the rest). Blank lines are ignored but counted, so line numbers match an editor's.
    Memory: the ids seen (for uniqueness) as 64-bit digests, about 12 bytes a signal (idset.py); never the stream.
    """

    window: tuple[datetime, datetime] | None = None
    limits: Limits = DEFAULT_LIMITS
    member: str = SIGNALS_MEMBER
    count: int = 0
    lines: int = 0
    counts_by_source: Counter[str] = field(default_factory=Counter)
    ids: IdSet | ExactIdSet = field(default_factory=IdSet)
    bad_lines: list[int] = field(default_factory=list)
    bad_total: int = 0
    problems: dict[str, int] = field(default_factory=dict)
    first_problem: tuple[int, str] | None = None
    pool: SignalPool | None = None  # share equal label sets and strings across the signals read (see SignalPool)

    def _bad(self, line: int, kind: str, message: str) -> None:
        self.bad_total += 1
        if len(self.bad_lines) < MAX_LISTED_LINES:
            self.bad_lines.append(line)
        self.problems[kind] = self.problems.get(kind, 0) + 1
        if self.first_problem is None:
            self.first_problem = (line, message)

    def read(self, stream: IO[bytes]) -> Iterator[Signal]:
        """Yield the good signals of `stream` in file order, tallying the bad lines (see batches)."""
        return chain.from_iterable(self.batches(stream))

    def batches(self, stream: IO[bytes]) -> Iterator[list[Signal]]:
        """The good signals of `stream` in file order, a list per piece read, tallying the bad lines. A caller that
        holds every signal extends a list with these (in C) rather than passing each signal through a generator.

        The stream is read in pieces of whole lines. A piece takes the bulk path (_bulk: one msgspec decode of all its
        lines) when it provably holds only good signals, and otherwise goes line by line through the reference path
        (_read_lines), which words every problem. Either way a line gets the same verdict and the same Signal.
        """
        limit = self.limits.max_line_bytes
        read = stream.read
        rest = b""
        skipping = False  # inside a line already reported as too long: drop bytes up to its line end
        while True:
            block = read(limit)
            if not block:
                break
            if skipping:
                end = block.find(b"\n")
                if end < 0:
                    continue
                block, skipping = block[end + 1 :], False
            data = rest + block if rest else block
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                if len(data) > limit:
                    # No line end within the limit: the reference reader's readline(limit + 1) verdict, sooner.
                    self.lines += 1
                    self._bad(self.lines, "too_long", f"longer than {format_bytes(limit)}")
                    rest, skipping = b"", True
                else:
                    rest = data
                continue
            piece, rest = (data, b"") if cut == len(data) else (data[:cut], data[cut:])
            yield self._piece(piece)
        if rest:
            yield self._piece(rest)

    def _piece(self, piece: bytes) -> list[Signal]:
        # Every line after the first lies inside one read of `limit` bytes; only the first can be too long.
        first = piece.find(b"\n")
        if (first if first >= 0 else len(piece)) <= self.limits.max_line_bytes:
            signals = self._bulk(piece)
            if signals is not None:
                return signals
        return list(self._read_lines(io.BytesIO(piece)))

    def _bulk(self, piece: bytes) -> list[Signal] | None:
        """The piece's signals when every line in it is a good signal, else None (and nothing tallied or kept).

        Only the lines any strict reading accepts alike pass: no backslash at all (so no escapes: no NUL, no lone
        surrogate, no quote inside a string), exactly one JSON object per line, and timestamps in the plain UTC form
        with at most microseconds. msgspec checks types and lengths against the contract as it decodes. A repeated
        key is found by counting quotes: without escapes every quote delimits a string, so a line holds exactly
        2 x (keys + string values) of them, and a repeated key adds at least one key the decoded signal does not
        show. The piece's ids must all be new, and its times inside the window, or the line path words why.
        """
        if b"\\" in piece:
            return None
        lines = piece.count(b"\n")
        if piece[-1:] == b"\n":
            body = piece[:-1]
        else:
            body, lines = piece, lines + 1
        pool = self.pool
        if pool is not None:
            pool.probe()
        # With a label pool, labels come as their raw JSON text, and each distinct text is decoded and pooled once:
        # a million signals repeat a few thousand label sets, and hashing one bytes object is far cheaper than
        # decoding a dict and hashing its items.
        by_text = pool.by_text if pool is not None and pool.labels is not None else None
        try:
            # One array of the lines: a line end inside an object, or two objects on a line, is no longer valid JSON,
            # and a line end inside a string (invalid for the line reader too) leaves fewer objects than lines.
            array = b"[" + body.replace(b"\n", b",") + b"]"
            wires = _decode_raw_wires(array) if by_text is not None else _decode_wires(array)
        except (msgspec.MsgspecError, ValueError):
            return None
        if len(wires) != lines or len(_PLAIN_TS.findall(piece)) != lines:
            return None
        # Column by column, in C: map and zip over the decoded structs rather than a Python loop per signal.
        ids = list(map(_W_ID, wires))
        stamps = list(map(_W_TS, wires))
        all_labels = list(map(_W_LABELS, wires))
        if by_text is not None:
            texts = list(map(bytes, all_labels))
            all_labels = list(map(by_text.get, texts))
            if None in all_labels:
                # The label sets this piece brings first: found in C, pooled one by one.
                for index in compress(range(lines), map(operator.is_, all_labels, repeat(None))):
                    text = texts[index]
                    labels = by_text.get(text)  # an earlier line of this piece may have pooled it
                    if labels is None:
                        labels = pool.labels_of(text)  # type: ignore[union-attr]
                        if labels is None:
                            return None
                    all_labels[index] = labels
            named_ts = pool.named_ts  # type: ignore[union-attr]
        else:
            named_ts = True  # not known: look
        # A label called "ts" could stand in for a malformed ts in the timestamp count.
        if named_ts and any(map(operator.contains, all_labels, repeat("ts"))):
            return None
        severities = list(map(_W_SEVERITY, wires))
        values = list(map(_W_VALUE, wires))
        # Quoted strings beyond the nine every signal has (id, ts, source, name, labels: keys and values).
        pairs = 2 * sum(map(len, all_labels)) + 2 * (lines - severities.count(None)) + (lines - values.count(None))
        if piece.count(b'"') != 2 * (9 * lines + pairs):
            return None
        if self.window is not None:
            start, end = self.window
            if not (start <= min(stamps) and max(stamps) <= end):
                return None
        if not self.ids.add_new(ids):
            return None
        # Without a pool, strings are still shared within the piece: as cheap as not sharing them. (msgspec gives
        # each severity, a Literal, as one shared str already.)
        share = pool.strings.setdefault if pool is not None else {}.setdefault
        sources = list(map(_W_SOURCE, wires))
        sources = list(map(share, sources, sources))
        names = list(map(_W_NAME, wires))
        names = list(map(share, names, names))
        numbers = range(self.lines + 1, self.lines + lines + 1)
        fields = zip(ids, stamps, sources, names, all_labels, severities, values, numbers, strict=True)
        out: list[Signal] = list(map(tuple.__new__, repeat(Signal), fields))
        self.lines += lines
        self.count += lines
        if pool is not None:
            pool.seen += lines
        self.counts_by_source.update(sources)
        return out

    def _read_lines(self, stream: IO[bytes]) -> Iterator[Signal]:
        """The reference path: line by line, each problem tallied with its line number."""
        limit = self.limits.max_line_bytes
        readline = stream.readline
        ids = self.ids
        by_source = self.counts_by_source
        start, end = self.window if self.window else (None, None)
        number = self.lines
        while True:
            raw = readline(limit + 1)
            if not raw:
                break
            number += 1
            if len(raw) > limit and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the long line, a bounded piece at a time
                    raw = readline(64 * 1024)
                self._bad(number, "too_long", f"longer than {format_bytes(limit)}")
                continue
            if number == 1 and raw.startswith(_BOM):
                raw = raw[3:]
            obj = _fast_decode(raw)
            strict = obj is _UNPARSED  # orjson refuses lone surrogates and NUL escapes never reach it; see text_problem
            if obj is _UNPARSED:
                try:
                    text = raw.decode()
                    obj, stop = _scan(text, 0)
                    if stop != len(text) and text[stop:] not in _LINE_ENDS:
                        obj = _UNPARSED  # leading or trailing data: decode() decides and words the error
                except (UnicodeDecodeError, StopIteration, ValueError, RecursionError):
                    obj = _UNPARSED
            if obj is _UNPARSED:
                try:
                    obj = _decode(raw.rstrip(b"\r\n").decode())  # without the line end, columns stay on this line
                except UnicodeDecodeError as exc:
                    self._bad(number, "malformed", f"not UTF-8 text (byte {exc.start + 1})")
                    continue
                except json.JSONDecodeError as exc:
                    if not raw.strip(b" \t\r\n"):
                        continue  # a blank line: tolerated, still counted
                    self._bad(number, "malformed", f"{exc.msg} at column {exc.colno}")
                    continue
                except ValueError as exc:  # NaN or Infinity, a repeated key, integers over Python's digit limit
                    self._bad(number, "malformed", str(exc))
                    continue
                except RecursionError:
                    self._bad(number, "malformed", "nested too deeply")
                    continue
            if strict and (problem := text_problem(obj)) is not None:
                self._bad(number, "invalid", f"{problem[0]}: {problem[1]}")
                continue
            try:
                signal = parse_signal(obj, number)
            except SignalProblem as exc:
                self._bad(number, "invalid", str(exc))
                continue
            signal_id = signal.id
            if not ids.add(signal_id):
                self._bad(number, "duplicate", f"id {signal_id!r} was used on an earlier line")
                continue
            if start is not None and not start <= signal.ts <= end:
                edge = (
                    f"before window.start {format_timestamp(start)}"
                    if signal.ts < start
                    else f"after window.end {format_timestamp(end)}"
                )
                self._bad(number, "outside", f"ts {format_timestamp(signal.ts)} is {edge}")
                continue
            self.count += 1
            by_source[signal.source] += 1
            yield signal if self.pool is None else self.pool.share(signal)
        self.lines = number

    def error(self) -> Invalid | None:
        """What was wrong with the lines read so far, as one Invalid; None when every line was a good signal."""
        if self.bad_total:
            limit = format_bytes(self.limits.max_line_bytes)
            phrases = []
            for kind, (one, many) in _PHRASES.items():
                n = self.problems.get(kind, 0)
                if n:
                    phrases.append(f"{n} {(one if n == 1 else many).format(limit=limit)}")
            assert self.first_problem is not None
            line, message = self.first_problem
            return Invalid(
                f"{self.member}: {_join(phrases)} (line {line}: {message})",
                lines=self.bad_lines,
                more=self.bad_total - len(self.bad_lines),
            )
        if self.count == 0:
            return Invalid(f"{self.member}: holds no signals")
        return None


def iter_signals(
    stream: IO[bytes],
    *,
    window: tuple[datetime, datetime] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    member: str = SIGNALS_MEMBER,
) -> Iterator[Signal]:
    """Yield the good signals of a signals.jsonl stream; after the last, raise Invalid if any line was bad.

    With a `window` (start, end), a signal outside [start, end] (both ends included) is a bad line.
    """
    reader = SignalReader(window=window, limits=limits, member=member)
    yield from reader.read(stream)
    error = reader.error()
    if error is not None:
        raise error
