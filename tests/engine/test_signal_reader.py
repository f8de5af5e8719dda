"""The reader's bulk path (one msgspec decode per piece of lines) against its reference path (line by line).

Every line must get the same verdict and the same Signal whichever path reads it: the bulk path may only send a
piece back to the line path, never accept what the line path refuses or read a value differently.
"""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replays.engine.formats import DEFAULT_LIMITS
from replays.engine.idset import ExactIdSet, IdSet
from replays.engine.signals import SignalPool, SignalReader

WINDOW = (datetime(2026, 2, 26, 14, 0, tzinfo=UTC), datetime(2026, 2, 26, 14, 10, tzinfo=UTC))


def line(n: int, **changes) -> bytes:
    obj = {
        "id": f"sig-{n}",
        "ts": f"2026-02-26T14:0{n % 10}:00.{n % 1000:03d}Z",
        "source": ("flow", "bgp", "dns", "metrics")[n % 4],
        "name": "dns_servfail",
        "severity": "warning",
        "value": n * 1.5,
        "labels": {"pop": f"POP-{n % 7:02d}", "region": "eu-west-1", "service": "edge-gw"},
    }
    for key, value in changes.items():
        if value is None:
            obj.pop(key, None)
        else:
            obj[key] = value
    return json.dumps(obj, separators=(",", ":")).encode()


# Lines the bulk path must send to the line path, each next to a good line it may otherwise take.
ODD_LINES = [
    b'{"id":"dup","id":"dup2","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{}}',
    b'{"id":"k","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{"a":"1","a":"2"}}',
    b'{"id":"v","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{},"value":1,"value":2}',
    b'{"id":"l","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{"x":"y"},"labels":{}}',
    b'{"id":"s" , "ts" : "2026-02-26 14:00:00Z","source":"dns","name":"n","labels":{}}',
    b'{"id":"t","ts":"2026-02-26 14:00:00Z","source":"dns","name":"n","labels":{}}',
    b'{"id":"t7","ts":"2026-02-26T14:00:00.9999999Z","source":"dns","name":"n","labels":{}}',
    b'{"id":"off","ts":"2026-02-26T15:00:00+01:00","source":"dns","name":"n","labels":{}}',
    b'{"id":"off2","ts":"2026-02-26T15:00:00+0100","source":"dns","name":"n","labels":{}}',
    b'{"id":"leap","ts":"2026-02-26T14:00:60Z","source":"dns","name":"n","labels":{}}',
    b'{"id":"lts","ts":"2026-02-26 14:00:00Z","source":"dns","name":"n","labels":{"ts":"2026-02-26T14:00:00Z"}}',
    b'{"id":"nul\\u0000","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{}}',
    b'{"id":"sur\\ud800","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{}}',
    b'{"id":"esc\\"q","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{}}',
    b'{"id":"ok\\u00e9","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{}}',
    b'{"id":"sev","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{},"severity":null}',
    b'{"id":"sev2","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{},"severity":"fatal"}',
    b'{"id":"b","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{},"value":true}',
    b'{"id":"big","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{},"value":123456789012345678901234}',
    b'{"id":"inf","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{},"value":1e999}',
    b'{"id":"nan","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{},"value":NaN}',
    b'{"id":"x","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{},"extra":1}',
    b'{"id":"","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{}}',
    b'{"id":"e","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{"":"v"}}',
    b'{"id":"ev","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{"k":""}}',
    b'{"id":"two","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{}} '
    b'{"id":"two2","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{}}',
    b'{"id":"split","ts":"2026-02-26T14:00:00Z",',
    b'"source":"dns","name":"n","labels":{}}',
    b'{"id":"str\nsplit","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{}}',
    b"",
    b"   ",
    b"\xef\xbb\xbf" + line(9001),
    b'{"id":"bad\xff","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{}}',
    b"[1,2]",
    b'"just a string"',
    b'{"id":"early","ts":"2026-02-26T13:59:59.999Z","source":"dns","name":"n","labels":{}}',
    b'{"id":"late","ts":"2026-02-26T14:10:00.001Z","source":"dns","name":"n","labels":{}}',
    b'{"id":"edge","ts":"2026-02-26T14:10:00Z","source":"dns","name":"n","labels":{}}',
    b'{"id":"frac","ts":"2026-02-26T14:00:00.5z","source":"dns","name":"n","labels":{},"value":-0}',
    b'{"id":"sig-3","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{}}',  # repeats a good id
    b'{"id":"long","ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{"k":"' + b"x" * 700 + b'"}}',
    b'{"id":"tab",\t"ts":"2026-02-26T14:00:00Z","source":"dns","name":"n","labels":{}}\r',
]


def read_both(data: bytes, *, window=None, limit: int = 512, exact: bool = True, pool: bool = False):
    limits = dataclasses.replace(DEFAULT_LIMITS, max_line_bytes=limit)
    results = []
    for path in ("bulk", "lines"):
        reader = SignalReader(
            window=window,
            limits=limits,
            ids=ExactIdSet() if exact else IdSet(),
            pool=SignalPool() if pool and path == "bulk" else None,
        )
        stream = io.BytesIO(data)
        signals = list(reader.read(stream) if path == "bulk" else reader._read_lines(stream))
        error = reader.error()
        results.append(
            {
                "signals": signals,
                "error": None if error is None else (error.detail, error.lines, error.more),
                "count": reader.count,
                "lines": reader.lines,
                "by_source": reader.counts_by_source,
            }
        )
    return results


good_lines = st.integers(0, 400).map(line)
any_line = good_lines | st.sampled_from(ODD_LINES)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(any_line, max_size=14),
    ending=st.sampled_from([b"\n", b"\r\n"]),
    last_ending=st.booleans(),
    limit=st.sampled_from([300, 512, 4096]),
    windowed=st.booleans(),
    exact=st.booleans(),
    pool=st.booleans(),
)
def test_it_gives_every_line_the_verdict_of_the_line_reader(lines, ending, last_ending, limit, windowed, exact, pool):
    data = ending.join(lines) + (ending if last_ending and lines else b"")
    bulk, reference = read_both(data, window=WINDOW if windowed else None, limit=limit, exact=exact, pool=pool)
    assert bulk == reference


def test_it_reads_a_clean_window_without_the_line_path(monkeypatch):
    data = b"\n".join(line(n) for n in range(2000)) + b"\n"

    def refuse(self, stream):
        raise AssertionError("a clean piece went line by line")

    monkeypatch.setattr(SignalReader, "_read_lines", refuse)
    reader = SignalReader(window=WINDOW, ids=ExactIdSet(), pool=SignalPool())
    signals = list(reader.read(io.BytesIO(data)))
    assert reader.error() is None
    assert [s.line for s in signals] == list(range(1, 2001))
    assert signals[7].id == "sig-7" and signals[7].value == 10.5 and signals[7].labels["pop"] == "POP-00"
    assert reader.counts_by_source == {"flow": 500, "bgp": 500, "dns": 500, "metrics": 500}


def test_it_shares_equal_label_sets_and_strings_through_the_pool():
    data = b"\n".join(line(n) for n in range(100)) + b"\n"
    signals = list(SignalReader(pool=SignalPool()).read(io.BytesIO(data)))
    by_pop = {}
    for signal in signals:
        by_pop.setdefault(signal.labels["pop"], signal.labels)
        assert signal.labels is by_pop[signal.labels["pop"]]
    assert len({id(signal.name) for signal in signals}) == 1


@pytest.mark.parametrize("odd", ODD_LINES[:-3], ids=[f"odd{n}" for n in range(len(ODD_LINES) - 3)])
@pytest.mark.parametrize("pool", [False, True], ids=["unpooled", "pooled"])
def test_it_words_an_odd_line_in_a_clean_piece_as_the_line_reader_does(odd, pool):
    data = b"\n".join([line(1), line(2), odd, line(3)]) + b"\n"
    bulk, reference = read_both(data, window=WINDOW, pool=pool)
    assert bulk == reference
    assert bulk["lines"] == 4 + odd.count(b"\n")


def test_it_reports_a_line_longer_than_the_limit_once_and_reads_on():
    data = line(1) + b"\n" + b'{"id":"' + b"x" * 5000 + b'"}\n' + line(2) + b"\n" + b"y" * 3000
    bulk, reference = read_both(data, limit=512)
    assert bulk == reference
    assert [s.id for s in bulk["signals"]] == ["sig-1", "sig-2"]
    assert bulk["error"][1] == [2, 4]


def test_it_judges_whether_pooling_pays_once_at_the_probe(monkeypatch):
    monkeypatch.setattr(SignalPool, "PROBE", 50)
    few = [line(n, labels={"pop": f"POP-{n % 3}"}) for n in range(60)]  # 3 label sets by the probe: pooling pays
    many = [line(1000 + n, labels={"host": f"h-{n}"}) for n in range(200)]  # then more sets than PROBE // 2
    again = [line(5000 + n, labels={"pop": "POP-1"}) for n in range(100)]
    pool = SignalPool()
    signals = list(
        SignalReader(pool=pool, limits=dataclasses.replace(DEFAULT_LIMITS, max_line_bytes=1024)).read(
            io.BytesIO(b"\n".join(few + many + again) + b"\n")
        )
    )
    assert pool.labels is not None
    assert len({id(signal.labels) for signal in signals[-100:]}) == 1


def test_it_stops_pooling_label_sets_that_are_mostly_unique(monkeypatch):
    monkeypatch.setattr(SignalPool, "PROBE", 50)
    unique = [line(n, labels={"host": f"h-{n}"}) for n in range(300)]
    pool = SignalPool()
    limits = dataclasses.replace(DEFAULT_LIMITS, max_line_bytes=1024)  # pieces of a few lines: the probe is in one
    signals = list(SignalReader(pool=pool, limits=limits).read(io.BytesIO(b"\n".join(unique) + b"\n")))
    assert pool.labels is None
    assert len(signals) == 300
