"""The gateway: staff UI, REST API, health. Talks to services by RPC only."""
from __future__ import annotations

import contextlib
import json
import logging
import secrets
from pathlib import Path

from nameko.exceptions import RemoteError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route
from starlette.schemas import SchemaGenerator
from starlette.staticfiles import StaticFiles

from osprey.config import settings
from osprey.rpc import AsyncRpc, Rpc, RpcUnavailable

from . import api, api_admin, errors, pages
from . import api_notify
from .security import AccessControl

log = logging.getLogger(__name__)
HERE = Path(__file__).parent

api_routes = [
    Route("/tokens", api.create_token, methods=["POST"]),
    Route("/tickets", api.list_tickets),
    Route("/tickets", api.create_ticket, methods=["POST"]),
    Route("/tickets/{ticket_id:int}", api.get_ticket),
    Route("/tickets/{ticket_id:int}", api.update_ticket, methods=["PATCH"]),
    Route("/tickets/{ticket_id:int}/articles", api.list_articles),
    Route("/tickets/{ticket_id:int}/take", api.take_ticket, methods=["POST"]),
    Route("/tickets/{ticket_id:int}/people", api.ticket_people, methods=["POST"]),
    Route("/tickets/{ticket_id:int}/comments", api.add_comment, methods=["POST"]),
    Route("/tickets/{ticket_id:int}/links", api.add_link, methods=["POST"]),
    Route("/tickets/{ticket_id:int}/links/{type}/{other_id:int}", api.remove_link, methods=["DELETE"]),
    Route("/tickets/{ticket_id:int}/merge", api.merge_ticket, methods=["POST"]),
    Route("/tickets/{ticket_id:int}/split", api.split_ticket, methods=["POST"]),
    Route("/tickets/{ticket_id:int}/previous", api.previous_incidents),
    Route("/tickets/{ticket_id:int}/reminders", api.add_reminder, methods=["POST"]),
    Route("/reminders", api.list_reminders),
    Route("/outcomes", api.list_outcomes),
    Route("/fields", api.list_fields),
    Route("/fields", api_admin.create_field, methods=["POST"]),
    Route("/admin/config", api_admin.config),
    Route("/users", api_admin.list_users),
    Route("/users", api_admin.create_user, methods=["POST"]),
    Route("/users/{username}", api_admin.update_user, methods=["PATCH"]),
    Route("/queues", api_admin.create_queue, methods=["POST"]),
    Route("/queues/{name}", api_admin.configure_queue, methods=["PATCH"]),
    Route("/queues/{name}/rights", api_admin.queue_rights, methods=["PUT"]),
    Route("/groups", api_admin.create_group, methods=["POST"]),
    Route("/groups/{name}/members/{username}", api_admin.group_member, methods=["PUT", "DELETE"]),
    Route("/lifecycles/{name}", api_admin.save_lifecycle, methods=["PUT"]),
    Route("/outcomes/{name}", api_admin.save_outcome, methods=["PUT"]),
    Route("/slas/{name}", api_admin.save_sla, methods=["PUT"]),
    Route("/ip/{ip}", api_admin.ip_lookup),
    Route("/constituencies", api_admin.constituencies, methods=["GET", "POST"]),
    Route("/constituencies/{name}", api_admin.constituency, methods=["DELETE"]),
    Route("/keys", api_admin.list_keys),
    Route("/keys", api_admin.import_key, methods=["POST"]),
    Route("/keys/{fingerprint}", api_admin.key, methods=["GET", "PATCH", "DELETE"]),
    Route("/articles/{article_id:int}/raw", api.article_raw),
    Route("/attachments/{attachment_id:int}", api.attachment),
    Route("/search", api.search),
    Route("/queues", api.list_queues),
    Route("/intake", api.list_intake),
    Route("/intake/{sha256}", api.intake_status),
    Route("/intake/{sha256}/raw", api.intake_raw),
    Route("/intake/{intake_id}/retry", api.intake_retry, methods=["POST"]),
    Route("/healthz", api.healthz),
    Route("/readyz", api.readyz),
    # outbound (services/notify): templates, sending, the outbox, each queue's mail policy
    Route("/templates", api_notify.list_templates),
    Route("/templates/preview", api_notify.preview_template, methods=["POST"]),
    Route("/templates/{name}", api_notify.get_template),
    Route("/templates/{name}", api_notify.save_template, methods=["PUT"]),
    Route("/templates/{name}", api_notify.delete_template, methods=["DELETE"]),
    Route("/tickets/{ticket_id:int}/send", api_notify.send, methods=["POST"]),
    Route("/tickets/{ticket_id:int}/outbox", api_notify.ticket_outbox),
    Route("/outbox", api_notify.list_outbox),
    Route("/outbox/{outbox_id}/retry", api_notify.retry_outbox, methods=["POST"]),
    Route("/queues/{name}/mail", api_notify.get_queue_mail),
    Route("/queues/{name}/mail", api_notify.set_queue_mail, methods=["PUT"]),
    Route("/openapi.json", api.openapi, include_in_schema=False),
]

routes = [
    Route("/", pages.home),
    Route("/login", pages.login_form, methods=["GET"]),
    Route("/login", pages.login, methods=["POST"]),
    Route("/logout", pages.logout, methods=["POST"]),
    Route("/tickets/{ticket_id:int}", pages.ticket),
    Route("/articles/{article_id:int}/raw", pages.raw_article),
    Route("/attachments/{attachment_id:int}", pages.attachment),
    Route("/search", pages.search),
    Route("/intake", pages.intake_log),
    Route("/intake/{sha256}", pages.intake_detail),
    Route("/intake/{sha256}/raw", pages.intake_raw),
    Route("/intake/{intake_id}/retry", pages.intake_retry, methods=["POST"]),
    # the ticket-core pages (not in the OpenAPI schema: they are HTML, not the API)
    Route("/tickets", pages.queue_view, include_in_schema=False),
    Route("/tickets/bulk", pages.bulk, methods=["POST"], include_in_schema=False),
    Route("/tickets/new", pages.new_ticket_page, methods=["GET"], include_in_schema=False),
    Route("/tickets/new", pages.create_ticket, methods=["POST"], include_in_schema=False),
    Route("/tickets/{ticket_id:int}/state", pages.ticket_state, methods=["POST"], include_in_schema=False),
    Route("/tickets/{ticket_id:int}/properties", pages.ticket_properties, methods=["POST"], include_in_schema=False),
    Route("/tickets/{ticket_id:int}/take", pages.ticket_take, methods=["POST"], include_in_schema=False),
    Route("/tickets/{ticket_id:int}/owner", pages.ticket_owner, methods=["POST"], include_in_schema=False),
    Route("/tickets/{ticket_id:int}/people", pages.ticket_people, methods=["POST"], include_in_schema=False),
    Route("/tickets/{ticket_id:int}/fields", pages.ticket_fields, methods=["POST"], include_in_schema=False),
    Route("/tickets/{ticket_id:int}/comment", pages.ticket_comment, methods=["POST"], include_in_schema=False),
    Route("/tickets/{ticket_id:int}/link", pages.ticket_link, methods=["POST"], include_in_schema=False),
    Route("/tickets/{ticket_id:int}/unlink", pages.ticket_unlink, methods=["POST"], include_in_schema=False),
    Route("/tickets/{ticket_id:int}/merge", pages.ticket_merge, methods=["POST"], include_in_schema=False),
    Route("/tickets/{ticket_id:int}/split", pages.ticket_split, methods=["POST"], include_in_schema=False),
    Route("/tickets/{ticket_id:int}/reminder", pages.ticket_reminder, methods=["POST"], include_in_schema=False),
    Route("/queues/{name}", pages.queue_view, include_in_schema=False),
    Route("/queues/{name}/bulk", pages.bulk, methods=["POST"], include_in_schema=False),
    Route("/admin", pages.admin_index, include_in_schema=False),
    Route("/admin/users", pages.admin_users, methods=["GET"], include_in_schema=False),
    Route("/admin/users", pages.admin_user_create, methods=["POST"], include_in_schema=False),
    Route("/admin/users/role", pages.admin_user_role, methods=["POST"], include_in_schema=False),
    Route("/admin/users/disabled", pages.admin_user_disabled, methods=["POST"], include_in_schema=False),
    Route("/admin/users/password", pages.admin_user_password, methods=["POST"], include_in_schema=False),
    Route("/admin/groups", pages.admin_groups, methods=["GET"], include_in_schema=False),
    Route("/admin/groups", pages.admin_group_create, methods=["POST"], include_in_schema=False),
    Route("/admin/groups/members", pages.admin_group_member, methods=["POST"], include_in_schema=False),
    Route("/admin/rights", pages.admin_rights, methods=["GET"], include_in_schema=False),
    Route("/admin/rights", pages.admin_rights_save, methods=["POST"], include_in_schema=False),
    Route("/admin/queues", pages.admin_queues, methods=["GET"], include_in_schema=False),
    Route("/admin/queues", pages.admin_queue_create, methods=["POST"], include_in_schema=False),
    Route("/admin/queues/configure", pages.admin_queue_configure, methods=["POST"], include_in_schema=False),
    Route("/admin/lifecycles", pages.admin_lifecycles, methods=["GET"], include_in_schema=False),
    Route("/admin/lifecycles", pages.admin_lifecycle_save, methods=["POST"], include_in_schema=False),
    Route("/admin/keys", pages.admin_keys, methods=["GET"], include_in_schema=False),
    Route("/admin/keys", pages.admin_key_import, methods=["POST"], include_in_schema=False),
    Route("/admin/keys/change", pages.admin_key_change, methods=["POST"], include_in_schema=False),
    Route("/admin/constituencies", pages.admin_constituencies, methods=["GET"], include_in_schema=False),
    Route("/admin/constituencies", pages.admin_constituency_save, methods=["POST"], include_in_schema=False),
    Route("/admin/outcomes", pages.admin_outcomes, methods=["GET"], include_in_schema=False),
    Route("/admin/outcomes", pages.admin_outcome_save, methods=["POST"], include_in_schema=False),
    Route("/admin/fields", pages.admin_fields, methods=["GET"], include_in_schema=False),
    Route("/admin/fields", pages.admin_field_create, methods=["POST"], include_in_schema=False),
    Route("/admin/slas", pages.admin_slas, methods=["GET"], include_in_schema=False),
    Route("/admin/slas", pages.admin_sla_save, methods=["POST"], include_in_schema=False),
    Route("/healthz", api.healthz, include_in_schema=False),
    Route("/readyz", api.readyz, include_in_schema=False),
    Mount("/api/v1", routes=api_routes),
    Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
]

schemas = SchemaGenerator({
    "openapi": "3.0.3",
    "info": {"title": "Osprey API", "version": "1"},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
})


def secret_key() -> str:
    s = settings()
    if s.secret_key:
        return s.secret_key
    path = s.service_dir("gateway") / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def remote_error(request: Request, exc: Exception):
    status = errors.http_status(exc)
    if status >= 500:
        log.exception("request %s failed", request.url.path, exc_info=exc)
    detail = errors.message(exc)
    if _wants_json(request):
        return JSONResponse({"error": {400: "bad request", 403: "forbidden", 404: "not found", 409: "conflict",
                                       503: "unavailable"}.get(status, "error"), "detail": detail},
                            status_code=status)
    if not hasattr(request.state, "user"):
        request.state.user = None
    return pages.render(request, "error.html", status_code=status, status=status, detail=detail)


async def api_error(request: Request, exc: api.ApiError):
    if not _wants_json(request):
        if not hasattr(request.state, "user"):
            request.state.user = None
        return pages.render(request, "error.html", status_code=exc.status, status=exc.status, detail=exc.detail)
    return JSONResponse({"error": api.ApiError.TITLES.get(exc.status, "error"), "detail": exc.detail},
                        status_code=exc.status)


async def not_found(request: Request, exc: Exception):
    if _wants_json(request):
        return JSONResponse({"error": "not found", "detail": request.url.path}, status_code=404)
    return PlainTextResponse("not found", status_code=404)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    s = settings()
    app.state.rpc = AsyncRpc(Rpc(), s.gateway_rpc_threads)
    app.state.health_rpc = AsyncRpc(Rpc(timeout=3), 5)
    spec = schemas.get_schema(routes=routes)
    app.state.openapi_json = json.dumps(spec, indent=1).encode()
    log.warning("Osprey gateway at %s", s.public_url)
    try:
        yield
    finally:
        app.state.rpc.close()
        app.state.health_rpc.close()


def create_app() -> Starlette:
    s = settings()
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(SessionMiddleware, secret_key=secret_key(), session_cookie="osprey_session",
                       max_age=s.session_hours * 3600, same_site="strict",
                       https_only=s.public_url.startswith("https:")),
            Middleware(AccessControl),
        ],
        exception_handlers={RemoteError: remote_error, RpcUnavailable: remote_error,
                            api.ApiError: api_error, 404: not_found},
        lifespan=lifespan,
    )


app = create_app()
