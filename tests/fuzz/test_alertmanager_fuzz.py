"""Fuzzing the Alertmanager import: random text, random YAML built from Alertmanager's own keys, a full configuration
mutated at random paths or cut short, YAML aliases that loop or multiply, and random silences. Every refusal is
errors.Invalid whose field is the YAML path and whose message starts with it; whatever is imported is a valid policy."""

from __future__ import annotations

import textwrap

import yaml
from hypothesis import given
from hypothesis import strategies as st

from replays.engine import Invalid, load_policy
from replays.engine.alertmanager import import_alertmanager, parse_matchers
from tests.fuzz.strategies import awkward_text, json_values, mutated
from tests.fuzz.support import FUZZ

CONFIG_TEXT = textwrap.dedent(
    """\
    global: {resolve_timeout: 5m}
    receivers: [{name: default}, {name: bgp}, {name: edge, webhook_configs: [{url: "http://127.0.0.1:9/"}]}]
    route:
      receiver: default
      group_by: [alertname, pop]
      group_wait: 30s
      routes:
        - receiver: bgp
          matchers: ['alertname=~"BGP.*"', 'pop!="ams"']
          continue: true
        - receiver: edge
          match: {service: edge-gw}
          match_re: {pop: 'POP-1[0-9]'}
          group_by: ['...']
          routes: [{receiver: default, matchers: [severity="critical"]}]
    inhibit_rules:
      - source_matchers: [severity="critical"]
        target_matchers: [severity=~"warning|info"]
        equal: [pop, region]
      - source_match: {alertname: NodeDown}
        target_match_re: {alertname: '.+'}
    """
)
CONFIG = yaml.safe_load(CONFIG_TEXT)
SILENCE = {
    "id": "5d3e0c1a-0000-4000-8000-000000000001",
    "matchers": [
        {"name": "pop", "value": "ams.*", "isRegex": True, "isEqual": True},
        {"name": "alertname", "value": "BGPFlap", "isRegex": False, "isEqual": False},
    ],
    "startsAt": "2026-02-26T14:00:00.000Z",
    "endsAt": "2026-02-26T16:00:00Z",
    "createdBy": "oncall",
    "comment": "maintenance",
}
AM_KEYS = ["global", "route", "inhibit_rules", "receivers", "templates", "receiver", "group_by", "continue",
           "matchers", "match", "match_re", "routes", "group_wait", "group_interval", "repeat_interval",
           "mute_time_intervals", "active_time_intervals", "source_matchers", "target_matchers", "equal", "name"]
MATCHER_TEXT = st.one_of(
    st.sampled_from(['alertname=~"BGP.*"', "pop!=x", 'a="b\\"c"', "{a=b, c=~d}", 'x=~"(?i)ab$"', "a=~\\p{L}",
                     'a=~"[[:alpha:]]+"', "a=~(?=x)", "a=~x{,3}", 'a=~"\\\\d+\\\\b"', "=", '"', "a=\"", "{}", ","]),
    st.text(max_size=20),
    awkward_text,
)
YAML_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(["yes", "0", "5m", "...", ""]),
                         MATCHER_TEXT)
AM_DOCUMENTS = st.recursive(
    YAML_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(AM_KEYS), inner, max_size=5),
    max_leaves=20,
)


def imported(text: str, silences=None) -> dict | None:
    """The imported spec (checked to load as a policy), or None after checking the refusal names its path."""
    try:
        spec = import_alertmanager(text, silences=silences)
    except Invalid as exc:
        assert exc.field, exc.detail
        assert exc.detail.startswith(f"{exc.field}: ") or exc.field == "$" or exc.detail.startswith(
            "the imported policy would not be valid: "), (exc.field, exc.detail)
        return None
    load_policy(spec)
    return spec


def dump(document) -> str:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


def test_it_imports_the_configuration_the_mutations_start_from():
    assert imported(CONFIG_TEXT, silences=[SILENCE]) is not None


@FUZZ
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_it_refuses_random_text_naming_where(text):
    # imported() checks that a refusal names where; random text is accepted only if it is a configuration at all.
    assert imported(text) is None or ("route" in text and "receivers" in text), text


@FUZZ
@given(document=AM_DOCUMENTS)
def test_it_judges_random_yaml_made_of_alertmanagers_keys(document):
    imported(dump(document))


@FUZZ
@given(document=mutated(CONFIG))
def test_it_judges_a_configuration_mutated_at_random_paths(document):
    imported(dump(document))


@FUZZ
@given(cut=st.integers(min_value=0, max_value=len(CONFIG_TEXT)), data=st.data())
def test_it_judges_a_configuration_cut_or_with_characters_changed(cut, data):
    text = list(CONFIG_TEXT[:cut] if data.draw(st.booleans()) else CONFIG_TEXT)
    for _ in range(data.draw(st.integers(min_value=0, max_value=3))):
        if text:
            at = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
            text[at] = data.draw(st.sampled_from([*":-[]{}&*!|>'\"#%@`\t\n ,?\\", "\x00", "\ud800", "\ufeff"]))
    imported("".join(text))


@FUZZ
@given(matchers=st.lists(MATCHER_TEXT, min_size=1, max_size=4))
def test_it_judges_any_matcher_strings_on_a_route(matchers):
    imported(dump({"receivers": [{"name": "d"}], "route": {"receiver": "d", "routes": [
        {"receiver": "d", "matchers": matchers}]}}))


@FUZZ
@given(copies=st.integers(min_value=1, max_value=40), levels=st.integers(min_value=1, max_value=12),
       loop=st.booleans())
def test_it_refuses_yaml_aliases_that_loop_or_multiply(copies, levels, loop):
    lines = ["receivers: [{name: d}]", "templates:", "  - &a0 {receiver: d, matchers: ['a=b']}"]
    for level in range(1, levels + 1):
        lines.append(f"  - &a{level} {{receiver: d, routes: [{', '.join([f'*a{level - 1}'] * copies)}]}}")
    lines.append(f"route: &root {{receiver: d, routes: [*a{levels}{', *root' if loop else ''}]}}")
    spec = imported("\n".join(lines))
    if loop or copies**levels > 100_000:
        assert spec is None


@FUZZ
@given(silences=st.lists(mutated(SILENCE) | json_values, max_size=3) | json_values)
def test_it_judges_random_and_mutated_silences(silences):
    imported(CONFIG_TEXT, silences=silences)


@FUZZ
@given(text=st.text(max_size=60) | MATCHER_TEXT)
def test_it_parses_matcher_lists_or_names_the_syntax_error(text):
    try:
        parse_matchers(text)
    except ValueError as exc:
        assert str(exc)
