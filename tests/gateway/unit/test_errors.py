"""The one table mapping remote errors to HTTP, every row."""
import pytest
from nameko.exceptions import RemoteError

from gateway import errors
from osprey.rpc import RpcUnavailable


@pytest.mark.parametrize("exc, status", [
    (RemoteError("NotFound", "no ticket #9"), 404),
    (RemoteError("Forbidden", "no"), 403),
    (RemoteError("BadRequest", "bad"), 400),
    (RemoteError("UnknownQueue", "no queue"), 400),
    (RemoteError("Conflict", "exists"), 409),
    (RemoteError("ZeroDivisionError", "bug"), 500),
    (RpcUnavailable("broker down"), 503),
    (RuntimeError("anything else"), 500),
])
def test_status(exc, status):
    assert errors.http_status(exc) == status


def test_every_table_row_is_tested():
    tested = {"NotFound", "Forbidden", "BadRequest", "UnknownQueue", "Conflict"}
    assert set(errors.STATUS_BY_REMOTE_ERROR) == tested


def test_messages_do_not_leak_internals():
    assert errors.message(RemoteError("NotFound", "no ticket #9")) == "no ticket #9"
    assert errors.message(RpcUnavailable("amqp://guest:guest@host")) == "a service is unavailable; try again shortly"
    assert errors.message(RuntimeError("secret path /x")) == "internal error"
