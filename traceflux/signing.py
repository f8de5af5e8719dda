"""The portal's Ed25519 signing keys: read from the files settings name, never from the database. Imports no app.

- `TRACEFLUX_SIGNING_KEY_FILES`: PEM (PKCS#8) private keys. The first signs new credentials; every one is published.
- `TRACEFLUX_SIGNING_PUBLIC_KEY_FILES`: PEM public keys of retired signers, published so that credentials they signed
  still verify until they expire.

A tampered database can queue any command, but without a private key file it cannot sign the credential an agent
checks before it acts (replays.engine.credentials). In the embedded mode the one default key file is made on first
use (`TRACEFLUX_SIGNING_KEY_GENERATE`); a file an operator named is never made up.

Keys are loaded once per process and cached; `signing_keys_reset()` (connected to `setting_changed`, so tests that
override the settings see their own keys) drops the cache.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from replays.engine.credentials import key_id, public_key_document, sign_credential

SETTINGS = ("TRACEFLUX_SIGNING_KEY_FILES", "TRACEFLUX_SIGNING_PUBLIC_KEY_FILES", "TRACEFLUX_SIGNING_KEY_GENERATE")


@dataclass(frozen=True)
class Keyring:
    """The signer, the other private keys' public halves, and the retired public keys, each once, in that order."""

    signer: Ed25519PrivateKey
    published: tuple[tuple[Ed25519PublicKey, bool], ...]  # (key, active)


_lock = threading.Lock()
_keyring: Keyring | None = None


# --- key files -------------------------------------------------------------------------------------------------------


def private_key_pem(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def write_private_key(path: Path) -> Ed25519PrivateKey:
    """Generate a key and write it to `path` (mode 0600), never replacing a file: FileExistsError if there is one.

    The key is written in full to a temporary file in the same directory and then hard-linked to its name, which fails
    when the name exists. Two processes racing to create the same file therefore never see a half-written key, and
    the loser's key is simply dropped (the caller reads the winner's).
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_key = Ed25519PrivateKey.generate()
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_key_pem(private_key))
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temp_name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
    return private_key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImproperlyConfigured(f"TRACEFLUX_SIGNING_KEY_FILES: {path}: {exc.strerror or exc}") from None
    try:
        private_key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        problem = f"TRACEFLUX_SIGNING_KEY_FILES: {path} is not an unencrypted PEM private key"
        raise ImproperlyConfigured(problem) from None
    if not isinstance(private_key, Ed25519PrivateKey):
        raise ImproperlyConfigured(f"TRACEFLUX_SIGNING_KEY_FILES: {path} is not an Ed25519 key")
    return private_key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImproperlyConfigured(f"TRACEFLUX_SIGNING_PUBLIC_KEY_FILES: {path}: {exc.strerror or exc}") from None
    try:
        public_key = load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ImproperlyConfigured(f"TRACEFLUX_SIGNING_PUBLIC_KEY_FILES: {path} is not a PEM public key") from None
    if not isinstance(public_key, Ed25519PublicKey):
        raise ImproperlyConfigured(f"TRACEFLUX_SIGNING_PUBLIC_KEY_FILES: {path} is not an Ed25519 key")
    return public_key


def _load_or_generate(path: Path) -> Ed25519PrivateKey:
    if not path.exists() and settings.TRACEFLUX_SIGNING_KEY_GENERATE:
        with contextlib.suppress(FileExistsError):  # another process made it first: read theirs
            write_private_key(path)
    return load_private_key(path)


def _load() -> Keyring:
    files = [Path(name) for name in settings.TRACEFLUX_SIGNING_KEY_FILES]
    if not files:
        raise ImproperlyConfigured("TRACEFLUX_SIGNING_KEY_FILES names no key: the portal cannot sign credentials")
    private_keys = [_load_or_generate(files[0]), *(load_private_key(path) for path in files[1:])]
    retired = [load_public_key(Path(name)) for name in settings.TRACEFLUX_SIGNING_PUBLIC_KEY_FILES]
    published: dict[str, tuple[Ed25519PublicKey, bool]] = {}
    for index, public_key in enumerate([key.public_key() for key in private_keys] + retired):
        published.setdefault(key_id(public_key), (public_key, index == 0))
    return Keyring(signer=private_keys[0], published=tuple(published.values()))


def keyring() -> Keyring:
    """The keys, loaded from their files on first use in this process. Raises ImproperlyConfigured naming a bad file."""
    global _keyring
    found = _keyring
    if found is None:
        with _lock:
            if _keyring is None:
                _keyring = _load()
            found = _keyring
    return found


@receiver(setting_changed, dispatch_uid="traceflux.signing.reset")
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in SETTINGS:
        signing_keys_reset()


def signing_keys_reset() -> None:
    """Forget the loaded keys; the next use reads the files again (tests, and after an operator rotated the files)."""
    global _keyring
    with _lock:
        _keyring = None


# --- the API ---------------------------------------------------------------------------------------------------------


def signer() -> Ed25519PrivateKey:
    """The private key that signs new credentials: the first of TRACEFLUX_SIGNING_KEY_FILES."""
    return keyring().signer


def sign(document: Mapping[str, Any]) -> dict[str, Any]:
    """A signed credential (replays.engine.credentials.sign_credential) for `document`, by the active key."""
    return sign_credential(document, private_key=signer())


def published_keys() -> list[dict[str, Any]]:
    """Every public key an agent should accept, as public_key_document()s: the active signer first."""
    return [public_key_document(public_key, active=active) for public_key, active in keyring().published]


def verification_keys() -> dict[str, Ed25519PublicKey]:
    """{key_id: public key} of every published key, for replays.engine.credentials.verify_credential."""
    return {key_id(public_key): public_key for public_key, _active in keyring().published}
