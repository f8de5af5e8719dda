"""Signed approval credentials (replays/engine/credentials.py): the document, Ed25519 signing, and every refusal."""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from replays.engine.canonical import canonical_json
from replays.engine.credentials import (
    CREDENTIAL_FORMAT,
    CredentialRefused,
    credential_document,
    key_id,
    public_key_bytes,
    public_key_document,
    public_keys_from_documents,
    sign_credential,
    verify_credential,
)

NOW = datetime(2026, 2, 26, 14, 0, tzinfo=UTC)
EXPIRES = NOW + timedelta(minutes=15)
SPEC_HASH = "sha256:" + "ab" * 32
# A fixed key, so the property test below runs against the same signature every time.
PRIVATE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC_KEYS = {key_id(PRIVATE_KEY.public_key()): PRIVATE_KEY.public_key()}


def document(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "environment": "prod",
        "spec_hash": SPEC_HASH,
        "capabilities": ["route.drain", "alert.silence", "route.drain"],
        "expires_at": EXPIRES,
        "approval_ids": [12, 7],
        "execution_id": 41,
        "action": "drain POP-12",
        "agent": "edge-prod-1",
        "command_key": "replay:41:action:3",
    }
    return credential_document(**{**fields, **changes})


def signed(**changes: Any) -> dict[str, Any]:
    return sign_credential(document(**changes), private_key=PRIVATE_KEY)


def verify(credential: Any, **options: Any) -> dict[str, Any]:
    arguments = {"public_keys": PUBLIC_KEYS, "environment": "prod", "now": NOW, "agent": "edge-prod-1",
                 "command_key": "replay:41:action:3", "capability": "route.drain", **options}
    return verify_credential(credential, **arguments)


def refusal(credential: Any, **options: Any) -> str:
    with pytest.raises(CredentialRefused) as refused:
        verify(credential, **options)
    assert str(refused.value) == refused.value.reason
    return refused.value.reason


# --- the document and the signature ----------------------------------------------------------------------------------


def test_it_writes_the_canonical_document():
    assert document() == {
        "format": CREDENTIAL_FORMAT,
        "environment": "prod",
        "spec_hash": SPEC_HASH,
        "capabilities": ["alert.silence", "route.drain"],
        "expires_at": "2026-02-26T14:15:00Z",
        "approval_ids": [7, 12],
        "execution_id": 41,
        "action": "drain POP-12",
        "agent": "edge-prod-1",
        "command_key": "replay:41:action:3",
    }
    with pytest.raises(ValueError, match="aware"):
        document(expires_at=datetime(2026, 2, 26, 15, 15))
    with pytest.raises(ValueError, match="capabilities"):
        document(capabilities="route.drain")
    with pytest.raises(ValueError, match="execution_id"):
        document(execution_id=True)


def test_it_round_trips_a_signed_credential():
    credential = signed()

    assert verify(credential) == document()
    assert credential["key_id"] == key_id(PRIVATE_KEY.public_key())
    assert credential["key_id"].startswith("ed25519:") and len(credential["key_id"]) == len("ed25519:") + 16
    assert credential["algorithm"] == "Ed25519"
    raw = base64.b64decode(credential["signature"], validate=True)
    PRIVATE_KEY.public_key().verify(raw, canonical_json(credential["document"]))
    # The optional checks are skipped when not asked for.
    assert verify(credential, agent=None, command_key=None, capability=None) == document()


def test_it_accepts_public_keys_as_objects_raw_bytes_or_base64():
    credential = signed()
    public_key = PRIVATE_KEY.public_key()
    raw = public_key_bytes(public_key)
    kid = key_id(public_key)

    for value in (public_key, raw, base64.b64encode(raw).decode()):
        assert verify(credential, public_keys={kid: value}) == document()
    assert "the configured key" in refusal(credential, public_keys={kid: b"short"})


def test_it_publishes_a_key_and_reads_it_back():
    published = public_key_document(PRIVATE_KEY.public_key(), active=True)

    assert published["key_id"] == key_id(PRIVATE_KEY.public_key()) and published["active"] is True
    assert published["algorithm"] == "Ed25519"
    assert base64.b64decode(published["public_key"]) == public_key_bytes(PRIVATE_KEY.public_key())
    keys = public_keys_from_documents([published])
    assert verify(signed(), public_keys=keys) == document()
    with pytest.raises(ValueError, match="is not the id of its public key"):
        public_keys_from_documents([{**published, "key_id": "ed25519:0000000000000000"}])


# --- refusals --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credential", "reason"),
    [
        ("not a credential", "the credential is not an object but str"),
        ({"document": {}, "key_id": "k", "algorithm": "Ed25519"}, "the credential has no signature"),
        ({"document": [], "key_id": "k", "algorithm": "Ed25519", "signature": ""}, "document is not an object"),
    ],
    ids=["not-a-dict", "missing-field", "document-not-a-dict"],
)
def test_it_refuses_a_malformed_credential(credential, reason):
    assert reason in refusal(credential)


def test_it_refuses_another_format():
    credential = signed()
    credential["document"]["format"] = "traceflux.credential/v0"
    assert refusal(credential) == "format 'traceflux.credential/v0' is not traceflux.credential/v1"


def test_it_refuses_another_algorithm():
    assert refusal({**signed(), "algorithm": "HS256"}) == "algorithm 'HS256' is not Ed25519"


def test_it_refuses_an_unknown_key_id():
    credential = signed()
    assert refusal(credential, public_keys={}) == f"unknown key id {credential['key_id']!r}"


def test_it_refuses_a_signature_by_another_key_even_under_the_trusted_key_id():
    other = Ed25519PrivateKey.generate()
    forged = sign_credential(document(), private_key=other)

    assert refusal(forged).startswith("unknown key id 'ed25519:")
    forged["key_id"] = key_id(PRIVATE_KEY.public_key())
    assert refusal(forged).startswith("signature does not verify")


@pytest.mark.parametrize(
    ("signature", "reason"),
    [("***not base64***", "the signature is not valid base64"),
     (base64.b64encode(b"\0" * 63).decode(), "the signature is 63 bytes, not 64")],
    ids=["not-base64", "wrong-length"],
)
def test_it_refuses_a_bad_signature_encoding(signature, reason):
    assert refusal({**signed(), "signature": signature}) == reason


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("environment", "staging"),
        ("capabilities", ["alert.silence", "route.drain", "route.withdraw"]),
        ("expires_at", "2027-02-26T14:15:00Z"),
        ("approval_ids", [7]),
        ("execution_id", 42),
        ("action", "withdraw POP-12"),
        ("agent", "edge-prod-2"),
        ("command_key", "replay:41:action:4"),
        ("spec_hash", "sha256:" + "cd" * 32),
    ],
)
def test_it_refuses_a_tampered_document(field, value):
    credential = signed()
    credential["document"][field] = value
    assert refusal(credential, agent=None, command_key=None).startswith("signature does not verify")


def test_it_refuses_a_document_with_a_field_added_or_removed():
    added, removed = signed(), signed()
    added["document"]["break_glass"] = True
    del removed["document"]["approval_ids"]

    assert refusal(added).startswith("signature does not verify")
    assert refusal(removed).startswith("signature does not verify")


def test_it_refuses_a_credential_for_another_environment():
    assert refusal(signed(), environment="staging") == "issued for environment prod, this agent is in staging"


def test_it_refuses_an_expired_credential_from_the_instant_it_expires():
    assert verify(signed(), now=EXPIRES - timedelta(microseconds=1)) == document()
    assert refusal(signed(), now=EXPIRES) == "expired at 2026-02-26T14:15:00Z"
    assert refusal(signed(), now=EXPIRES + timedelta(days=1)) == "expired at 2026-02-26T14:15:00Z"


def test_it_refuses_a_credential_for_another_agent():
    assert refusal(signed(), agent="edge-prod-2") == "issued for agent edge-prod-1, this agent is edge-prod-2"


def test_it_refuses_a_credential_for_another_command():
    reason = refusal(signed(), command_key="replay:41:action:4")
    assert reason == "issued for command key replay:41:action:3, this command's key is replay:41:action:4"


def test_it_refuses_a_capability_the_credential_does_not_grant():
    reason = refusal(signed(), capability="route.withdraw")
    assert reason == "capability route.withdraw is not granted (granted: alert.silence, route.drain)"


def test_it_refuses_a_signed_document_that_lacks_a_field():
    incomplete = {k: v for k, v in document().items() if k != "capabilities"}
    assert refusal(sign_credential(incomplete, private_key=PRIVATE_KEY)) == "the document has no capabilities"
    typed = {**document(), "execution_id": "41"}
    reason = refusal(sign_credential(typed, private_key=PRIVATE_KEY))
    assert reason == "the document's execution_id is not a JSON integer"


def test_it_refuses_a_naive_now():
    with pytest.raises(ValueError, match="aware"):
        verify(signed(), now=NOW.replace(tzinfo=None))


# --- every single-byte change of the signature is refused ------------------------------------------------------------

SIGNED = signed()
SIGNATURE = base64.b64decode(SIGNED["signature"])


@given(index=st.integers(0, len(SIGNATURE) - 1), delta=st.integers(1, 255))
def test_it_refuses_any_single_byte_change_of_the_signature(index, delta):
    changed = bytearray(SIGNATURE)
    changed[index] = (changed[index] + delta) % 256
    credential = {**copy.deepcopy(SIGNED), "signature": base64.b64encode(bytes(changed)).decode()}

    assert refusal(credential).startswith("signature does not verify")


@given(index=st.integers(0, len(SIGNED["signature"]) - 1), char=st.characters(codec="ascii"))
def test_it_refuses_any_single_character_change_of_the_base64_signature(index, char):
    text = SIGNED["signature"]
    if text[index] == char:
        return
    credential = {**copy.deepcopy(SIGNED), "signature": text[:index] + char + text[index + 1 :]}

    # Either the text no longer decodes (canonically) or it decodes to other bytes that do not verify.
    with pytest.raises(CredentialRefused):
        verify(credential)
