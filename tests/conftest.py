"""Shared fixtures: the fixed cast of users, environments with per-environment permissions, and service gates."""

from __future__ import annotations

import os
import shutil
import socket
from functools import cache
from urllib.parse import urlparse

import pytest
from django.db import connection
from guardian.shortcuts import assign_perm
from hypothesis import settings as hypothesis_settings

from incidents.services import agent_key_create
from tests.factories import AgentFactory, EnvironmentFactory, UserFactory

hypothesis_settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
hypothesis_settings.register_profile("dev", max_examples=30, deadline=None)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")

IN_CI = os.environ.get("CI") == "true"


# --- services a test may need ------------------------------------------------------------------------------------


def _tcp_open(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"


def broker_url() -> str:
    return os.environ.get("TRACEFLUX_TEST_BROKER_URL") or "amqp://guest:guest@127.0.0.1:5672//"


@cache
def service_problem(name: str) -> str | None:
    """None when the service is usable here, else the reason it is not."""
    if name == "postgresql":
        if connection.vendor != "postgresql":
            return "needs PostgreSQL: set DATABASE_URL=postgres://postgres@127.0.0.1:5432/traceflux (CI=true does)"
        return None
    if name == "redis":
        return None if _tcp_open(redis_url(), 6379) else f"needs Redis at {redis_url()}"
    if name == "rabbitmq":
        return None if _tcp_open(broker_url(), 5672) else f"needs RabbitMQ at {broker_url()}"
    if name == "chromium":
        return None if os.path.exists("/usr/bin/chromium") else "needs Debian's chromium at /usr/bin/chromium"
    if name == "alertmanager":
        found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        # amtool ships in the same Debian package; the parity suite uses both.
        return None if found and shutil.which("amtool") else "needs prometheus-alertmanager and amtool on PATH"
    raise ValueError(f"unknown service {name!r}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers(name="needs"):
        for name in marker.args:
            problem = service_problem(name)
            if problem:
                if IN_CI:
                    pytest.fail(f"CI=true but this test {problem}", pytrace=False)
                pytest.skip(problem)


# --- the cast ----------------------------------------------------------------------------------------------------


@pytest.fixture
def environments(db):
    """dev, staging and prod with the demo's postures."""
    return {
        "dev": EnvironmentFactory(slug="dev", replay_policy="allowed", execute_policy="allow", deploy_policy="allow"),
        "staging": EnvironmentFactory(slug="staging", required_approvals=1),
        "prod": EnvironmentFactory(slug="prod", required_approvals=2),
    }


@pytest.fixture
def admin_user(db):
    return UserFactory(username="admin", is_superuser=True)


@pytest.fixture
def operator(environments):
    user = UserFactory(username="operator")
    for env in environments.values():
        assign_perm("incidents.view_environment", user, env)
        assign_perm("incidents.operate_environment", user, env)
        assign_perm("incidents.replay_dry_run", user, env)
        assign_perm("incidents.replay_execute", user, env)
    return user


def _approver(username: str, environments):
    user = UserFactory(username=username)
    for env in environments.values():
        assign_perm("incidents.view_environment", user, env)
    for slug in ("staging", "prod"):
        assign_perm("incidents.approve_environment", user, environments[slug])
    return user


@pytest.fixture
def approver1(environments):
    return _approver("approver1", environments)


@pytest.fixture
def approver2(environments):
    return _approver("approver2", environments)


@pytest.fixture
def outsider(db):
    """Staff, signed in, but granted no environment."""
    return UserFactory(username="outsider")


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    """PBKDF2 costs ~0.3 s per user created; tests are about behaviour, not hashing strength."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _audit_anchor_file(settings, tmp_path_factory):
    """audit_verify reads the anchor file: each test gets its own, not yet written, never the one under var/."""
    settings.TRACEFLUX_AUDIT_ANCHOR_FILE = tmp_path_factory.mktemp("anchor") / "anchors.jsonl"


# --- the agent API -----------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clear_cache():
    """Rate-limit counters, failure counters and refusal markers live in the cache: every test starts with none."""
    from django.core.cache import cache

    def clear() -> None:
        # On Redis, clear() would FLUSHDB under the other xdist worker's feet: delete only this worker's prefix.
        delete_pattern = getattr(cache, "delete_pattern", None)
        if delete_pattern is not None:
            delete_pattern("*")
        else:
            cache.clear()

    clear()
    yield
    clear()


@pytest.fixture
def artifact_store(settings, tmp_path):
    """A MEDIA_ROOT of the test's own, for tests that upload artifacts or store replay reports; it can be walked
    for leftovers."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = root
    settings.FILE_UPLOAD_TEMP_DIR = None
    return root


@pytest.fixture
def signing_key_file(settings, tmp_path):
    """Executes sign their commands: the test signs with its own key file (the embedded default lives under var/)."""
    from traceflux.signing import signing_keys_reset, write_private_key

    path = tmp_path / "signing" / "ed25519.pem"
    path.parent.mkdir()
    write_private_key(path)
    settings.TRACEFLUX_SIGNING_KEY_FILES = [str(path)]
    signing_keys_reset()
    yield path
    signing_keys_reset()


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def prod_agent(environments):
    from tests.factories import AgentFactory

    return AgentFactory(environment=environments["prod"], name="edge-prod-1", version="1.4.0")


@pytest.fixture
def prod_agent_key(prod_agent) -> str:
    """The plaintext key of prod_agent, with every scope."""
    from incidents.services import agent_key_create
    from traceflux.audit import SYSTEM

    _, plaintext = agent_key_create(agent=prod_agent, actor=SYSTEM)
    return plaintext


@pytest.fixture
def agent_client(prod_agent_key):
    """An API client that authenticates as prod_agent."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {prod_agent_key}")
    return client


# --- an agent in staging with an upload key ------------------------------------------------------------------------

AGENT_NAME = "edge-agent-01"  # the engine's sample bundles name this agent and the staging environment


@pytest.fixture
def staging(db):
    return EnvironmentFactory(slug="staging")


@pytest.fixture
def agent(staging):
    return AgentFactory(environment=staging, name=AGENT_NAME)


@pytest.fixture
def agent_key(agent) -> str:
    """A key with exactly the upload scope, as the plaintext the agent sends."""
    _, plaintext = agent_key_create(agent=agent, actor=None, scopes=["artifacts:write"])
    return plaintext
