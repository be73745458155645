"""notify's own dependency providers."""
from __future__ import annotations

import os
import socket
import uuid

from nameko.extensions import DependencyProvider

from .config import notify_settings
from .smtp import Relay


class SmtpRelay(DependencyProvider):
    """The relay this process delivers to (smtp.Relay, from the settings) and this
    replica's worker id for outbox claims. Connections are opened per delivery round
    by the worker, not here (no I/O in setup)."""

    def setup(self):
        self.settings = notify_settings()
        self.relay = Relay.from_settings(self.settings)
        self.worker = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def get_dependency(self, worker_ctx):
        return self
