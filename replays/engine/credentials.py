"""Signed approval credentials (`traceflux.credential/v1`): what lets an agent check, on its own, that an action was
approved for it, here, now.

The portal signs a credential document with Ed25519 when it dispatches an approved action; the agent verifies it
against the portal's published public keys and its own local configuration (its environment and name) before it acts.
A database that was tampered with can queue a command, but it cannot produce a signature: the private keys live in
files the portal reads, never in the database.

    signed = {"document": {...}, "key_id": "ed25519:…", "algorithm": "Ed25519", "signature": "<base64>"}

The signature covers `canonical_json(document)`, so any change to any field of the document (or of the signature)
is refused. Pure Python: no Django, no project module; `cryptography` does the Ed25519.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .canonical import CanonicalJSONError, canonical_json
from .formats import format_timestamp, parse_timestamp

CREDENTIAL_FORMAT = "traceflux.credential/v1"
ALGORITHM = "Ed25519"
KEY_ID_PREFIX = "ed25519:"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64

SIGNED_FIELDS = ("document", "key_id", "algorithm", "signature")
# What a document must hold, and the JSON type each field must have, once its signature has been checked.
DOCUMENT_FIELDS: dict[str, type] = {
    "format": str,
    "environment": str,
    "spec_hash": str,
    "capabilities": list,
    "expires_at": str,
    "approval_ids": list,
    "execution_id": int,
    "action": str,
    "agent": str,
    "command_key": str,
}

_JSON_NAMES = {str: "string", list: "array", int: "integer"}

PublicKeyLike = Ed25519PublicKey | bytes | str


class CredentialRefused(Exception):
    """The credential must not be acted on; `reason` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- the document ----------------------------------------------------------------------------------------------------


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, not {value!r}")
    return value


def _integer(name: str, value: Any) -> int:
    # bool is an int to Python, never an id to us.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    return value


def credential_document(
    *,
    environment: str,
    spec_hash: str,
    capabilities: Iterable[str],
    expires_at: datetime,
    approval_ids: Iterable[int],
    execution_id: int,
    action: str,
    agent: str,
    command_key: str,
) -> dict[str, Any]:
    """The canonical content of a credential: the same arguments always give the same document (and bytes).

    Capabilities and approval ids are sorted and de-duplicated; `expires_at` (an aware datetime) is written as RFC 3339
    UTC with `Z`. Raises ValueError for an argument that could not be verified later (a naive datetime, a blank name).
    """
    if expires_at.tzinfo is None or expires_at.utcoffset() is None:
        raise ValueError("expires_at must be an aware datetime")
    if isinstance(capabilities, str):
        raise ValueError("capabilities must be a collection of strings, not one string")
    return {
        "format": CREDENTIAL_FORMAT,
        "environment": _text("environment", environment),
        "spec_hash": _text("spec_hash", spec_hash),
        "capabilities": sorted({_text("capability", capability) for capability in capabilities}),
        "expires_at": format_timestamp(expires_at),
        "approval_ids": sorted({_integer("approval id", approval_id) for approval_id in approval_ids}),
        "execution_id": _integer("execution_id", execution_id),
        "action": _text("action", action),
        "agent": _text("agent", agent),
        "command_key": _text("command_key", command_key),
    }


# --- keys ------------------------------------------------------------------------------------------------------------


def public_key_bytes(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """`ed25519:` plus the first 16 hex digits of the SHA-256 of the raw 32-byte public key."""
    return KEY_ID_PREFIX + hashlib.sha256(public_key_bytes(public_key)).hexdigest()[:16]


def _strict_b64decode(text: str) -> bytes:
    """Standard, padded base64 in its one canonical spelling, else ValueError.

    b64decode alone ignores the unused low bits of the last character, so several strings decode to the same bytes;
    insisting on the canonical spelling means a changed character is always a changed value.
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return raw


def load_public_key(value: PublicKeyLike) -> Ed25519PublicKey:
    """A key object as is, 32 raw bytes, or those bytes in base64; ValueError otherwise."""
    if isinstance(value, Ed25519PublicKey):
        return value
    if isinstance(value, str):
        value = _strict_b64decode(value)
    if isinstance(value, bytes | bytearray) and len(value) == PUBLIC_KEY_BYTES:
        return Ed25519PublicKey.from_public_bytes(bytes(value))
    raise ValueError(f"not an Ed25519 public key (expected {PUBLIC_KEY_BYTES} raw bytes or their base64)")


def public_key_document(public_key: Ed25519PublicKey, *, active: bool) -> dict[str, Any]:
    """How a key is published: its id, algorithm, raw public key in base64, and whether it signs new credentials."""
    return {
        "key_id": key_id(public_key),
        "algorithm": ALGORITHM,
        "public_key": base64.b64encode(public_key_bytes(public_key)).decode("ascii"),
        "active": bool(active),
    }


def public_keys_from_documents(documents: Any) -> dict[str, Ed25519PublicKey]:
    """{key_id: key} from published key documents, for verify_credential. Raises ValueError on a malformed entry.

    The id is recomputed from the key and must match the published one, so a key cannot be listed under another id.
    """
    if not isinstance(documents, list):
        raise ValueError("the published keys must be a list")
    keys: dict[str, Ed25519PublicKey] = {}
    for index, document in enumerate(documents):
        if not isinstance(document, Mapping):
            raise ValueError(f"key #{index} is not an object")
        if document.get("algorithm") != ALGORITHM:
            raise ValueError(f"key #{index}: algorithm {document.get('algorithm')!r} is not {ALGORITHM}")
        try:
            public_key = load_public_key(document.get("public_key"))  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"key #{index}: public_key is {exc}") from None
        if key_id(public_key) != document.get("key_id"):
            raise ValueError(f"key #{index}: key_id {document.get('key_id')!r} is not the id of its public key")
        keys[key_id(public_key)] = public_key
    return keys


# --- signing and verifying -------------------------------------------------------------------------------------------


def sign_credential(document: Mapping[str, Any], *, private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """The signed credential: the document, the signer's key id and the Ed25519 signature of its canonical JSON."""
    document = dict(document)
    signature = private_key.sign(canonical_json(document))
    return {
        "document": document,
        "key_id": key_id(private_key.public_key()),
        "algorithm": ALGORITHM,
        "signature": base64.b64encode(signature).decode("ascii"),
    }


def _check_shape(signed: Any) -> dict[str, Any]:
    if not isinstance(signed, Mapping):
        raise CredentialRefused(f"the credential is not an object but {type(signed).__name__}")
    for field in SIGNED_FIELDS:
        if field not in signed:
            raise CredentialRefused(f"the credential has no {field}")
    document = signed["document"]
    if not isinstance(document, Mapping):
        raise CredentialRefused("the credential's document is not an object")
    for field in ("key_id", "algorithm", "signature"):
        if not isinstance(signed[field], str):
            raise CredentialRefused(f"the credential's {field} is not a string")
    return dict(document)


def _check_signature(
    signed: Mapping[str, Any], document: dict[str, Any], public_keys: Mapping[str, PublicKeyLike]
) -> None:
    if signed["algorithm"] != ALGORITHM:
        raise CredentialRefused(f"algorithm {signed['algorithm']!r} is not {ALGORITHM}")
    kid = signed["key_id"]
    if kid not in public_keys:
        raise CredentialRefused(f"unknown key id {kid!r}")
    try:
        public_key = load_public_key(public_keys[kid])
    except ValueError as exc:
        raise CredentialRefused(f"the configured key {kid} is {exc}") from None
    try:
        signature = _strict_b64decode(signed["signature"])
    except ValueError as exc:
        raise CredentialRefused(f"the signature is {exc}") from None
    if len(signature) != SIGNATURE_BYTES:
        raise CredentialRefused(f"the signature is {len(signature)} bytes, not {SIGNATURE_BYTES}")
    try:
        message = canonical_json(document)
    except CanonicalJSONError as exc:
        raise CredentialRefused(f"the document is not canonical JSON: {exc}") from None
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        raise CredentialRefused(f"signature does not verify with key {kid}") from None


def _check_fields(document: Mapping[str, Any]) -> datetime:
    for field, kind in DOCUMENT_FIELDS.items():
        if field not in document:
            raise CredentialRefused(f"the document has no {field}")
        value = document[field]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CredentialRefused(f"the document's {field} is not a JSON {_JSON_NAMES[kind]}")
    if not all(isinstance(capability, str) for capability in document["capabilities"]):
        raise CredentialRefused("the document's capabilities are not all strings")
    if not all(isinstance(pk, int) and not isinstance(pk, bool) for pk in document["approval_ids"]):
        raise CredentialRefused("the document's approval_ids are not all integers")
    try:
        return parse_timestamp(document["expires_at"])
    except ValueError as exc:
        raise CredentialRefused(f"the document's expires_at: {exc}") from None


def verify_credential(
    signed: Any,
    *,
    public_keys: Mapping[str, PublicKeyLike],
    environment: str,
    now: datetime,
    agent: str | None = None,
    command_key: str | None = None,
    capability: str | None = None,
) -> dict[str, Any]:
    """The verified document, or CredentialRefused with the first thing wrong.

    Checked in this order: the shape, the format, the algorithm, the key id (one of `public_keys`: key objects, raw
    bytes or base64), the signature over the canonical JSON of the document as given, the document's fields, then
    that it was issued for `environment` (the verifier's own, never the server's word), that `now` is before
    `expires_at`, and, when given, for `agent`, for `command_key`, and that it grants `capability`.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    document = _check_shape(signed)
    if document.get("format") != CREDENTIAL_FORMAT:
        raise CredentialRefused(f"format {document.get('format')!r} is not {CREDENTIAL_FORMAT}")
    _check_signature(signed, document, public_keys)
    expires_at = _check_fields(document)
    if document["environment"] != environment:
        raise CredentialRefused(f"issued for environment {document['environment']}, this agent is in {environment}")
    if now >= expires_at:
        raise CredentialRefused(f"expired at {document['expires_at']}")
    if agent is not None and document["agent"] != agent:
        raise CredentialRefused(f"issued for agent {document['agent']}, this agent is {agent}")
    if command_key is not None and document["command_key"] != command_key:
        raise CredentialRefused(
            f"issued for command key {document['command_key']}, this command's key is {command_key}"
        )
    if capability is not None and capability not in document["capabilities"]:
        granted = ", ".join(document["capabilities"]) or "none"
        raise CredentialRefused(f"capability {capability} is not granted (granted: {granted})")
    return document
