"""Protection of personal identifiers at rest: AES-GCM per field, keyed blind indexes, masking.

Ciphertext format: ``v1:<key id>:<base64(nonce || ciphertext+tag)>``, with the PII kind as associated
data so a value cannot be moved to another field. Blind index: HMAC-SHA256 of ``kind:normalised value``
(hex, first 32 chars) — equal values match without decrypting, and the index reveals nothing without the
key. Ingestion computes the same HMAC vectorised in SQL (`careloop.ingest.pipeline`); tests check both agree.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from careloop.errors import PrivacyError
from careloop.privacy.keys import KeyRing

PREFIX = "v1"


class FieldCipher:
    """Encrypts, decrypts and blind-indexes field values with one key ring."""

    def __init__(self, ring: KeyRing, *, bidx_cache: int = 200_000) -> None:
        self.ring = ring
        self._aead = {kid: AESGCM(key) for kid, key in ring.keys.items()}
        self._bidx: dict[tuple[str, str], str] = {}  # live events repeat the same ids: skip the HMAC
        self._bidx_cap = bidx_cache

    def encrypt(self, value: str | None, kind: str) -> str | None:
        return self.encrypt_many([value], kind)[0]

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
        return self.blind_index_many([value], kind)[0]

    def encrypt_many(self, values: Sequence[str | None], kind: str) -> list[str | None]:
        """Encrypt a column of values (one random nonce each, drawn in one call)."""
        encrypt, b64, aad = self._aead[self.ring.active].encrypt, base64.b64encode, kind.encode()
        head = f"{PREFIX}:{self.ring.active}:"
        nonces = os.urandom(12 * len(values))
        out: list[str | None] = []
        for i, v in enumerate(values):
            if v is None:
                out.append(None)
                continue
            nonce = nonces[12 * i : 12 * i + 12]
            out.append(head + b64(nonce + encrypt(nonce, v.encode(), aad)).decode())
        return out

    def blind_index_many(self, values: Iterable[str | None], kind: str) -> list[str | None]:
        key, prefix, sha, cache = self.ring.bidx_key, f"{kind}:".encode(), hashlib.sha256, self._bidx
        out: list[str | None] = []
        for v in values:
            if v is None:
                out.append(None)
                continue
            b = cache.get((kind, v))
            if b is None:
                b = hmac.new(key, prefix + v.encode(), sha).hexdigest()[:32]
                if len(cache) >= self._bidx_cap:
                    cache.clear()
                cache[(kind, v)] = b
            out.append(b)
        return out

    def hmac_pads(self) -> tuple[bytes, bytes]:
        """The HMAC inner and outer padded keys, for computing blind indexes inside SQL engines."""
        k = self.ring.bidx_key.ljust(64, b"\0")
        return bytes(b ^ 0x36 for b in k), bytes(b ^ 0x5C for b in k)


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


#: keys of free-form JSON (event properties, traits, context) holding personal identifiers (compared lower-case, without _ - and spaces)
PII_KEYS = {
    "phone": "phone",
    "mobile": "phone",
    "tel": "phone",
    "telephone": "phone",
    "phonenumber": "phone",
    "mobilephone": "phone",
    "name": "name",
    "firstname": "name",
    "lastname": "name",
    "fullname": "name",
    "realname": "name",
    "username": "name",
    "email": "email",
    "idnumber": "id_number",
    "idcard": "id_number",
    "idcardnumber": "id_number",
    "address": "address",
    "birthday": "birthday",
    "birthdate": "birthday",
    "openid": "openid",
    "unionid": "unionid",
    "hisnumber": "his_number",
    "insurancenumber": "insurance_number",
    "bankcard": "bank_card",
    "passport": "passport",
    "ip": "ip",  # context.ip: an IP address can identify a person (PIPL Art 4)
}


def pii_kind(key: str) -> str | None:
    return PII_KEYS.get(key.lower().replace("_", "").replace("-", "").replace(" ", ""))
