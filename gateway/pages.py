"""The staff web UI: server-rendered pages, no outside requests, no inline script."""
from __future__ import annotations

import asyncio
import secrets
import time
from urllib.parse import urlparse

from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.templating import Jinja2Templates

from osprey.config import settings

from . import api, downloads
from .sanitize import clean_html, highlight
from .security import csrf_token

templates = Jinja2Templates(directory=str(__import__("pathlib").Path(__file__).parent / "templates"))
templates.env.globals["csrf_token"] = csrf_token


templates.env.filters["highlight"] = highlight


def render(request: Request, name: str, status_code: int = 200, **context):
    context.setdefault("user", request.state.user)
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def _safe_next(target: str | None) -> str:
    # only a local path, never another site
    if not target or not target.startswith("/") or target.startswith("//") or urlparse(target).netloc:
        return "/"
    return target


async def login_form(request: Request):
    return render(request, "login.html", next=_safe_next(request.query_params.get("next")), error=None)


async def login(request: Request):
    form = await request.form()
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "/")))
    user = await request.app.state.rpc.call("tickets", "authenticate", username, password)
    if user is None:
        return render(request, "login.html", status_code=401, next=target, error="Wrong username or password.")
    request.session.clear()  # a new session on login (no fixation)
    request.session.update({"user": {"username": user["username"], "is_admin": user["is_admin"]},
                            "csrf": secrets.token_urlsafe(32),
                            "expires": time.time() + settings().session_hours * 3600})
    return RedirectResponse(target, status_code=303)


async def logout(request: Request):
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


async def home(request: Request):
    rpc, who = request.app.state.rpc, request.state.user["username"]
    queue = request.query_params.get("queue") or None
    state = request.query_params.get("state") or None
    try:
        offset = max(0, int(request.query_params.get("offset", 0)))
    except ValueError:
        offset = 0
    queues, tickets = await asyncio.gather(rpc.call("tickets", "list_queues", who),
                                           rpc.call("tickets", "list_tickets", who, queue, state, 50, offset))
    return render(request, "home.html", queues=queues, tickets=tickets, queue=queue, state=state)


async def ticket(request: Request):
    rpc, who = request.app.state.rpc, request.state.user["username"]
    tid = request.path_params["ticket_id"]
    ticket, articles = await asyncio.gather(rpc.call("tickets", "get_ticket", who, tid),
                                            rpc.call("tickets", "list_articles", who, tid))
    for article in articles:
        article["safe_html"] = clean_html(article["body_html"]) if article["body_html"] else None
    return render(request, "ticket.html", ticket=ticket, articles=articles)


async def search(request: Request):
    q = request.query_params.get("q", "").strip()
    results, error = [], None
    if q:
        from nameko.exceptions import RemoteError
        try:
            results = await request.app.state.rpc.call("tickets", "search", request.state.user["username"], q, 100)
        except RemoteError as exc:
            if exc.exc_type != "BadRequest":
                raise
            error = str(exc.value)
    return render(request, "search.html", q=q, results=results, error=error,
                  status_code=400 if error else 200)


async def intake_log(request: Request):
    status = request.query_params.get("status") or None
    rows = await request.app.state.rpc.call("ingest", "list_intake", status, 200, 0)
    return render(request, "intake.html", rows=rows, status=status)


async def intake_detail(request: Request):
    info = await request.app.state.rpc.call("ingest", "intake_status", request.path_params["sha256"].lower())
    return render(request, "intake_detail.html", info=info)


async def intake_raw(request: Request):
    return await downloads.raw_blob(request, api._sha(request))


async def intake_retry(request: Request):
    user = request.state.user
    intake_id = request.path_params["intake_id"]
    if not user.get("is_admin") or not api.SHA_RE.match(intake_id):
        raise api.ApiError(403, "only administrators re-process quarantined mail")
    result = await request.app.state.rpc.call("ingest", "retry", intake_id.lower(), user["username"])
    return RedirectResponse(f"/intake/{result['sha256']}", status_code=303)


async def raw_article(request: Request):
    return await downloads.raw_article(request, request.path_params["article_id"])


async def attachment(request: Request):
    return await downloads.attachment(request, request.path_params["attachment_id"])
