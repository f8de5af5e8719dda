"""Production mode turns on every security setting, and its responses carry the headers and secure cookies those
settings promise. (That it passes `check --deploy --fail-level WARNING` is tests/test_settings.py's
test_it_passes_the_deploy_checks_in_production_mode.) Each check runs the production settings in a subprocess with
tests/test_settings.py's helpers, so this process keeps its own settings; nothing there connects to a database or a
cache.
"""

from __future__ import annotations

import json

from tests.test_settings import PRODUCTION, shell

SECURITY_SETTINGS = (
    "DEBUG", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD", "SECURE_SSL_REDIRECT",
    "SECURE_PROXY_SSL_HEADER", "SESSION_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "CSRF_COOKIE_SECURE",
    "SECURE_CONTENT_TYPE_NOSNIFF", "X_FRAME_OPTIONS", "SECURE_REFERRER_POLICY", "SECURE_CROSS_ORIGIN_OPENER_POLICY",
)

# A GET of the login page (it sets the CSRF cookie) over HTTPS as the TLS proxy reports it, and one over plain HTTP.
# The anonymous login page reads neither the database nor the cache. Its template names static files: without a
# collectstatic run there is no manifest, so (only) the static files storage is the plain one here.
REQUESTS = """
import json
from django.conf import settings
from django.test import Client, override_settings
plain = {**settings.STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
client = Client(HTTP_HOST="traceflux.example.com")
with override_settings(STORAGES=plain):
    https = client.get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")
    http = client.get("/admin/login/")
cookie = https.cookies["csrftoken"]
print(json.dumps({
    "status": https.status_code,
    "headers": dict(https.headers),
    "csrf_cookie": {"secure": cookie["secure"], "samesite": cookie["samesite"], "httponly": cookie["httponly"]},
    "http": [http.status_code, http.headers.get("Location")],
}))
"""


def test_it_turns_on_every_security_setting_in_production_mode(tmp_path):
    code = (
        "import json; from django.conf import settings as s; "
        f"print(json.dumps({{name: getattr(s, name) for name in {SECURITY_SETTINGS!r}}}))"
    )
    values = json.loads(shell(tmp_path, code, **PRODUCTION))
    assert values == {
        "DEBUG": False,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SESSION_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "X_FRAME_OPTIONS": "DENY",
        "SECURE_REFERRER_POLICY": "same-origin",
        "SECURE_CROSS_ORIGIN_OPENER_POLICY": "same-origin",
    }


def test_it_answers_with_the_security_headers_and_a_secure_cookie_in_production_mode(tmp_path):
    answer = json.loads(shell(tmp_path, REQUESTS, **PRODUCTION))
    assert answer["status"] == 200
    headers = answer["headers"]
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "no-cache" in headers["Cache-Control"] and "private" in headers["Cache-Control"]  # never_cache
    assert answer["csrf_cookie"] == {"secure": True, "samesite": "Lax", "httponly": ""}
    # Plain HTTP is sent to HTTPS, permanently.
    assert answer["http"] == [301, "https://traceflux.example.com/admin/login/"]
