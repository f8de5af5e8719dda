"""The digest an approval is bound to: sha256 of the canonical JSON of exactly what is approved."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from incidents.models import Deployment, Environment
from replays.engine import canonical_json, sha256_hex


def _jsonable(value: Any) -> Any:
    """Datetimes as ISO 8601 and tuples as lists; everything else must already be a JSON value."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def approval_digest(
    *,
    subject_kind: str,
    environment: Environment | str,
    spec_hash: str,
    artifact_sha256: str | None,
    scope: Any,
    window: Any,
    mode: str,
    capabilities: Iterable[str],
) -> str:
    """Hex sha256 of the canonical JSON of what is approved. Any change to any part gives another digest.

    Capabilities are a set: their order does not matter. Raises replays.engine.CanonicalJSONError on a value that is
    not JSON (datetimes are accepted and written as ISO 8601).
    """
    approved = {
        "subject_kind": str(subject_kind),
        "environment": environment if isinstance(environment, str) else environment.slug,
        "spec_hash": spec_hash,
        "artifact_sha256": artifact_sha256,
        "scope": _jsonable(scope),
        "window": _jsonable(window),
        "mode": mode,
        "capabilities": sorted(set(capabilities)),
    }
    return sha256_hex(canonical_json(approved))


def deployment_digest(deployment: Deployment) -> str:
    """The digest of a deployment as it stands: its environment, pipeline version and targets."""
    return approval_digest(
        subject_kind="deployment",
        environment=deployment.environment,
        spec_hash=deployment.pipeline_version.spec_hash,
        artifact_sha256=None,
        scope={
            "regions": sorted(deployment.target_regions),
            "pops": sorted(deployment.target_pops),
            "services": sorted(deployment.target_services),
        },
        window=None,
        mode="deploy",
        capabilities=["deploy"],
    )
