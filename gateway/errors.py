"""Remote error types → HTTP, in one table (tested over every row)."""
from __future__ import annotations

from nameko.exceptions import RemoteError

from osprey.rpc import RpcUnavailable

STATUS_BY_REMOTE_ERROR = {
    "NotFound": 404,
    "Forbidden": 403,
    "BadRequest": 400,
    "UnknownQueue": 400,
    "Conflict": 409,
}


def http_status(exc: Exception) -> int:
    if isinstance(exc, RemoteError):
        return STATUS_BY_REMOTE_ERROR.get(exc.exc_type, 500)
    if isinstance(exc, RpcUnavailable):
        return 503
    return 500


def message(exc: Exception) -> str:
    if isinstance(exc, RemoteError):
        return str(exc.value)
    if isinstance(exc, RpcUnavailable):
        return "a service is unavailable; try again shortly"
    return "internal error"
