"""Turns whatever a service passes as actor, target or environment into plain stored values, without importing apps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AuditActor:
    """An explicit actor, for callers that are not a Django user (agents, the system, a named job)."""

    kind: str
    id: str = ""
    name: str = ""


SYSTEM = AuditActor(kind="system", id="", name="system")


def resolve_actor(actor: Any) -> tuple[str, str, str]:
    if actor is None:
        return SYSTEM.kind, SYSTEM.id, SYSTEM.name
    if isinstance(actor, AuditActor):
        return actor.kind, str(actor.id), actor.name
    as_actor = getattr(actor, "audit_actor", None)
    if callable(as_actor):
        return resolve_actor(as_actor())
    if hasattr(actor, "get_username"):
        if not getattr(actor, "is_authenticated", False):
            return "user", "", "anonymous"
        return "user", str(actor.pk), actor.get_username()
    raise TypeError(f"cannot audit actor of type {type(actor).__name__}")


def resolve_target(target: Any) -> tuple[str, str, str]:
    if target is None:
        return "", "", ""
    if isinstance(target, tuple):
        target_type, target_id, target_repr = target
        return str(target_type), str(target_id), str(target_repr)[:200]
    meta = getattr(target, "_meta", None)
    if meta is None:
        raise TypeError(f"cannot audit target of type {type(target).__name__}")
    return meta.label_lower, str(target.pk), str(target)[:200]


def resolve_environment(environment: Any, target: Any) -> str:
    if environment is None:
        environment = getattr(target, "audit_environment", None)
        if callable(environment):
            environment = environment()
    if environment is None:
        return ""
    if isinstance(environment, str):
        return environment
    return str(environment.slug)
