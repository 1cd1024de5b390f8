"""Field-encryption key ring: AES-256 data keys by id plus one blind-index (HMAC) key, and the key that
signs audit checkpoints (`careloop.privacy.audit`).

Keys come from `CARELOOP_KEYS` (JSON) or the key file (`settings.key_file`), never from the database.
In dev and test a missing key file is created (mode 0600); in prod a missing key is an error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from careloop.errors import PrivacyError


@dataclass(frozen=True)
class KeyRing:
    active: str
    keys: dict[str, bytes]
    bidx_key: bytes
    #: signs audit checkpoints; rings written before the audit chain have none (see `audit_signing_key`)
    audit_key: bytes | None = None

    @property
    def audit_signing_key(self) -> bytes:
        """The stored audit key, or for older rings one derived from the blind-index key (HKDF-SHA256
        with a fixed label), so existing key files keep working unchanged."""
        if self.audit_key is not None:
            return self.audit_key
        prk = hmac.new(b"careloop-audit-key-v1", self.bidx_key, hashlib.sha256).digest()
        return hmac.new(prk, b"careloop audit checkpoints\x01", hashlib.sha256).digest()

    def to_json(self) -> str:
        d = {
            "active": self.active,
            "keys": {k: base64.b64encode(v).decode() for k, v in self.keys.items()},
            "bidx_key": base64.b64encode(self.bidx_key).decode(),
        }
        if self.audit_key is not None:
            d["audit_key"] = base64.b64encode(self.audit_key).decode()
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str, origin: str) -> KeyRing:
        try:
            d = json.loads(text)
            ring = cls(
                active=d["active"],
                keys={k: base64.b64decode(v) for k, v in d["keys"].items()},
                bidx_key=base64.b64decode(d["bidx_key"]),
                audit_key=base64.b64decode(d["audit_key"]) if d.get("audit_key") else None,
            )
        except (ValueError, KeyError, TypeError) as e:
            raise PrivacyError(
                f"key ring in {origin} is malformed ({e}); restore it from your key backup"
            ) from e
        if ring.active not in ring.keys or any(len(k) != 32 for k in ring.keys.values()):
            raise PrivacyError(f"key ring in {origin} needs 32-byte keys and an active key id that exists")
        if ring.audit_key is not None and len(ring.audit_key) != 32:
            raise PrivacyError(f"key ring in {origin}: audit_key must be 32 bytes (base64)")
        return ring

    @classmethod
    def generate(cls) -> KeyRing:
        return cls(
            active="k1",
            keys={"k1": secrets.token_bytes(32)},
            bidx_key=secrets.token_bytes(32),
            audit_key=secrets.token_bytes(32),
        )


def load_keyring(key_file: Path, *, environment: str) -> KeyRing:
    """The key ring from CARELOOP_KEYS or the key file, created in dev/test when missing."""
    env = os.environ.get("CARELOOP_KEYS")
    if env:
        return KeyRing.from_json(env, "CARELOOP_KEYS")
    if key_file.exists():
        return KeyRing.from_json(key_file.read_text(encoding="utf-8"), str(key_file))
    if environment == "prod":
        raise PrivacyError(
            f"no encryption keys: set CARELOOP_KEYS or provide {key_file} (careloop never makes prod keys itself)"
        )
    ring = KeyRing.generate()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(ring.to_json())
    return ring
