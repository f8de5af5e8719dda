"""The console's sign-in (admin:login, the LOGIN_URL), throttled, and its failures audited.

Every attempt (a POST, or a PUT, which Django's LoginView treats alike) is counted in the shared cache with
django-ratelimit's fixed windows, like the agent API's limits: per client address (`login_ip`) and per username
(`login_username`), at the rates of settings.TRACEFLUX_RATE_LIMITS. An attempt over either budget is answered 429 with
Retry-After before any password is checked. When the cache does not answer, no attempt can be counted and none is
made: 503 with Retry-After (as on the agent API).

A failed attempt is audited as `auth.login_failed`. The event names the account only when it exists, so a password
typed into the username field never reaches the audit log; it never holds the password.

Wired in traceflux/urls.py: `admin.site.login = throttled_login(admin.site)`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.admin import AdminSite
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers

from incidents.api.limits import CACHE_ERRORS, UNAVAILABLE_RETRY_AFTER, RateLimited, client_ip, enforce_rate
from traceflux import audit

log = logging.getLogger(__name__)

ATTEMPT_METHODS = frozenset({"POST", "PUT"})  # LoginView.put is its post


def _refusal(request: HttpRequest, site: AdminSite, *, title: str, detail: str, status: int,
             wait: int) -> HttpResponse:
    context = {**site.each_context(request), "title": title, "detail": detail, "wait": wait}
    response = TemplateResponse(request, "admin/login_refused.html", context, status=status)
    response["Retry-After"] = str(wait)
    add_never_cache_headers(response)
    return response


def _throttled(request: HttpRequest, site: AdminSite, *, what: str, rate: str, wait: int) -> HttpResponse:
    log.warning("login throttled %s from %s (%s)", what, client_ip(request), rate)
    detail = f"Too many sign-in attempts {what} (at most {rate}). Try again in {wait} s."
    return _refusal(request, site, title="Too many sign-in attempts", detail=detail, status=429, wait=wait)


def _unavailable(request: HttpRequest, site: AdminSite, exc: Exception) -> HttpResponse:
    log.warning("login refused: the cache holding the sign-in budgets does not answer: %s: %s", type(exc).__name__, exc)
    wait = UNAVAILABLE_RETRY_AFTER
    detail = f"Signing in is unavailable for a moment (attempts cannot be counted). Try again in {wait} s."
    return _refusal(request, site, title="Signing in is unavailable", detail=detail, status=503, wait=wait)


def _audit_failure(request: HttpRequest, username: str) -> None:
    users = get_user_model()
    account = users._default_manager.filter(**{users.USERNAME_FIELD: username}).first() if username else None
    audit.record(
        actor=request.user, action="auth.login_failed", outcome="denied", target=account,
        reason="wrong username or password, or not a staff account",
        data={"username": account.get_username() if account else None, "known_account": account is not None},
    )


def throttled_login(site: AdminSite) -> Callable[..., HttpResponse]:
    """The site's login view, behind the per-address and per-username budgets."""
    login = site.login

    @wraps(login)
    def view(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if request.method not in ATTEMPT_METHODS:
            return login(request, extra_context)
        username = request.POST.get("username", "").strip()
        what = "from this address"
        try:
            enforce_rate(request, group="login_ip", key=f"ip:{client_ip(request)}")
            if username:
                what = "for this username"
                enforce_rate(request, group="login_username", key=f"username:{username.lower()}")
        except RateLimited as exc:
            return _throttled(request, site, what=what, rate=exc.rate, wait=int(exc.wait))
        except CACHE_ERRORS as exc:
            return _unavailable(request, site, exc)
        response = login(request, extra_context)
        if not (isinstance(response, HttpResponseRedirect) and request.user.is_authenticated):
            _audit_failure(request, username)
        return response

    return view
