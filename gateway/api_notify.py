"""The outbound API under /api/v1: templates, their preview, sending replies and
forwards, the outbox, and each queue's mail policy. Talks to the notify service by
RPC only; notify checks rights again (administrators for templates and the outbox,
the reply/forward/comment right in the ticket's queue for sending)."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from .api import ApiError, _body, _idempotency_key, actor


async def _notify(request: Request, method: str, *args):
    return await request.app.state.rpc.call("notify", method, actor(request), *args)


def _admin(request: Request) -> None:
    if not request.state.user.get("is_admin"):
        raise ApiError(403, "administrators only")


async def list_templates(request: Request):
    """
    summary: Templates (bodies, introductions, signatures, auto-replies), by kind and name.
    parameters:
      - {name: kind, in: query, schema: {type: string, enum: [reply, forward, notification, bulk, auto-reply, introduction, signature]}}
      - {name: queue, in: query, schema: {type: string}, description: "only those usable in this queue"}
    responses:
      200: {description: "[{name, lang, kind, queue, subject, body, description, updated_by, updated_at}]"}
    """
    p = request.query_params
    return JSONResponse(await _notify(request, "list_templates", p.get("kind"), p.get("queue")))


async def get_template(request: Request):
    """
    summary: One template (lang= picks a language variant; default the default one).
    responses:
      200: {description: the template}
      404: {description: no such template}
    """
    return JSONResponse(await _notify(request, "get_template", request.path_params["name"],
                                      request.query_params.get("lang", "")))


async def save_template(request: Request):
    """
    summary: Create or replace a template (administrators). A syntax error is refused with its line.
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [kind, body],
                   properties: {kind: {type: string, enum: [reply, forward, notification, bulk, auto-reply, introduction, signature]},
                                body: {type: string}, subject: {type: string}, lang: {type: string},
                                queue: {type: string}, description: {type: string}}}
    responses:
      200: {description: the template}
      400: {description: "invalid, or a template error: the detail names the line"}
      403: {description: not an administrator}
    """
    _admin(request)
    b = await _body(request)
    return JSONResponse(await _notify(request, "save_template", request.path_params["name"], b.get("kind"),
                                      b.get("body"), b.get("subject", ""), b.get("lang", ""), b.get("queue", ""),
                                      b.get("description", "")))


async def delete_template(request: Request):
    """
    summary: Delete a template (lang= picks the language variant).
    responses:
      200: {description: the deleted template}
      404: {description: no such template}
    """
    _admin(request)
    return JSONResponse(await _notify(request, "delete_template", request.path_params["name"],
                                      request.query_params.get("lang", "")))


async def preview_template(request: Request):
    """
    summary: "Render a template against a real ticket: a saved one by name (with the queue's introduction and signature), or an unsaved one {subject, body} from the editor. A template error is answered with its line and reason, never a half-rendered text."
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [ticket_id, template],
                   properties: {ticket_id: {type: integer}, template: {oneOf: [{type: string}, {type: object}]},
                                lang: {type: string}, article_id: {type: integer}}}
    responses:
      200: {description: "{subject, body, template, lang} or {error, line, template}"}
    """
    b = await _body(request)
    if not b.get("ticket_id") or not b.get("template"):
        raise ApiError(400, "give ticket_id and template (a name, or {subject, body})")
    return JSONResponse(await _notify(request, "preview", b["ticket_id"], b["template"], b.get("lang"),
                                      b.get("article_id")))


async def send(request: Request):
    """
    summary: "Reply, forward or comment-to-staff by mail. Forward attaches the original byte-exact (forward_mode attach) or quotes it (inline). Queued at once, delivered by the outbox; Idempotency-Key makes a retry harmless."
    requestBody:
      content:
        application/json:
          schema: {type: object,
                   properties: {action: {type: string, enum: [reply, forward, comment], default: reply},
                                to: {type: array, items: {type: string}}, cc: {type: array, items: {type: string}},
                                bcc: {type: array, items: {type: string}}, subject: {type: string},
                                body: {type: string, description: the text as it goes out},
                                template: {type: string, description: "a template name (with the queue's introduction and signature), used when there is no body"},
                                lang: {type: string}, article_id: {type: integer, description: the article answered or forwarded},
                                forward_mode: {type: string, enum: [attach, inline]},
                                sign: {type: boolean}, encrypt: {type: boolean},
                                remind_after: {type: integer, description: "minutes: a reminder the forward's recipient's answer ends"},
                                remind_third_party: {type: boolean}, time_worked: {type: integer}}}
    responses:
      202: {description: "the outbox entry {id, state, message_id, subject, recipients, ...}"}
      400: {description: "no recipient, a template error (with its line), no key to sign or encrypt with"}
      403: {description: no reply / forward / comment right in the ticket's queue}
    """
    b = await _body(request)
    result = await _notify(request, "send", request.path_params["ticket_id"], b.get("action", "reply"), b.get("to"),
                           b.get("cc"), b.get("bcc"), b.get("subject"), b.get("body"), b.get("template"),
                           b.get("lang"), b.get("article_id"), b.get("forward_mode", "attach"), b.get("sign"),
                           b.get("encrypt"), b.get("remind_after"), bool(b.get("remind_third_party")),
                           b.get("time_worked", 0), _idempotency_key(request))
    return JSONResponse(result, status_code=200 if result.get("replayed") else 202)


async def ticket_outbox(request: Request):
    """
    summary: "The mail sent for a ticket and how its delivery went: queued, sending, retry (with the last error), sent, failed (with each refused recipient and the reason)."
    responses:
      200: {description: list of outbox entries, newest first}
    """
    return JSONResponse(await _notify(request, "list_outbox", request.query_params.get("state"),
                                      request.path_params["ticket_id"], request.query_params.get("limit", 100)))


async def list_outbox(request: Request):
    """
    summary: The outbox of every mail, newest first (administrators).
    parameters:
      - {name: state, in: query, schema: {type: string, enum: [queued, sending, retry, sent, failed]}}
      - {name: limit, in: query, schema: {type: integer, default: 100}}
    responses:
      200: {description: list of outbox entries}
      403: {description: not an administrator}
    """
    _admin(request)
    p = request.query_params
    return JSONResponse(await _notify(request, "list_outbox", p.get("state"), None, p.get("limit", 100)))


async def retry_outbox(request: Request):
    """
    summary: Queue a failed mail again for the recipients that refused it (administrators).
    responses:
      200: {description: the outbox entry}
      409: {description: the mail has not failed}
    """
    _admin(request)
    return JSONResponse(await _notify(request, "retry_outbox", request.path_params["outbox_id"]))


async def get_queue_mail(request: Request):
    """
    summary: A queue's mail policy (From address and name, sign, encrypt, scheme).
    responses:
      200: {description: "{queue, from_address, from_name, sign, encrypt, scheme}"}
    """
    return JSONResponse(await _notify(request, "get_queue_policy", request.path_params["name"]))


async def set_queue_mail(request: Request):
    """
    summary: Set a queue's mail policy (administrators); fields left out stay as they are.
    requestBody:
      content:
        application/json:
          schema: {type: object, properties: {from_address: {type: string}, from_name: {type: string},
                   sign: {type: boolean}, encrypt: {type: boolean}, scheme: {type: string, enum: [pgp-mime, pgp-inline, smime]}}}
    responses:
      200: {description: the policy}
    """
    _admin(request)
    b = await _body(request)
    return JSONResponse(await _notify(request, "set_queue_policy", request.path_params["name"], b.get("from_address"),
                                      b.get("from_name"), b.get("sign"), b.get("encrypt"), b.get("scheme")))
