"""Keys, tokens, passwords and signing keys never appear in the logs, in the audit log, in history or anywhere else in
the database, nor in a cookie.

One scenario issues and uses every kind of secret, the way people and agents do: agent keys from the command line and
the console, an enrollment token traded for a key through the API, keys used on the API (accepted, wrong, revoked),
personal tokens made and used (accepted, wrong), passwords on the login page (right, wrong, typed into the username
field), and an execute whose commands carry signed credentials. Everything logged meanwhile is captured at DEBUG from
every logger, and every command's stdout and stderr. Then none of the plaintexts (nor their secret part alone) may be
found in any log record, in any table (audit events, history rows, the rest), or in any cookie; a command prints its
secret once, alone on the last line of its stdout, as documented, and nowhere else.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.core.serializers.json import DjangoJSONEncoder
from django.shortcuts import resolve_url
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from incidents.services import environment_set_posture
from tests.factories import UserFactory
from tests.replays.conftest import approve_execute, make_world, run_dry_run, run_execute
from traceflux.signing import load_private_key

PASSWORD = "Correct-Horse-Battery-Staple-9f3a"
WRONG_PASSWORD = "Tr0ub4dor&3-wrong-one-7c1e"
SECRET_PART = re.compile(r"^tf[keu]_[0-9a-f]{12}_(?P<secret>.+)$")


@dataclass
class Capture:
    secrets: dict[str, str] = field(default_factory=dict)  # what it is → plaintext
    outputs: list[tuple[str, str, str]] = field(default_factory=list)  # (command, stdout, stderr)
    clients: list[Client] = field(default_factory=list)

    def secret(self, what: str, plaintext: str) -> str:
        assert len(plaintext) >= 16, what  # long enough that finding it means it leaked
        self.secrets[what] = plaintext
        return plaintext

    def command(self, *args: str) -> str:
        """Run a management command; return the last line of its stdout."""
        out, err = io.StringIO(), io.StringIO()
        call_command(*args, stdout=out, stderr=err)
        self.outputs.append((" ".join(args), out.getvalue(), err.getvalue()))
        return out.getvalue().strip().splitlines()[-1]

    def needles(self) -> Iterator[tuple[str, str]]:
        """(what, text) for each plaintext and for the secret part of each prefixed one."""
        for what, plaintext in self.secrets.items():
            yield what, plaintext
            match = SECRET_PART.match(plaintext)
            if match:
                yield f"{what} (its secret part)", match["secret"]


@pytest.fixture
def every_logger(caplog) -> Any:
    """Every record of every logger at DEBUG, those that do not propagate to the root included."""
    caplog.set_level(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)  # pytest puts the levels back (caplog restores only the root's)
        if not logger.propagate:
            logger.addHandler(caplog.handler)
    yield caplog
    for logger in loggers:
        logger.setLevel(logging.NOTSET)
        if caplog.handler in logger.handlers:
            logger.removeHandler(caplog.handler)


def issued(response: Any, element_id: str) -> str:
    """The plaintext a console page shows once."""
    assert response.status_code == 200, response.status_code
    found = re.search(rf'<code id="{element_id}"[^>]*>([^<]+)</code>', response.content.decode())
    assert found, f"no #{element_id} on the page"
    return found.group(1).strip()


def run_scenario(capture: Capture, *, world, admin_user, requester, approvers, on_commit) -> None:
    agent = world.agent
    console = Client()
    console.force_login(admin_user)
    capture.clients.append(console)

    # --- agent keys: the command line and the console; one revoked by pasting the whole key ---
    key = capture.secret("agent key (cli)", capture.command("agent_key", "create", "--agent", agent.name))
    page = console.post(reverse("admin:incidents_agentkey_add"),
                        {"agent": agent.pk, "scopes": ["heartbeats:write"], "expires_at": ""})
    revoked_key = capture.secret("agent key (console)", issued(page, "issued-key"))
    # Whatever dumps the page's context (a DEBUG record of a variable that fails to resolve, the debug 500 page)
    # does not show the key: only the page does.
    assert revoked_key not in repr([context.flatten() for context in page.context])
    capture.command("agent_key", "revoke", revoked_key, "--reason", "rotated")

    # --- enrollment: a token from the command line, traded for a key through the API ---
    token = capture.secret("enrollment token", capture.command(
        "enrollment_token", "create", "--environment", world.environment.slug, "--uses", "2"))
    agents = APIClient()
    answer = agents.post(reverse("agent_api:enroll"), {"token": token, "name": "edge-prod-new",
                                                       "hostname": "edge-prod-new.example.test"}, format="json")
    assert answer.status_code == 201, answer.content
    enrolled_key = capture.secret("agent key (enrolled)", answer.json()["key"])
    wrong_token = capture.secret("enrollment token (wrong)", token[:17] + "x" * 43)
    assert agents.post(reverse("agent_api:enroll"), {"token": wrong_token, "name": "edge-prod-x",
                                                     "hostname": "x.example.test"}, format="json").status_code == 401

    # --- keys on the API: accepted, a wrong secret with a known prefix, revoked ---
    wrong_key = capture.secret("agent key (wrong)", key[:17] + "y" * 43)
    for presented, status in ((key, 201), (enrolled_key, 201), (wrong_key, 401), (revoked_key, 401)):
        agents.credentials(HTTP_AUTHORIZATION=f"Bearer {presented}")
        response = agents.post(reverse("agent_api:heartbeats"), {"status": "ok"}, format="json")
        assert response.status_code == status, (status, response.content)

    # --- personal tokens: the command line and the console, used, and a wrong one ---
    user_token = capture.secret("personal token (cli)", capture.command("user_token", "create", "--user",
                                                                         requester.username, "--name", "laptop"))
    page = console.post(reverse("admin:approvals_usertoken_add"),
                        {"user": requester.pk, "name": "ci", "expires_at": ""})
    console_token = capture.secret("personal token (console)", issued(page, "issued-token"))
    wrong_user_token = capture.secret("personal token (wrong)", user_token[:17] + "z" * 43)
    people = APIClient()
    for presented, status in ((user_token, 200), (console_token, 200), (wrong_user_token, 401)):
        people.credentials(HTTP_AUTHORIZATION=f"Token {presented}")
        assert people.get(reverse("approvals_api:request-list")).status_code == status

    # --- passwords on the login page: right, wrong, and typed into the username field ---
    person = UserFactory(username="night-shift")
    person.set_password(capture.secret("password", PASSWORD))
    person.save()
    capture.secret("wrong password", WRONG_PASSWORD)
    browser = Client()
    capture.clients.append(browser)
    login = resolve_url(settings.LOGIN_URL)
    assert browser.post(login, {"username": "night-shift", "password": WRONG_PASSWORD}).status_code == 200
    assert browser.post(login, {"username": PASSWORD, "password": "night-shift"}).status_code == 200
    assert browser.post(login, {"username": "night-shift", "password": PASSWORD}).status_code == 302

    # --- signed credentials: an approved execute dispatches signed commands ---
    dry_run = run_dry_run(world, requester, on_commit)
    approve_execute(dry_run, requester, *approvers)
    execute = run_execute(dry_run, requester, on_commit)
    assert execute.status == "dispatching", execute.error


def signing_key_material() -> dict[str, str]:
    private = load_private_key(Path(settings.TRACEFLUX_SIGNING_KEY_FILES[0]))
    raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    return {"signing key (hex)": raw.hex(), "signing key (base64)": base64.b64encode(raw).decode().rstrip("="),
            "signing key (base64url)": base64.urlsafe_b64encode(raw).decode().rstrip("="),
            "signing key (PEM body)": body}


def settings_keys() -> dict[str, str]:
    names = ("SECRET_KEY", "AUDIT_HMAC_KEY", "AGENT_KEY_HMAC_KEY", "ENROLLMENT_TOKEN_HMAC_KEY", "USER_TOKEN_HMAC_KEY")
    return {f"settings.{name}": getattr(settings, name) for name in names}


def database_text() -> dict[str, str]:
    """Every table as text (audit events, history rows and the rest), by model label."""
    return {
        model._meta.label: json.dumps(list(model._base_manager.values()), cls=DjangoJSONEncoder, ensure_ascii=False)
        for model in apps.get_models()
    }


def log_text(caplog) -> str:
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.__dict__))  # args, extras (a request's repr), exception text
    return "\n".join(parts)


@pytest.fixture
def world(environments, admin_user, artifact_store):
    prod = environment_set_posture(environment=environments["prod"], actor=admin_user, reason="executes need approval",
                                   replay_policy="allowed", execute_policy="require_approval")
    return make_world(prod, admin_user)


def test_it_never_logs_or_stores_a_key_token_password_or_signing_key(
    every_logger, world, admin_user, operator, approver1, approver2, django_capture_on_commit_callbacks
):
    capture = Capture()
    run_scenario(capture, world=world, admin_user=admin_user, requester=operator, approvers=(approver1, approver2),
                 on_commit=django_capture_on_commit_callbacks)
    for what, text in {**signing_key_material(), **settings_keys()}.items():
        capture.secret(what, text)
    # The capture works: the refusals were logged.
    logged = {(record.name, record.getMessage()) for record in every_logger.records}
    assert ("django.request", f"Unauthorized: {reverse('agent_api:heartbeats')}") in logged

    sinks = {"the log": log_text(every_logger), **{f"table {label}": text for label, text in database_text().items()}}
    sinks["cookies"] = "\n".join(str(client.cookies) for client in capture.clients)
    for command, stdout, stderr in capture.outputs:
        sinks[f"stderr of {command}"] = stderr
        sinks[f"stdout of {command}, but its last line"] = "\n".join(stdout.strip().splitlines()[:-1])
    found = [f"{what} in {where}" for what, needle in capture.needles() for where, text in sinks.items()
             if needle in text]
    assert not found, "secrets leaked:\n" + "\n".join(found)

    # The audit log has the events, without the secrets: this is what it says instead.
    from traceflux.audit.models import AuditEvent

    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"agent_key.created", "agent_key.revoked", "enrollment_token.created", "agent.enrolled",
            "user_token.created", "auth.login_failed"} <= actions
