"""The portal's signing keys (traceflux/signing.py), `GET /api/v1/agent/signing-keys/` and `manage.py signing_key`."""

from __future__ import annotations

import base64
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from incidents import services
from replays.engine.credentials import (
    CredentialRefused,
    credential_document,
    key_id,
    public_key_bytes,
    public_keys_from_documents,
    sign_credential,
    verify_credential,
)
from traceflux import signing
from traceflux.audit import SYSTEM

SIGNING_KEYS = "/api/v1/agent/signing-keys/"


def write_key(path: Path) -> Ed25519PrivateKey:
    return signing.write_private_key(path)


def write_public_key(path: Path) -> Ed25519PrivateKey:
    retired = Ed25519PrivateKey.generate()
    path.write_bytes(signing.public_key_pem(retired.public_key()))
    return retired


@pytest.fixture
def key_files(tmp_path, settings):
    """One signing key of the test's own, so nothing is generated under var/."""
    path = tmp_path / "keys" / "current.pem"
    key = write_key(path)
    settings.TRACEFLUX_SIGNING_KEY_FILES = [path]
    settings.TRACEFLUX_SIGNING_PUBLIC_KEY_FILES = []
    settings.TRACEFLUX_SIGNING_KEY_GENERATE = False
    return key


def a_document(**changes) -> dict:
    fields = {
        "environment": "prod", "spec_hash": "sha256:" + "ab" * 32, "capabilities": ["route.drain"],
        "expires_at": datetime.now(UTC) + timedelta(minutes=10), "approval_ids": [3, 4], "execution_id": 9,
        "action": "drain POP-12", "agent": "edge-prod-1", "command_key": "replay:9:action:1",
    }
    return credential_document(**{**fields, **changes})


# --- the endpoint ----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_answers_401_without_an_agent_key(api_client, key_files):
    response = api_client.get(SIGNING_KEYS)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "missing Authorization header" in response.json()["detail"]


def test_it_publishes_the_signing_key_to_any_valid_agent_key(agent_client, key_files):
    response = agent_client.get(SIGNING_KEYS)

    assert response.status_code == 200, response.content
    (published,) = response.json()["keys"]
    assert published == {
        "key_id": key_id(key_files.public_key()),
        "algorithm": "Ed25519",
        "public_key": base64.b64encode(public_key_bytes(key_files.public_key())).decode(),
        "active": True,
    }


def test_it_needs_no_scope_but_an_enabled_agent(api_client, prod_agent, key_files):
    _, heartbeat_only = services.agent_key_create(agent=prod_agent, actor=SYSTEM, scopes=["heartbeats:write"])
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {heartbeat_only}")
    assert api_client.get(SIGNING_KEYS).status_code == 200

    prod_agent.enabled = False
    prod_agent.save()
    refused = api_client.get(SIGNING_KEYS)
    assert refused.status_code == 403
    assert refused.json()["detail"] == "agent edge-prod-1 is disabled"


def test_it_rate_limits_the_signing_keys_per_key(agent_client, key_files, settings):
    settings.TRACEFLUX_RATE_LIMITS = {**settings.TRACEFLUX_RATE_LIMITS, "signing_keys": "1/h"}
    assert agent_client.get(SIGNING_KEYS).status_code == 200

    response = agent_client.get(SIGNING_KEYS)

    assert response.status_code == 429
    assert "rate limit for signing_keys exceeded (1/h)" in response.json()["detail"]


def test_it_publishes_keys_that_verify_a_credential_signed_by_the_portal(agent_client, key_files):
    keys = public_keys_from_documents(agent_client.get(SIGNING_KEYS).json()["keys"])
    credential = signing.sign(a_document())

    document = verify_credential(credential, public_keys=keys, environment="prod", now=datetime.now(UTC),
                                 agent="edge-prod-1", command_key="replay:9:action:1", capability="route.drain")

    assert document == a_document() | {"expires_at": document["expires_at"]}
    assert credential["key_id"] == key_id(key_files.public_key())
    assert signing.verification_keys() == keys


def test_it_signs_with_the_first_key_and_publishes_the_second_and_the_retired_ones(agent_client, tmp_path, settings):
    new, old = tmp_path / "new.pem", tmp_path / "old.pem"
    new_key, old_key = write_key(new), write_key(old)
    retired_key = write_public_key(tmp_path / "retired.pub.pem")
    settings.TRACEFLUX_SIGNING_KEY_FILES = [new, old]
    settings.TRACEFLUX_SIGNING_PUBLIC_KEY_FILES = [tmp_path / "retired.pub.pem"]
    settings.TRACEFLUX_SIGNING_KEY_GENERATE = False

    published = agent_client.get(SIGNING_KEYS).json()["keys"]

    assert [(key["key_id"], key["active"]) for key in published] == [
        (key_id(new_key.public_key()), True),
        (key_id(old_key.public_key()), False),
        (key_id(retired_key.public_key()), False),
    ]
    credential = signing.sign(a_document())
    assert credential["key_id"] == key_id(new_key.public_key())
    keys = public_keys_from_documents(published)
    now = datetime.now(UTC)
    # What the old and the retired keys signed before the rotation still verifies until it expires.
    for before in (old_key, retired_key):
        earlier = sign_credential(a_document(), private_key=before)
        assert verify_credential(earlier, public_keys=keys, environment="prod", now=now)["execution_id"] == 9
    # Dropping a key from the settings stops its credentials from verifying.
    settings.TRACEFLUX_SIGNING_PUBLIC_KEY_FILES = []
    with pytest.raises(CredentialRefused, match="unknown key id"):
        verify_credential(sign_credential(a_document(), private_key=retired_key),
                          public_keys=signing.verification_keys(), environment="prod", now=now)


def test_it_publishes_a_key_listed_twice_once(tmp_path, settings):
    path = tmp_path / "k.pem"
    key = write_key(path)
    (tmp_path / "k.pub.pem").write_bytes(signing.public_key_pem(key.public_key()))
    settings.TRACEFLUX_SIGNING_KEY_FILES = [path, path]
    settings.TRACEFLUX_SIGNING_PUBLIC_KEY_FILES = [tmp_path / "k.pub.pem"]

    assert [(k["key_id"], k["active"]) for k in signing.published_keys()] == [(key_id(key.public_key()), True)]


# --- the key files ---------------------------------------------------------------------------------------------------


def test_it_generates_the_embedded_key_on_first_use_with_mode_0600_and_keeps_it(tmp_path, settings):
    path = tmp_path / "var" / "signing" / "ed25519.pem"
    settings.TRACEFLUX_SIGNING_KEY_FILES = [path]
    settings.TRACEFLUX_SIGNING_PUBLIC_KEY_FILES = []
    settings.TRACEFLUX_SIGNING_KEY_GENERATE = True

    first = key_id(signing.signer().public_key())

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    signing.signing_keys_reset()
    assert key_id(signing.signer().public_key()) == first
    assert [p.name for p in path.parent.iterdir()] == ["ed25519.pem"]


def test_it_makes_one_key_when_processes_race_to_generate_it(tmp_path):
    path = tmp_path / "signing" / "ed25519.pem"
    barrier = threading.Barrier(6)
    made: list[str] = []
    lost: list[BaseException] = []

    def generate() -> None:
        barrier.wait(timeout=10)
        try:
            made.append(key_id(signing.write_private_key(path).public_key()))
        except FileExistsError as exc:
            lost.append(exc)

    threads = [threading.Thread(target=generate) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(made) == 1 and len(lost) == 5
    assert key_id(signing.load_private_key(path).public_key()) == made[0]
    assert [p.name for p in path.parent.iterdir()] == ["ed25519.pem"]  # no temporary file left behind


def test_it_never_makes_up_a_key_file_an_operator_named(tmp_path, settings):
    missing = tmp_path / "missing.pem"
    settings.TRACEFLUX_SIGNING_KEY_FILES = [missing]
    settings.TRACEFLUX_SIGNING_PUBLIC_KEY_FILES = []
    settings.TRACEFLUX_SIGNING_KEY_GENERATE = False

    with pytest.raises(ImproperlyConfigured, match=f"TRACEFLUX_SIGNING_KEY_FILES: {missing}: No such file"):
        signing.signer()
    assert not missing.exists()
    errors = [message for message in run_checks() if message.id == "incidents.E001"]
    assert len(errors) == 1 and str(missing) in errors[0].msg


def test_it_refuses_a_key_file_that_is_not_an_ed25519_private_key(tmp_path, settings):
    not_a_key = tmp_path / "notakey.pem"
    not_a_key.write_text("hello")
    public = tmp_path / "public.pem"
    write_public_key(public)
    settings.TRACEFLUX_SIGNING_KEY_GENERATE = False
    settings.TRACEFLUX_SIGNING_PUBLIC_KEY_FILES = []

    settings.TRACEFLUX_SIGNING_KEY_FILES = [not_a_key]
    with pytest.raises(ImproperlyConfigured, match="is not an unencrypted PEM private key"):
        signing.published_keys()
    settings.TRACEFLUX_SIGNING_KEY_FILES = [public]
    with pytest.raises(ImproperlyConfigured, match="is not an unencrypted PEM private key"):
        signing.published_keys()


# --- manage.py signing_key -------------------------------------------------------------------------------------------


def test_it_generates_a_key_from_the_command_line_and_never_overwrites_one(tmp_path, capsys):
    path = tmp_path / "rotated" / "next.pem"

    call_command("signing_key", "generate", str(path))

    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == key_id(signing.load_private_key(path).public_key())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    with pytest.raises(CommandError, match="exists: a signing key is never overwritten"):
        call_command("signing_key", "generate", str(path))
    assert path.read_bytes() == before


def test_it_prints_the_public_half_and_lists_the_published_keys(key_files, tmp_path, settings, capsys):
    call_command("signing_key", "public", str(settings.TRACEFLUX_SIGNING_KEY_FILES[0]))
    pem = capsys.readouterr().out
    assert pem.encode() == signing.public_key_pem(key_files.public_key())

    call_command("signing_key", "list")
    assert capsys.readouterr().out.startswith(f"{key_id(key_files.public_key())}  active (signs)  ")


@pytest.mark.django_db
def test_it_documents_the_endpoint_in_the_openapi_schema(client):
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    operation = schema["paths"][SIGNING_KEYS]["get"]
    assert operation["operationId"] == "agent_signing_keys"
    assert set(operation["responses"]) == {"200", "401", "403", "429"}
    assert operation["security"] == [{"agentKey": []}]
    assert set(schema["components"]["schemas"]["SigningKey"]["properties"]) == {"key_id", "algorithm", "public_key",
                                                                               "active"}
    assert "idempotency_key" in schema["components"]["schemas"]["Command"]["properties"]
