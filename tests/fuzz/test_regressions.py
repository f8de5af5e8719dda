"""Each bug the fuzzers found, pinned by the input that found it (tests/fuzz/README.md lists them)."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time

import pytest

from incidents.services import alertmanager_silences_parse
from replays.engine import Invalid, load_policy, validate_bundle
from replays.engine.alertmanager import import_alertmanager
from tests.fuzz.strategies import nested
from tests.fuzz.support import archive, good_documents, member_bytes

MEMBERS = member_bytes(good_documents())


# --- the Alertmanager import: RecursionError and an exponential walk ----------------------------------------------


def test_it_refuses_a_yaml_alias_that_contains_itself():
    with pytest.raises(Invalid) as caught:
        import_alertmanager("receivers: [{name: d}]\nroute: &r {receiver: d, routes: [*r]}\n")
    assert caught.value.field == "route.routes[0]"
    assert "refers to a value that contains it" in caught.value.detail


def test_it_refuses_a_billion_laughs_configuration_at_once():
    lines = ["receivers: [{name: d}]", "templates:", "  - &a0 {receiver: d}"]
    lines += [f"  - &a{n} {{receiver: d, routes: [{', '.join([f'*a{n - 1}'] * 10)}]}}" for n in range(1, 9)]
    lines.append("route: {receiver: d, routes: [*a8]}")
    started = time.monotonic()
    with pytest.raises(Invalid, match="excessive aliasing"):
        import_alertmanager("\n".join(lines))
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("text", [
    "receivers: [{name: d}]\nroute: {receiver: d}\nglobal: " + "[" * 3000 + "]" * 3000,
    json.dumps({"receivers": [{"name": "d"}], "route": json.loads(
        '{"receiver": "d", "routes": [' * 200 + '{"receiver": "d"}' + "]}" * 200)}),
])
def test_it_refuses_a_configuration_nested_too_deeply(text):
    with pytest.raises(Invalid, match="nested more than 48 levels deep"):
        import_alertmanager(text)


def test_it_refuses_silences_nested_too_deeply():
    with pytest.raises(ValueError, match="nested too deeply"):
        alertmanager_silences_parse("[" * 100_000 + "]" * 100_000)


# --- policies: RecursionError and a TypeError ----------------------------------------------------------------------


def test_it_refuses_a_policy_nested_too_deeply_naming_where():
    with pytest.raises(Invalid) as caught:
        load_policy({"schema": "traceflux.policy/v1", "name": nested(1000)})
    assert caught.value.field.startswith("policy.name[0][0]")
    assert "nested more than 64 levels deep" in caught.value.detail


@pytest.mark.parametrize("section", ["fingerprint.rules", "suppression.thresholds"])
def test_it_names_a_non_object_where_a_rule_belongs(section):
    outer, inner = section.split(".")
    with pytest.raises(Invalid) as caught:
        load_policy({"schema": "traceflux.policy/v1", outer: {inner: [None]}})
    assert caught.value.field == f"policy.{section}[0]"
    assert caught.value.detail == f"policy: $.{section}[0]: must be an object, got null"


def test_it_refuses_a_policy_with_a_lone_surrogate():
    with pytest.raises(Invalid, match="lone surrogate"):
        load_policy({"schema": "traceflux.policy/v1", "name": "\ud800"})


# --- bundles: UnicodeEncodeError, NUL characters, and a multi-member gzip -----------------------------------------


def test_it_refuses_spec_json_with_a_lone_surrogate(tmp_path):
    path = tmp_path / "b.tar.gz"
    path.write_bytes(archive({**MEMBERS, "spec.json": b'{"": "\\ud800"}'}, "tar.gz"))
    with pytest.raises(Invalid, match=r"spec.json: \$\.: holds a lone surrogate"):
        validate_bundle(path)


@pytest.mark.parametrize(("member", "old", "new", "message"), [
    ("manifest.json", b'"edge-gw 5xx', b'"edge-gw \\u0000 5xx', r"manifest.json: \$.incident.title: holds a NUL"),
    ("signals.jsonl", b'"source":"', b'"source":"\\u0000', r"line 1: \$.source: holds a NUL"),
    ("signals.jsonl", b'"name":"', b'"name":"\\udfff', r"line 1: \$.name: holds a lone surrogate"),
])
def test_it_refuses_text_the_database_cannot_store(tmp_path, member, old, new, message):
    assert old in MEMBERS[member]
    path = tmp_path / "b.zip"
    path.write_bytes(archive({**MEMBERS, member: MEMBERS[member].replace(old, new, 1)}, "zip"))
    with pytest.raises(Invalid, match=message):
        validate_bundle(path)


def test_it_accepts_a_multi_member_gzip_whose_first_member_is_shorter_than_a_tar_block(tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in MEMBERS.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    stream = raw.getvalue()
    path = tmp_path / "b.tar.gz"
    path.write_bytes(gzip.compress(stream[:100], mtime=0) + gzip.compress(stream[100:], mtime=0))
    assert validate_bundle(path).signal_count == 20


# --- the HTTP API ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/v1/agent/heartbeats/", "/api/v1/agent/enroll/"])
def test_it_answers_a_body_nested_too_deeply_with_a_400(agent_client, url):
    response = agent_client.generic("POST", url, b"[" * 100_000 + b"]" * 100_000, content_type="application/json")
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("details", [{"\x00": 1}, {"queue": "a\x00b"}, {"queue": "\udc00"}])
def test_it_refuses_heartbeat_details_the_database_cannot_store(agent_client, details):
    body = json.dumps({"status": "ok", "details": details}).encode()
    response = agent_client.generic("POST", "/api/v1/agent/heartbeats/", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["field"] == "details" + ("" if "\x00" in details else ".queue")


@pytest.mark.django_db
def test_it_answers_an_api_url_that_matches_no_route_with_json(agent_client):
    response = agent_client.post("/api/v1/agent/commands/null,null/ack/", {}, format="json")
    assert response.status_code == 404
    assert response.json() == {"detail": "no API endpoint at /api/v1/agent/commands/null,null/ack/"}
