"""Settings, start-up failures, the Redis cache, a real Celery worker and the engine's command line.

Every settings variant runs in a subprocess (`manage.py ...`), so this test process keeps the settings it started with.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from replays.engine import spec_hash
from tests.conftest import broker_url, redis_url

ROOT = Path(__file__).resolve().parent.parent

ENV_READ = re.compile(
    r'(?:(?:env_str|env_bool|env_int|env_list|os\.environ\.get|os\.getenv)\(|os\.environ\[)\s*"([A-Z][A-Z0-9_]*)"'
)


def settings_variables() -> set[str]:
    """Every environment variable traceflux/settings.py reads, found in its source."""
    return set(ENV_READ.findall((ROOT / "traceflux" / "settings.py").read_text(encoding="utf-8")))


# What settings read, plus what would otherwise leak the caller's choices into a subprocess.
SETTINGS_VARIABLES = frozenset({*settings_variables(), "DJANGO_SETTINGS_MODULE"})

PRODUCTION = {
    "TRACEFLUX_MODE": "production",
    "SECRET_KEY": "pr0duction-Secret-key-for-the-settings-test-9f8e7d6c5b4a3210",
    "ALLOWED_HOSTS": "traceflux.example.com",
    # Nothing connects at start-up or during `check`, so these hosts need not exist.
    "DATABASE_URL": "postgres://traceflux:pw@db.example.invalid:5432/traceflux",
    "REDIS_URL": "redis://cache.example.invalid:6379/0",
    "CELERY_BROKER_URL": "amqp://traceflux:pw@mq.example.invalid:5672//",
    # Read by the system checks, so `check` needs a real file here (see production_key); `shell` never reads it.
    "TRACEFLUX_SIGNING_KEY_FILES": "/run/secrets/traceflux-signing.pem",
}


def production_key(tmp_path: Path) -> dict[str, str]:
    """A real signing key for the checks of a production-mode subprocess."""
    from traceflux.signing import write_private_key

    path = tmp_path / "secrets" / "signing.pem"
    write_private_key(path)
    return {"TRACEFLUX_SIGNING_KEY_FILES": str(path)}


def clean_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARIABLES}
    env["TRACEFLUX_VAR_DIR"] = str(tmp_path / "var")
    env.update(overrides)
    return env


def manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean_env(tmp_path, **env),
        capture_output=True, text=True, timeout=120, check=False,
    )


def shell(tmp_path: Path, code: str, **env: str) -> str:
    result = manage(tmp_path, "shell", "--no-startup", "--verbosity", "0", "-c", code, **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# --- production mode ---------------------------------------------------------------------------------------------


def test_it_passes_the_deploy_checks_in_production_mode(tmp_path):
    env = {**PRODUCTION, **production_key(tmp_path)}
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_it_turns_on_the_secure_defaults_in_production_mode(tmp_path):
    code = (
        "import json; from django.conf import settings as s; print(json.dumps([s.DEBUG, s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.CELERY_TASK_ALWAYS_EAGER, "
        "s.CACHES['default']['BACKEND'], s.DATABASES['default']['ENGINE']]))"
    )
    debug, session_secure, csrf_secure, ssl_redirect, hsts, eager, cache, engine = json.loads(
        shell(tmp_path, code, **PRODUCTION)
    )
    assert (debug, session_secure, csrf_secure, ssl_redirect, eager) == (False, True, True, True, False)
    assert hsts >= 31536000
    assert cache == "django_redis.cache.RedisCache"
    assert engine == "django.db.backends.postgresql"


@pytest.mark.parametrize(
    "missing",
    ["REDIS_URL", "SECRET_KEY", "DATABASE_URL", "ALLOWED_HOSTS", "CELERY_BROKER_URL", "TRACEFLUX_SIGNING_KEY_FILES"],
)
def test_it_refuses_to_start_in_production_mode_without_a_required_variable(tmp_path, missing):
    env = {k: v for k, v in PRODUCTION.items() if k != missing}
    result = manage(tmp_path, "check", **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert missing in result.stderr.strip().splitlines()[-1]


def test_it_fails_the_checks_naming_a_signing_key_file_that_is_missing(tmp_path):
    result = manage(tmp_path, "check", **PRODUCTION)
    assert result.returncode != 0
    assert "incidents.E001" in result.stderr
    assert "TRACEFLUX_SIGNING_KEY_FILES: /run/secrets/traceflux-signing.pem: No such file or directory" in result.stderr


def test_it_signs_with_the_first_configured_key_and_never_generates_one_in_production(tmp_path):
    keys = production_key(tmp_path)
    code = "from traceflux import signing; print(signing.published_keys()[0]['key_id'], signing.signer() is not None)"
    key_id, signs = shell(tmp_path, code, **{**PRODUCTION, **keys}).split()
    from replays.engine.credentials import key_id as id_of
    from traceflux.signing import load_private_key

    assert key_id == id_of(load_private_key(Path(keys["TRACEFLUX_SIGNING_KEY_FILES"])).public_key()) and signs == "True"
    assert not (tmp_path / "var" / "signing").exists()


def test_it_generates_the_embedded_signing_key_under_the_var_dir_on_first_use(tmp_path):
    code = "from traceflux import signing; print(signing.published_keys()[0]['key_id'])"
    first = shell(tmp_path, code)
    assert first.startswith("ed25519:")
    assert (tmp_path / "var" / "signing" / "ed25519.pem").stat().st_mode & 0o777 == 0o600
    assert shell(tmp_path, code) == first


def test_it_refuses_a_short_secret_key_in_production_mode(tmp_path):
    result = manage(tmp_path, "check", **{**PRODUCTION, "SECRET_KEY": "too-short"})
    assert result.returncode != 0
    assert "SECRET_KEY must be at least 50 characters" in result.stderr


# --- loud failures on bad values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "maybe"}, "environment variable DEBUG='maybe' is not a boolean"),
        ({"TRACEFLUX_MODE": "staging"}, "TRACEFLUX_MODE='staging' is not one of: embedded, production"),
        ({"CELERY_VISIBILITY_TIMEOUT": "5"}, "environment variable CELERY_VISIBILITY_TIMEOUT=5 must be at least 60"),
        ({**PRODUCTION, "SECURE_SSL_REDIRECT": "perhaps"},
         "environment variable SECURE_SSL_REDIRECT='perhaps' is not a boolean"),
        ({**PRODUCTION, "DB_CONN_MAX_AGE": "a minute"},
         "environment variable DB_CONN_MAX_AGE='a minute' is not an integer"),
    ],
    ids=["DEBUG", "TRACEFLUX_MODE", "CELERY_VISIBILITY_TIMEOUT", "SECURE_SSL_REDIRECT", "DB_CONN_MAX_AGE"],
)
def test_it_fails_loudly_naming_a_variable_with_a_bad_value(tmp_path, env, message):
    result = manage(tmp_path, "check", **env)
    assert result.returncode != 0
    assert message in result.stderr


# --- embedded mode and the rate-limit cache checks ---------------------------------------------------------------


def silenced_checks(tmp_path: Path, **env: str) -> list[str]:
    code = "import json; from django.conf import settings; print(json.dumps(settings.SILENCED_SYSTEM_CHECKS))"
    return json.loads(shell(tmp_path, code, **env))


def test_it_passes_the_checks_in_embedded_mode_with_only_the_rate_limit_cache_checks_silenced(tmp_path):
    result = manage(tmp_path, "check", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(silenced_checks(tmp_path)) == ["django_ratelimit.E003", "django_ratelimit.W001"]
    assert "System check identified no issues (2 silenced)." in result.stdout


def test_it_silences_nothing_when_redis_is_the_cache(tmp_path):
    assert silenced_checks(tmp_path, REDIS_URL="redis://127.0.0.1:6379/15") == []
    result = manage(tmp_path, "check", "--fail-level", "WARNING", REDIS_URL="redis://127.0.0.1:6379/15")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_it_keeps_the_embedded_database_under_the_var_dir(tmp_path):
    code = "from django.conf import settings; print(settings.DATABASES['default']['NAME'])"
    assert shell(tmp_path, code) == str(tmp_path / "var" / "traceflux.sqlite3")


# --- Redis -------------------------------------------------------------------------------------------------------


def test_it_documents_every_environment_variable_it_reads():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", readme, flags=re.MULTILINE))
    read = settings_variables() - {"PYTEST_XDIST_WORKER"}  # set by pytest-xdist, not by an operator
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"} <= read
    assert not read - documented, f"README.md's variable table lacks {sorted(read - documented)}"


def test_it_gives_each_xdist_worker_its_own_cache_key_prefix():
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    assert f"tf{worker}" == settings.CACHE_KEY_PREFIX
    assert settings.CACHES["default"]["KEY_PREFIX"] == settings.CACHE_KEY_PREFIX


@pytest.mark.needs("redis")
def test_it_round_trips_a_value_through_redis_under_the_worker_prefix(tmp_path):
    import redis

    worker = os.environ.get("PYTEST_XDIST_WORKER") or "gw0"
    key = f"settings-test-{uuid.uuid4().hex}"
    code = (
        "from django.core.cache import cache; from django.conf import settings; "
        f"cache.set({key!r}, {{'answer': 42}}, timeout=60); "
        f"print(settings.CACHES['default']['BACKEND'], cache.make_key({key!r}), cache.get({key!r}))"
    )
    expected_key = f"tf{worker}:1:{key}"
    client = redis.Redis.from_url(redis_url())
    try:
        output = shell(tmp_path, code, REDIS_URL=redis_url(), PYTEST_XDIST_WORKER=worker)
        backend, stored_key, value = output.split(" ", 2)
        assert backend == "django_redis.cache.RedisCache"
        assert value == "{'answer': 42}"
        assert stored_key == expected_key
        assert client.exists(expected_key) == 1
        assert 0 < client.ttl(expected_key) <= 60
    finally:
        client.delete(expected_key)
        client.close()


# --- a real Celery worker ----------------------------------------------------------------------------------------


def stop_worker(app, worker: subprocess.Popen, node: str) -> None:
    """A remote shutdown stops an idle worker at once; SIGTERM waits out its poll timeout (about 10 s)."""
    if worker.poll() is None:
        with contextlib.suppress(Exception):
            app.control.shutdown(destination=[node])
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(timeout=5)
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=5)


@pytest.mark.needs("rabbitmq")
def test_it_answers_a_ping_and_runs_a_task_on_a_real_celery_worker(tmp_path):
    from celery import Celery

    run = uuid.uuid4().hex[:12]
    queue = f"traceflux-test-{run}"  # a queue of its own, so concurrent runs never take each other's tasks
    node = f"test-{run}@{socket.gethostname()}"
    env = clean_env(tmp_path, CELERY_BROKER_URL=broker_url(), CELERY_RESULT_BACKEND="rpc://")
    log_path = tmp_path / "worker.log"
    app = Celery("traceflux-test", broker=broker_url(), backend="rpc://")
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                    broker_connection_retry_on_startup=True)
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "traceflux", "worker", "--pool=solo", "--concurrency=1",
             "-Q", queue, "-n", node, "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "INFO"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        replies: list[dict] = []
        deadline = time.monotonic() + 20
        while not replies and time.monotonic() < deadline:
            assert worker.poll() is None, f"the worker exited with {worker.returncode}:\n{log_path.read_text()}"
            replies = app.control.ping(destination=[node], timeout=1.0)
        assert replies == [{node: {"ok": "pong"}}], f"no answer from {node}:\n{log_path.read_text()}"

        result = app.send_task("traceflux.tasks.ping", queue=queue)
        assert result.get(timeout=20) == "pong"
    finally:
        stop_worker(app, worker, node)
        with app.connection_for_write() as connection:
            connection.default_channel.queue_delete(queue)
        app.close()


# --- the engine's command line -----------------------------------------------------------------------------------


def engine(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replays.engine", *args], cwd=ROOT, input=stdin, capture_output=True, text=True,
        timeout=60, check=False, env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
    )


def test_it_prints_the_same_spec_hash_on_the_command_line_as_the_library(tmp_path):
    spec = {"version": "v2.14.3", "fingerprint": {"fields": ["source", "name"]}, "label": "Zürich edge", "ratio": 0.5}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec, indent=4, ensure_ascii=True), encoding="utf-8")
    result = engine("spec-hash", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == spec_hash(spec) + "\n"
    assert engine("spec-hash", "-", stdin=json.dumps(spec)).stdout == result.stdout


def test_it_exits_2_naming_the_file_when_the_spec_is_not_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"version": "v1",', encoding="utf-8")
    result = engine("spec-hash", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {path}: ")


def test_it_imports_the_engine_without_importing_django():
    code = "import replays.engine, sys; assert 'django' not in sys.modules, 'replays.engine imported django'"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
