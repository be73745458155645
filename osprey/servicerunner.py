"""Run one Osprey service: ``python -m osprey.servicerunner tickets``.

eventlet is monkey-patched before anything else is imported (nameko needs it), the
broker is waited for (so a supervisor may start everything at once), then nameko's
own runner takes over: SIGTERM stops the service cleanly.
"""
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import logging.config  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from osprey import contracts  # noqa: E402
from osprey.config import nameko_config, settings  # noqa: E402

SERVICE_CLASSES = {
    contracts.INGEST: "services.ingest.service:IngestService",
    contracts.TICKETS: "services.tickets.service:TicketsService",
    contracts.CRYPTO: "services.crypto.service:CryptoService",
    contracts.ENRICH: "services.enrich.service:EnrichService",
    contracts.NOTIFY: "services.notify.service:NotifyService",
}


def wait_for_broker(uri: str, timeout: float) -> None:
    from kombu import Connection

    deadline = time.monotonic() + timeout
    while True:
        try:
            with Connection(uri, connect_timeout=2) as conn:
                conn.connect()
                return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"broker {uri} unreachable after {timeout:.0f}s: {exc}")
            time.sleep(0.5)


def main(argv=None) -> None:
    import importlib

    from nameko.cli.run import run

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in SERVICE_CLASSES:
        raise SystemExit(f"usage: python -m osprey.servicerunner {{{'|'.join(SERVICE_CLASSES)}}}")
    config = nameko_config(settings())
    logging.config.dictConfig(config["LOGGING"])
    wait_for_broker(config["AMQP_URI"], timeout=120)
    module, cls = SERVICE_CLASSES[argv[0]].split(":")
    service = getattr(importlib.import_module(module), cls)
    logging.getLogger("osprey").info("starting service %s", argv[0])
    run([service], config)


if __name__ == "__main__":
    main()
