"""notify's own entrypoint: an RPC that knows its request's AMQP correlation id.

A request message is acknowledged only after its worker finished; if the process
dies in between, the broker hands the same message (same correlation id) to the
next replica. ``send`` uses that id as the idempotency key when the caller gave
none, so a redelivered request queues no second mail."""
from __future__ import annotations

from nameko.extensions import DependencyProvider
from nameko.rpc import Rpc

CORRELATION_KEY = "osprey.correlation_id"


class KeyedRpc(Rpc):
    def unpack_message_headers(self, message):
        data = super().unpack_message_headers(message)
        correlation_id = message.properties.get("correlation_id")
        if correlation_id:
            data[CORRELATION_KEY] = str(correlation_id)
        return data


keyed_rpc = KeyedRpc.decorator


class RequestId(DependencyProvider):
    """The correlation id of the RPC request a worker handles (None otherwise)."""

    def get_dependency(self, worker_ctx):
        return worker_ctx.data.get(CORRELATION_KEY)
