"""Fuzzing the API's JSON bodies: every endpoint that takes one gets random JSON, bodies shaped like its own (the right
keys, random values), bytes that are not JSON, JSON nested thousands deep, and odd content types, through the real
URLs with real credentials. The answer is always below 500, and every refusal is a JSON object whose `detail` says
what was wrong."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rest_framework.test import APIClient

from tests.fuzz.strategies import awkward_text, json_values
from tests.fuzz.support import FUZZ

pytestmark = pytest.mark.django_db

ENDPOINTS = {
    "enroll": ("/api/v1/agent/enroll/", None),
    "heartbeat": ("/api/v1/agent/heartbeats/", "agent"),
    "ack": ("/api/v1/agent/commands/{command}/ack/", "agent"),
    "replay": ("/api/v1/replays/", "operator"),
    "approve": ("/api/v1/approvals/{approval}/approve/", "approver"),
    "deny": ("/api/v1/approvals/{approval}/deny/", "approver"),
}


def values(*extra: object) -> st.SearchStrategy:
    return st.sampled_from(list(extra)) | json_values | awkward_text


def body_shapes(api) -> dict[str, st.SearchStrategy]:
    """For each endpoint, bodies with its own keys (each present or not) holding plausible or random values."""
    world = api.world
    return {
        "enroll": st.fixed_dictionaries({}, optional={
            "token": values(api.enrollment_token, "tfe_x_y", ""), "name": values("edge-new-1", "x" * 101),
            "hostname": values("edge.example.net"), "version": values("1.0"), "region": values("eu-west-1"),
            "pop": values("POP-1"), "services": values(["edge-gw"], ["x" * 101], list(range(300)))}),
        "heartbeat": st.fixed_dictionaries({}, optional={
            "status": values("ok", "degraded", "failing"), "version": values("1.6.1", ""),
            "deployment": values(None, 1, 2**63, -1, "1"), "details": values({"queue": 1}),
            "agent": values(world.agent.name, "other"), "environment": values("prod", "dev")}),
        "ack": st.fixed_dictionaries({}, optional={"status": values("succeeded", "failed"), "output": json_values}),
        "replay": st.fixed_dictionaries({}, optional={
            "mode": values("dry_run", "execute"), "incident": values(world.incident.ref, world.incident.pk, "²"),
            "artifact": values(world.bundle.pk, 2**63, 0), "dry_run": values(api.dry_run.pk, 2**64),
            "pipeline_version": values(world.tightened.label, world.baseline.pk, "1"),
            "compare_version": values(world.baseline.label),
            "scope": values({"pop": "POP-12"}, {"colour": "red"}, {"pop": "\x00"}),
            "window": values({"start": "2026-02-26T14:00:00Z", "end": "2026-02-26T14:02:00Z"},
                             {"start": "2026-02-26T14:00:00", "end": "x"}, {"start": "9999-12-31T23:59:59-23:59",
                                                                           "end": "0001-01-01T00:00:00+23:59"}),
            "controls": values({"disabled_actions": ["page_oncall"], "max_pops": 1}, {"max_pops": -1},
                               {"max_regions": 10**30})}),
        "approve": st.fixed_dictionaries({}, optional={"comment": values("looks right", "x" * 5001)}),
        "deny": st.fixed_dictionaries({}, optional={"comment": values("too risky", "", "   ")}),
    }


def client_for(api, who: str | None) -> APIClient:
    client = APIClient()
    if who == "agent":
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {api.agent_key}")
    elif who == "operator":
        client.credentials(HTTP_AUTHORIZATION=f"Token {api.operator_token}")
    elif who == "approver":
        client.credentials(HTTP_AUTHORIZATION=f"Token {api.approver_token}")
    return client


def post(api, endpoint: str, body: bytes, content_type: str = "application/json"):
    path, who = ENDPOINTS[endpoint]
    url = path.format(command=api.command.pk, approval=api.approval.pk)
    return client_for(api, who).generic("POST", url, body, content_type=content_type)


def assert_answered(response) -> None:
    assert response.status_code < 500, (response.status_code, response.content[:500])
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("detail"), str) and body["detail"].strip(), body
    elif response.status_code != 204:
        json.loads(response.content)


def encode(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


ENDPOINT_NAMES = st.sampled_from(sorted(ENDPOINTS))


@FUZZ
@given(endpoint=ENDPOINT_NAMES, body=json_values)
def test_it_answers_any_json_body_below_500(api_world, endpoint, body):
    assert_answered(post(api_world, endpoint, encode(body)))


@FUZZ
@given(endpoint=ENDPOINT_NAMES, data=st.data())
def test_it_answers_bodies_shaped_like_the_endpoints_own_below_500(api_world, endpoint, data):
    body = data.draw(body_shapes(api_world)[endpoint], label="body")
    assert_answered(post(api_world, endpoint, encode(body)))


@FUZZ
@given(endpoint=ENDPOINT_NAMES, raw=st.binary(max_size=200) | st.sampled_from(
    [b"", b"{", b'{"a": NaN}', b'{"a": Infinity}', b'{"a": 1e999}', b'{"a": 1, "a": 2}', b"\xef\xbb\xbf{}",
     b'{"a": "\\ud800"}', b'{"a": "\\u0000"}', b"[" * 100_000 + b"]" * 100_000,
     b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b"1" * 5000, b"null", b"true"]))
def test_it_answers_bytes_that_are_not_a_json_object_below_500(api_world, endpoint, raw):
    assert_answered(post(api_world, endpoint, raw))


@FUZZ
@given(endpoint=ENDPOINT_NAMES, content_type=st.sampled_from(
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "multipart/form-data; boundary=x",
     "application/json; charset=latin-1", "application/json; charset=utf-16", "application/json; charset=nope",
     "application/vnd.api+json", "", "*/*"]), body=json_values)
def test_it_answers_odd_content_types_below_500(api_world, endpoint, content_type, body):
    assert_answered(post(api_world, endpoint, encode(body), content_type=content_type))
