"""Run EnrichService against the replay servers, as its own process on a real
broker: ``python tests/enrich/integration/enrich_runner.py '<json options>'``.

Exactly what ``python -m osprey.servicerunner enrich`` does (eventlet first, the
settings' nameko config, nameko's runner), except that the lookups dependency
gets the local servers' RDAP URLs and whois hosts.
"""
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import json  # noqa: E402
import logging.config  # noqa: E402
import sys  # noqa: E402

from nameko.cli.run import run  # noqa: E402

from osprey.config import nameko_config, settings  # noqa: E402
from services.enrich.dependencies import RegistryLookups  # noqa: E402
from services.enrich.lookup import Gate  # noqa: E402
from services.enrich.service import EnrichService  # noqa: E402


def main() -> None:
    options = json.loads(sys.argv[1])

    class ReplayEnrichService(EnrichService):
        lookups = RegistryLookups(rdap_urls=options["rdap_urls"],
                                  whois_hosts={k: tuple(v) for k, v in options["whois_hosts"].items()},
                                  gate=Gate(rate=1000.0, burst=1000))

    config = nameko_config(settings())
    logging.config.dictConfig(config["LOGGING"])
    run([ReplayEnrichService], config)


if __name__ == "__main__":
    main()
