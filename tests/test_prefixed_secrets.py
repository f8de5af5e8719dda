from __future__ import annotations

from traceflux.prefixed_secrets import AGENT_KEY, ENROLLMENT_TOKEN, USER_TOKEN


def test_it_issues_a_secret_that_only_its_own_kind_accepts():
    prefix, stored, plaintext = AGENT_KEY.issue()
    parsed = AGENT_KEY.parse(plaintext)
    assert parsed is not None and parsed[0] == prefix
    assert AGENT_KEY.matches(parsed[1], stored)
    assert not AGENT_KEY.matches(parsed[1] + "x", stored)
    assert not AGENT_KEY.matches(parsed[1], None)  # unknown prefix: compared against a dummy, still refused
    assert USER_TOKEN.parse(plaintext) is None and ENROLLMENT_TOKEN.parse(plaintext) is None
    assert ENROLLMENT_TOKEN.digest(parsed[1]) != stored  # each kind has its own HMAC key


def test_it_finds_the_public_prefix_in_a_header_for_counting():
    _, _, plaintext = AGENT_KEY.issue()
    assert AGENT_KEY.prefix_in(f"Bearer {plaintext}") == plaintext.split("_")[1]
    assert AGENT_KEY.prefix_in("Bearer nonsense") is None
