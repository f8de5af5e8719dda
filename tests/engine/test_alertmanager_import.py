"""Importing an Alertmanager configuration, without the binary: the matcher syntax, each feature's translation into a
policy spec, and errors that name the YAML path. tests/engine/test_alertmanager_parity.py holds the result against a
real Alertmanager."""

from __future__ import annotations

import textwrap

import pytest

from replays.engine import Invalid
from replays.engine.alertmanager import Matcher, MatcherSyntaxError, go_regex, import_alertmanager, parse_matcher
from replays.engine.alertmanager import parse_matchers as parse_all
from replays.engine.policy import load_policy


def am(text: str, **kwargs) -> dict:
    return import_alertmanager(textwrap.dedent(text), **kwargs)


def routes_of(text: str) -> dict:
    return am(text)["correlation"]["routes"]


def refusal(text: str, **kwargs) -> Invalid:
    with pytest.raises(Invalid) as caught:
        am(text, **kwargs)
    return caught.value


RECEIVERS = "receivers: [{name: default}, {name: bgp}, {name: edge}, {name: all}]\n"


# --- the matcher syntax ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('alertname=~"BGP.*"', ("alertname", "=~", "BGP.*")),
        ('pop!="x"', ("pop", "!=", "x")),
        ("pop=x", ("pop", "=", "x")),
        ('  pop  !~  "a|b"  ', ("pop", "!~", "a|b")),
        ("pop = a b ", ("pop", "=", "a b")),  # unquoted: inner spaces stay, outer ones go
        ("pop=", ("pop", "=", "")),
        ('pop=""', ("pop", "=", "")),
        ("pop==a", ("pop", "=", "=a")),  # the operator is the first one; the rest is value
        ("pop=~~a", ("pop", "=~", "~a")),
        ('msg="say \\"hi\\""', ("msg", "=", 'say "hi"')),
        ('msg="a\\nb"', ("msg", "=", "a\nb")),
        ('msg="back\\\\slash"', ("msg", "=", "back\\slash")),
        ('msg="spurious \\q escape"', ("msg", "=", "spurious \\q escape")),
        ("msg=ends\\", ("msg", "=", "ends\\")),
        ('msg="comma, inside"', ("msg", "=", "comma, inside")),
        ("name:with:colons=1", ("name:with:colons", "=", "1")),
        ('x="Zürich"', ("x", "=", "Zürich")),
    ],
)
def test_it_parses_a_matcher_as_alertmanager_does(text, expected):
    assert parse_matcher(text) == Matcher(*expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('pop="a', 'unescaped double quote: "a'),
        ('pop=a"b', 'unescaped double quote: a"b'),
        ('pop="a\\"', 'unescaped double quote: "a\\"'),
        ('pop=""x', "unescaped double quote"),
        ('pop="a" b', "unescaped double quote"),
        ("1pop=a", "bad matcher format: 1pop=a"),
        ("pop-name=a", "bad matcher format"),
        ("pop", "bad matcher format"),
        ("pop~=a", "bad matcher format"),
    ],
)
def test_it_refuses_a_matcher_alertmanager_refuses(text, message):
    with pytest.raises(MatcherSyntaxError, match=message.replace("\\", "\\\\").replace("(", "\\(")):
        parse_matcher(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{foo="bar", dings!="bums", }', [("foo", "=", "bar"), ("dings", "!=", "bums")]),
        ("foo=bar,dings!=bums", [("foo", "=", "bar"), ("dings", "!=", "bums")]),
        ('{quote="She said: \\"Hi, all\\""}', [("quote", "=", 'She said: "Hi, all"')]),
        ('statuscode=~"5.."', [("statuscode", "=~", "5..")]),
        ("foo=a}", [("foo", "=", "a")]),
        ("{foo=a", [("foo", "=", "a")]),
        ("{}", []),
        ("", []),
    ],
)
def test_it_parses_a_list_of_matchers_as_alertmanager_does(text, expected):
    assert parse_all(text) == [Matcher(*item) for item in expected]


def test_it_refuses_an_empty_matcher_between_commas():
    with pytest.raises(MatcherSyntaxError, match="bad matcher format"):
        parse_all("a=b,,c=d")


def test_it_lets_a_backslash_before_a_quoted_comma_escape_the_next_quote_as_alertmanager_does():
    # Go's tokenizer leaves its escape flag alone at a comma inside quotes: the quote after `\,` is escaped, so the
    # whole text is one matcher, and Alertmanager (amtool) refuses it for its unescaped quote.
    with pytest.raises(MatcherSyntaxError, match='unescaped double quote: "\\\\,",a='):
        parse_all('a="\\,",a=')


# --- Go regexes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("go", "python"),
    [
        ("BGP.*", "BGP.*"),
        ("a|b", "a|b"),
        ("5\\d\\d", "5[0-9][0-9]"),  # Go's \d, \w and \s are ASCII-only
        ("[\\d.]+\\s\\w", "[0-9.]+[\\t\\n\\f\\r ][0-9A-Za-z_]"),
        ("\\D\\W\\S", "[^0-9][^0-9A-Za-z_][^\\t\\n\\f\\r ]"),
        ("\\bpop\\B", "(?a:\\b)pop(?:\\A\\Z|(?a:\\B))"),
        ("(?i)k\\d", "(?i:k[0-9])"),  # not (?a:...): Go folds K (the Kelvin sign) into k, and so does Python
        ("[]\\d]", "[]0-9]"),  # a ] first in a class is a member
        ("a$|b[$]", "a\\Z|b[$]"),  # Go's $ is the end of the text, never "before a final line feed"
        ("(?m)a$", "(?m:a$)"),
        ("[[:alpha:]_][[:digit:][:space:]]", "[A-Za-z_][0-9\\t\\n\\v\\f\\r ]"),  # Go's POSIX classes are ASCII
        ("\\[\\d]", "\\[[0-9]]"),
        ("(?i)bgp.*", "(?i:bgp.*)"),  # Python takes global flags only at the very start; the engine wraps the regex
        ("(?is)a.b", "(?is:a.b)"),
        ("(?i:bgp)|x", "(?i:bgp)|x"),
        ("\\\\d", "\\\\d"),  # an escaped backslash then d: no class
        ("(?P<pop>[a-z]+)", "(?P<pop>[a-z]+)"),
    ],
)
def test_it_carries_a_go_regex_over_with_the_same_meaning(go, python):
    assert go_regex(go, where="x") == python


@pytest.mark.parametrize(
    ("go", "problem"),
    [
        ("[[:^alpha:]]+", "POSIX class [:^alpha:]"),
        ("\\pL+", "Unicode classes"),
        ("a\\z", "\\z"),
        ("\\Qa.b\\E", "\\Q"),
        ("\\x{41}", "\\x{...}"),
        ("(?U)a+", "ungreedy"),
        ("(?=a)a", "lookaround"),
        ("(?<!a)b", "lookaround"),
        ("(a)\\1", "back reference"),
        ("a\\Z", "\\Z, which Go's regexp does not have"),
        ("a{,3}", "{,n}"),
        ("a(?i)b", "after its start"),
        ("a(?m:b$)", "the m flag on a part only"),
        ("[^\\D]", "\\D inside [...]"),
        ("(", "cannot be carried over to Python's re"),
    ],
)
def test_it_refuses_a_regex_the_two_dialects_read_differently(go, problem):
    with pytest.raises(Invalid, match=r"^route\.matchers\[0\]: ") as caught:
        go_regex(go, where="route.matchers[0]")
    assert problem in caught.value.detail
    assert caught.value.field == "route.matchers[0]"


# --- the route tree -----------------------------------------------------------------------------------------------


def test_it_imports_the_route_tree_with_every_matcher_form():
    routes = routes_of(
        """
        route:
          receiver: default
          group_by: [alertname, pop]
          routes:
            - receiver: bgp
              matchers: ['alertname=~"BGP.*"', 'pop!="x"', '{service="edge", tier=~"1|2"}']
              continue: true
            - receiver: edge
              match: {service: edge, pop: ams}
              match_re: {alertname: 'Link.*'}
              routes:
                - matchers: [severity="critical"]
                  group_by: ['...']
        """
        + RECEIVERS
    )
    assert routes == {
        "receiver": "default",
        "group_by": ["alertname", "pop"],
        "routes": [
            {
                "receiver": "bgp",
                "matchers": [
                    {"label": "alertname", "op": "=~", "value": "BGP.*"},
                    {"label": "pop", "op": "!=", "value": "x"},
                    {"label": "service", "op": "=", "value": "edge"},
                    {"label": "tier", "op": "=~", "value": "1|2"},
                ],
                "continue": True,
            },
            {
                "receiver": "edge",
                "matchers": [
                    {"label": "pop", "op": "=", "value": "ams"},
                    {"label": "service", "op": "=", "value": "edge"},
                    {"label": "alertname", "op": "=~", "value": "Link.*"},
                ],
                "routes": [
                    # no receiver: inherited from the parent, in the engine as in Alertmanager
                    {"matchers": [{"label": "severity", "op": "=", "value": "critical"}], "group_by": ["..."]},
                ],
            },
        ],
    }


def test_it_groups_the_root_by_nothing_unless_told():
    assert routes_of("route: {receiver: default}\n" + RECEIVERS)["group_by"] == []


def test_it_lets_an_empty_group_by_inherit_as_alertmanager_does():
    routes = routes_of(
        "route: {receiver: default, group_by: [pop], routes: [{receiver: bgp, group_by: []}]}\n" + RECEIVERS
    )
    assert "group_by" not in routes["routes"][0]
    assert load_policy(
        am("route: {receiver: default, group_by: [pop], routes: [{group_by: []}]}\n" + RECEIVERS)
    ).routes.routes[0].group_by == ("pop",)


def test_it_keeps_yaml_scalars_as_the_text_alertmanager_sees():
    routes = routes_of(
        "route: {receiver: default, routes: [{match: {pop: yes, code: 010, v: 1.50}, continue: yes}]}\n" + RECEIVERS
    )
    assert routes["routes"][0] == {
        "matchers": [
            {"label": "code", "op": "=", "value": "010"},
            {"label": "pop", "op": "=", "value": "yes"},
            {"label": "v", "op": "=", "value": "1.50"},
        ],
        "continue": True,
    }


def test_it_makes_every_group_an_incident_and_an_alert_its_whole_label_set():
    spec = am("route: {receiver: default}\n" + RECEIVERS)
    assert spec["schema"] == "traceflux.policy/v1"
    assert spec["incidents"] == {"min_signals": 1}
    assert spec["fingerprint"] == {"default": ["name", "source", "severity", "labels"]}
    assert spec["dedup"] == {"window_s": 0}  # only copies at one instant are one alert
    assert spec["correlation"]["window_s"] == 300
    assert "thresholds" not in spec.get("suppression", {})
    assert "normalize" not in spec
    load_policy(spec)


def test_it_ignores_what_only_shapes_notifications():
    spec = am(
        """
        global: {resolve_timeout: 5m, smtp_smarthost: 'mail:25'}
        templates: ['/etc/alertmanager/*.tmpl']
        route:
          receiver: default
          group_wait: 30s
          group_interval: 5m
          repeat_interval: 4h
        receivers:
          - name: default
            email_configs: [{to: ops@example.test}]
        time_intervals: [{name: never, time_intervals: []}]
        """
    )
    assert spec["correlation"]["routes"] == {"receiver": "default", "group_by": []}


# --- inhibition and silences --------------------------------------------------------------------------------------


def test_it_imports_inhibit_rules_in_both_forms():
    spec = am(
        """
        route: {receiver: default}
        inhibit_rules:
          - source_matchers: [severity="critical"]
            target_matchers: [severity=~"warning|info"]
            equal: [pop, alertname]
          - source_match: {alertname: PopDown}
            source_match_re: {pop: 'ams.*'}
            target_match: {severity: warning}
            target_match_re: {alertname: 'BGP.*'}
        """
        + RECEIVERS
    )
    assert spec["suppression"]["inhibit"] == [
        {
            "name": "inhibit_rules[0]",
            "source_matchers": [{"label": "severity", "op": "=", "value": "critical"}],
            "target_matchers": [{"label": "severity", "op": "=~", "value": "warning|info"}],
            "equal": ["alertname", "pop"],
        },
        {
            "name": "inhibit_rules[1]",
            "source_matchers": [
                {"label": "alertname", "op": "=", "value": "PopDown"},
                {"label": "pop", "op": "=~", "value": "ams.*"},
            ],
            "target_matchers": [
                {"label": "severity", "op": "=", "value": "warning"},
                {"label": "alertname", "op": "=~", "value": "BGP.*"},
            ],
        },
    ]


SILENCE = {
    "id": "5d3e0c1a-0000-4000-8000-000000000001",
    "matchers": [
        {"name": "pop", "value": "ams.*", "isRegex": True, "isEqual": True},
        {"name": "alertname", "value": "BGPFlap", "isRegex": False, "isEqual": False},
        {"name": "service", "value": "edge|core", "isRegex": True, "isEqual": False},
        {"name": "tier", "value": "1", "isRegex": False},  # isEqual is optional, true by default
    ],
    "startsAt": "2026-02-26T14:00:00.000Z",
    "endsAt": "2026-02-26T16:00:00Z",
    "createdBy": "oncall",
    "comment": "maintenance",
    "status": {"state": "active"},
    "updatedAt": "2026-02-26T14:00:00.000Z",
}


def test_it_imports_silences_in_alertmanagers_json():
    spec = am("route: {receiver: default}\n" + RECEIVERS, silences=[SILENCE])
    assert spec["suppression"]["silences"] == [
        {
            "name": SILENCE["id"],
            "matchers": [
                {"label": "pop", "op": "=~", "value": "ams.*"},
                {"label": "alertname", "op": "!=", "value": "BGPFlap"},
                {"label": "service", "op": "!~", "value": "edge|core"},
                {"label": "tier", "op": "=", "value": "1"},
            ],
            "starts_at": "2026-02-26T14:00:00Z",
            "ends_at": "2026-02-26T16:00:00Z",
            "comment": "maintenance (by oncall)",
        }
    ]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"matchers": []}, "silences[0].matchers", "at least one matcher"),
        (
            {
                "matchers": [
                    {"name": "pop", "value": ".*", "isRegex": True},
                    {"name": "x", "value": "", "isRegex": False},
                ]
            },
            "silences[0].matchers",
            "must not match the empty string",
        ),
        (
            {"matchers": [{"name": "pop-x", "value": "a", "isRegex": False}]},
            "silences[0].matchers[0].name",
            "label name",
        ),
        ({"matchers": [{"name": "pop", "value": "(", "isRegex": True}]}, "silences[0].matchers[0].value", "regex"),
        (
            {"matchers": [{"name": "pop", "value": "a", "isRegex": "yes"}]},
            "silences[0].matchers[0].isRegex",
            "true or false",
        ),
        ({"matchers": [{"name": "pop", "value": "a"}]}, "silences[0].matchers[0].isRegex", "is required"),
        ({"startsAt": "yesterday"}, "silences[0].startsAt", "RFC 3339"),
        ({"endsAt": "2026-02-26T13:00:00Z"}, "silences[0].endsAt", "must end after it starts"),
        ({"endsAt": None}, "silences[0].endsAt", "is required"),
        ({"color": "red"}, "silences[0].color", "not a field"),
    ],
)
def test_it_names_the_silence_field_at_fault(change, field, message):
    problem = refusal("route: {receiver: default}\n" + RECEIVERS, silences=[{**SILENCE, **change}])
    assert problem.field == field
    assert problem.detail.startswith(f"{field}: ")
    assert message in problem.detail


# --- errors name the YAML path ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ("route: {receiver: nope}\n", "route.receiver", "undefined receiver 'nope'"),
        (
            "route: {receiver: default, routes: [{}, {receiver: nope}]}\n",
            "route.routes[1].receiver",
            "undefined receiver",
        ),
        (
            "route: {receiver: default, routes: [{matchers: [a=b, 'c=\"d']}]}\n",
            "route.routes[0].matchers[1]",
            "unescaped double quote",
        ),
        ("route: {receiver: default, routes: [{matchers: ['1a=b']}]}\n", "route.routes[0].matchers[0]", "bad matcher"),
        ("route: {receiver: default, routes: [{match_re: {pop: '('}}]}\n", "route.routes[0].match_re.pop", "regex"),
        ("route: {receiver: default, routes: [{match: {pop-x: a}}]}\n", "route.routes[0].match.pop-x", "label name"),
        ("route: {receiver: default, matchers: [a=b]}\n", "route", "root route must not have any matchers"),
        ("route: {receiver: default, continue: true}\n", "route.continue", "root route cannot have continue"),
        ("route: {group_by: [a]}\n", "route", "must name a default receiver"),
        ("route: {receiver: default, routes: [{group_by: ['...', a]}]}\n", "route.routes[0].group_by", "wildcard"),
        ("route: {receiver: default, group_by: [a-b]}\n", "route.group_by[0]", "label name"),
        ("route: {receiver: default, routes: [{recevier: x}]}\n", "route.routes[0].recevier", "not a field"),
        ("route: {receiver: default, routes: [{continue: maybe}]}\n", "route.routes[0].continue", "true or false"),
        ("route: {receiver: default, routes: [{routes: {a: b}}]}\n", "route.routes[0].routes", "must be a list"),
        ("route: {receiver: default, group_interval: 0s}\n", "route.group_interval", "cannot be zero"),
        ("route: {receiver: default, group_wait: soon}\n", "route.group_wait", "not a duration"),
        (
            "route: {receiver: default, routes: [{mute_time_intervals: [weekends]}]}\n",
            "route.routes[0].mute_time_intervals",
            "time intervals are not supported",
        ),
        (
            "route: {receiver: default}\ninhibit_rules: [{source_matchers: ['a=~\"[[:^alpha:]]\"']}]\n",
            "inhibit_rules[0].source_matchers[0]",
            "POSIX class",
        ),
        ("route: {receiver: default}\ninhibit_rules: [{equal: [x-y]}]\n", "inhibit_rules[0].equal[0]", "label name"),
        (
            "route: {receiver: default}\ninhibit_rules: [{target_match: [a]}]\n",
            "inhibit_rules[0].target_match",
            "mapping",
        ),
        ("route: {receiver: default}\nsilences: []\n", "silences", "not a field"),
        ("route: {receiver: default, repeat_interval: '0'}\n", "route.repeat_interval", "cannot be zero"),
    ],
)
def test_it_names_the_yaml_path_at_fault(config, field, message):
    problem = refusal(config + RECEIVERS)
    assert problem.field == field
    assert problem.detail.startswith(f"{field}: ")
    assert message in problem.detail


def test_it_names_the_line_of_a_yaml_syntax_error():
    problem = refusal("route:\n  receiver: default\n  routes: [\n")
    assert problem.detail.startswith("line 4, column 1: not valid YAML")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("", "must be a YAML mapping"),
        ("- route\n", "must be a YAML mapping"),
        (RECEIVERS, "route: is required"),
        ("route: {receiver: default}\nreceivers: [{name: default}, {name: default}]\n", "is not unique"),
    ],
)
def test_it_refuses_a_document_that_is_no_configuration(config, message):
    assert message in refusal(config).detail


def test_it_refuses_what_the_policy_format_cannot_hold():
    problem = refusal("route: {receiver: default, routes: [{match: {pop: " + "x" * 1100 + "}}]}\n" + RECEIVERS)
    assert problem.detail.startswith("the imported policy would not be valid: policy:")
    assert problem.field == "policy.correlation.routes.routes[0].matchers[0].value"
