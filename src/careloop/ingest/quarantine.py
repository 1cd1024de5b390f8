"""Reading the quarantine: rows that failed validation, with source, file, line, field and reason.

Original values are stored encrypted; they are shown with personal identifiers masked.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from careloop.config import get_settings
from careloop.domain import entities, field_specs
from careloop.privacy.fields import PII_KEYS, FieldCipher, mask
from careloop.privacy.keys import load_keyring
from careloop.storage.workspace import WorkspaceStore

_FHIR_PII_KEYS = {
    "name": "name",
    "telecom": "phone",
    "address": "address",
    "identifier": "identifier",
    "photo": "identifier",
    "contact": "name",
}
_DIGITS = re.compile(r"(?<![0-9])(\+?[0-9]{3})[0-9Xx\- ]{4,}([0-9Xx]{2})(?![0-9])")


def mask_text(text: str) -> str:
    """Mask long digit runs (phones, ID and card numbers: 9+ digits) in free text; dates stay."""

    def repl(m: re.Match[str]) -> str:
        digits = sum(ch.isdigit() for ch in m.group(0))
        return f"{m.group(1)}****{m.group(2)}" if digits >= 9 else m.group(0)

    return _DIGITS.sub(repl, text)


def mask_raw(entity: str, raw: Any) -> Any:
    """Mask the personal identifiers in a quarantined record (dict from a file or FHIR, or a raw line)."""
    pii: dict[str, str] = {}
    plain: set[str] = set()
    if entity in entities():
        for spec in field_specs(entities()[entity]):
            if spec.pii:
                pii[spec.name] = str(spec.pii)
            elif spec.py_type is not dict:
                plain.add(spec.name)
    if entity == "event":  # live events are quarantined as the Segment-spec message that was sent
        pii.update({k: kind for k, kind in PII_KEYS.items()})
        pii.update({"userId": "app_user_id", "previousId": "app_user_id"})
        plain -= {"name"}
    return _mask(raw, pii, plain)


def _mask(value: Any, pii: dict[str, str], plain: set[str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            kind = pii.get(k) or pii.get(k.lower().replace("_", "").replace("-", ""))
            if kind is not None and isinstance(v, str | int) and not isinstance(v, bool):
                out[k] = mask(str(v), kind)
            elif k in plain and not isinstance(v, dict | list):
                out[k] = v  # a known field that holds no personal identifier
            elif k in _FHIR_PII_KEYS and v is not None:
                out[k] = "****"
            else:
                out[k] = _mask(v, pii, set())
        return out
    if isinstance(value, list):
        return [_mask(v, pii, set()) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


class QuarantineView:
    """Queries over the quarantine of one workspace."""

    def __init__(self, store: WorkspaceStore, cipher: FieldCipher | None = None) -> None:
        self.store = store
        self._cipher = cipher

    @property
    def cipher(self) -> FieldCipher:
        if self._cipher is None:
            s = get_settings()
            self._cipher = FieldCipher(load_keyring(s.key_file, environment=s.environment))
        return self._cipher

    def _where(self, run: str | None, entity: str | None) -> tuple[str, dict[str, Any]]:
        clauses, params = [], {}
        if run:
            clauses.append("run_id = :run")
            params["run"] = run
        if entity:
            clauses.append("entity = :entity")
            params["entity"] = entity
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def count(self, run: str | None = None, entity: str | None = None) -> int:
        where, params = self._where(run, entity)
        return int(self.store.scalar("SELECT count(*) FROM quarantine" + where, params))

    def list(
        self,
        run: str | None = None,
        entity: str | None = None,
        limit: int | None = 50,
        with_raw: bool = False,
    ) -> list[dict[str, Any]]:
        where, params = self._where(run, entity)
        cols = "id, run_id, source, entity, file, line, field, reason" + (", raw" if with_raw else "")
        sql = f"SELECT {cols} FROM quarantine{where} ORDER BY created_at DESC, run_id DESC, line"
        if limit:
            sql += f" LIMIT {int(limit)}"
        rows = self.store.rows(sql, params)
        if with_raw:
            for r in rows:
                r["raw"] = self._raw(r)
        return rows

    def show(self, qid: str) -> dict[str, Any] | None:
        rows = self.store.rows(
            "SELECT id, run_id, source, entity, file, line, field, reason, raw, created_at "
            "FROM quarantine WHERE id = :id",
            {"id": qid},
        )
        if not rows:
            return None
        row = rows[0]
        row["raw"] = self._raw(row)
        return row

    def _raw(self, row: dict[str, Any]) -> Any:
        text = self.cipher.decrypt(row["raw"], "raw")
        if text is None:
            return None
        try:
            value: Any = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = text
        return mask_raw(row["entity"], value)
