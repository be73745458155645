"""The REST API under /api/v1. Every handler's docstring is its OpenAPI entry
(starlette's SchemaGenerator); errors are JSON ``{"error", "detail"}``."""
from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from osprey import contracts

from . import downloads
from .sanitize import clean_html, highlight, plain

SHA_RE = re.compile(r"^[0-9a-fA-F]{64}$")


class ApiError(Exception):
    TITLES = {400: "bad request", 403: "forbidden", 404: "not found"}

    def __init__(self, status: int, detail: str):
        self.status, self.detail = status, detail


def actor(request: Request) -> str:
    return request.state.user["username"]


async def create_token(request: Request):
    """
    summary: Log in with username and password; returns a bearer token (shown once).
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [username, password],
                   properties: {username: {type: string}, password: {type: string}, days: {type: integer}}}
    responses:
      201: {description: "{token, expires, user}"}
      403: {description: wrong username or password}
    """
    try:
        body = await request.json()
        username, password = str(body["username"]), str(body["password"])
    except Exception:
        raise ApiError(400, "send JSON with username and password") from None
    result = await request.app.state.rpc.call("tickets", "login_token", username, password, body.get("days"))
    return JSONResponse(result, status_code=201)


async def list_tickets(request: Request):
    """
    summary: Tickets, newest first.
    parameters:
      - {name: queue, in: query, schema: {type: string}}
      - {name: state, in: query, schema: {type: string}}
      - {name: limit, in: query, schema: {type: integer, default: 50}}
      - {name: offset, in: query, schema: {type: integer, default: 0}}
    responses:
      200: {description: "{total, limit, offset, tickets: [...]}"}
    """
    p = request.query_params
    return JSONResponse(await request.app.state.rpc.call(
        "tickets", "list_tickets", actor(request), p.get("queue"), p.get("state"),
        p.get("limit", 50), p.get("offset", 0)))


async def get_ticket(request: Request):
    """
    summary: One ticket with its history.
    responses:
      200: {description: the ticket}
      404: {description: no such ticket}
    """
    return JSONResponse(await request.app.state.rpc.call(
        "tickets", "get_ticket", actor(request), request.path_params["ticket_id"]))


async def list_articles(request: Request):
    """
    summary: The articles of a ticket, oldest first (body text, sanitised HTML, attachments, raw sha256).
    responses:
      200: {description: list of articles}
    """
    articles = await request.app.state.rpc.call(
        "tickets", "list_articles", actor(request), request.path_params["ticket_id"])
    for article in articles:
        article["body_html"] = clean_html(article["body_html"]) if article["body_html"] else None
    return JSONResponse(articles)


async def article_raw(request: Request):
    """
    summary: The original mail, byte-exact (message/rfc822); X-Osprey-SHA256 names its hash.
    responses:
      200: {description: the raw bytes}
    """
    return await downloads.raw_article(request, request.path_params["article_id"])


async def attachment(request: Request):
    """
    summary: An attachment's decoded bytes.
    responses:
      200: {description: the bytes}
    """
    return await downloads.attachment(request, request.path_params["attachment_id"])


async def search(request: Request):
    """
    summary: Search tickets by words, "exact phrases" and IP addresses, CIDR networks or a-b ranges.
    parameters:
      - {name: q, in: query, required: true, schema: {type: string}, example: "192.0.2.0/24 scanning"}
      - {name: limit, in: query, schema: {type: integer, default: 50}}
    responses:
      200: {description: "{query, results: [{id, subject, queue, state, article_id, snippet}]}"}
      400: {description: the query has a syntax error (the detail says where)}
    """
    q = request.query_params.get("q", "")
    results = await request.app.state.rpc.call("tickets", "search", actor(request), q,
                                               request.query_params.get("limit", 50))
    for r in results:  # snippet: plain text; snippet_html: escaped, hits in <mark>
        r["snippet_html"], r["snippet"] = str(highlight(r["snippet"])), plain(r["snippet"])
    return JSONResponse({"query": q, "results": results})


async def list_queues(request: Request):
    """
    summary: Queues with ticket counts per state.
    responses:
      200: {description: list of queues}
    """
    return JSONResponse(await request.app.state.rpc.call("tickets", "list_queues", actor(request)))


async def intake_status(request: Request):
    """
    summary: What became of a delivered mail, by the sha256 of its bytes (delivered to which ticket, or quarantined and why).
    responses:
      200: {description: "{sha256, size, stored, intakes: [{status, reason, ticket_id, article_id, deliveries, ...}]}"}
      404: {description: no mail with these bytes was delivered}
    """
    return JSONResponse(await request.app.state.rpc.call("ingest", "intake_status", _sha(request)))


async def list_intake(request: Request):
    """
    summary: The intake log, newest first; status=quarantined lists the quarantine.
    parameters:
      - {name: status, in: query, schema: {type: string, enum: [received, delivered, quarantined]}}
      - {name: limit, in: query, schema: {type: integer, default: 100}}
    responses:
      200: {description: list of intake records}
    """
    p = request.query_params
    return JSONResponse(await request.app.state.rpc.call("ingest", "list_intake", p.get("status"),
                                                         p.get("limit", 100), p.get("offset", 0)))


async def intake_raw(request: Request):
    """
    summary: The stored bytes of a delivered mail (also a quarantined one), byte-exact.
    responses:
      200: {description: the raw bytes}
      404: {description: no such mail}
    """
    return await downloads.raw_blob(request, _sha(request))


async def intake_retry(request: Request):
    """
    summary: Process a quarantined mail again from its stored bytes (administrators).
    responses:
      200: {description: the new outcome of that delivery}
      400: {description: it is not quarantined}
      403: {description: not an administrator}
    """
    intake_id = request.path_params["intake_id"]
    if not SHA_RE.match(intake_id):
        raise ApiError(400, "an intake id is 64 hex digits")
    if not request.state.user.get("is_admin"):
        raise ApiError(403, "only administrators re-process quarantined mail")
    return JSONResponse(await request.app.state.rpc.call("ingest", "retry", intake_id.lower(), actor(request)))


def _sha(request: Request) -> str:
    sha256 = request.path_params["sha256"]
    if not SHA_RE.match(sha256):
        raise ApiError(400, "a sha256 is 64 hex digits")
    return sha256.lower()


async def healthz(request: Request):
    """
    summary: Liveness of the gateway process.
    responses:
      200: {description: ok}
    """
    return JSONResponse({"status": "ok"})


async def readyz(request: Request):
    """
    summary: Ready only when the broker and every service answer.
    responses:
      200: {description: all answered}
      503: {description: something did not answer; the body says what}
    """
    import asyncio

    health = request.app.state.health_rpc

    async def ping(service):
        # public (probes call it without a token): say only whether each part answers
        try:
            reply = await health.call(service, "ping")
            return service, {"ok": bool(reply.get("ok"))}
        except Exception as exc:  # any failure means "not ready"
            return service, {"ok": False, "error": type(exc).__name__}

    results = dict(await asyncio.gather(*(ping(s) for s in contracts.SERVICES)))
    ready = all(r["ok"] for r in results.values())
    return JSONResponse({"ready": ready, "services": results}, status_code=200 if ready else 503)


async def openapi(request: Request):
    return Response(request.app.state.openapi_json, media_type="application/json")
