"""Protection of personal identifiers at rest: AES-GCM per field, keyed blind indexes, masking.

Ciphertext format: ``v1:<key id>:<base64(nonce || ciphertext+tag)>``, with the PII kind as associated
data so a value cannot be moved to another field. Blind index: HMAC-SHA256 of ``kind:normalised value``
(hex, 32 chars) — equal values match without decrypting, and the index reveals nothing without the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from careloop.errors import PrivacyError
from careloop.privacy.keys import KeyRing

PREFIX = "v1"


class FieldCipher:
    """Encrypts, decrypts and blind-indexes field values with one key ring."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self._aead = {kid: AESGCM(key) for kid, key in ring.keys.items()}

    def encrypt(self, value: str | None, kind: str) -> str | None:
        if value is None:
            return None
        nonce = os.urandom(12)
        ct = self._aead[self.ring.active].encrypt(nonce, value.encode("utf-8"), kind.encode())
        return f"{PREFIX}:{self.ring.active}:{base64.b64encode(nonce + ct).decode()}"

    def decrypt(self, token: str | None, kind: str) -> str | None:
        if token is None:
            return None
        try:
            prefix, kid, body = token.split(":", 2)
            raw = base64.b64decode(body)
            aead = self._aead[kid]
        except (ValueError, KeyError) as e:
            raise PrivacyError(
                "a stored value is not careloop ciphertext or its key id is not in the key ring; "
                "restore the key file that encrypted it"
            ) from e
        if prefix != PREFIX:
            raise PrivacyError(f"unknown ciphertext version {prefix!r}")
        try:
            return aead.decrypt(raw[:12], raw[12:], kind.encode()).decode("utf-8")
        except InvalidTag as e:
            raise PrivacyError(
                "a stored value failed its integrity check (wrong key or tampered data)"
            ) from e

    def blind_index(self, value: str | None, kind: str) -> str | None:
        if value is None:
            return None
        msg = f"{kind}:{value}".encode()
        return hmac.new(self.ring.bidx_key, msg, hashlib.sha256).hexdigest()[:32]

    def encrypt_many(self, values: Iterable[str | None], kind: str) -> list[str | None]:
        aead = self._aead[self.ring.active]
        kid, aad, out = self.ring.active, kind.encode(), []
        for v in values:
            if v is None:
                out.append(None)
                continue
            nonce = os.urandom(12)
            out.append(
                f"{PREFIX}:{kid}:{base64.b64encode(nonce + aead.encrypt(nonce, v.encode(), aad)).decode()}"
            )
        return out

    def blind_index_many(self, values: Iterable[str | None], kind: str) -> list[str | None]:
        key, prefix = self.ring.bidx_key, f"{kind}:".encode()
        return [
            None if v is None else hmac.new(key, prefix + v.encode(), hashlib.sha256).hexdigest()[:32]
            for v in values
        ]


def mask(value: str | None, kind: str) -> str | None:
    """Display masking: 张*明, 138****5678, 1101**********002X, 浙江省杭州市****."""
    if value is None:
        return None
    v = value
    if kind == "name":
        if len(v) <= 1:
            return "*"
        if len(v) == 2:
            return v[0] + "*"
        return v[0] + "*" * (len(v) - 2) + v[-1]
    if kind == "phone":
        digits = v[3:] if v.startswith("+86") else v
        return digits[:3] + "****" + digits[-4:] if len(digits) >= 8 else "****"
    if kind == "id_number":
        return v[:4] + "*" * max(len(v) - 8, 0) + v[-4:] if len(v) > 8 else "****"
    if kind == "email":
        user, _, domain = v.partition("@")
        return (user[:1] + "***@" + domain) if domain else "***"
    if kind == "address":
        return v[:6] + "****"
    return v[:2] + "****" + v[-2:] if len(v) > 6 else "****"
