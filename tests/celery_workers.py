"""A real Celery worker for the tests that need one (tests/replays/test_worker.py, tests/faults): the environment it
runs with, this process's Celery app pointed at RabbitMQ, and the wait until a started worker consumes its queue."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

from django.db import connection
from kombu import pools as kombu_pools

from tests.conftest import broker_url
from tests.test_settings import clean_env
from traceflux.celery import app as celery_app


def worker_env(tmp_path: Path, *, media_root: Path, signing_key: Path, **extra: str) -> dict[str, str]:
    """A worker's environment: this test's database, broker, media root and signing key (plus `extra`)."""
    return clean_env(
        tmp_path,
        CELERY_BROKER_URL=broker_url(),
        DATABASE_URL=worker_database_url(),
        MEDIA_ROOT=str(media_root),
        TRACEFLUX_SIGNING_KEY_FILES=str(signing_key),
        **extra,
    )


def await_ping(node: str, *, alive: Callable[[], bool], log: Callable[[], str], timeout: float = 30) -> None:
    """Return once the worker `node` answers a ping: only then has it declared and is it consuming its queue."""
    replies: list[dict] = []
    deadline = time.monotonic() + timeout
    while not replies and time.monotonic() < deadline:
        assert alive(), f"the worker exited:\n{log()}"
        replies = celery_app.control.ping(destination=[node], timeout=1.0)
    assert replies, f"no answer from {node}:\n{log()}"


def worker_database_url() -> str:
    """The test database (test_<name>, per xdist worker) as a DATABASE_URL for the worker's settings."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "postgres", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@contextlib.contextmanager
def celery_on_rabbitmq(queue: str) -> Iterator[None]:
    """Point this process's Celery app at RabbitMQ and route run_replay to `queue`, restoring all of it afterwards.

    The app's settings are eager here (no CELERY_BROKER_URL), and other tests rely on that: only the keys changed are
    put back, and the broker connection pools made meanwhile are closed and forgotten so the next user builds its own.
    """
    keys = ("task_always_eager", "broker_url", "task_routes")
    saved = {key: celery_app.conf[key] for key in keys}
    celery_app.conf.update(
        task_always_eager=False,
        broker_url=broker_url(),
        task_routes={"replays.tasks.run_replay": {"queue": queue}},  # update() flushes the app's cached router
    )
    _forget_connections()
    try:
        yield
    finally:
        celery_app.conf.update(saved)
        _forget_connections()


def _forget_connections() -> None:
    # The app's pools live in kombu's process-wide groups, keyed by broker URL: a pool closed but left there would be
    # handed, closed, to the next test on the same broker. Take them out of the groups, then close them.
    ours = [pool for pool in (celery_app._pool, celery_app.amqp._producer_pool) if pool is not None]
    for group in (kombu_pools.connections, kombu_pools.producers):
        for key in [key for key, pool in group.items() if any(pool is mine for mine in ours)]:
            dict.__delitem__(group, key)  # the keys listed are hashed already; group[key] would hash them again
    for pool in ours:
        with contextlib.suppress(Exception):
            pool.force_close_all()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
