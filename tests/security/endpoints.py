"""Every URL pattern of the URLconf, enumerated from the resolver, and a concrete path for each, filled with ids of real
objects: the authorization matrix and the CSRF test request every pattern there is, so a new URL cannot escape them.

An Endpoint is one URLPattern with the route it is reached by (the joined route Django reports as ResolverMatch.route)
and its key: `namespace:name`, or the route for the few unnamed patterns (the admin's object redirects, its catch-all).
`path_for()` fills each level's converters or regex groups from ARGUMENTS (by key or namespace) or, under /admin/, from
the object of the model whose URLs they are; it fails naming the pattern and the argument it has no value for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlparse

from django.conf import settings
from django.contrib import admin
from django.db.models import Model
from django.shortcuts import resolve_url
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.resolvers import RegexPattern, RoutePattern

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Endpoint:
    route: str  # as ResolverMatch.route reports it
    name: str  # "namespace:name", "" when the pattern has no name
    levels: tuple[Any, ...]  # the pattern of each level, outermost first (RoutePattern or RegexPattern)

    @property
    def key(self) -> str:
        return self.name or self.route

    @property
    def namespace(self) -> str:
        return self.name.rpartition(":")[0]

    @property
    def is_admin(self) -> bool:
        return self.route.startswith("admin/")

    @property
    def is_api(self) -> bool:
        return self.route.startswith("api/")

    def __str__(self) -> str:
        return self.key


def _join(route: str, part: str) -> str:
    # django.urls.resolvers.URLResolver._join_route: the second route loses its leading ^.
    return part if not route else route + part.removeprefix("^")


def endpoints() -> list[Endpoint]:
    """Every URLPattern reachable from ROOT_URLCONF, in resolution order."""

    def walk(patterns: Sequence[Any], route: str, namespaces: tuple[str, ...],
             levels: tuple[Any, ...]) -> Iterator[Endpoint]:
        for pattern in patterns:
            joined = _join(route, str(pattern.pattern))
            if isinstance(pattern, URLResolver):
                inner = (*namespaces, pattern.namespace) if pattern.namespace else namespaces
                yield from walk(pattern.url_patterns, joined, inner, (*levels, pattern.pattern))
            else:
                assert isinstance(pattern, URLPattern), pattern
                name = ":".join((*namespaces, pattern.name)) if pattern.name else ""
                yield Endpoint(joined, name, (*levels, pattern.pattern))

    return list(walk(get_resolver().url_patterns, "", (), ()))


# --- filling a pattern -------------------------------------------------------------------------------------------

_CONVERTER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<parameter>[^>]+)>")
_NAMED_GROUP = re.compile(r"\(\?P<(?P<parameter>\w+)>")


def _fill_regex(regex: str, named: Mapping[str, Any], positional: list[Any], endpoint: Endpoint) -> str:
    """A regex pattern with each group (named, or positional in order) replaced by its value; ^, $ and escapes gone."""
    out, i = [], 0
    while i < len(regex):
        char = regex[i]
        if char == "\\":
            out.append(regex[i + 1])
            i += 2
        elif char == "(":
            depth, j = 1, i + 1
            while depth:
                depth += {"(": 1, ")": -1}.get(regex[j], 0)
                j += 1 if regex[j] != "\\" else 2
            group = _NAMED_GROUP.match(regex, i)
            if group:
                out.append(str(_value(named, group["parameter"], endpoint)))
            elif positional:
                out.append(str(positional.pop(0)))
            else:
                raise AssertionError(f"{endpoint}: no value for positional group {regex[i:j]} (add it to ARGUMENTS)")
            i = j
        elif char in "^$":
            i += 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _value(values: Mapping[str, Any], parameter: str, endpoint: Endpoint) -> Any:
    if parameter not in values:
        raise AssertionError(f"{endpoint}: no value for <{parameter}> (add it to ARGUMENTS, endpoints.py)")
    return values[parameter]


def path_for(endpoint: Endpoint, estate: Any) -> str:
    """A concrete path that resolves to this very pattern, its arguments naming real objects of the estate (worked out
    once per estate: the objects do not change)."""
    if endpoint.route not in estate.paths:
        estate.paths[endpoint.route] = _path_for(endpoint, estate)
    return estate.paths[endpoint.route]


def _path_for(endpoint: Endpoint, estate: Any) -> str:
    named, positional = arguments(endpoint, estate)
    positional = list(positional)
    parts = []
    for level in endpoint.levels:
        if isinstance(level, RoutePattern):
            parts.append(_CONVERTER.sub(lambda m: str(_value(named, m["parameter"], endpoint)), str(level)))
        else:
            assert isinstance(level, RegexPattern), level
            parts.append(_fill_regex(str(level), named, positional, endpoint))
    path = "/" + "".join(parts)
    match = resolve(path)
    assert match.route == endpoint.route, f"{endpoint}: {path} resolves to {match.route!r}, not to the pattern itself"
    return path


def admin_model(endpoint: Endpoint) -> type[Model] | None:
    """The registered model whose admin URLs this endpoint is one of (admin/<app>/<model>/...)."""
    for model in admin.site._registry:
        if endpoint.route.startswith(f"admin/{model._meta.app_label}/{model._meta.model_name}/"):
            return model
    return None


# Arguments by key, then by namespace. Each value is read from the estate (tests/security/conftest.py).
ARGUMENTS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "audit-history": lambda e: {"label": e.incident._meta.label_lower, "pk": e.incident.pk},
    "incidents-ui": lambda e: {"key": e.incident.ref},
    "approvals": lambda e: {"pk": e.approval.pk, "pipeline_version_id": e.world.tightened.pk},
    "replays": lambda e: {"pk": e.dry_run.pk},
    "agent_api": lambda e: {"pk": e.command.pk},
    "approvals_api": lambda e: {"pk": e.approval.pk},
    "replays-api": lambda e: {"pk": e.dry_run.pk},
    "admin:app_list": lambda e: {"app_label": "incidents"},
    "admin:view_on_site": lambda e: {"content_type_id": e.content_type_id(e.incident), "object_id": e.incident.pk},
    # The catch-all: a page the admin does not have.
    "admin/(?P<url>.*)$": lambda e: {"url": "no-such-page/"},
}


def arguments(endpoint: Endpoint, estate: Any) -> tuple[dict[str, Any], list[Any]]:
    """(named, positional) values for the endpoint's converters and groups."""
    model = admin_model(endpoint) if endpoint.is_admin else None
    if model is not None:
        obj = estate.objects[model]
        # simple-history's version page: ^([^/]+)/history/([^/]+)/$ takes the object and one of its versions.
        history = getattr(obj, "history", None)
        version = history.order_by("history_id").first().history_id if history is not None else None
        return {"object_id": obj.pk, "id": obj.pk}, [obj.pk, version]
    build = ARGUMENTS.get(endpoint.key) or ARGUMENTS.get(endpoint.namespace)
    return (build(estate) if build else {}), []


# --- what each request sends ---------------------------------------------------------------------------------------

# A query string for every method of a pattern, and a body for some of its methods. Without them a request would be
# refused for its missing input before the permission that matters is checked (a dry run for no incident, a decision
# without a comment). A body is a dict: JSON under /api/, a form elsewhere; the upload sends the estate's bundle.
QUERIES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "replays:new": lambda e: {"incident": e.incident.ref},
    "replays:compare": lambda e: {"a": e.dry_run.pk, "b": e.dry_run.pk},
}
BODIES: dict[str, dict[str, Callable[[Any], dict[str, Any]]]] = {
    "incidents-ui:transition": {"POST": lambda e: {"to": "acknowledged", "reason": "on it"}},
    "incidents-ui:add_note": {"POST": lambda e: {"body": "checked the edge logs"}},
    "approvals:approve": {"POST": lambda e: {"approve-comment": "parity is high"}},
    "approvals:deny": {"POST": lambda e: {"deny-comment": "not during the freeze"}},
    "approvals:promote": {"POST": lambda e: {"environment": "prod", "reason": "roll out the tightened policy"}},
    "replays:new": {"POST": lambda e: {"incident": e.incident.ref, "artifact": e.world.bundle.pk,
                                       "pipeline_version": e.world.tightened.pk}},
    "replays:request_approval": {"POST": lambda e: {"approval-reason": "drain POP-12"}},
    "replays:cancel": {"POST": lambda e: {"cancel-reason": "wrong window"}},
    "agent_api:enroll": {"POST": lambda e: {"token": e.secrets["enrollment_token"], "name": "edge-prod-new",
                                            "hostname": "edge-prod-new.example.test"}},
    "agent_api:heartbeats": {"POST": lambda e: {"status": "ok", "environment": "prod"}},
    "agent_api:command-ack": {"POST": lambda e: {"status": "succeeded", "output": {}}},
    "artifacts-api:upload": {"POST": lambda e: {"kind": "incident_bundle", "file": e.bundle_file()}},
    "approvals_api:request-approve": {"POST": lambda e: {"comment": "parity is high"}},
    "approvals_api:request-deny": {"POST": lambda e: {"comment": "not during the freeze"}},
    "replays-api:replay-list": {"POST": lambda e: {"mode": "dry_run", "incident": e.incident.ref,
                                                   "artifact": e.world.bundle.pk}},
}


def send(client: Client, endpoint: Endpoint, method: str, estate: Any) -> Any:
    """One request of `method` to the endpoint's concrete path, with its query and body."""
    path = path_for(endpoint, estate)
    query = QUERIES.get(endpoint.key)
    if query:
        path = f"{path}?{urlencode(query(estate))}"
    body = BODIES.get(endpoint.key, {}).get(method)
    data = body(estate) if body else None
    if method in ("GET", "HEAD", "OPTIONS", "DELETE"):
        return client.generic(method, path)
    if endpoint.key == "artifacts-api:upload" and data is not None:
        return client.post(path, data)  # multipart, as agents send it
    if endpoint.is_api:
        return client.generic(method, path, json.dumps(data or {}), content_type="application/json")
    if method == "POST":
        return client.post(path, data or {})
    return client.generic(method, path, urlencode(data or {}), content_type="application/x-www-form-urlencoded")


def is_login_redirect(response: Any) -> bool:
    if response.status_code not in (301, 302, 303, 307, 308):
        return False
    return urlparse(response["Location"]).path == resolve_url(settings.LOGIN_URL)
