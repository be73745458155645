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
      - {name: state, in: query, schema: {type: string}, description: "a state, a comma list, or active (not closed)"}
      - {name: owner, in: query, schema: {type: string}, description: "a user name, me, or nobody"}
      - {name: order, in: query, schema: {type: string, enum: [newest, oldest, priority, updated]}}
      - {name: sla, in: query, schema: {type: string, enum: [breached]}, description: "open tickets past an SLA target"}
      - {name: limit, in: query, schema: {type: integer, default: 50}}
      - {name: offset, in: query, schema: {type: integer, default: 0}}
    responses:
      200: {description: "{total, limit, offset, tickets: [...]}"}
    """
    p = request.query_params
    return JSONResponse(await request.app.state.rpc.call(
        "tickets", "list_tickets", actor(request), p.get("queue"), p.get("state"),
        p.get("limit", 50), p.get("offset", 0), p.get("owner"), p.get("order"), p.get("sla")))


async def get_ticket(request: Request):
    """
    summary: "One ticket: fields, people, links, SLA clocks, lifecycle (allowed next states), rights, reminders, history. A merged ticket's number gives the survivor (merged_from says so). Its version goes in If-Match when changing it."
    responses:
      200: {description: the ticket}
      404: {description: no such ticket}
    """
    ticket = await request.app.state.rpc.call("tickets", "get_ticket", actor(request),
                                              request.path_params["ticket_id"])
    return JSONResponse(ticket, headers={"ETag": f'"{ticket["version"]}"'})


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


# --- changing tickets (ticket core) -------------------------------------------------
async def _body(request: Request) -> dict:
    try:
        body = await request.json()
    except Exception:
        raise ApiError(400, "send a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "send a JSON object")
    return body


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    return f"{actor(request)}:{key}" if key else None


def _version(request: Request, body: dict):
    """The version the client saw: If-Match header (a number, quotes allowed) or "version"."""
    match = request.headers.get("if-match", "").strip().strip('"').removeprefix("W/").strip('"')
    return match or body.pop("version", None)


async def _tickets(request: Request, method: str, *args):
    return await request.app.state.rpc.call("tickets", method, actor(request), *args)


async def create_ticket(request: Request):
    """
    summary: Open a ticket by hand. Send Idempotency-Key to make a retry safe.
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [queue, subject],
                   properties: {queue: {type: string}, subject: {type: string}, text: {type: string},
                                requestors: {type: array, items: {type: string}}, fields: {type: object},
                                priority: {type: integer}}}
    responses:
      201: {description: the ticket}
      403: {description: no create right in that queue}
    """
    b = await _body(request)
    ticket = await _tickets(request, "create_ticket", b.get("queue"), b.get("subject"), b.get("text", ""),
                            b.get("requestors") or [], b.get("fields") or {}, b.get("priority"),
                            _idempotency_key(request))
    return JSONResponse(ticket, status_code=201)


async def update_ticket(request: Request):
    """
    summary: "Change a ticket, all or nothing: subject, queue, state (with outcome when closing), priority, due, time_estimated, owner, fields. If-Match: <version> refuses the change (409) when someone changed the ticket since."
    requestBody:
      content:
        application/json:
          schema: {type: object, example: {state: resolved, outcome: solved, fields: {Affected: "192.0.2.0/24"}}}
    responses:
      200: {description: "{ticket, changed: {what: {old, new}}}"}
      400: {description: invalid value, unknown state, missing outcome (nothing was changed)}
      409: {description: the ticket changed since the given version}
    """
    b = await _body(request)
    version = _version(request, b)
    return JSONResponse(await _tickets(request, "update_ticket", request.path_params["ticket_id"], b, version,
                                       _idempotency_key(request)))


async def take_ticket(request: Request):
    """
    summary: 'Take an unowned ticket; {"steal": true} takes it from its owner (needs the steal right).'
    responses:
      200: {description: "{ticket, changed}"}
      409: {description: owned by someone else}
    """
    b = await _body(request) if await request.body() else {}
    return JSONResponse(await _tickets(request, "take_ticket", request.path_params["ticket_id"],
                                       bool(b.get("steal")), _version(request, b), _idempotency_key(request)))


async def ticket_people(request: Request):
    """
    summary: Add or remove requestors, Cc or AdminCc (watchers).
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [role], properties: {role: {type: string, enum: [requestor, cc, admincc]},
                   add: {type: array, items: {type: string}}, remove: {type: array, items: {type: string}}}}
    responses:
      200: {description: "{added, removed, people}"}
    """
    b = await _body(request)
    return JSONResponse(await _tickets(request, "set_people", request.path_params["ticket_id"], b.get("role"),
                                       b.get("add") or [], b.get("remove") or [], _idempotency_key(request)))


async def add_comment(request: Request):
    """
    summary: An internal comment, optionally with time worked (minutes).
    requestBody:
      content:
        application/json:
          schema: {type: object, properties: {text: {type: string}, time_worked: {type: integer}}}
    responses:
      201: {description: the new article}
    """
    b = await _body(request)
    article = await _tickets(request, "add_comment", request.path_params["ticket_id"], b.get("text", ""),
                             b.get("time_worked", 0), _idempotency_key(request))
    return JSONResponse(article, status_code=201)


async def add_link(request: Request):
    """
    summary: Link to another ticket (child-of, parent-of, depends-on, depended-on-by, refers-to, referred-to-by).
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [type, ticket_id], properties: {type: {type: string}, ticket_id: {type: integer}}}
    responses:
      200: {description: "{links}"}
    """
    b = await _body(request)
    return JSONResponse(await _tickets(request, "add_link", request.path_params["ticket_id"], b.get("type"),
                                       b.get("ticket_id"), _idempotency_key(request)))


async def remove_link(request: Request):
    """
    summary: Remove a link.
    responses:
      200: {description: "{links}"}
      404: {description: no such link}
    """
    p = request.path_params
    return JSONResponse(await _tickets(request, "remove_link", p["ticket_id"], p["type"], p["other_id"]))


async def merge_ticket(request: Request):
    """
    summary: "Merge this ticket into another: {\\"into\\": N}. Articles, links, people, fields, time, external numbers move; the old number keeps resolving."
    responses:
      200: {description: "{ticket_id, merged_ticket_id, articles_moved, links_moved, time_worked}"}
      400: {description: a merge into itself}
      409: {description: already merged}
    """
    b = await _body(request)
    return JSONResponse(await _tickets(request, "merge_tickets", request.path_params["ticket_id"], b.get("into"),
                                       _idempotency_key(request)))


async def split_ticket(request: Request):
    """
    summary: Split articles out into a new linked ticket.
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [article_ids], properties: {article_ids: {type: array, items: {type: integer}},
                   copy_fields: {type: array, items: {type: string}}, subject: {type: string}, queue: {type: string}}}
    responses:
      201: {description: "{ticket_id, source_ticket_id, articles}"}
    """
    b = await _body(request)
    result = await _tickets(request, "split_ticket", request.path_params["ticket_id"], b.get("article_ids"),
                            b.get("copy_fields") or [], b.get("subject"), b.get("queue"), _idempotency_key(request))
    return JSONResponse(result, status_code=201)


async def previous_incidents(request: Request):
    """
    summary: Earlier tickets sharing an IP address with this one or in the same netblock (/24, /48, IP-range fields), newest first.
    responses:
      200: {description: "[{id, subject, state, queue, same_ip: [...], netblock: [...]}]"}
    """
    return JSONResponse(await _tickets(request, "previous_incidents", request.path_params["ticket_id"],
                                       request.query_params.get("limit", 50)))


async def add_reminder(request: Request):
    """
    summary: A reminder on a ticket; with "awaiting" an address whose answer ends it.
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [due], properties: {due: {type: string, format: date-time}, text: {type: string},
                   awaiting: {type: string}, notify_third_party: {type: boolean}}}
    responses:
      201: {description: the reminder}
    """
    b = await _body(request)
    result = await _tickets(request, "add_reminder", request.path_params["ticket_id"], b.get("due"),
                            b.get("text", ""), b.get("awaiting"), bool(b.get("notify_third_party")),
                            _idempotency_key(request))
    return JSONResponse(result, status_code=201)


async def list_reminders(request: Request):
    """
    summary: Reminders (mine=true by default; status open|fired|done).
    responses:
      200: {description: list of reminders}
    """
    p = request.query_params
    return JSONResponse(await _tickets(request, "list_reminders", p.get("mine", "true") != "false",
                                       p.get("status", "open")))


async def list_outcomes(request: Request):
    """
    summary: The outcomes a closed ticket can record.
    responses:
      200: {description: list of outcomes}
    """
    return JSONResponse(await _tickets(request, "list_outcomes"))


async def list_fields(request: Request):
    """
    summary: The custom fields (name, type, options, rights).
    responses:
      200: {description: list of fields}
    """
    return JSONResponse(await _tickets(request, "list_fields"))
