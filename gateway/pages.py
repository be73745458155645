"""The staff web UI: server-rendered pages, no outside requests, no inline script.

Every page talks to services by RPC only. Forms post back with the session's CSRF
token (security.py checks it before any handler runs); a form on a ticket also
posts the ticket's ``version`` so a stale page gets the service's conflict message
instead of overwriting someone else's change. A refused change (bad input, missing
right, conflict) is shown on the page it came from, as a flash message next to the
form, never as a bare error page."""
from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, urlencode, urlparse

from nameko.exceptions import RemoteError
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.templating import Jinja2Templates

from osprey.config import settings

from . import api, downloads
from .sanitize import clean_html, highlight
from .security import csrf_token

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.globals["csrf_token"] = csrf_token
templates.env.globals["form_key"] = lambda: secrets.token_urlsafe(12)
templates.env.filters["highlight"] = highlight

# remote refusals a person should read next to the form that caused them
REFUSALS = {"BadRequest", "Forbidden", "NotFound", "Conflict", "UnknownQueue"}
PAGE_SIZE = 50
ORDERS = ("priority", "newest", "oldest", "updated")
PEOPLE_ROLES = ("requestor", "cc", "admincc")
LINK_TYPES = ("child-of", "parent-of", "depends-on", "depended-on-by", "refers-to", "referred-to-by")
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
FIELD_TYPES = ("text", "select", "multiselect", "date", "number", "iprange")
FOLLOWUP_POLICIES = ("new-linked", "accept")


# --- small formatting helpers (Jinja filters) ---------------------------------------
def _parse_iso(value) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def when(value) -> str:
    """An ISO time as 'YYYY-MM-DD HH:MM' UTC ('' for none)."""
    dt = _parse_iso(value)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M") if dt else ""


def dtlocal(value) -> str:
    """An ISO time as the value of an <input type=datetime-local> (UTC)."""
    dt = _parse_iso(value)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M") if dt else ""


def overdue(value) -> bool:
    dt = _parse_iso(value)
    return bool(dt and dt < datetime.now(timezone.utc))


def minutes(value) -> str:
    n = int(value or 0)
    if n < 60:
        return f"{n} min"
    return f"{n // 60} h {n % 60} min" if n % 60 else f"{n // 60} h"


def _show(value) -> str:
    if value is None or value == "" or value == []:
        return "(none)"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def describe(entry: dict) -> str:
    """One history entry in words: what changed, old → new."""
    d, action = entry.get("detail") or {}, entry.get("action", "")
    if action == "changed":
        field = str(d.get("field", ""))
        old, new = d.get("old"), d.get("new")
        if field == "due":
            old, new = when(old) or None, when(new) or None
        if field.startswith("fields."):
            field = f"field {field[7:]}"
        return f"{field.replace('_', ' ')}: {_show(old)} → {_show(new)}"
    if action == "state_changed":
        text = f"state: {d.get('old')} → {d.get('new')}"
        return text + (f" (outcome {d['outcome']})" if d.get("outcome") else "")
    if action == "field_set":
        return f"field {d.get('field')}: {_show(d.get('old'))} → {_show(d.get('new'))}"
    if action in ("person_added", "person_removed"):
        return f"{'added' if action == 'person_added' else 'removed'} {d.get('role')} {d.get('address')}"
    if action in ("link_added", "link_removed"):
        return f"link {'added' if action == 'link_added' else 'removed'}: {d.get('type')} #{d.get('other_ticket')}"
    if action == "merged_into":
        return f"#{d.get('source_ticket')} merged into #{d.get('target_ticket')}"
    if action == "merged":
        return (f"#{d.get('source_ticket')} ({d.get('source_subject') or ''}) merged into this ticket: "
                f"{d.get('articles', 0)} articles, {d.get('links', 0)} links")
    if action == "split_into":
        return f"articles {_show(d.get('articles'))} split out into #{d.get('new_ticket')}"
    if action == "split_from":
        return f"split from #{d.get('source_ticket')} (articles {_show(d.get('articles'))})"
    if action == "comment_added":
        worked = d.get("time_worked")
        return "comment added" + (f", {minutes(worked)} worked" if worked else "")
    if action == "article_added":
        return "mail added" + (f" (by {d['threaded_by']})" if d.get("threaded_by") else "")
    if action == "ticket_created":
        return "ticket created" + (f" via {d['via']}" if d.get("via") else "")
    if action == "reminder_added":
        return f"reminder set for {when(d.get('due'))}" + (f", awaiting {d['awaiting']}" if d.get("awaiting") else "")
    if action == "reminder_due":
        return "reminder due" + (f" (awaiting {d['awaiting']})" if d.get("awaiting") else "")
    if action == "reminder_answered":
        return f"reminder answered by {d.get('address')}"
    if action == "sla_breached":
        return (f"SLA {str(d.get('target', '')).replace('_', ' ')} breached (due {when(d.get('due'))}); "
                f"priority {d.get('old_priority')} → {d.get('new_priority')}")
    if action == "recipient_failed":
        return f"mail to {d.get('address')} bounced ({d.get('status') or 'failed'})"
    if action in ("mail_commands_applied", "mail_commands_ignored"):
        verb = "applied" if action == "mail_commands_applied" else "ignored"
        return f"commands by mail {verb}: {'; '.join(d.get('commands') or [])}" + (
            f" ({d['reason']})" if d.get("reason") else "")
    if action == "routed":
        return f"routed to queue {d.get('new')} (constituency {d.get('constituency')})"
    if action == "enriched":
        return f"enriched: {d.get('indicators')} indicator(s), {d.get('looked_up')} lookup(s)"
    if action == "external_ref_added":
        return f"their number {d.get('system')} {d.get('ref')} ({d.get('sender_domain')})"
    if action == "followup_from_unknown_sender":
        return f"follow-up from unknown sender {d.get('sender')}: #{d.get('new_ticket')} names #{d.get('named_ticket')}"
    if action == "duplicate_delivery":
        return f"the same mail delivered again (to queue {d.get('queue')})"
    rest = ", ".join(f"{k}={_show(v)}" for k, v in d.items())
    return action.replace("_", " ") + (f": {rest}" if rest else "")


templates.env.filters.update(when=when, dtlocal=dtlocal, overdue=overdue, minutes=minutes, describe=describe)


# --- rendering, flashes, redirects ------------------------------------------------------
def flash(request: Request, kind: str, text: str, href: str | None = None) -> None:
    """A message shown once on the next page (kept in the signed session cookie)."""
    items = list(request.session.get("flash", []))[-4:]
    items.append({"kind": kind, "text": str(text)[:600], **({"href": href} if href else {})})
    request.session["flash"] = items


def render(request: Request, name: str, status_code: int = 200, **context):
    context.setdefault("user", request.state.user)
    try:
        context.setdefault("flashes", request.session.pop("flash", []))
    except AssertionError:   # no session (a handler outside the middleware)
        context.setdefault("flashes", [])
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def back(target: str) -> RedirectResponse:
    return RedirectResponse(target, status_code=303)


def _safe_next(target: str | None) -> str:
    # only a local path, never another site
    if not target or not target.startswith("/") or target.startswith("//") or urlparse(target).netloc \
            or "\\" in target:
        return "/"
    return target


def _who(request: Request) -> str:
    return request.state.user["username"]


async def _tickets(request: Request, method: str, *args, **kwargs):
    """A tickets RPC on behalf of the logged-in person."""
    return await request.app.state.rpc.call("tickets", method, _who(request), *args, **kwargs)


def _refusal(exc: Exception) -> str | None:
    if isinstance(exc, RemoteError) and exc.exc_type in REFUSALS:
        return str(exc.value)
    return None


def _int(value, default: int = 0) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def _key(form) -> str | None:
    """The form's idempotency key: a double-submitted form acts once."""
    key = str(form.get("key") or "").strip()
    return f"web:{key}" if key else None


# --- logging in and out ---------------------------------------------------------------
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


def _who(request: Request) -> str:
    return request.state.user["username"]


# --- home: at a glance ------------------------------------------------------------------
async def home(request: Request):
    p = request.query_params
    if p.get("queue"):   # the old "/?queue=x" list is the queue view now
        query = urlencode({k: v for k, v in p.items() if k in ("state", "offset") and v})
        return back(f"/queues/{quote(p['queue'], safe='')}" + (f"?{query}" if query else ""))
    mine, unowned, queues, open_rem, fired_rem, active = await asyncio.gather(
        _tickets(request, "list_tickets", None, "active", 20, 0, "me", "priority"),
        _tickets(request, "list_tickets", None, "active", 20, 0, "nobody", "newest"),
        _tickets(request, "list_queues"),
        _tickets(request, "list_reminders", True, "open"),
        _tickets(request, "list_reminders", True, "fired"),
        _tickets(request, "list_tickets", None, "active", 50, 0, None, "priority", "breached"))
    breaches = active["tickets"]
    reminders = sorted(fired_rem + open_rem, key=lambda r: r["due"] or "")
    return render(request, "home.html", mine=mine, unowned=unowned, queues=queues, reminders=reminders,
                  breaches=breaches)


# --- queue view and bulk actions ------------------------------------------------------------
def _view_params(request: Request) -> dict:
    p = request.query_params
    order = p.get("order") if p.get("order") in ORDERS else "priority"
    return {"state": p.get("state") or "active", "owner": (p.get("owner") or "").strip(), "order": order,
            "offset": max(0, _int(p.get("offset"), 0))}


def _view_url(base: str, params: dict, **change) -> str:
    merged = {**params, **change}
    query = {k: v for k, v in merged.items() if v not in (None, "", 0) and not (k == "state" and v == "active")
             and not (k == "order" and v == "priority")}
    return base + (f"?{urlencode(query)}" if query else "")


async def queue_view(request: Request):
    name = request.path_params.get("name")
    params = _view_params(request)
    state = None if params["state"] == "all" else params["state"]
    try:
        queues, listing, outcomes, users = await asyncio.gather(
            _tickets(request, "list_queues"),
            _tickets(request, "list_tickets", name, state, PAGE_SIZE, params["offset"], params["owner"] or None,
                     params["order"]),
            _tickets(request, "list_outcomes"), request.app.state.rpc.call("tickets", "list_users"))
    except RemoteError as exc:
        if exc.exc_type == "UnknownQueue":
            raise api.ApiError(404, f"no queue named {name!r}") from None
        raise
    queue = None
    if name is not None:
        queue = next((q for q in queues if q["name"] == name), None)
        if queue is None:
            raise api.ApiError(404, f"no queue named {name!r}")
    # the states to filter and set: the lifecycle of the first ticket shown, then any with tickets
    lifecycle = {"states": [], "closed": []}
    if listing["tickets"]:
        try:
            first = await _tickets(request, "get_ticket", listing["tickets"][0]["id"])
            lifecycle = first["lifecycle"]
        except RemoteError as exc:
            if not _refusal(exc):
                raise
    states = [s["name"] for s in lifecycle["states"]]
    for q in ([queue] if queue else queues):
        states += [s for s in sorted(q["counts"]) if s not in states]
    base = f"/queues/{name}" if name else "/tickets"
    return render(request, "queue.html", queue=queue, queues=queues, listing=listing, params=params,
                  states=states, closed=lifecycle["closed"], outcomes=outcomes, base=base,
                  here=_view_url(base, params), url=lambda **kw: _view_url(base, params, **kw),
                  users=[u["username"] for u in users if not u["disabled"]], orders=ORDERS)


async def bulk(request: Request):
    form = await request.form()
    target = _safe_next(str(form.get("back") or "/"))
    ids = sorted({_int(v) for v in form.getlist("ticket") if _int(v) > 0})
    action = str(form.get("action") or "")
    if not ids:
        flash(request, "error", "Select at least one ticket first.")
        return back(target)
    versions = {i: form.get(f"version.{i}") or None for i in ids}
    done, errors = [], []

    async def each(tid, coro):
        try:
            await coro
            done.append(tid)
        except RemoteError as exc:
            message = _refusal(exc)
            if message is None:
                raise
            errors.append(f"#{tid}: {message}")

    if action == "take":
        for tid in ids:
            await each(tid, _tickets(request, "take_ticket", tid, False, versions[tid]))
        verb = "taken"
    elif action == "state":
        changes = {"state": str(form.get("state") or "")}
        if form.get("outcome"):
            changes["outcome"] = str(form.get("outcome"))
        if not changes["state"]:
            flash(request, "error", "Choose the state to set.")
            return back(target)
        for tid in ids:
            await each(tid, _tickets(request, "update_ticket", tid, changes, versions[tid]))
        verb = f"set to {changes['state']}"
    elif action == "move":
        to = str(form.get("queue") or "")
        if not to:
            flash(request, "error", "Choose the queue to move to.")
            return back(target)
        for tid in ids:
            await each(tid, _tickets(request, "update_ticket", tid, {"queue": to}, versions[tid]))
        verb = f"moved to {to}"
    elif action == "merge":
        into = _int(str(form.get("merge_into") or "").lstrip("#"), 0) or ids[0]
        if len(set(ids) | {into}) < 2:
            flash(request, "error", "Select two or more tickets to merge (or name the ticket to merge into).")
            return back(target)
        for tid in ids:
            if tid != into:
                await each(tid, _tickets(request, "merge_tickets", tid, into))
        verb = f"merged into #{into}"
    else:
        flash(request, "error", "Choose an action.")
        return back(target)
    if done:
        flash(request, "ok", f"{len(done)} ticket{'s' if len(done) != 1 else ''} {verb}: "
                             + ", ".join(f"#{t}" for t in done))
    for message in errors:
        flash(request, "error", message)
    return back(target)


# --- the ticket page ----------------------------------------------------------------------
def _applicable_fields(defs: list[dict], queue_id) -> list[dict]:
    return [f for f in defs if f["queue_id"] is None or f["queue_id"] == queue_id]


async def ticket(request: Request):
    tid = request.path_params["ticket_id"]
    rpc = request.app.state.rpc
    ticket, articles, incidents, field_defs, outcomes, queues, users = await asyncio.gather(
        _tickets(request, "get_ticket", tid), _tickets(request, "list_articles", tid),
        _tickets(request, "previous_incidents", tid), _tickets(request, "list_fields"),
        _tickets(request, "list_outcomes"), _tickets(request, "list_queues"), rpc.call("tickets", "list_users"))
    if ticket.get("merged_from"):
        flash(request, "ok", f"Ticket #{ticket['merged_from']} was merged into #{ticket['id']}.")
        return back(f"/tickets/{ticket['id']}")
    for article in articles:
        article["safe_html"] = clean_html(article["body_html"]) if article["body_html"] else None
    queue_id = next((q["id"] for q in queues if q["name"] == ticket["queue"]), None)
    fields = _applicable_fields(field_defs, queue_id)
    names = {f["name"] for f in fields}
    # values of fields that no longer apply (a moved ticket) are still shown
    stray = [{"name": n, "value": v} for n, v in ticket["fields"].items() if n not in names]
    is_admin = bool(request.state.user.get("is_admin"))
    for f in fields:
        value = ticket["fields"].get(f["name"])
        f["value"] = value
        f["values"] = value if isinstance(value, list) else ([value] if value not in (None, "") else [])
        f["editable"] = "modify" in ticket["rights"] and not (f["admin_only"] and not is_admin) and \
            not (f["read_only_after_set"] and f["values"] and not is_admin)
    movable = [q["name"] for q in queues if "create" in q["rights"]]
    return render(request, "ticket.html", ticket=ticket, articles=articles, incidents=incidents, fields=fields,
                  stray_fields=stray, outcomes=outcomes, queues=movable, rights=set(ticket["rights"]),
                  users=[u["username"] for u in users if not u["disabled"]], link_types=LINK_TYPES,
                  people_roles=PEOPLE_ROLES)


def ticket_form(handler):
    """A POST under /tickets/{id}/...: run ``handler(request, tid, form)``; it returns
    (message, where to go, optional link). A refusal is flashed on the ticket page."""
    async def endpoint(request: Request):
        tid = request.path_params["ticket_id"]
        form = await request.form()
        try:
            message, to, href = await handler(request, tid, form)
        except RemoteError as exc:
            text = _refusal(exc)
            if text is None:
                raise
            flash(request, "error", text)
            return back(f"/tickets/{tid}")
        flash(request, "ok", message, href)
        return back(to or f"/tickets/{tid}")
    endpoint.__name__ = endpoint.__qualname__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def _changed(result: dict, nothing: str = "Nothing changed.") -> str:
    changed = result.get("changed") or {}
    if not changed:
        return nothing
    parts = []
    for what, change in changed.items():
        label = f"field {what[7:]}" if what.startswith("fields.") else what.replace("_", " ")
        old, new = change.get("old"), change.get("new")
        if what == "due":
            old, new = when(old) or None, when(new) or None
        parts.append(f"{label}: {_show(old)} → {_show(new)}")
    return "Saved: " + "; ".join(parts)


@ticket_form
async def ticket_state(request, tid, form):
    """State (and outcome when closing)."""
    state, outcome = str(form.get("state") or ""), str(form.get("outcome") or "")
    changes = {}
    if state:
        changes["state"] = state
    if outcome:
        changes["outcome"] = outcome
    if not changes:
        return "Nothing changed.", None, None
    result = await _tickets(request, "update_ticket", tid, changes, form.get("version"),
                            idempotency_key=_key(form))
    return _changed(result), None, None


@ticket_form
async def ticket_properties(request, tid, form):
    """Subject, queue, priority, due date, time estimated: only what differs is sent."""
    current = await _tickets(request, "get_ticket", tid)
    changes = {}
    subject = str(form.get("subject") or "").strip()
    if "subject" in form and subject != (current["subject"] or ""):
        changes["subject"] = subject
    if form.get("queue") and form.get("queue") != current["queue"]:
        changes["queue"] = str(form.get("queue"))
        if form.get("state"):
            changes["state"] = str(form.get("state"))
    if "priority" in form and str(form.get("priority")).strip() != str(current["priority"]):
        changes["priority"] = str(form.get("priority")).strip()
    if "due" in form and str(form.get("due") or "") != dtlocal(current["due"]):
        changes["due"] = str(form.get("due") or "") or None
    if "time_estimated" in form and str(form.get("time_estimated")).strip() != str(current["time_estimated"] or 0):
        changes["time_estimated"] = str(form.get("time_estimated")).strip() or 0
    if not changes:
        return "Nothing changed.", None, None
    result = await _tickets(request, "update_ticket", tid, changes, form.get("version"), idempotency_key=_key(form))
    return _changed(result), None, None


@ticket_form
async def ticket_take(request, tid, form):
    """Take an unowned ticket, or steal it from its owner."""
    steal = str(form.get("steal") or "") == "1"
    result = await _tickets(request, "take_ticket", tid, steal, form.get("version"), idempotency_key=_key(form))
    if not result.get("changed"):
        return "You already own this ticket.", None, None
    return ("Stolen: you own this ticket now." if steal else "Taken: you own this ticket now."), None, None


@ticket_form
async def ticket_owner(request, tid, form):
    """Give the ticket to someone (empty: to nobody)."""
    owner = str(form.get("owner") or "").strip() or None
    result = await _tickets(request, "update_ticket", tid, {"owner": owner}, form.get("version"),
                            idempotency_key=_key(form))
    return _changed(result, "The owner stays the same."), None, None


def _split_addresses(text: str) -> list[str]:
    """Addresses separated by commas, semicolons or lines ("Name <a@b>" stays one)."""
    return [a.strip() for a in re.split(r"[,;\n]+", text or "") if a.strip()]


@ticket_form
async def ticket_people(request, tid, form):
    """Add or remove requestors, Cc and AdminCc."""
    role = str(form.get("role") or "")
    add = _split_addresses(str(form.get("add") or ""))
    remove = [str(a) for a in form.getlist("remove") if str(a).strip()]
    if not add and not remove:
        return "Nothing changed.", None, None
    result = await _tickets(request, "set_people", tid, role, add, remove, idempotency_key=_key(form))
    if not result["added"] and not result["removed"]:
        return "Nothing changed.", None, None
    now = result["people"].get(role) or []
    return f"Saved: {role} now {', '.join(now) if now else '(none)'}.", None, None


def _field_value(form, field: dict):
    key = f"field.{field['name']}"
    if field["type"] == "multiselect":
        return [str(v) for v in form.getlist(key)]
    return str(form.get(key) or "").strip()


def _same_value(field: dict, given, current) -> bool:
    have = current if isinstance(current, list) else ([current] if current not in (None, "") else [])
    if field["type"] == "iprange":
        return [v for v in re.split(r"[\s,;]+", given) if v] == have
    if field["type"] == "multiselect":
        return sorted(given) == sorted(have)
    return given == (have[0] if have else "")


@ticket_form
async def ticket_fields(request, tid, form):
    """Custom fields: only the fields that differ from the ticket's values are sent."""
    current, defs = await asyncio.gather(_tickets(request, "get_ticket", tid), _tickets(request, "list_fields"))
    wanted = set(form.getlist("editable"))
    changes = {}
    for field in defs:
        if field["name"] not in wanted:
            continue
        given = _field_value(form, field)
        if not _same_value(field, given, current["fields"].get(field["name"])):
            changes[field["name"]] = given
    if not changes:
        return "Nothing changed.", None, None
    result = await _tickets(request, "update_ticket", tid, {"fields": changes}, form.get("version"),
                            idempotency_key=_key(form))
    return _changed(result), None, None


@ticket_form
async def ticket_comment(request, tid, form):
    """An internal comment, with the time worked on it (minutes)."""
    worked = str(form.get("time_worked") or "").strip() or 0
    await _tickets(request, "add_comment", tid, str(form.get("text") or ""), worked, idempotency_key=_key(form))
    return "Comment added.", None, None


@ticket_form
async def ticket_link(request, tid, form):
    """Link this ticket to another."""
    other = str(form.get("other") or "").strip().lstrip("#")
    kind = str(form.get("type") or "")
    result = await _tickets(request, "add_link", tid, kind, other, idempotency_key=_key(form))
    return f"Linked: {kind} #{other}." if result else "Nothing changed.", None, None


@ticket_form
async def ticket_unlink(request, tid, form):
    """Remove one link (as shown on this ticket: its label and the other ticket)."""
    other, kind = str(form.get("other") or ""), str(form.get("type") or "")
    await _tickets(request, "remove_link", tid, kind, other)
    return f"Link removed: {kind} #{other}.", None, None


@ticket_form
async def ticket_merge(request, tid, form):
    """Merge this ticket into another; the survivor's page comes next."""
    into = str(form.get("into") or "").strip().lstrip("#")
    if not into.isdigit():
        return await _refuse("name the ticket to merge into by its number")
    result = await _tickets(request, "merge_tickets", tid, int(into), idempotency_key=_key(form))
    return (f"Merged #{result['merged_ticket_id']} into #{result['ticket_id']}: {result['articles_moved']} "
            f"articles moved."), f"/tickets/{result['ticket_id']}", None


async def _refuse(message: str):
    raise RemoteError("BadRequest", message)


@ticket_form
async def ticket_split(request, tid, form):
    """Move the chosen articles out into a new ticket linked to this one."""
    article_ids = [_int(a) for a in form.getlist("article") if _int(a) > 0]
    if not article_ids:
        return await _refuse("choose the articles to split out (the checkbox beside each article)")
    result = await _tickets(request, "split_ticket", tid, article_ids, [str(f) for f in form.getlist("copy_field")],
                            str(form.get("subject") or "").strip() or None, str(form.get("queue") or "") or None,
                            idempotency_key=_key(form))
    new = result["ticket_id"]
    return f"Split articles {', '.join(map(str, result['articles']))} out into #{new}.", None, f"/tickets/{new}"


@ticket_form
async def ticket_reminder(request, tid, form):
    """A reminder for me: when, what, and whose answer I am waiting for."""
    result = await _tickets(request, "add_reminder", tid, str(form.get("due") or ""), str(form.get("text") or ""),
                            str(form.get("awaiting") or "").strip() or None, form.get("notify_third_party") == "1",
                            idempotency_key=_key(form))
    return f"Reminder set for {when(result['due'])} UTC.", None, None


# --- a new ticket ---------------------------------------------------------------------------
async def new_ticket_form(request: Request, values: dict | None = None, error: str | None = None,
                          status_code: int = 200):
    queues, field_defs = await asyncio.gather(_tickets(request, "list_queues"), _tickets(request, "list_fields"))
    creatable = [q for q in queues if "create" in q["rights"]]
    names = {q["id"]: q["name"] for q in queues}
    is_admin = bool(request.state.user.get("is_admin"))
    fields = [{**f, "queue": names.get(f["queue_id"])} for f in field_defs
              if (f["queue_id"] is None or f["queue_id"] in names) and (is_admin or not f["admin_only"])]
    values = values or {"queue": request.query_params.get("queue", ""), "priority": "50"}
    return render(request, "new_ticket.html", queues=creatable, fields=fields, values=values, error=error,
                  status_code=status_code)


async def new_ticket_page(request: Request):
    return await new_ticket_form(request)


async def create_ticket(request: Request):
    form = await request.form()
    values = {k: str(form.get(k) or "") for k in ("queue", "subject", "text", "requestors", "priority")}
    defs = await _tickets(request, "list_fields")
    field_values, shown = {}, {}
    for field in defs:
        given = _field_value(form, field)
        shown[field["name"]] = given
        if given not in ("", []):
            field_values[field["name"]] = given
    values["fields"] = shown
    try:
        ticket = await _tickets(request, "create_ticket", values["queue"], values["subject"], values["text"],
                                _split_addresses(values["requestors"]), field_values,
                                values["priority"].strip() or None, idempotency_key=_key(form))
    except RemoteError as exc:
        message = _refusal(exc)
        if message is None:
            raise
        return await new_ticket_form(request, values, message, 400)
    flash(request, "ok", f"Ticket #{ticket['id']} created.")
    return back(f"/tickets/{ticket['id']}")


# --- search, intake, downloads --------------------------------------------------------------
async def search(request: Request):
    q = request.query_params.get("q", "").strip()
    results, error = [], None
    if q:
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


# --- administration -----------------------------------------------------------------------------
ADMIN_SECTIONS = (("users", "Users"), ("groups", "Groups"), ("rights", "Rights"), ("queues", "Queues"),
                  ("lifecycles", "Lifecycles"), ("outcomes", "Outcomes"), ("fields", "Custom fields"),
                  ("slas", "SLAs"), ("keys", "Keys"), ("constituencies", "Constituencies"))


def _require_admin(request: Request) -> None:
    if not request.state.user.get("is_admin"):
        raise api.ApiError(403, "only administrators see the administration pages")


async def _confirm_admin(request: Request) -> list[dict]:
    """The user RPCs take no actor: ask tickets whether this person is (still) an
    enabled administrator, not only the session. Returns every user."""
    _require_admin(request)
    users = await request.app.state.rpc.call("tickets", "list_users")
    me = next((u for u in users if u["username"] == _who(request)), None)
    if me is None or me["disabled"] or not me["is_admin"]:
        raise api.ApiError(403, "only administrators see the administration pages")
    return users


async def _admin_config(request: Request) -> dict:
    _require_admin(request)
    return await _tickets(request, "admin_config")


def admin_render(request: Request, section: str, status_code: int = 200, **context):
    return render(request, f"admin_{section}.html", status_code=status_code, section=section,
                  sections=ADMIN_SECTIONS, **context)


def admin_form(section: str):
    """A POST under /admin/...: admins only; a refusal is flashed on the section's page."""
    def wrap(handler):
        async def endpoint(request: Request):
            _require_admin(request)
            form = await request.form()
            try:
                message = await handler(request, form)
            except RemoteError as exc:
                text = _refusal(exc)
                if text is None:
                    raise
                flash(request, "error", text)
            else:
                flash(request, "ok", message)
            target = f"/admin/{section}"
            if section == "rights" and form.get("queue"):
                target += "?" + urlencode({"queue": str(form.get("queue"))})
            return back(target)
        endpoint.__name__ = endpoint.__qualname__ = handler.__name__
        return endpoint
    return wrap


async def admin_index(request: Request):
    _require_admin(request)
    return render(request, "admin_index.html", section=None, sections=ADMIN_SECTIONS)


async def admin_users(request: Request):
    users = await _confirm_admin(request)
    return admin_render(request, "users", users=users, roles=("customer", "agent", "admin"))


@admin_form("users")
async def admin_user_create(request, form):
    await _confirm_admin(request)
    username = str(form.get("username") or "").strip()
    password = str(form.get("password") or "") or None
    role = str(form.get("role") or "agent")
    user = await request.app.state.rpc.call("tickets", "create_user", username, password, role == "admin", role,
                                            str(form.get("email") or ""), _who(request))
    return f"User {user['username']} created ({user['role']})."


@admin_form("users")
async def admin_user_role(request, form):
    await _confirm_admin(request)
    username, role = str(form.get("username") or ""), str(form.get("role") or "")
    if username == _who(request) and role != "admin":
        return await _refuse("you cannot take away your own administrator role")
    user = await request.app.state.rpc.call("tickets", "set_role", username, role, _who(request))
    return f"{user['username']} is now {user['role']}."


@admin_form("users")
async def admin_user_disabled(request, form):
    await _confirm_admin(request)
    username, disabled = str(form.get("username") or ""), form.get("disabled") == "1"
    if username == _who(request) and disabled:
        return await _refuse("you cannot disable yourself")
    user = await request.app.state.rpc.call("tickets", "set_disabled", username, disabled, _who(request))
    return f"{user['username']} is {'disabled' if user['disabled'] else 'enabled'}."


@admin_form("users")
async def admin_user_password(request, form):
    await _confirm_admin(request)
    username = str(form.get("username") or "")
    await request.app.state.rpc.call("tickets", "set_password", username, str(form.get("password") or ""),
                                     _who(request))
    return f"Password of {username} set."


async def admin_groups(request: Request):
    config, users = await asyncio.gather(_admin_config(request), _confirm_admin(request))
    return admin_render(request, "groups", groups=config["groups"],
                        users=[u["username"] for u in users if not u["disabled"]])


@admin_form("groups")
async def admin_group_create(request, form):
    group = await _tickets(request, "create_group", str(form.get("name") or "").strip(),
                           str(form.get("description") or ""))
    return f"Group {group['name']} created."


@admin_form("groups")
async def admin_group_member(request, form):
    group, username = str(form.get("group") or ""), str(form.get("username") or "").strip()
    member = form.get("member") == "1"
    await _tickets(request, "set_group_member", group, username, member)
    return f"{username} {'added to' if member else 'removed from'} {group}."


async def admin_rights(request: Request):
    config = await _admin_config(request)
    names = [q["name"] for q in config["queues"]]
    name = request.query_params.get("queue") or (names[0] if names else None)
    queue = next((q for q in config["queues"] if q["name"] == name), None)
    grantees = [f"role:{r}" for r in config["roles"] if r != "admin"] + [f"group:{g['name']}"
                                                                         for g in config["groups"]]
    if queue:
        grantees += [g for g in queue["grants"] if g not in grantees]
    return admin_render(request, "rights", queue=queue, queues=names, grantees=grantees, rights=config["rights"])


@admin_form("rights")
async def admin_rights_save(request, form):
    """The grid: for each grantee row in the form, grant what is ticked and revoke the rest."""
    config = await _tickets(request, "admin_config")
    name = str(form.get("queue") or "")
    queue = next((q for q in config["queues"] if q["name"] == name), None)
    if queue is None:
        return await _refuse(f"no queue named {name!r}")
    ticked: dict[str, set[str]] = {}
    for value in form.getlist("grant"):
        grantee, _, right = str(value).rpartition(" ")
        ticked.setdefault(grantee, set()).add(right)
    summary = []
    for grantee in dict.fromkeys(str(g) for g in form.getlist("grantee")):
        have, want = set(queue["grants"].get(grantee, [])), ticked.get(grantee, set())
        add = [r for r in config["rights"] if r in want - have]
        drop = [r for r in config["rights"] if r in have - want]
        if add:
            await _tickets(request, "grant_rights", name, grantee, add)
            summary.append(f"{grantee} +{','.join(add)}")
        if drop:
            await _tickets(request, "grant_rights", name, grantee, drop, True)
            summary.append(f"{grantee} −{','.join(drop)}")
    return f"Rights on {name}: " + ("; ".join(summary) if summary else "nothing changed") + "."


async def admin_queues(request: Request):
    config = await _admin_config(request)
    described = {q["name"]: q["description"] for q in await _tickets(request, "list_queues")}
    for q in config["queues"]:
        q["description"] = described.get(q["name"], "")
    return admin_render(request, "queues", config=config, policies=FOLLOWUP_POLICIES)


@admin_form("queues")
async def admin_queue_create(request, form):
    queue = await request.app.state.rpc.call(
        "tickets", "create_queue", str(form.get("name") or "").strip(), str(form.get("description") or ""),
        str(form.get("followup_policy") or "new-linked"), actor=_who(request))
    return f"Queue {queue['name']} created."


@admin_form("queues")
async def admin_queue_configure(request, form):
    name = str(form.get("queue") or "")
    await _tickets(request, "configure_queue", name, str(form.get("lifecycle") or "default"),
                   str(form.get("sla") or ""), str(form.get("followup_policy") or "") or None,
                   str(form.get("description")) if "description" in form else None)
    return f"Queue {name} saved."


async def admin_lifecycles(request: Request, editing: dict | None = None, error: str | None = None,
                           status_code: int = 200):
    config = await _admin_config(request)
    lifecycles = [{"name": lc["name"], "text": json.dumps(lc["definition"], indent=2)} for lc in config["lifecycles"]]
    if editing:
        for lc in lifecycles:
            if lc["name"] == editing["name"]:
                lc["text"] = editing["text"]
    return admin_render(request, "lifecycles", status_code=status_code, lifecycles=lifecycles, editing=editing,
                        error=error)


async def admin_lifecycle_save(request: Request):
    """Save a lifecycle from its JSON; a mistake re-shows the text with the reason."""
    _require_admin(request)
    form = await request.form()
    name, text = str(form.get("name") or "").strip(), str(form.get("definition") or "")
    editing = {"name": name, "text": text}
    try:
        definition = json.loads(text)
    except json.JSONDecodeError as exc:
        return await admin_lifecycles(request, editing, f"not JSON: {exc.msg} (line {exc.lineno}, "
                                                         f"column {exc.colno})", 400)
    try:
        await _tickets(request, "save_lifecycle", name, definition)
    except RemoteError as exc:
        message = _refusal(exc)
        if message is None:
            raise
        return await admin_lifecycles(request, editing, message, 400)
    flash(request, "ok", f"Lifecycle {name} saved.")
    return back("/admin/lifecycles")


async def admin_keys(request: Request):
    _require_admin(request)
    keys = await request.app.state.rpc.call("crypto", "list_keys")
    return admin_render(request, "keys", keys=keys)


@admin_form("keys")
async def admin_key_import(request, form):
    upload = form.get("file")
    data = (await upload.read()) if upload is not None and hasattr(upload, "read") else b""
    data = data or str(form.get("armored") or "").encode()
    if not data.strip():
        return "Nothing to import: paste an armored key or choose a file."
    from osprey import contracts
    records = await request.app.state.rpc.call("crypto", "import_key", contracts.b64(data), form.get("trusted") == "1",
                                               str(form.get("queue") or "") or None,
                                               str(form.get("passphrase_env") or "") or None)
    return "Imported " + ", ".join(f"{r['kind']} {r.get('fingerprint', '')}" for r in records) + "."


@admin_form("keys")
async def admin_key_change(request, form):
    fp = str(form.get("fingerprint") or "")
    if form.get("action") == "delete":
        await request.app.state.rpc.call("crypto", "delete_key", fp)
        return f"Key {fp} deleted."
    trusted = form.get("action") == "trust"
    await request.app.state.rpc.call("crypto", "set_trust", fp, trusted)
    return f"Key {fp} {'trusted' if trusted else 'no longer trusted'}."


async def admin_constituencies(request: Request):
    _require_admin(request)
    rows = await request.app.state.rpc.call("enrich", "list_constituencies")
    return admin_render(request, "constituencies", constituencies=rows, queues=sorted((await _queue_names(request)).values()))


@admin_form("constituencies")
async def admin_constituency_save(request, form):
    if form.get("action") == "delete":
        await request.app.state.rpc.call("enrich", "delete_constituency", str(form.get("name") or ""))
        return f"Constituency {form.get('name')} deleted."
    lines = lambda key: [x.strip() for x in str(form.get(key) or "").replace(",", "\n").splitlines() if x.strip()]
    try:
        asns = [int(a.upper().removeprefix("AS")) for a in lines("asns")]
    except ValueError:
        return "An ASN is a number (AS64500 or 64500)."
    c = await request.app.state.rpc.call("enrich", "add_constituency", str(form.get("name") or ""), lines("netblocks"),
                                         lines("domains"), asns, str(form.get("contact") or ""),
                                         str(form.get("queue") or "") or None, str(form.get("language") or ""),
                                         str(form.get("encryption") or ""))
    return f"Constituency {c['name']} added."


async def admin_outcomes(request: Request):
    config = await _admin_config(request)
    return admin_render(request, "outcomes", outcomes=config["outcomes"])


@admin_form("outcomes")
async def admin_outcome_save(request, form):
    outcome = await _tickets(request, "save_outcome", str(form.get("name") or "").strip(),
                             str(form.get("description") or ""), form.get("active") == "1")
    return f"Outcome {outcome['name']} saved ({'active' if outcome['active'] else 'inactive'})."


async def admin_fields(request: Request):
    config = await _admin_config(request)
    return admin_render(request, "fields", fields=config["fields"], types=FIELD_TYPES,
                        queues=[q["name"] for q in config["queues"]],
                        queue_names=await _queue_names(request))


async def _queue_names(request: Request) -> dict:
    return {q["id"]: q["name"] for q in await _tickets(request, "list_queues")}


@admin_form("fields")
async def admin_field_create(request, form):
    options = [o.strip() for o in str(form.get("options") or "").splitlines() if o.strip()]
    field = await _tickets(request, "create_field", str(form.get("name") or "").strip(), str(form.get("type") or ""),
                           options, str(form.get("queue") or "") or None, form.get("read_only_after_set") == "1",
                           form.get("admin_only") == "1", str(form.get("description") or ""))
    return f"Field {field['name']} ({field['type']}) created."


async def admin_slas(request: Request):
    config = await _admin_config(request)
    return admin_render(request, "slas", slas=config["slas"], weekdays=WEEKDAYS)


@admin_form("slas")
async def admin_sla_save(request, form):
    calendar = {}
    if form.get("business_hours") == "1":
        calendar = {"tz": str(form.get("tz") or "UTC").strip() or "UTC",
                    "days": [_int(d, -1) for d in form.getlist("days")],
                    "start": str(form.get("start") or "09:00"), "end": str(form.get("end") or "17:00"),
                    "holidays": [h.strip() for h in re.split(r"[\s,]+", str(form.get("holidays") or "")) if h.strip()]}
    sla = await _tickets(request, "save_sla", str(form.get("name") or "").strip(),
                         str(form.get("first_response_minutes") or "").strip() or None,
                         str(form.get("next_response_minutes") or "").strip() or None,
                         str(form.get("resolution_minutes") or "").strip() or None, calendar,
                         str(form.get("escalate_priority") or "90").strip() or 90)
    return f"SLA {sla['name']} saved."
