"""Deny by default: every request is authenticated unless its path is on the short
public list; API requests by bearer token, pages by the signed session cookie; every
state-changing page request carries the session's CSRF token."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import quote

from starlette.datastructures import Headers

from osprey.config import settings
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse

PUBLIC_PATHS = {"/login", "/healthz", "/readyz", "/api/v1/healthz", "/api/v1/readyz", "/api/v1/openapi.json",
                "/favicon.ico"}
PUBLIC_PREFIXES = ("/static/",)
PUBLIC_API = {("POST", "/api/v1/tokens")}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


class TokenCache:
    """verify_token answers for a short time, keyed by the token's hash."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._entries: dict[str, tuple[float, dict | None]] = {}

    def get(self, token: str):
        key = hashlib.sha256(token.encode()).hexdigest()
        hit = self._entries.get(key)
        if hit and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def put(self, token: str, user: dict | None) -> None:
        if len(self._entries) > 10000:
            self._entries.clear()
        key = hashlib.sha256(token.encode()).hexdigest()
        self._entries[key] = (time.monotonic() + self.seconds, user)


class AccessControl:
    """Pure ASGI middleware (below SessionMiddleware)."""

    def __init__(self, app):
        self.app = app
        self.tokens = TokenCache(settings().token_cache_seconds)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        scope.setdefault("state", {})
        public = (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or (method, path) in PUBLIC_API)
        if path.startswith("/api/"):
            user = await self._bearer_user(scope)
            scope["state"]["user"] = user
            if user is None and not public:
                response = JSONResponse({"error": "unauthorized", "detail": "a valid bearer token is required"},
                                        status_code=401, headers={"WWW-Authenticate": 'Bearer realm="osprey"'})
                return await response(scope, receive, send)
            return await self.app(scope, receive, self._secure_headers(send))

        session = scope.get("session", {})
        user = session.get("user")
        if user and session.get("expires", 0) < time.time():
            session.clear()
            user = None
        scope["state"]["user"] = user
        if user is None and not public:
            if method in SAFE_METHODS:
                target = path + (("?" + scope["query_string"].decode()) if scope.get("query_string") else "")
                response = RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
            else:
                response = PlainTextResponse("login required", status_code=401)
            return await response(scope, receive, send)
        if method not in SAFE_METHODS:
            body = await _read_body(receive)
            if not await _csrf_ok(scope, body, session):
                response = PlainTextResponse("CSRF token missing or wrong; reload the page and try again",
                                             status_code=403)
                return await response(scope, receive, send)
            receive = _replay(body)
        return await self.app(scope, receive, self._secure_headers(send))

    async def _bearer_user(self, scope):
        auth = Headers(scope=scope).get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return None
        token = auth[7:].strip()
        known, user = self.tokens.get(token)
        if known:
            return user
        rpc = scope["app"].state.rpc
        user = await rpc.call("tickets", "verify_token", token)
        self.tokens.put(token, user)
        return user

    @staticmethod
    def _secure_headers(send):
        async def wrapped(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = {b"content-security-policy": CSP.encode(), b"x-content-type-options": b"nosniff",
                         b"referrer-policy": b"no-referrer", b"x-frame-options": b"SAMEORIGIN"}
                headers += [(k, v) for k, v in extra.items() if k not in names]
                message = {**message, "headers": headers}
            await send(message)
        return wrapped


async def _read_body(receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}
    return receive


async def _csrf_ok(scope, body: bytes, session) -> bool:
    expected = session.get("csrf")
    if not expected:
        return False
    given = Headers(scope=scope).get("x-csrf-token")
    if not given:
        form = await Request(scope, _replay(body)).form()
        given = form.get("csrf_token")
    return isinstance(given, str) and hmac.compare_digest(given, expected)
