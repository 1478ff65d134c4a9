"""The hardened web surface: trusted Host values, reverse-proxy headers, TLS-aware cookies, the
same-origin check and the security headers of every response.

- Host: Flask's ``TRUSTED_HOSTS`` (``INGEST_TRUSTED_HOSTS``); any other Host is a 400 (answered by
  ``web/errors.py``), which stops DNS rebinding (a page on evil.example whose name now resolves to 127.0.0.1).
- ``INGEST_PROXIES`` > 0 wraps the app in Werkzeug's ProxyFix, so the client address (rate limits),
  the scheme (Secure cookies, HSTS, the Origin check) and the host come from nginx's X-Forwarded-*.
- Headers: CSP without inline scripts or styles, nosniff, Referrer-Policy, Permissions-Policy;
  HSTS on TLS (RFC 6797 §7.2: only over a secure transport).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Request, Response, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

#: Content-Security-Policy Level 3. Scripts and styles come only from /static (no inline code);
#: data: images are the favicon; nothing may frame the app (clickjacking).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"
HSTS = "max-age=31536000"
DEFAULT_PORTS = {"http": 80, "https": 443}


class TLSAwareSessionInterface(SecureCookieSessionInterface):
    """The session cookie gets ``Secure`` whenever the request came over TLS (directly or, with
    ``INGEST_PROXIES``, as nginx's X-Forwarded-Proto says), not only when configured."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"] or (request and request.is_secure))


def init_app(app: Flask) -> None:
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    app.session_interface = TLSAwareSessionInterface()
    if app.config["PROXIES"] > 0:
        hops = app.config["PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    app.after_request(add_security_headers)


def add_security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", HSTS)
    return response


def _origin_tuple(scheme: str, host: str | None, port: int | None) -> tuple[str, str, int | None]:
    return scheme.lower(), (host or "").lower(), port or DEFAULT_PORTS.get(scheme.lower())


def same_origin(origin: str, req: Request | None = None) -> bool:
    """Whether an ``Origin`` header names this request's origin: scheme, host and port
    (RFC 6454 §5; a missing port is the scheme's default). ``null`` is never same-origin."""
    req = req or request
    try:
        theirs = urlsplit(origin)
        ours = urlsplit(f"{req.scheme}://{req.host}")
        return theirs.scheme != "" and _origin_tuple(theirs.scheme, theirs.hostname, theirs.port) == _origin_tuple(
            ours.scheme, ours.hostname, ours.port
        )
    except ValueError:  # a port that is not a number
        return False
