"""The administration API under /api/v1: users, groups, rights per queue, queues,
lifecycles, outcomes, custom fields and SLAs. Administrators only (the tickets
service checks it again for everything it stores)."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from .api import ApiError, _body, actor


def _admin(request: Request) -> str:
    if not request.state.user.get("is_admin"):
        raise ApiError(403, "administrators only")
    return actor(request)


async def _call(request: Request, method: str, *args):
    return await request.app.state.rpc.call("tickets", method, *args)


async def config(request: Request):
    """
    summary: Everything an administrator configures (rights, roles, queues with grants, groups, lifecycles, outcomes, fields, SLAs).
    responses:
      200: {description: the configuration}
      403: {description: not an administrator}
    """
    return JSONResponse(await _call(request, "admin_config", _admin(request)))


async def list_users(request: Request):
    """
    summary: Users (administrators).
    responses:
      200: {description: list of users}
    """
    _admin(request)
    return JSONResponse(await _call(request, "list_users"))


async def create_user(request: Request):
    """
    summary: Create a user.
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [username], properties: {username: {type: string}, password: {type: string},
                   role: {type: string, enum: [customer, agent, admin]}, email: {type: string}}}
    responses:
      201: {description: the user}
      409: {description: the user exists}
    """
    _admin(request)
    b = await _body(request)
    user = await _call(request, "create_user", b.get("username"), b.get("password"), b.get("role") == "admin",
                       b.get("role"), b.get("email", ""), actor(request))
    return JSONResponse(user, status_code=201)


async def update_user(request: Request):
    """
    summary: "Change a user's role, password, disabled flag or mail address: {role, password, disabled, email}."
    responses:
      200: {description: the user}
    """
    _admin(request)
    b = await _body(request)
    name = request.path_params["username"]
    user = None
    if "role" in b:
        user = await _call(request, "set_role", name, b["role"], actor(request))
    if "password" in b:
        user = await _call(request, "set_password", name, b["password"], actor(request))
    if "disabled" in b:
        user = await _call(request, "set_disabled", name, bool(b["disabled"]), actor(request))
    if "email" in b:
        user = await _call(request, "set_email", name, b["email"], actor(request))
    if user is None:
        raise ApiError(400, "give role, password, disabled or email")
    return JSONResponse(user)


async def create_queue(request: Request):
    """
    summary: Create a queue (the agent role gets the usual rights in it; change them with PUT /queues/{name}/rights).
    requestBody:
      content:
        application/json:
          schema: {type: object, required: [name], properties: {name: {type: string}, description: {type: string},
                   followup_policy: {type: string, enum: [new-linked, accept]}}}
    responses:
      201: {description: the queue}
    """
    who = _admin(request)
    b = await _body(request)
    queue = await _call(request, "create_queue", b.get("name"), b.get("description", ""),
                        b.get("followup_policy", "new-linked"), who)
    return JSONResponse(queue, status_code=201)


async def configure_queue(request: Request):
    """
    summary: "Set a queue's lifecycle (\\"default\\" for the built-in one), SLA (\\"\\" for none), follow-up policy or description."
    responses:
      200: {description: the queue}
    """
    who = _admin(request)
    b = await _body(request)
    return JSONResponse(await _call(request, "configure_queue", who, request.path_params["name"],
                                    b.get("lifecycle"), b.get("sla"), b.get("followup_policy"),
                                    b.get("description")))


async def queue_rights(request: Request):
    """
    summary: "Grant (or with revoke: true, take away) rights in a queue to a role or group: {grantee: \\"group:tier2\\", rights: [see, take]}."
    responses:
      200: {description: "{queue, grants}"}
    """
    who = _admin(request)
    b = await _body(request)
    return JSONResponse(await _call(request, "grant_rights", who, request.path_params["name"], b.get("grantee"),
                                    b.get("rights") or [], bool(b.get("revoke"))))


async def create_group(request: Request):
    """
    summary: Create a group.
    responses:
      201: {description: the group}
    """
    who = _admin(request)
    b = await _body(request)
    return JSONResponse(await _call(request, "create_group", who, b.get("name"), b.get("description", "")),
                        status_code=201)


async def group_member(request: Request):
    """
    summary: Add (PUT) or remove (DELETE) a group member.
    responses:
      200: {description: the group}
    """
    who = _admin(request)
    p = request.path_params
    return JSONResponse(await _call(request, "set_group_member", who, p["name"], p["username"],
                                    request.method == "PUT"))


async def save_lifecycle(request: Request):
    """
    summary: "Create or replace a lifecycle: {states: [{name, category: initial|active|inactive|closed}], transitions: {from: [to]}, rights: {\\"from->to\\": right}}."
    responses:
      200: {description: the lifecycle}
      400: {description: the definition is invalid (the detail says why)}
    """
    who = _admin(request)
    b = await _body(request)
    return JSONResponse(await _call(request, "save_lifecycle", who, request.path_params["name"], b))


async def save_outcome(request: Request):
    """
    summary: "Create or change an outcome: {description, active}."
    responses:
      200: {description: the outcome}
    """
    who = _admin(request)
    b = await _body(request)
    return JSONResponse(await _call(request, "save_outcome", who, request.path_params["name"],
                                    b.get("description", ""), b.get("active", True)))


async def create_field(request: Request):
    """
    summary: "Create a custom field: {name, type: text|select|multiselect|date|number|iprange, options, queue, read_only_after_set, admin_only, description}."
    responses:
      201: {description: the field}
    """
    who = _admin(request)
    b = await _body(request)
    field = await _call(request, "create_field", who, b.get("name"), b.get("type"), b.get("options"),
                        b.get("queue"), bool(b.get("read_only_after_set")), bool(b.get("admin_only")),
                        b.get("description", ""))
    return JSONResponse(field, status_code=201)


async def save_sla(request: Request):
    """
    summary: "Create or change an SLA: {first_response_minutes, next_response_minutes, resolution_minutes, calendar: {tz, days, start, end, holidays}, escalate_priority}."
    responses:
      200: {description: the SLA}
    """
    who = _admin(request)
    b = await _body(request)
    return JSONResponse(await _call(request, "save_sla", who, request.path_params["name"],
                                    b.get("first_response_minutes"), b.get("next_response_minutes"),
                                    b.get("resolution_minutes"), b.get("calendar"), b.get("escalate_priority", 90)))


# --- keys (services/crypto) -----------------------------------------------------------
async def _crypto(request: Request, method: str, *args):
    return await request.app.state.rpc.call("crypto", method, *args)


async def list_keys(request: Request):
    """
    summary: OpenPGP keys, X.509 certificates and CRLs with expiry, trust, usage and problems (administrators).
    responses:
      200: {description: list of key records}
    """
    _admin(request)
    return JSONResponse(await _crypto(request, "list_keys"))


async def import_key(request: Request):
    """
    summary: "Import keys: the body is an armored or binary OpenPGP key, a PEM/DER certificate or a CRL (?trusted=1&queue=NAME&passphrase_env=VAR)."
    responses:
      201: {description: the imported key records}
      400: {description: not a key (the detail says why)}
    """
    _admin(request)
    from osprey import contracts
    data = await request.body()
    if not data:
        raise ApiError(400, "send the key bytes as the request body")
    p = request.query_params
    records = await _crypto(request, "import_key", contracts.b64(data), p.get("trusted") in ("1", "true", "yes"),
                            p.get("queue"), p.get("passphrase_env"))
    return JSONResponse(records, status_code=201)


async def key(request: Request):
    """
    summary: "One key (GET), change it (PATCH {trusted, queue, passphrase_env}) or delete it (DELETE)."
    responses:
      200: {description: the key record}
      404: {description: no such key}
    """
    _admin(request)
    fingerprint = request.path_params["fingerprint"]
    if request.method == "GET":
        return JSONResponse(await _crypto(request, "get_key", fingerprint))
    if request.method == "DELETE":
        return JSONResponse(await _crypto(request, "delete_key", fingerprint))
    b = await _body(request)
    result = None
    if "trusted" in b:
        result = await _crypto(request, "set_trust", fingerprint, bool(b["trusted"]))
    if "queue" in b:
        result = await _crypto(request, "set_queue_key", fingerprint, b["queue"], b.get("passphrase_env"))
    if result is None:
        raise ApiError(400, "give trusted, or queue (and passphrase_env)")
    return JSONResponse(result)


# --- enrichment (services/enrich) -----------------------------------------------------------
async def ip_lookup(request: Request):
    """
    summary: Network, ASN, country and abuse contact of an IP address (RDAP, then whois; cached).
    parameters:
      - {name: refresh, in: query, schema: {type: boolean}}
    responses:
      200: {description: the lookup result (status ok, error, not_public or not_looked_up)}
      400: {description: not an IP address}
    """
    return JSONResponse(await request.app.state.rpc.call("enrich", "lookup_ip", request.path_params["ip"],
                                                         request.query_params.get("refresh") in ("1", "true")))


async def constituencies(request: Request):
    """
    summary: "Constituencies (GET) or add one (POST {name, contact, netblocks, domains, asns, queue, language, encryption}; administrators). A new ticket whose addresses fall in a constituency with a queue is routed there."
    responses:
      200: {description: list of constituencies}
      201: {description: the constituency}
    """
    if request.method == "GET":
        return JSONResponse(await request.app.state.rpc.call("enrich", "list_constituencies"))
    _admin(request)
    b = await _body(request)
    c = await request.app.state.rpc.call("enrich", "add_constituency", b.get("name"), b.get("netblocks") or [],
                                         b.get("domains") or [], b.get("asns") or [], b.get("contact", ""),
                                         b.get("queue"), b.get("language", ""), b.get("encryption", ""))
    return JSONResponse(c, status_code=201)


async def constituency(request: Request):
    """
    summary: Delete a constituency (administrators).
    responses:
      200: {description: the deleted constituency}
      404: {description: no such constituency}
    """
    _admin(request)
    return JSONResponse(await request.app.state.rpc.call("enrich", "delete_constituency", request.path_params["name"]))
