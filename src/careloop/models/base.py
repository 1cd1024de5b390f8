"""What every model family shares: config merged over defaults, a data fingerprint, and a registry that
saves a fitted model with its card and refuses to load one that does not match.

A family module declares ``FAMILY`` (its name), ``VERSION`` (bumped whenever what it fits or how it
scores changes) and ``DEFAULTS`` (its config). Fitting returns an artefact (anything joblib can pickle)
and a report; `ModelRegistry.save` writes both under ``models_dir/WORKSPACE/NAME/`` with a ``card.json``.
`ModelRegistry.load` checks the family, its version, and — when the caller passes them — the config and
the data hash, and raises `ModelMismatchError` saying which differs and what to do.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import joblib
import pyarrow as pa

from careloop import __version__
from careloop.errors import ConfigError, ModelError, ModelMismatchError, NotFoundError

_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def merge_config(
    defaults: Mapping[str, Any], user: Mapping[str, Any] | None, where: str = "config"
) -> dict[str, Any]:
    """A deep copy of `defaults` with `user` merged over it; a key the defaults do not know is an error
    (a typo must not silently fall back to a default)."""
    out = copy.deepcopy(dict(defaults))
    for key, value in (user or {}).items():
        if key not in out:
            known = ", ".join(sorted(out))
            raise ConfigError(f"{where}: unknown setting {key!r}; known: {known}")
        if isinstance(out[key], dict) and value is not None:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}.{key}: expected a mapping, got {type(value).__name__}")
            out[key] = merge_config(out[key], value, f"{where}.{key}")
        else:
            out[key] = copy.deepcopy(value)
    return out


def data_hash(*tables: pa.Table | Any) -> str:
    """SHA-256 over the tables' column names, types and values (Arrow tables or pandas frames), in order."""
    h = hashlib.sha256()
    for t in tables:
        table = t if isinstance(t, pa.Table) else pa.Table.from_pandas(t, preserve_index=False)
        table = table.combine_chunks()
        h.update(str(table.schema.remove_metadata()).encode())
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema.remove_metadata()) as writer:
            writer.write_table(table.replace_schema_metadata(None))
        h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()


def config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class ModelCard:
    """What a saved model is: the family and versions that made it, its config, the data it saw, its report."""

    name: str
    family: str
    family_version: str
    config: dict[str, Any]
    data_hash: str
    trained_at: datetime
    report: dict[str, Any] = field(default_factory=dict)
    careloop_version: str = __version__

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["trained_at"] = self.trained_at.isoformat()
        out["config_hash"] = config_hash(self.config)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelCard:
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        fields["trained_at"] = datetime.fromisoformat(str(d["trained_at"]))
        return cls(**fields)


class ModelRegistry:
    """Fitted models of one workspace on disk: ``ROOT/WORKSPACE/NAME/{card.json, model.joblib}``."""

    def __init__(self, root: Path, workspace: str) -> None:
        self.root = Path(root) / workspace

    def _dir(self, name: str) -> Path:
        if not _NAME.match(name):
            raise ConfigError(f"model name {name!r}: 1-64 letters, digits, '_' or '-'")
        return self.root / name

    def save(self, card: ModelCard, artefact: Any) -> Path:
        """Write the artefact and its card (replacing an earlier model of that name, atomically)."""
        final = self._dir(card.name)
        tmp = final.with_name(f".{card.name}.saving")
        tmp.mkdir(parents=True, exist_ok=True)
        joblib.dump(artefact, tmp / "model.joblib")
        (tmp / "card.json").write_text(
            json.dumps(card.as_dict(), ensure_ascii=False, indent=1, default=str), encoding="utf-8"
        )
        if final.exists():
            old = final.with_name(f".{card.name}.old")
            if old.exists():
                _remove(old)
            final.rename(old)
            tmp.rename(final)
            _remove(old)
        else:
            tmp.rename(final)
        self._clear_flag(card.name)
        return final

    # ---- retraining flags (data-subject erasure, careloop.privacy.dsr) ---------------------------
    @property
    def _flags_file(self) -> Path:
        return self.root / "needs_retraining.json"

    def needs_retraining(self) -> dict[str, list[dict[str, Any]]]:
        """Saved models whose training data included a person since erased: name -> [{request_id, at}]."""
        if not self._flags_file.exists():
            return {}
        flags: dict[str, list[dict[str, Any]]] = json.loads(self._flags_file.read_text(encoding="utf-8"))
        return flags

    def flag_retraining(self, name: str, request_id: str, at: datetime) -> None:
        """Mark a saved model for retraining (a refit with `save` clears the flag)."""
        flags = self.needs_retraining()
        flags.setdefault(name, []).append({"request_id": request_id, "at": at.isoformat()})
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._flags_file.with_suffix(".saving")
        tmp.write_text(json.dumps(flags, ensure_ascii=False, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(self._flags_file)

    def _clear_flag(self, name: str) -> None:
        flags = self.needs_retraining()
        if flags.pop(name, None) is not None:
            tmp = self._flags_file.with_suffix(".saving")
            tmp.write_text(json.dumps(flags, ensure_ascii=False, indent=1, sort_keys=True), encoding="utf-8")
            tmp.replace(self._flags_file)

    def card(self, name: str) -> ModelCard:
        path = self._dir(name) / "card.json"
        if not path.exists():
            raise NotFoundError(
                f"no model {name!r} in {self.root}; `careloop models list` shows the fitted ones"
            )
        return ModelCard.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def cards(self) -> list[ModelCard]:
        if not self.root.exists():
            return []
        return [self.card(p.name) for p in sorted(self.root.iterdir()) if (p / "card.json").exists()]

    def load(
        self,
        name: str,
        *,
        family: str,
        family_version: str,
        config: Mapping[str, Any] | None = None,
        data: str | None = None,
    ) -> tuple[ModelCard, Any]:
        """The card and artefact, after checking they are what the caller expects."""
        card = self.card(name)
        problems = []
        if card.family != family:
            problems.append(f"it is a {card.family} model, not {family}")
        if card.family_version != family_version:
            problems.append(
                f"it was fitted by {family} version {card.family_version}, this careloop has {family_version}"
            )
        if config is not None and config_hash(card.config) != config_hash(config):
            problems.append("it was fitted with another configuration")
        if data is not None and card.data_hash != data:
            problems.append("it was fitted on other data")
        if problems:
            raise ModelMismatchError(
                f"model {name!r} cannot be used: {'; '.join(problems)}. Fit it again (`careloop models ... fit`)."
            )
        try:
            artefact = joblib.load(self._dir(name) / "model.joblib")
        except Exception as e:  # a truncated or foreign file
            raise ModelError(f"model {name!r}: its saved file cannot be read ({e}); fit it again") from e
        return card, artefact


def _remove(path: Path) -> None:
    for p in sorted(path.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    path.rmdir()


def registry(workspace: str) -> ModelRegistry:
    from careloop.config import get_settings

    return ModelRegistry(get_settings().models_dir, workspace)


def check_columns(columns: Iterable[str], needed: Mapping[str, str], where: str) -> None:
    """Raise a ConfigError naming every missing column and the option that names it."""
    have = set(columns)
    missing = [f"{col!r} ({option})" for option, col in needed.items() if col not in have]
    if missing:
        raise ConfigError(
            f"{where}: column(s) {', '.join(missing)} not found; the file has {', '.join(sorted(have))}"
        )
