"""services/crypto: owns keys and every cryptographic operation (GnuPG, openssl).

The walking skeleton runs it as its own process and proves the tools it will
drive are present; PGP/MIME and S/MIME arrive with the crypto issue."""
from __future__ import annotations

import shutil
import subprocess

from nameko.rpc import rpc

from osprey import contracts

TOOLS = {"gpg": ["gpg", "--version"], "openssl": ["openssl", "version"]}


def tool_versions() -> dict:
    out = {}
    for name, cmd in TOOLS.items():
        if shutil.which(cmd[0]) is None:
            out[name] = None
            continue
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        out[name] = proc.stdout.splitlines()[0].strip() if proc.returncode == 0 and proc.stdout else None
    return out


class CryptoService:
    name = contracts.CRYPTO

    @rpc
    def ping(self):
        versions = tool_versions()
        return {"service": self.name, "ok": all(versions.values()), "tools": versions}
