"""The dashboard's guards, free of any web framework: HTTP basic auth compared in constant
time, the CSRF token (a signed double-submit cookie), the response headers (a strict
Content-Security-Policy), and which addresses count as this machine only."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "frame-ancestors 'none'; form-action 'self'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
USER_ENV, PASSWORD_ENV = "LINGER_DASHBOARD_USER", "LINGER_DASHBOARD_PASSWORD"
SECRET_ENV = "LINGER_DASHBOARD_SECRET"


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class BasicAuth:
    """HTTP basic auth against one user name and password: ``make_app(app,
    auth=BasicAuth("admin", "s3cret"))``. Both are compared in constant time (digests of equal
    length through :func:`hmac.compare_digest`, the name and the password always both), so the
    time of a refusal says nothing about how much of either was right. A refused request gets
    401 with a ``WWW-Authenticate`` challenge, so that a browser asks for them."""

    challenge = 'Basic realm="linger-sched dashboard", charset="UTF-8"'

    def __init__(self, user: str, password: str) -> None:
        if not isinstance(user, str) or not user or ":" in user:
            raise ConfigError(f"the dashboard user must be a non-empty name without ':', got {user!r}", key=USER_ENV)
        if not isinstance(password, str) or not password:
            raise ConfigError("the dashboard password must not be empty", key=PASSWORD_ENV)
        self._user, self._password = _digest(user), _digest(password)
        self.user = user

    def check(self, user: str | None, password: str | None) -> bool:
        same_user = hmac.compare_digest(_digest(user or ""), self._user)
        same_password = hmac.compare_digest(_digest(password or ""), self._password)
        return same_user & same_password and user is not None and password is not None

    def __call__(self, request: Any) -> bool:
        """Whether ``request`` (a werkzeug ``Request``) carries these credentials."""
        credentials = getattr(request, "authorization", None)
        if credentials is None or getattr(credentials, "type", "") != "basic":
            self.check(None, None)  # the same work for a request without credentials
            return False
        return self.check(credentials.username, credentials.password)

    def __repr__(self) -> str:
        return f"BasicAuth(user={self.user!r}, password=...)"


def auth_from_env(environ: Mapping[str, str]) -> BasicAuth | None:
    """:class:`BasicAuth` from ``LINGER_DASHBOARD_USER`` and ``LINGER_DASHBOARD_PASSWORD``, or
    None when neither is set; :class:`ConfigError` naming the missing one when only one is."""
    user, password = environ.get(USER_ENV), environ.get(PASSWORD_ENV)
    if user is None and password is None:
        return None
    if user is None or password is None:
        missing = USER_ENV if user is None else PASSWORD_ENV
        raise ConfigError(f"{missing} is not set: set both {USER_ENV} and {PASSWORD_ENV} for basic auth, or neither",
                          key=missing)
    return BasicAuth(user, password)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (``localhost``, 127.0.0.0/8, ``::1``); any other
    name or address (``0.0.0.0``, ``::``, a host name) may be reachable from elsewhere."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Csrf:
    """CSRF tokens as a *signed double-submit cookie*: each browser gets a random token in a
    cookie (HttpOnly, SameSite=Strict, the dashboard's path), signed with the dashboard's
    secret; every form carries the same token in a hidden field, and a POST is accepted only
    when the field equals the cookie (compared in constant time) and the signature is ours. A
    page of another site can neither read the cookie nor set one we signed. No state on the
    server: any process that shares the secret (``secret_key=`` or ``LINGER_DASHBOARD_SECRET``)
    accepts the token; without one, each process makes its own, so that several processes
    behind one address need it set."""

    cookie = "linger_csrf"
    field = "csrf_token"

    def __init__(self, secret: bytes | str | None = None) -> None:
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if secret is not None and len(secret) < 16:
            raise ConfigError("the dashboard's secret key must be at least 16 bytes", key="secret_key")
        self._secret = secret if secret is not None else secrets.token_bytes(32)

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._secret, nonce.encode("ascii"), hashlib.sha256).hexdigest()

    def new_token(self) -> str:
        nonce = secrets.token_urlsafe(24)
        return f"{nonce}.{self._sign(nonce)}"

    def valid(self, token: str | None) -> bool:
        """Whether ``token`` is one this secret signed."""
        if not token or token.count(".") != 1 or not token.isascii():
            return False
        nonce, signature = token.split(".")
        return hmac.compare_digest(signature, self._sign(nonce))

    def accepts(self, cookie: str | None, submitted: str | None) -> bool:
        """Whether a POST with this cookie and this form field passes."""
        if not cookie or not submitted:
            return False
        return hmac.compare_digest(cookie.encode("utf-8"), submitted.encode("utf-8")) and self.valid(cookie)
