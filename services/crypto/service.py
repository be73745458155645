"""services/crypto: owns keys and every cryptographic operation (GnuPG, openssl).

Incoming mail is unwrapped here (decrypted, signatures checked, one verdict per
article: unwrap.py); outgoing mail is signed/encrypted here (protect.py); the
keyring lives in this service's own database (keys.py, models.py), and each replica
materialises its own GnuPG home from it. Binary data crosses RPC base64-encoded.
"""
from __future__ import annotations

import binascii
import os
import shutil
import socket
import subprocess

from nameko.rpc import rpc

from osprey import contracts
from osprey.config import settings
from osprey.db import Database

from . import protect as protect_mod
from . import unwrap as unwrap_mod
from .dependencies import KeyMaterial
from .exceptions import BadRequest, NotFound
from .keys import Keyring
from .models import MIGRATIONS, Base

TOOLS = {"gpg": ["gpg", "--version"], "openssl": ["openssl", "version"]}

# refusals the caller is meant to get; nameko logs them as warnings, not errors
api = rpc(expected_exceptions=(BadRequest, NotFound))


def tool_versions() -> dict:
    out = {}
    for name, cmd in TOOLS.items():
        if shutil.which(cmd[0]) is None:
            out[name] = None
            continue
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        out[name] = proc.stdout.splitlines()[0].strip() if proc.returncode == 0 and proc.stdout else None
    return out


def db_url() -> str:
    """OSPREY_CRYPTO_DB_URL; empty: SQLite in DATA_DIR/crypto/crypto.db."""
    return settings().crypto_db_url


def _bytes(value, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{what} must be base64 text")
    try:
        return contracts.unb64(value)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what} is not valid base64") from None


class CryptoService:
    name = contracts.CRYPTO

    db = Database(Base, url=db_url, migrations=MIGRATIONS)
    material = KeyMaterial()

    def _keyring(self) -> Keyring:
        return Keyring(self.db.get_session, self.material)

    @api
    def ping(self):
        versions = tool_versions()
        return {"service": self.name, "ok": all(versions.values()), "tools": versions,
                "replica": f"{socket.gethostname()}:{os.getpid()}"}

    # --- incoming -------------------------------------------------------------------
    @api
    def unwrap(self, raw_b64):
        """Decrypt / verify a raw mail. Returns {"mime": base64 of the mail to display,
        "changed", "security", "parts"} (unwrap.py documents the fields)."""
        raw = _bytes(raw_b64, "raw_b64")
        result = unwrap_mod.unwrap(raw, self._keyring())
        return {**result, "mime": contracts.b64(result["mime"])}

    # --- outgoing -------------------------------------------------------------------
    @api
    def protect(self, raw_b64, sign_with_queue=None, encrypt_to=None, scheme="pgp-mime",
                smime_cipher="aes-256-cbc"):
        """Sign (with the queue's key) and/or encrypt (to every address in encrypt_to)
        a raw mail. Returns {"mime": base64, "scheme", "signed_by", "encrypted_to"};
        BadRequest (NoUsableKey) names a recipient without a usable key."""
        raw = _bytes(raw_b64, "raw_b64")
        out = protect_mod.protect(raw, self._keyring(), sign_with_queue=sign_with_queue,
                                  encrypt_to=list(encrypt_to or []), scheme=scheme, smime_cipher=smime_cipher)
        return {**out, "mime": contracts.b64(out["mime"])}

    # --- the keyring ----------------------------------------------------------------
    @api
    def import_key(self, data_b64, trusted=False, queue=None, passphrase_env=None):
        return self._keyring().import_key(_bytes(data_b64, "data_b64"), trusted=bool(trusted), queue=queue or None,
                                          passphrase_env=passphrase_env)

    @api
    def list_keys(self):
        return self._keyring().list_keys()

    @api
    def get_key(self, fingerprint):
        return self._keyring().get_key(fingerprint)

    @api
    def delete_key(self, fingerprint):
        return self._keyring().delete_key(fingerprint)

    @api
    def set_trust(self, fingerprint, trusted):
        return self._keyring().set_trust(fingerprint, bool(trusted))

    @api
    def set_queue_key(self, fingerprint, queue, passphrase_env=None):
        return self._keyring().set_queue(fingerprint, queue or None, passphrase_env)
