"""The agent client's `work`: it fetches the portal's signing keys, leases its commands, verifies each signed
credential against its own configuration and acknowledges the command, all through the real URLs (live_server)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from artifacts.client import Client, main, verify_command
from incidents import services as incident_services
from incidents.models import Command
from replays.engine.credentials import CredentialRefused, credential_document, key_id
from traceflux import signing
from traceflux.audit import SYSTEM

live = pytest.mark.django_db(transaction=True)
KIND = "replay_action"


@pytest.fixture
def signing_key(tmp_path, settings):
    """The portal signs with a key of the test's own, so nothing is generated under var/."""
    path = tmp_path / "signing.pem"
    key = signing.write_private_key(path)
    settings.TRACEFLUX_SIGNING_KEY_FILES = [path]
    settings.TRACEFLUX_SIGNING_PUBLIC_KEY_FILES = []
    settings.TRACEFLUX_SIGNING_KEY_GENERATE = False
    return key


def credential(command_key: str, **changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "environment": "prod", "spec_hash": "sha256:" + "ab" * 32, "capabilities": ["route.drain"],
        "expires_at": datetime.now(UTC) + timedelta(minutes=10), "approval_ids": [3, 4], "execution_id": 9,
        "action": "drain POP-12", "agent": "edge-prod-1", "command_key": command_key,
    }
    return signing.sign(credential_document(**{**fields, **changes}))


def queue(agent, key: str, signed: dict[str, Any] | None, *, kind: str = KIND, capability: str = "route.drain"):
    payload: dict[str, Any] = {"capability": capability, "action": "drain POP-12"}
    if signed is not None:
        payload["credential"] = signed
    return incident_services.command_create(agent=agent, kind=kind, payload=payload, idempotency_key=key,
                                            actor=SYSTEM)


def work(live_server, key: str, capsys, *extra: str) -> tuple[int, list[dict[str, Any]], str]:
    code = main(["--url", live_server.url, "--key", key, "work", "--environment", "prod", "--agent", "edge-prod-1",
                 *extra])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err


def outcome(command: Command) -> tuple[str, Any]:
    command.refresh_from_db()
    return command.status, command.output


@live
def test_it_carries_out_a_command_with_a_valid_credential(live_server, prod_agent, prod_agent_key, signing_key,
                                                          capsys):
    command = queue(prod_agent, "replay:9:action:1", credential("replay:9:action:1"))

    code, lines, err = work(live_server, prod_agent_key, capsys)

    assert code == 0, err
    assert lines == [{"id": command.pk, "kind": KIND, "outcome": "succeeded", "verified": True}]
    assert outcome(command) == ("succeeded", {"verified": True, "key_id": key_id(signing_key.public_key()),
                                              "action": "drain POP-12"})


@live
@pytest.mark.parametrize(
    ("field", "value"),
    [("environment", "prod "), ("capabilities", ["route.drain", "route.withdraw"]),
     ("expires_at", "2099-01-01T00:00:00Z")],
    ids=["environment", "capabilities", "expiry"],
)
def test_it_refuses_a_tampered_credential_and_acknowledges_it_failed(live_server, prod_agent, prod_agent_key,
                                                                     signing_key, capsys, field, value):
    tampered = credential("replay:9:action:1")
    tampered["document"][field] = value
    command = queue(prod_agent, "replay:9:action:1", tampered)

    code, lines, err = work(live_server, prod_agent_key, capsys)

    assert code == 0, err
    reason = f"signature does not verify with key {key_id(signing_key.public_key())}"
    assert lines == [{"id": command.pk, "kind": KIND, "outcome": "refused", "reason": reason}]
    assert outcome(command) == ("failed", {"refused": reason})


@live
def test_it_refuses_a_credential_for_another_environment_expired_or_for_another_command(
    live_server, prod_agent, prod_agent_key, signing_key, capsys
):
    expired_at = datetime(2026, 2, 26, 14, 0, tzinfo=UTC)
    staging = queue(prod_agent, "replay:9:action:1", credential("replay:9:action:1", environment="staging"))
    expired = queue(prod_agent, "replay:9:action:2", credential("replay:9:action:2", expires_at=expired_at))
    # A valid credential copied from another command (or another agent's) does not approve this one.
    copied = queue(prod_agent, "replay:9:action:3", credential("replay:9:action:1"))
    other_agent = queue(prod_agent, "replay:9:action:4", credential("replay:9:action:4", agent="edge-prod-2"))
    ungranted = queue(prod_agent, "replay:9:action:5", credential("replay:9:action:5"), capability="route.withdraw")

    code, lines, err = work(live_server, prod_agent_key, capsys)

    assert code == 0, err
    reasons = {
        staging.pk: "issued for environment staging, this agent is in prod",
        expired.pk: "expired at 2026-02-26T14:00:00Z",
        copied.pk: "issued for command key replay:9:action:1, this command's key is replay:9:action:3",
        other_agent.pk: "issued for agent edge-prod-2, this agent is edge-prod-1",
        ungranted.pk: "capability route.withdraw is not granted (granted: route.drain)",
    }
    assert {line["id"]: (line["outcome"], line["reason"]) for line in lines} == {
        pk: ("refused", reason) for pk, reason in reasons.items()
    }
    for pk, reason in reasons.items():
        assert outcome(Command.objects.get(pk=pk)) == ("failed", {"refused": reason})


@live
def test_it_refuses_a_credential_signed_by_a_key_the_portal_does_not_publish(live_server, prod_agent,
                                                                            prod_agent_key, signing_key, capsys,
                                                                            tmp_path, settings):
    signed_earlier = credential("replay:9:action:1")
    rotated = tmp_path / "rotated.pem"
    signing.write_private_key(rotated)
    settings.TRACEFLUX_SIGNING_KEY_FILES = [rotated]  # the old key is neither kept nor published as retired
    command = queue(prod_agent, "replay:9:action:1", signed_earlier)

    code, lines, _ = work(live_server, prod_agent_key, capsys)

    assert code == 0
    assert lines[0]["reason"] == f"unknown key id '{key_id(signing_key.public_key())}'"
    assert outcome(command)[0] == "failed"


@live
def test_it_carries_out_commands_without_credentials_but_never_an_unsigned_replay_action(live_server, prod_agent,
                                                                                    prod_agent_key, signing_key,
                                                                                    capsys):
    deploy = queue(prod_agent, "deploy:1:edge-prod-1", None, kind="deploy")
    unsigned = queue(prod_agent, "replay:9:action:1", None)

    reload = queue(prod_agent, "reload:1", None, kind="reload_pipeline")

    code, lines, err = work(live_server, prod_agent_key, capsys)

    assert code == 0, err
    assert lines == [
        {"id": deploy.pk, "kind": "deploy", "outcome": "succeeded", "verified": False},
        {"id": unsigned.pk, "kind": KIND, "outcome": "refused",
         "reason": "a replay_action command must carry a signed credential"},
        {"id": reload.pk, "kind": "reload_pipeline", "outcome": "succeeded", "verified": False},
    ]
    assert outcome(deploy) == ("succeeded", {"verified": False})
    assert outcome(unsigned)[0] == "failed"


@live
def test_it_requires_credentials_of_the_kinds_it_is_told(live_server, prod_agent, prod_agent_key, signing_key, capsys,
                                                         monkeypatch):
    monkeypatch.setenv("TRACEFLUX_AGENT_REQUIRE_CREDENTIAL", "deploy, rollback")
    deploy = queue(prod_agent, "deploy:1:edge-prod-1", None, kind="deploy")
    reload = queue(prod_agent, "reload:1", None, kind="reload_pipeline")

    code, lines, _ = work(live_server, prod_agent_key, capsys, "--require-credential", "reload_pipeline")

    assert code == 0
    assert [(line["id"], line["outcome"]) for line in lines] == [(deploy.pk, "succeeded"), (reload.pk, "refused")]
    queue(prod_agent, "deploy:2:edge-prod-1", None, kind="deploy")
    code, lines, _ = work(live_server, prod_agent_key, capsys)
    assert [line["reason"] for line in lines] == ["a deploy command must carry a signed credential"]


@live
def test_it_fetches_the_signing_keys_and_leases_commands_with_their_idempotency_key(live_server, prod_agent,
                                                                                   prod_agent_key, signing_key):
    command = queue(prod_agent, "replay:9:action:1", credential("replay:9:action:1"))
    client = Client(live_server.url, prod_agent_key)

    status, body = client.signing_keys()

    assert status == 200, body
    assert [key["key_id"] for key in body["keys"]] == [key_id(signing_key.public_key())]
    status, leased = client.commands()
    assert status == 200, leased
    (delivered,) = leased["commands"]
    assert delivered["idempotency_key"] == "replay:9:action:1"
    document = verify_command(delivered, keys={k["key_id"]: k["public_key"] for k in body["keys"]},
                              environment="prod", agent="edge-prod-1", now=datetime.now(UTC))
    assert document is not None and document["command_key"] == command.idempotency_key


def test_it_needs_the_agents_own_environment_and_name(capsys, monkeypatch):
    monkeypatch.delenv("TRACEFLUX_AGENT_ENVIRONMENT", raising=False)
    monkeypatch.delenv("TRACEFLUX_AGENT_NAME", raising=False)

    assert main(["--key", "tfk_0123456789ab_secret", "work", "--agent", "edge-prod-1"]) == 2
    err = capsys.readouterr().err
    assert "work needs this agent's environment: --environment or $TRACEFLUX_AGENT_ENVIRONMENT" in err
    monkeypatch.setenv("TRACEFLUX_AGENT_ENVIRONMENT", "prod")
    assert main(["--key", "tfk_0123456789ab_secret", "work"]) == 2
    assert "work needs this agent's name" in capsys.readouterr().err


@live
def test_it_exits_1_when_the_portal_refuses_the_key(live_server, prod_agent, signing_key, capsys):
    code, lines, err = work(live_server, "tfk_0123456789ab_" + "x" * 43, capsys)

    assert code == 1 and lines == []
    assert "error: HTTP 401: unknown agent key" in err


# --- verify_command, without a server --------------------------------------------------------------------------------


def test_it_leaves_a_command_without_a_credential_alone_and_refuses_one_without_an_idempotency_key(signing_key):
    keys = signing.verification_keys()
    now = datetime.now(UTC)
    options = {"keys": keys, "environment": "prod", "agent": "edge-prod-1", "now": now}
    signed = credential("replay:9:action:1")

    assert verify_command({"id": 1, "kind": "deploy", "payload": {"version": "v2"}}, **options) is None
    assert verify_command({"id": 1, "kind": "deploy", "payload": ["not", "a", "dict"]}, **options) is None
    with pytest.raises(CredentialRefused, match="no idempotency_key"):
        verify_command({"id": 2, "kind": KIND, "payload": {"credential": signed}}, **options)
    command = {"id": 3, "kind": KIND, "idempotency_key": "replay:9:action:1",
               "payload": {"capability": "route.drain", "credential": copy.deepcopy(signed)}}
    assert verify_command(command, **options)["execution_id"] == 9
    with pytest.raises(CredentialRefused, match="issued for environment prod, this agent is in staging"):
        verify_command(command, **{**options, "environment": "staging"})
