"""One way to start callables at the same instant in threads, for the race tests on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connection


def race(targets: list[Callable[[], Any]], *, timeout: float = 30) -> tuple[list[Any], list[BaseException]]:
    """Run the callables at the same instant, each in its own thread and database connection.

    Returns (results of those that returned, exceptions of those that raised): a thread's exception would otherwise
    vanish. Each thread closes its connection, so the test database can be dropped afterwards.
    """
    barrier = threading.Barrier(len(targets))
    results: list[Any] = []
    errors: list[BaseException] = []

    def run(fn: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=10)
            results.append(fn())
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(fn,)) for fn in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return results, errors
