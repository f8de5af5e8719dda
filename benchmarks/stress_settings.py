"""Settings for the gunicorn of `make stress` (benchmarks/stress.py) only: the project's own, run in production mode,
with the cache's keys under a prefix of their own.

The stress run shares a Redis server (one database of it) with whatever else runs on the machine. Its rate-limit
counters must meet no one else's, and it deletes its own keys, and only those, before and after the run: hence one
fixed prefix nothing else uses. The product never uses this module.
"""

from traceflux.settings import *  # noqa: F403
from traceflux.settings import CACHES

STRESS_CACHE_KEY_PREFIX = "tfstress"  # benchmarks/stress.py deletes "tfstress:*" (django-redis: prefix:version:key)

CACHE_KEY_PREFIX = STRESS_CACHE_KEY_PREFIX
CACHES["default"]["KEY_PREFIX"] = STRESS_CACHE_KEY_PREFIX
