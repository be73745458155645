"""services/notify: templates, the SMTP outbox, replies and forwards.

The walking skeleton runs it as its own process; sending arrives with the
outbound issue."""
from __future__ import annotations

from nameko.rpc import rpc

from osprey import contracts


class NotifyService:
    name = contracts.NOTIFY

    @rpc
    def ping(self):
        return {"service": self.name, "ok": True}
