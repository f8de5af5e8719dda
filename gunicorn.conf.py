"""gunicorn's settings for TraceFlux, read from the working directory: `gunicorn traceflux.wsgi --bind ... --workers N`.

Only what the portal needs of gunicorn itself: with PROMETHEUS_MULTIPROC_DIR set (several workers; see "Metrics" in
docs/operations.md), a worker that exits is marked dead, so its live gauges stop counting; its counters and
histograms stay in the totals, as Prometheus expects of counters.
"""

from __future__ import annotations

import os
from typing import Any


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
