"""Parity with the real Alertmanager 0.25: the engine, under `import_alertmanager(config)`, must group, inhibit and
silence a set of alerts exactly as Alertmanager does with the same configuration.

Each example starts a fresh Alertmanager (about 0.1 s), creates the silences, posts the alerts (startsAt now, endsAt
in an hour), waits until Alertmanager has taken them all in, and reads:

- `GET /api/v2/alerts/groups?silenced=true&inhibited=true&active=true`: every aggregation group with all its alerts.
  These are 0.25's defaults too: a group lists its silenced and inhibited alerts unless told otherwise;
- `GET /api/v2/alerts/groups?silenced=false&inhibited=false&active=true`: the groups as they would notify: suppressed
  alerts left out, and a group left with none is not listed;
- `GET /api/v2/alerts?...` (all three true): each alert's `status.silencedBy` and `status.inhibitedBy`.

The engine replays the same alerts as signals with one identical ts. Like is compared with like:

- the notifying groups  <->  the incidents: (receiver, group labels, member label sets);
- all groups            <->  the incidents of the same policy without its suppression section (routing alone);
- silenced alerts       <->  signals suppressed with reason "silence";
- inhibited alerts      <->  signals suppressed with reason "inhibit". The engine names one reason per signal and
  checks silences first, so an alert that Alertmanager reports both silenced and inhibited counts as silenced only.

An alert's label set is the engine's exposed label set (labels plus alertname, source and severity): every alert
here carries a `source` label, as every signal has a source.

The matcher parser and the Go-to-Python regex translation are also held to Alertmanager's own answers, through
`amtool` (shipped in the same package): `config routes show` for parsing, `config routes test` for matching.
docs/alertmanager.md describes the whole suite.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from replays.engine import Invalid, Signal
from replays.engine.alertmanager import MatcherSyntaxError, import_alertmanager, parse_matchers
from replays.engine.correlate import replay
from replays.engine.policy import exposed_labels, load_policy
from tests.engine.alertmanager_process import rfc3339, running_alertmanager

AMTOOL = shutil.which("amtool")

LabelSet = str  # '{alertname="BGP",pop="ams",source="bgp"}': readable in a failing diff, and hashable
Group = tuple[str, LabelSet, tuple[LabelSet, ...]]  # receiver, group labels, sorted distinct member label sets


def label_set(labels: Mapping[str, str]) -> LabelSet:
    """Alertmanager drops a label with an empty value on receipt: an empty value is no label."""
    return "{" + ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()) if value) + "}"


@dataclass(frozen=True)
class View:
    """What Alertmanager (or the engine) made of a set of alerts, in comparable form."""

    groups: tuple[Group, ...]  # the notifying groups, sorted; a multiset: two routes can form equal groups
    all_groups: tuple[Group, ...]  # every group with every member, suppressed ones included
    silenced: frozenset[LabelSet]
    inhibited: frozenset[LabelSet]  # inhibited and not silenced


def silences_at(now: datetime, silences: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The silences in Alertmanager's JSON, active from a minute before `now` to an hour after it."""
    window = {"startsAt": rfc3339(now - timedelta(minutes=1)), "endsAt": rfc3339(now + timedelta(hours=1))}
    return [{"createdBy": "parity", "comment": "parity test", **silence, **window} for silence in silences]


# --- Alertmanager's view ------------------------------------------------------------------------------------------


def _am_groups(groups: list[dict[str, Any]]) -> tuple[Group, ...]:
    return tuple(
        sorted(
            (
                group["receiver"]["name"],
                label_set(group["labels"]),
                tuple(sorted({label_set(alert["labels"]) for alert in group["alerts"]})),
            )
            for group in groups
        )
    )


def alertmanager_view(
    config: str, alerts: list[dict[str, str]], silences: list[dict[str, Any]], directory: Path
) -> View:
    with running_alertmanager(config, directory) as manager:
        now = datetime.now(UTC)
        for silence in silences_at(now, silences):
            manager.post_silence(silence)
        manager.post_alerts(alerts, now=now)
        distinct = len({label_set(alert) for alert in alerts})
        all_groups, statuses = manager.settled_view(distinct)
        notifying = manager.groups(silenced="false", inhibited="false", active="true")
    silenced = {label_set(a["labels"]) for a in statuses if a["status"]["silencedBy"]}
    inhibited = {label_set(a["labels"]) for a in statuses if a["status"]["inhibitedBy"]} - silenced
    return View(_am_groups(notifying), _am_groups(all_groups), frozenset(silenced), frozenset(inhibited))


# --- the engine's view --------------------------------------------------------------------------------------------

FIELDS = ("alertname", "source", "severity")


def signal_for(index: int, labels: Mapping[str, str], ts: datetime) -> Signal:
    """The signal whose exposed labels are exactly `labels` (which must hold alertname and source)."""
    return Signal(
        id=f"s{index:03d}",
        ts=ts,
        source=labels["source"],
        name=labels["alertname"],
        labels={key: value for key, value in labels.items() if key not in FIELDS},
        severity=labels.get("severity"),
    )


def _engine_groups(result: Any, exposed: Mapping[str, LabelSet]) -> tuple[Group, ...]:
    return tuple(
        sorted(
            (
                incident.receiver,
                label_set(incident.group_labels),
                tuple(sorted({exposed[member] for member in incident.signals})),
            )
            for incident in result.incidents
        )
    )


def engine_view(config: str, alerts: list[dict[str, str]], silences: list[dict[str, Any]]) -> View:
    now = datetime.now(UTC).replace(microsecond=0)
    spec = import_alertmanager(config, silences=silences_at(now, silences))
    signals = [signal_for(index, labels, now) for index, labels in enumerate(alerts)]
    exposed = {signal.id: label_set(exposed_labels(signal)) for signal in signals}
    assert all(exposed[signal.id] == label_set(alert) for signal, alert in zip(signals, alerts, strict=True))
    result = replay(spec, signals)
    routing_only = copy.deepcopy(spec)
    routing_only.pop("suppression", None)
    unsuppressed = replay(routing_only, signals)
    reasons = Counter(item.reason for item in result.suppressed)
    assert set(reasons) <= {"silence", "inhibit", "dedup"}, reasons  # an imported policy has no thresholds
    return View(
        groups=_engine_groups(result, exposed),
        all_groups=_engine_groups(unsuppressed, exposed),
        silenced=frozenset(exposed[item.signal] for item in result.suppressed if item.reason == "silence"),
        inhibited=frozenset(exposed[item.signal] for item in result.suppressed if item.reason == "inhibit"),
    )


def assert_same(expected: View, got: View) -> None:
    """Field by field, so a failure names the part that differs."""
    assert got.all_groups == expected.all_groups, "routing and grouping differ"
    assert got.silenced == expected.silenced, "the silenced alerts differ"
    assert got.inhibited == expected.inhibited, "the inhibited alerts differ"
    assert got.groups == expected.groups, "the notifying groups differ"


# --- configurations -----------------------------------------------------------------------------------------------

RECEIVERS = """
receivers:
  - name: default
  - name: bgp
  - name: flaps
  - name: flaps-ams
  - name: flaps-core
  - name: edge
  - name: catchall
  - name: pager
"""

# Nested routes with continue, anchored regexes (BGP is not BGPFlap, ams is not ams2), the old match/match_re forms,
# the string form with braces and negative matchers, a child's empty group_by (inherits) and '...'.
ROUTES = (
    """
route:
  receiver: default
  group_by: [alertname]
  routes:
    - receiver: bgp
      matchers: ['alertname=~"BGP"']
      group_by: [pop]
      continue: true
    - receiver: flaps
      match_re: {alertname: 'BGP.+'}
      routes:
        - receiver: flaps-ams
          matchers: [pop=~"ams"]
          group_by: ['...']
        - matchers: [severity="critical", 'service!="core"']
          continue: true
          group_by: []
        - receiver: flaps-core
          match: {service: core}
    - receiver: edge
      matchers: ['{service="edge", pop!~"fra|ams2"}']
      group_by: [service, severity]
      continue: true
    - receiver: catchall
      matchers: ['source=~"b.*"']
"""
    + RECEIVERS
)

# group_by '...' at the root, overridden below, and an empty group_by that inherits the parent's, not the root's.
WILDCARD = (
    """
route:
  receiver: default
  group_by: ['...']
  routes:
    - receiver: pager
      matchers: [severity="critical"]
      group_by: [pop]
      routes:
        - receiver: edge
          matchers: ['service=~"edge|core"']
          group_by: []
    - receiver: flaps
      matchers: ['alertname!~"Link.*"']
      continue: true
    - receiver: catchall
      matchers: ['pop=~".+"']
"""
    + RECEIVERS
)

# Inhibition in both forms, with equal (a missing label equals a missing label; alertname counts as a label) and
# without it; the last rule's sides overlap (a flow alert named BGP is both), which Alertmanager's excludeTwoSidedMatch
# handles.
INHIBIT = (
    """
route:
  receiver: default
  group_by: [alertname, pop]
  routes:
    - receiver: pager
      matchers: [severity="critical"]
inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity="warning"]
    equal: [pop]
  - source_match: {alertname: PopDown}
    target_match_re: {alertname: 'BGP.*|LinkDown'}
    equal: [pop, service]
  - source_matchers: ['alertname="LinkDown"', 'source="flow"']
    target_matchers: ['alertname="BGPFlap"', source="bgp"]
  - source_matchers: [source="flow"]
    target_matchers: ['alertname=~"BGP.*|LinkDown"']
    equal: [alertname]
"""
    + RECEIVERS
)

# Silences with regex and negative matchers (anchored too: alertname=~"BGP" leaves BGPFlap alone).
SILENCED = (
    """
route:
  receiver: default
  group_by: [pop]
  routes:
    - receiver: bgp
      matchers: ['alertname=~"BGP.*"']
      group_by: [alertname, severity]
"""
    + RECEIVERS
)
SILENCES = [
    {
        "matchers": [
            {"name": "pop", "value": "ams.*", "isRegex": True, "isEqual": True},
            {"name": "alertname", "value": "PopDown", "isRegex": False, "isEqual": False},
        ]
    },
    {
        "matchers": [
            {"name": "service", "value": "edge|core", "isRegex": True, "isEqual": False},
            {"name": "severity", "value": "warning", "isRegex": False, "isEqual": True},
        ]
    },
    {"matchers": [{"name": "alertname", "value": "BGP", "isRegex": True, "isEqual": True}]},
]

# Routes, inhibition and silences together. An alert can be silenced and inhibited at once (Alertmanager reports
# both; the engine names the silence), and a silenced source still inhibits.
COMBINED = (
    """
route:
  receiver: default
  group_by: [alertname]
  routes:
    - receiver: pager
      matchers: [severity="critical"]
      group_by: [pop, service]
      continue: true
    - receiver: bgp
      matchers: ['alertname=~"BGP.*"']
      group_by: ['...']
inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity!="critical"]
    equal: [pop]
"""
    + RECEIVERS
)
COMBINED_SILENCES = [
    {
        "matchers": [
            {"name": "severity", "value": "warning", "isRegex": False, "isEqual": False},
            {"name": "pop", "value": "ams.*", "isRegex": True, "isEqual": True},
        ]
    },
    {
        "matchers": [
            {"name": "alertname", "value": "LinkDown", "isRegex": False, "isEqual": True},
            {"name": "severity", "value": "warning", "isRegex": False, "isEqual": True},
        ]
    },
]

# --- generated alert sets -----------------------------------------------------------------------------------------

ALPHABET: dict[str, list[str | None]] = {
    "alertname": ["BGP", "BGPFlap", "LinkDown", "PopDown"],
    "source": ["bgp", "flow"],
    "severity": ["warning", "critical", None],
    "pop": ["ams", "ams2", "fra", None],
    "service": ["edge", "core", None],
}
ALERT = st.fixed_dictionaries({key: st.sampled_from(values) for key, values in ALPHABET.items()}).map(
    lambda labels: {key: value for key, value in labels.items() if value is not None}
)
ALERT_SETS = st.lists(ALERT, min_size=1, max_size=10)
PARITY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_parity(config: str, alerts: list[dict[str, str]], silences: list[dict[str, Any]], root: Path) -> None:
    directory = Path(tempfile.mkdtemp(prefix="am-", dir=root))
    assert_same(alertmanager_view(config, alerts, silences, directory), engine_view(config, alerts, silences))


@pytest.fixture(scope="module")
def am_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("alertmanager")


@pytest.mark.needs("alertmanager")
@pytest.mark.parametrize(
    ("config", "silences"),
    [(ROUTES, []), (WILDCARD, []), (INHIBIT, []), (SILENCED, SILENCES), (COMBINED, COMBINED_SILENCES)],
    ids=["routes", "wildcard", "inhibit", "silences", "combined"],
)
def test_it_groups_inhibits_and_silences_generated_alerts_as_alertmanager_does(config, silences, am_root):
    @PARITY
    @given(alerts=ALERT_SETS)
    def check(alerts):
        check_parity(config, alerts, silences, am_root)

    check()


# --- pinned cases: what Alertmanager does, and whether the engine agrees -------------------------------------------


@dataclass(frozen=True)
class Case:
    """A minimal example with Alertmanager's answer written out."""

    config: str
    alerts: list[dict[str, str]]
    expected: View
    silences: list[dict[str, Any]] | None = None


def alert(**labels: str) -> dict[str, str]:
    return {"source": "bgp", **labels}


def ls(**labels: str) -> LabelSet:
    return label_set(alert(**labels))


KNOWN_CASES = {
    "a regex matcher is anchored at both ends": Case(
        config="route: {receiver: default, routes: [{receiver: bgp, matchers: ['alertname=~\"BGP\"']}]}" + RECEIVERS,
        alerts=[alert(alertname="BGP"), alert(alertname="BGPFlap")],
        expected=View(
            groups=(("bgp", "{}", (ls(alertname="BGP"),)), ("default", "{}", (ls(alertname="BGPFlap"),))),
            all_groups=(("bgp", "{}", (ls(alertname="BGP"),)), ("default", "{}", (ls(alertname="BGPFlap"),))),
            silenced=frozenset(),
            inhibited=frozenset(),
        ),
    ),
    "an empty group_by inherits the parent's grouping": Case(
        config="route: {receiver: default, group_by: [pop], routes: [{receiver: bgp, group_by: []}]}" + RECEIVERS,
        alerts=[alert(alertname="A", pop="ams"), alert(alertname="B", pop="ams")],
        expected=View(
            groups=(("bgp", '{pop="ams"}', (ls(alertname="A", pop="ams"), ls(alertname="B", pop="ams"))),),
            all_groups=(("bgp", '{pop="ams"}', (ls(alertname="A", pop="ams"), ls(alertname="B", pop="ams"))),),
            silenced=frozenset(),
            inhibited=frozenset(),
        ),
    ),
    "an inhibited alert still inhibits": Case(
        config="route: {receiver: default}\ninhibit_rules: "
        "[{source_matchers: [alertname=A], target_matchers: [alertname=B]},"
        " {source_matchers: [alertname=B], target_matchers: [alertname=C]}]" + RECEIVERS,
        alerts=[alert(alertname="A"), alert(alertname="B"), alert(alertname="C")],
        expected=View(
            groups=(("default", "{}", (ls(alertname="A"),)),),
            all_groups=(("default", "{}", (ls(alertname="A"), ls(alertname="B"), ls(alertname="C"))),),
            silenced=frozenset(),
            inhibited=frozenset({ls(alertname="B"), ls(alertname="C")}),
        ),
    ),
    "a silenced alert still inhibits": Case(
        config="route: {receiver: default}\ninhibit_rules: "
        "[{source_matchers: [alertname=PopDown], target_matchers: [alertname=BGP], equal: [pop]}]" + RECEIVERS,
        alerts=[alert(alertname="PopDown", pop="ams"), alert(alertname="BGP", pop="ams")],
        silences=[{"matchers": [{"name": "alertname", "value": "PopDown", "isRegex": False}]}],
        expected=View(
            groups=(),
            all_groups=(("default", "{}", (ls(alertname="BGP", pop="ams"), ls(alertname="PopDown", pop="ams"))),),
            silenced=frozenset({ls(alertname="PopDown", pop="ams")}),
            inhibited=frozenset({ls(alertname="BGP", pop="ams")}),
        ),
    ),
    "equal compares alertname, source and severity too": Case(
        config="route: {receiver: default}\ninhibit_rules: "
        "[{source_matchers: [pop=ams], target_matchers: [pop=fra], equal: [alertname]}]" + RECEIVERS,
        alerts=[alert(alertname="A", pop="ams"), alert(alertname="B", pop="fra")],
        expected=View(
            groups=(("default", "{}", (ls(alertname="A", pop="ams"), ls(alertname="B", pop="fra"))),),
            all_groups=(("default", "{}", (ls(alertname="A", pop="ams"), ls(alertname="B", pop="fra"))),),
            silenced=frozenset(),
            inhibited=frozenset(),
        ),
    ),
    "a source that is also a target does not inhibit an alert that is both": Case(
        config="route: {receiver: default}\ninhibit_rules: "
        "[{source_matchers: [severity=critical], target_matchers: ['alertname=~\"BGP.*\"'], equal: [pop]}]" + RECEIVERS,
        alerts=[
            alert(alertname="BGP", pop="ams", severity="critical"),
            alert(alertname="BGPFlap", pop="ams", severity="critical"),
            alert(alertname="BGPFlap", pop="ams", severity="warning"),
        ],
        expected=View(
            groups=(
                (
                    "default",
                    "{}",
                    (
                        ls(alertname="BGP", pop="ams", severity="critical"),
                        ls(alertname="BGPFlap", pop="ams", severity="critical"),
                    ),
                ),
            ),
            all_groups=(
                (
                    "default",
                    "{}",
                    (
                        ls(alertname="BGP", pop="ams", severity="critical"),
                        ls(alertname="BGPFlap", pop="ams", severity="critical"),
                        ls(alertname="BGPFlap", pop="ams", severity="warning"),
                    ),
                ),
            ),
            silenced=frozenset(),
            inhibited=frozenset({ls(alertname="BGPFlap", pop="ams", severity="warning")}),
        ),
    ),
    "a regex dot does not match a line feed, nor does $ stop before one": Case(
        config="route: {receiver: default, routes: [{receiver: bgp, matchers: ['msg=~\"a.b\"']},"
        " {receiver: edge, matchers: ['msg=~\"a\"']}]}" + RECEIVERS,
        alerts=[alert(alertname="A", msg="a\nb"), alert(alertname="A", msg="a\n")],
        expected=View(
            groups=(("default", "{}", (ls(alertname="A", msg="a\n"), ls(alertname="A", msg="a\nb"))),),
            all_groups=(("default", "{}", (ls(alertname="A", msg="a\n"), ls(alertname="A", msg="a\nb"))),),
            silenced=frozenset(),
            inhibited=frozenset(),
        ),
    ),
    "Go's \\d is ASCII-only, and (?i) applies to the whole regex": Case(
        config="route: {receiver: default, routes: [{receiver: bgp, matchers: ['alertname=~\"(?i)bgp\"']},"
        " {receiver: edge, matchers: ['code=~\"5\\\\d\\\\d\"']}]}" + RECEIVERS,
        alerts=[alert(alertname="Bgp"), alert(alertname="A", code="503"), alert(alertname="A", code="5\u0663\u0663")],
        expected=View(
            groups=(
                ("bgp", "{}", (ls(alertname="Bgp"),)),
                ("default", "{}", (ls(alertname="A", code="5\u0663\u0663"),)),
                ("edge", "{}", (ls(alertname="A", code="503"),)),
            ),
            all_groups=(
                ("bgp", "{}", (ls(alertname="Bgp"),)),
                ("default", "{}", (ls(alertname="A", code="5\u0663\u0663"),)),
                ("edge", "{}", (ls(alertname="A", code="503"),)),
            ),
            silenced=frozenset(),
            inhibited=frozenset(),
        ),
    ),
    "a label with an empty value is no label": Case(
        config="route: {receiver: default, group_by: ['...']}" + RECEIVERS,
        alerts=[alert(alertname="A", pop="ams", x=""), alert(alertname="A", pop="ams")],
        expected=View(
            groups=(("default", ls(alertname="A", pop="ams"), (ls(alertname="A", pop="ams"),)),),
            all_groups=(("default", ls(alertname="A", pop="ams"), (ls(alertname="A", pop="ams"),)),),
            silenced=frozenset(),
            inhibited=frozenset(),
        ),
    ),
}


@pytest.mark.needs("alertmanager")
@pytest.mark.parametrize("name", list(KNOWN_CASES))
def test_it_pins_what_alertmanager_does(name, am_root):
    case = KNOWN_CASES[name]
    directory = Path(tempfile.mkdtemp(prefix="am-", dir=am_root))
    assert_same(case.expected, alertmanager_view(case.config, case.alerts, case.silences or [], directory))


@pytest.mark.parametrize("name", list(KNOWN_CASES))
def test_it_gives_alertmanagers_answer_in_the_engine(name):
    case = KNOWN_CASES[name]
    assert_same(case.expected, engine_view(case.config, case.alerts, case.silences or []))


# --- the matcher syntax, against Alertmanager's own parser ---------------------------------------------------------

_PRINTED = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(=~|!=|!~|=)"((?:[^"\\]|\\.)*)"')


def _unescape(text: str) -> str:
    """Inverse of Alertmanager's openMetricsEscape, which `amtool config routes show` prints values with."""
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def amtool_parse(text: str, directory: Path) -> list[tuple[str, str, str]] | str:
    """The matchers Alertmanager 0.25 reads from one `matchers:` item, sorted as it sorts them, or its error."""
    config = {
        "route": {"receiver": "r", "routes": [{"receiver": "r", "matchers": [text]}]},
        "receivers": [{"name": "r"}],
    }
    path = directory / "matchers.yml"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML, with every character escaped
    shown = subprocess.run(
        [AMTOOL, "config", "routes", "show", f"--config.file={path}"], capture_output=True, text=True, timeout=30
    )
    if shown.returncode != 0:
        return shown.stderr.split("amtool: error: ", 1)[-1].strip()
    child = shown.stdout.split("└── ")[2].rsplit("  receiver: r", 1)[0]
    if child == "default-route":
        return []
    assert child.startswith("{") and child.endswith("}"), child
    found = [(name, op, _unescape(value)) for name, op, value in _PRINTED.findall(child)]
    assert ",".join(f'{n}{o}"{v}"' for n, o, v in _PRINTED.findall(child)) == child[1:-1], child
    return found


def ours(text: str) -> list[tuple[str, str, str]] | str:
    try:
        parsed = parse_matchers(text)
    except MatcherSyntaxError as exc:
        return str(exc)
    return sorted((m.label, m.op, m.value) for m in parsed)


PIECES = st.sampled_from(["a", "b", "x_1", " ", '"', "\\", ",", "=", "!", "~", "{", "}", "n", "\n", "\t", ":", "é"])
NAMES = st.sampled_from(["a", "b", "pop", "x:y", "_", "1a", ""])
OPS = st.sampled_from(["=", "!=", "=~", "!~", "==", "~", "!"])
VALUES = st.lists(PIECES, max_size=6).map("".join)
QUOTED = st.tuples(st.booleans(), VALUES, st.booleans()).map(
    lambda t: ('"' if t[0] else "") + t[1] + ('"' if t[2] else "")
)
ONE = st.tuples(st.sampled_from(["", " "]), NAMES, st.sampled_from(["", " "]), OPS, QUOTED).map("".join)


def _escaped(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


WELL_FORMED = st.tuples(
    st.sampled_from(["a", "pop", "x:y", "_z"]), st.sampled_from(["=", "!=", "=~", "!~"]), VALUES.map(_escaped)
).map("".join)
MATCHER_TEXTS = st.one_of(
    st.lists(PIECES, max_size=12).map("".join),
    st.tuples(
        st.sampled_from(["", "{"]),
        st.lists(st.one_of(ONE, WELL_FORMED), min_size=1, max_size=3).map(",".join),
        st.sampled_from(["", "}", ",", ", }"]),
    ).map("".join),
    st.lists(WELL_FORMED, min_size=1, max_size=3).map(", ".join),
)


@pytest.mark.needs("alertmanager")
def test_it_parses_matcher_strings_as_alertmanager_does(am_root):
    if AMTOOL is None:
        pytest.fail("amtool (shipped with prometheus-alertmanager) is not on PATH")

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(text=MATCHER_TEXTS)
    @example(text='a="\\,",a=')  # a backslash before a quoted comma still escapes the quote after it (Go's switch)
    def check(text):
        theirs = amtool_parse(text, am_root)
        if isinstance(theirs, str) and "error parsing regexp" in theirs:
            return  # the syntax was fine; the value is no Go regex (the importer's regex checks are tested apart)
        mine = ours(text)
        if isinstance(theirs, str):
            assert isinstance(mine, str), f"Alertmanager refuses {text!r} ({theirs}); we read {mine}"
            assert mine.split(":")[0] == theirs.split(":")[0]
        else:
            assert mine == sorted(theirs)

    check()


# --- Go regexes, against Alertmanager's own routing ----------------------------------------------------------------

REGEX_TOKENS = st.sampled_from(
    [
        *("a", "b", "k", "1", ".", "*", "+", "?", "|", "(", ")", "[a-z]", "[^a]", "^", "$", "-", "{2}", "{1,}", "\\."),
        *("\\d", "\\w", "\\s", "\\b", "\\D", "\\W", "\\S", "(?i)", "(?s)", "(?m)", "(?i:", "é", "[[:alpha:]]", "\\pL"),
        *("[\\d.]", "[^\\w]", "[\\s\\d]", "]", "[]a]", "\\B", "[[:punct:]]", "[[:space:][:upper:]]", "[^[:alnum:]]"),
    ]
)
REGEXES = st.lists(REGEX_TOKENS, min_size=1, max_size=6).map("".join)
LABEL_VALUES = st.lists(
    st.sampled_from(
        ["a", "b", "A", "K", "k", "\u212a", "1", "\u0661", "é", "É", "_", " ", "\n", "\u00a0", ".", "`", "\x0b"]
    ),
    max_size=4,
).map("".join)


def amtool_receivers(config_path: Path, value: str) -> str:
    label = "x=" + _escaped(value)  # the matcher syntax: only \\, " and a line feed are escaped
    shown = subprocess.run(
        [AMTOOL, "config", "routes", "test", f"--config.file={config_path}", label],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.strip()


@pytest.mark.needs("alertmanager")
def test_it_matches_a_regex_as_alertmanager_does_or_refuses_it(am_root):
    if AMTOOL is None:
        pytest.fail("amtool (shipped with prometheus-alertmanager) is not on PATH")

    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(pattern=REGEXES, values=st.lists(LABEL_VALUES, min_size=1, max_size=4, unique=True))
    def check(pattern, values):
        config = {
            "route": {"receiver": "default", "routes": [{"receiver": "hit", "matchers": [f"x=~{_escaped(pattern)}"]}]},
            "receivers": [{"name": "default"}, {"name": "hit"}],
        }
        path = am_root / "regex.yml"
        path.write_text(json.dumps(config), encoding="utf-8")
        if subprocess.run([AMTOOL, "check-config", str(path)], capture_output=True, timeout=30).returncode != 0:
            return  # Go refuses the regex: Alertmanager would not load this configuration
        try:
            policy = load_policy(import_alertmanager(json.dumps(config)))
        except Invalid as exc:
            assert "matchers[0]" in exc.detail  # refused, naming the matcher: fine
            return
        now = datetime.now(UTC)
        for value in values:
            signal = Signal(id="s", ts=now, source="bgp", name="A", labels={"x": value})
            engine = ",".join(route.receiver for route in policy.routes.match(signal))
            assert engine == amtool_receivers(path, value), f"{pattern!r} on {value!r}: {policy.routes.routes[0]}"

    check()
