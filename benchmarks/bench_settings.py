"""Settings for the agent-API benchmark's gunicorn only: the project's own, with one extra URL (benchmarks.bench_urls).

benchmarks/agent_api.py serves `traceflux.wsgi` with DJANGO_SETTINGS_MODULE pointing here. The product never uses it.
"""

from traceflux.settings import *  # noqa: F403

ROOT_URLCONF = "benchmarks.bench_urls"
