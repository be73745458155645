"""crypto's own dependency provider: the process's keyring material cache.

One ``MaterialCache`` per service process (shared by its workers): the GnuPG home
and PEM files built from the database, rebuilt when the keyring changes, and
closed — gpg-agent stopped, files removed — when the service stops."""
from __future__ import annotations

from nameko.extensions import DependencyProvider

from .keys import MaterialCache
from .proc import sweep_stale


class KeyMaterial(DependencyProvider):
    def setup(self):
        sweep_stale()          # homes and key files left by a replica that was killed
        self.cache = MaterialCache()

    def stop(self):
        self.cache.close()

    def kill(self):
        self.cache.close()

    def get_dependency(self, worker_ctx):
        return self.cache
