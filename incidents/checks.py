"""System checks: the signing keys load, so a missing or unreadable key file fails `manage.py check` (and migrate,
and start-up) instead of the first execute-mode dispatch or the first agent asking for the keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register
from django.core.exceptions import ImproperlyConfigured

from traceflux import signing


@register(Tags.security)
def signing_keys_check(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    files = [Path(name) for name in settings.TRACEFLUX_SIGNING_KEY_FILES]
    if settings.TRACEFLUX_SIGNING_KEY_GENERATE and files and not files[0].exists():
        return []  # the embedded mode's own key is made on first use, not by a check
    try:
        signing.keyring()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), hint="See docs/operations.md, 'Signing keys'.", id="incidents.E001")]
    return []
