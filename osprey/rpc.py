"""Calling services from outside nameko: the CLI, the mailgate's helpers, the gateway.

One long-lived ``ClusterRpcProxy`` per thread (each declares a reply queue, so they
are kept, not made per call), rebuilt after a failure. The gateway runs these calls
in a thread pool so its asyncio loop never blocks (``AsyncRpc``).
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nameko.exceptions import RemoteError
from nameko.standalone.rpc import ClusterRpcProxy

from . import config


class RpcUnavailable(RuntimeError):
    """The broker or the service could not be reached in time."""


class Rpc:
    def __init__(self, amqp_uri: str | None = None, timeout: float | None = None):
        s = config.settings()
        self.config = config.nameko_config(s)
        if amqp_uri:
            self.config["AMQP_URI"] = amqp_uri
        self.timeout = timeout if timeout is not None else s.rpc_timeout
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def _proxy(self):
        cluster = getattr(self._local, "cluster", None)
        if cluster is None:
            runner = ClusterRpcProxy(self.config, timeout=self.timeout)
            try:
                cluster = runner.start()
            except Exception as exc:  # connection refused, auth, timeout
                raise RpcUnavailable(f"broker unreachable: {exc}") from exc
            self._local.runner, self._local.cluster = runner, cluster
            with self._lock:
                self._all.append(runner)
        return cluster

    def _drop(self) -> None:
        runner = getattr(self._local, "runner", None)
        self._local.cluster = self._local.runner = None
        if runner is not None:
            with self._lock:
                if runner in self._all:
                    self._all.remove(runner)
            try:
                runner.stop()
            except Exception:
                pass

    def call(self, service: str, method: str, *args, **kwargs):
        cluster = self._proxy()
        try:
            return getattr(getattr(cluster, service), method)(*args, **kwargs)
        except RemoteError:
            raise  # the service answered: the connection is fine
        except Exception as exc:
            self._drop()
            raise RpcUnavailable(f"{service}.{method}: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            runners, self._all = self._all, []
        for runner in runners:
            try:
                runner.stop()
            except Exception:
                pass


class AsyncRpc:
    """``await rpc.call("tickets", "get_ticket", ...)`` from asyncio code."""

    def __init__(self, rpc: Rpc, threads: int):
        self.rpc = rpc
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rpc")

    async def call(self, service: str, method: str, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, lambda: self.rpc.call(service, method, *args, **kwargs))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.rpc.close()
